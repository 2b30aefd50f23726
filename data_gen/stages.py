"""The FRet stages as per-record functions, shared by the local pipeline (:mod:`data_gen.fret`) and the Apache Beam
pipeline (:mod:`data_gen.beam_fret`): whichever engine runs them, one seed gives the same record.

* stage 1: :func:`generate_one` (task + query for a seed passage);
* stage 2: :func:`neighbour_record` (the top-N candidates, the seed forced in);
* stage 3: :class:`~data_gen.scoring.ScoreAssembler` (QL/RC per candidate);
* calibration: :class:`CalibrationCounts` (seed recall@1 of each scorer, mergeable) and :func:`calibrate`;
* stages 4-5: :func:`fuse_and_select` and :func:`final_record` / :func:`failure_record`.

Seeds: :func:`seed_hash` and :func:`sample_seed_ids` pick the ``n`` passages with the smallest
``sha256(seed:id)``, a choice that needs no list of all ids (a Beam ``Top.Smallest``) and does not depend on the
order or sharding of the corpus.
"""
from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .llm import GREEDY, FatalLLMError, LLMError
from .prompts import PROMPT_VERSION, QUERY_GENERATION, QUERY_GENERATION_CHAT, ParseError

SCORERS = ("ql", "rc", "retrieval")
FUSIONS = ("rrf", "drop", "weighted")


@dataclass
class FRetConfig:
    """FRet settings. Values the paper does not publish are guesses, marked so.

    Attributes:
      neighbours: N, candidates per query (paper: not stated; its ablation's "p_20" suggests 20).
      negative: ``"lowest"`` (p_N, the paper's best row) or ``"random"`` (uniform over P minus the positive).
      include_seed: force the seed passage into the candidates (the paper does).
      max_passage_chars: passages are cut to this length inside prompts (small models have small contexts).
      gen_max_tokens: generation budget for task + query.
      seed: seeds the random negative (per id, so resumed runs choose the same one).
      concurrency: LLM calls in flight (per worker under Beam).
      retry_failed: on a re-run, also retry ids whose output failed to parse.
      rc_labels: ``"binary"`` (log P(Yes)) or ``"graded"`` (expected relevance over 0-3, Zhuang et al. 2023).
      scoring_ql / scoring_rc: routes of :mod:`data_gen.scoring` (``"auto"``: probe the server once).
      fusion: ``"rrf"`` (the paper: QL and RC, equal votes), ``"drop"`` (default: calibrate on the run's own
        records and drop a scorer whose seed recall@1 is not above chance) or ``"weighted"`` (weights by the lift
        over chance). Ours, not the paper's.
      calibration_min_records: fewer scored records than this: no calibration (the paper's RRF), too little power.
      calibration_alpha: a scorer has signal when a one-sided binomial test of its seed recall@1 against chance
        gives ``p < alpha``.
      retriever: ``"auto"`` (exact up to ``ann_threshold`` passages, else FAISS HNSW), ``"exact"``,
        ``"faiss-hnsw"``, ``"faiss-ivf"`` or ``"scann"``; or pass a retriever to the pipeline.
      ann_threshold: corpus size above which ``auto`` uses an ANN index.
    """

    neighbours: int = 20
    negative: str = "lowest"
    include_seed: bool = True
    max_passage_chars: int = 1000
    gen_max_tokens: int = 96
    seed: int = 0
    concurrency: int = 1
    retry_failed: bool = False
    embed_batch_size: int = 128
    progress: bool = True
    rc_labels: str = "binary"
    scoring_ql: str = "auto"
    scoring_rc: str = "auto"
    fusion: str = "drop"
    calibration_min_records: int = 50
    calibration_alpha: float = 0.01
    retriever: str = "auto"
    ann_threshold: int = 200_000

    def __post_init__(self):
        if self.neighbours < 2:
            raise ValueError(f"neighbours: expected >= 2 (a positive and a negative), got {self.neighbours}")
        if self.negative not in ("lowest", "random"):
            raise ValueError(f"negative: expected 'lowest' or 'random', got {self.negative!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency: expected >= 1, got {self.concurrency}")
        if self.rc_labels not in ("binary", "graded"):
            raise ValueError(f"rc-labels: expected 'binary' or 'graded', got {self.rc_labels!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if not 0 < self.calibration_alpha < 1:
            raise ValueError(f"calibration-alpha: expected 0 < alpha < 1, got {self.calibration_alpha}")
        if self.retriever not in ("auto", "exact", "faiss-hnsw", "faiss-ivf", "scann"):
            raise ValueError(f"retriever: expected auto, exact, faiss-hnsw, faiss-ivf or scann, got "
                             f"{self.retriever!r}")


# ---- seeds ------------------------------------------------------------------------------------------------------

def seed_hash(seed: int, pid: str) -> int:
    """A 64-bit hash of ``(seed, id)``: seeds are the passages with the smallest values."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big")


def sample_seed_ids(ids: Iterable[str], n: int | None, *, seed: int = 0) -> list[str]:
    """The ``n`` ids with the smallest :func:`seed_hash` (ties: the smaller id), in the order of ``ids``.

    Streams ``ids`` keeping ``n`` of them, so a 10M-passage corpus needs no list of ids; ``n=None`` keeps all.
    """
    if n is not None and n < 1:
        raise ValueError(f"passages: expected >= 1, got {n}")
    if n is None:
        return list(ids)
    # nsmallest keeps a heap of n entries while it streams the ids.
    picked = heapq.nsmallest(n, ((seed_hash(seed, pid), pid, pos) for pos, pid in enumerate(ids)))
    return [pid for _, pid, _ in sorted(picked, key=lambda t: t[2])]


# ---- stage 1 ----------------------------------------------------------------------------------------------------

def generate_one(llm, pid: str, title: str, text: str, config: FRetConfig, route: str = "completions") -> dict:
    """Stage 1 for one seed: ``{"id", "ok": True, "task", "query", "raw"}`` or a failure
    ``{"id", "ok": False, "error_kind": "llm"|"parse", "error", "raw"?}``. A rejected (unparseable) answer is
    remembered by the cache unless ``retry_failed``, so a re-run neither repeats nor loses it. ``route``:
    ``"completions"`` or ``"chat"`` (:attr:`~data_gen.scoring.ScoringPlan.generate`)."""
    row = {"text": text, "title": title, "max_chars": config.max_passage_chars}
    task = QUERY_GENERATION_CHAT if route == "chat" else QUERY_GENERATION

    def parses(out: str) -> bool:
        try:
            task.parse_output(out, row)
            return True
        except ParseError:
            return False
    try:
        raw = llm.generate(task.format_input(row), max_tokens=config.gen_max_tokens, stop=["\n\n"], **GREEDY,
                           accept=parses, remember_rejected=not config.retry_failed)
    except FatalLLMError:  # the server refuses every call: stop the run
        raise
    except LLMError as e:
        return {"id": pid, "ok": False, "error_kind": "llm", "error": str(e)}
    try:
        out = task.parse_output(raw, row)
    except ParseError as e:
        return {"id": pid, "ok": False, "error_kind": "parse", "error": str(e), "raw": raw}
    return {"id": pid, "ok": True, **out, "raw": raw}


# ---- stage 2 ----------------------------------------------------------------------------------------------------

def neighbour_record(q: dict, idx_row: Sequence[int], score_row: Sequence[float], id_at: Callable[[int], str],
                     seed_pos: int, seed_score: Callable[[], float], *, include_seed: bool, embedder: str,
                     retriever: str) -> dict:
    """Stage 2 for one query: candidates ``[{id, retrieval_rank, retrieval_score}]`` from one row of search
    results; when the seed is not among them and ``include_seed``, it replaces the N-th (``seed_score()`` gives
    its cosine score, asked only then)."""
    kept = [(int(j), s) for j, s in zip(idx_row, score_row) if j >= 0]  # an ANN index may miss some
    n = len(kept)
    cands = [{"id": id_at(j), "retrieval_rank": r, "retrieval_score": float(s)} for r, (j, s) in enumerate(kept, 1)]
    seed_in = any(j == seed_pos for j, _ in kept)
    if not seed_in and include_seed:
        cands[-1] = {"id": q["id"], "retrieval_rank": n, "retrieval_score": float(seed_score())}
    return {"id": q["id"], "task": q["task"], "query": q["query"], "candidates": cands, "seed_in_topn": seed_in,
            "embedder": embedder, "retriever": retriever}


def seed_cosine(doc_vec: np.ndarray, query_vec: np.ndarray) -> float:
    """The seed's score when it was not retrieved, computed as :func:`~data_gen.vectors.exact_topk` does."""
    return float(np.float32(np.asarray(doc_vec, np.float32).astype(np.float64) @ query_vec.astype(np.float64)))


# ---- calibration ------------------------------------------------------------------------------------------------

def ranks_descending(scores: Sequence[float], tiebreak: Sequence[float]) -> list[int]:
    """1-based ranks by ``scores`` descending; equal scores are ordered by ``tiebreak`` ascending."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], tiebreak[i]))
    ranks = [0] * len(scores)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks


def _scorer_ranks(candidates: Sequence[dict]) -> dict[str, list[int]]:
    rr = [c["retrieval_rank"] for c in candidates]
    out = {}
    for m in ("ql", "rc"):
        if all(c.get(m) is not None for c in candidates):
            out[m] = ranks_descending([c[m] for c in candidates], rr)
    out["retrieval"] = list(rr)
    return out


@dataclass
class CalibrationCounts:
    """Per scorer: records seen, records whose top-1 is the seed, and the candidate-list lengths (for chance).

    Integer counts only, so engines that add records in different orders (and merge partial counts, as a Beam
    ``CombineFn`` does) reach the same numbers.
    """

    n: Counter = field(default_factory=Counter)
    hits: Counter = field(default_factory=Counter)
    lengths: Counter = field(default_factory=Counter)

    def add(self, sid: str, candidates: Sequence[dict]) -> "CalibrationCounts":
        ranks = _scorer_ranks(candidates)
        seed_at = [i for i, c in enumerate(candidates) if c["id"] == sid]
        if not seed_at:
            return self  # the seed was not a candidate (include_seed off): says nothing about the scorers
        for m, r in ranks.items():
            self.n[m] += 1
            self.hits[m] += r[seed_at[0]] == 1
        self.lengths[len(candidates)] += 1
        return self

    def merge(self, other: "CalibrationCounts") -> "CalibrationCounts":
        self.n.update(other.n)
        self.hits.update(other.hits)
        self.lengths.update(other.lengths)
        return self

    def chance(self) -> float:
        """Expected seed recall@1 of a random order: the mean of 1/N over records."""
        total = sum(self.lengths.values())
        return sum(c / length for length, c in sorted(self.lengths.items())) / total if total else float("nan")


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (no scipy: data_gen stays light)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k, n + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def calibrate(counts: CalibrationCounts, *, fusion: str = "drop", min_records: int = 50,
              alpha: float = 0.01) -> dict[str, Any]:
    """Fusion weights for this run, from each scorer's seed recall@1 on the run's own records.

    A scorer "has signal" when it puts the seed first more often than chance (a random order of the N
    candidates: 1/N), by a one-sided binomial test at ``alpha``. ``rrf``: QL and RC with weight 1 (the paper).
    ``drop``: weight 1 for an LLM scorer with signal, 0 without. ``weighted``: the lift over chance,
    ``(recall - chance) / (1 - chance)``, scaled so the best scorer has weight 1, 0 without signal. With no LLM
    scorer left, candidates are ranked by retrieval (``fallback``). Fewer than ``min_records``: the paper's weights.

    Returns the ``fusion`` provenance every record carries: ``{"method", "weights", "seed_recall_at_1", "chance",
    "p_value", "records", "note"}``.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion: expected one of {FUSIONS}, got {fusion!r}")
    chance = counts.chance()
    recall = {m: counts.hits[m] / counts.n[m] for m in SCORERS if counts.n[m]}
    pval = {m: binomial_sf(counts.hits[m], counts.n[m], chance) for m in SCORERS if counts.n[m]}
    available = [m for m in ("ql", "rc") if counts.n[m] or not counts.n["retrieval"]]
    records = counts.n["retrieval"]
    weights = {m: 1.0 for m in available}
    note = "the paper's RRF of QL and RC" if fusion == "rrf" else ""
    if fusion != "rrf":
        if records < min_records:
            note = f"too few records to calibrate ({records} < {min_records}): the paper's RRF"
        else:
            signal = {m: pval[m] < alpha for m in available}
            if fusion == "drop":
                weights = {m: 1.0 if signal[m] else 0.0 for m in available}
            else:
                lift = {m: max(0.0, (recall[m] - chance) / (1 - chance)) if signal[m] else 0.0 for m in available}
                top = max(lift.values(), default=0.0)
                weights = {m: (lift[m] / top if top > 0 else 0.0) for m in available}
            dropped = [m for m in available if weights[m] == 0]
            note = (f"no signal (p >= {alpha}): {', '.join(dropped)} dropped" if dropped else
                    f"every scorer has signal (p < {alpha})")
            if not any(weights.values()):
                weights = {"retrieval": 1.0}
                note += "; no LLM scorer left: ranked by retrieval (fallback)"
    weights = {m: w for m, w in weights.items() if w}
    if not weights:
        weights = {"retrieval": 1.0}
    return {"method": fusion, "weights": weights, "seed_recall_at_1": recall, "chance": chance,
            "p_value": pval, "records": records, "note": note}


PAPER_FUSION = {"method": "rrf", "weights": {"ql": 1.0, "rc": 1.0}}


# ---- stages 4-5 -------------------------------------------------------------------------------------------------

def reciprocal_rank_fusion(*rank_lists: Sequence[int]) -> list[float]:
    """:math:`R(p) = \\sum_m 1 / r_m(p)` with no smoothing constant (Gecko App. A), for 1-based ranks."""
    if not rank_lists:
        raise ValueError("reciprocal_rank_fusion: expected at least one ranking")
    n = len(rank_lists[0])
    for rl in rank_lists:
        if len(rl) != n or any(r < 1 for r in rl):
            raise ValueError(f"reciprocal_rank_fusion: expected rankings of equal length with ranks >= 1, got {rl}")
    return [sum(1.0 / rl[i] for rl in rank_lists) for i in range(n)]


def fuse_and_select(candidates: Sequence[dict], *, negative: str, rng_key: str,
                    weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Rank candidates by weighted RRF of their scorer rankings and pick the positive and the hard negative.

    .. math:: R(q,p) = \\sum_{m} w_m / r_m(q,p), \\quad m \\in \\{QL, RC, \\text{retrieval}\\}

    Args:
      candidates: dicts with ``id``, ``retrieval_rank`` (1-based), ``ql`` (None when QL is unavailable), ``rc``.
      negative: ``"lowest"`` or ``"random"``.
      rng_key: seeds the random choice (deterministic per record).
      weights: ``{scorer: weight}``; default ``{"ql": 1, "rc": 1}``, the paper's fusion.

    Returns:
      ``{"candidates": [... with ql_rank, rc_rank (None when unscored), rrf, rank, sorted by rank], "positive_id",
      "negative_id"}``. Ties in R are broken by retrieval rank.
    """
    if len(candidates) < 2:
        raise ValueError(f"fuse_and_select: expected >= 2 candidates, got {len(candidates)}")
    weights = dict(PAPER_FUSION["weights"] if weights is None else weights)
    ranks = _scorer_ranks(candidates)
    for m, w in weights.items():
        if m not in SCORERS:
            raise ValueError(f"weights: unknown scorer {m!r} (expected {SCORERS})")
        if w and m not in ranks:
            raise ValueError(f"weights: scorer {m!r} has weight {w} but the candidates have no {m} scores")
    if not any(weights.values()):
        raise ValueError(f"weights: expected at least one positive weight, got {weights}")
    rr = ranks["retrieval"]
    used = [(ranks[m], float(weights[m])) for m in SCORERS if weights.get(m)]
    fused = [sum(w / rl[i] for rl, w in used) for i in range(len(candidates))]
    final = ranks_descending(fused, rr)
    enriched = [dict(c, ql_rank=ranks["ql"][i] if "ql" in ranks else None,
                     rc_rank=ranks["rc"][i] if "rc" in ranks else None, rrf=fused[i], rank=final[i])
                for i, c in enumerate(candidates)]
    enriched.sort(key=lambda c: c["rank"])
    pos = enriched[0]
    if negative == "lowest":
        neg = enriched[-1]
    elif negative == "random":
        rng = random.Random(hashlib.sha256(rng_key.encode()).digest())
        neg = rng.choice(enriched[1:])
    else:
        raise ValueError(f"negative: expected 'lowest' or 'random', got {negative!r}")
    return {"candidates": enriched, "positive_id": pos["id"], "negative_id": neg["id"]}


def final_record(sid: str, s: dict, passages: dict[str, Any], *, config: FRetConfig, fusion: dict, model: str,
                 backend: str, embedder: str, retriever: str) -> dict:
    """Stages 4-5 for one seed: the output record from its scores record ``s`` (``passages``: the positive and the
    negative by id, objects with ``id``, ``title``, ``text``)."""
    sel = fuse_and_select(s["candidates"], negative=config.negative, rng_key=f"{config.seed}:{sid}",
                          weights=fusion["weights"])
    pos, neg = passages[sel["positive_id"]], passages[sel["negative_id"]]
    return {
        "id": sid, "seed_id": sid, "task": s["task"], "query": s["query"],
        "positive": {"id": pos.id, "title": pos.title, "text": pos.text},
        "negative": {"id": neg.id, "title": neg.title, "text": neg.text},
        "positive_is_seed": pos.id == sid, "seed_in_topn": s.get("seed_in_topn"),
        "candidates": sel["candidates"], "negative_strategy": config.negative,
        "model": model, "backend": backend, "embedder": embedder, "retriever": retriever,
        "prompt_version": PROMPT_VERSION, "scoring": s.get("scoring"), "fusion": fusion,
    }


def selected_ids(s: dict, *, config: FRetConfig, fusion: dict) -> tuple[str, str]:
    """The positive and negative ids :func:`final_record` will use (to fetch only those two passages)."""
    sel = fuse_and_select(s["candidates"], negative=config.negative, rng_key=f"{config.seed}:{s['id']}",
                          weights=fusion["weights"])
    return sel["positive_id"], sel["negative_id"]


def generate_failure(sid: str, q: dict | None) -> dict:
    """The failures-file line for a seed whose stage 1 produced nothing usable."""
    return {"id": sid, "stage": "generate", **({k: q[k] for k in ("error_kind", "error", "raw") if k in q}
                                               if q else {"error": "not run"})}


def later_failure(sid: str, stage: str, s: dict | None) -> dict:
    """The failures-file line for a seed that failed (or did not run) at ``stage`` (retrieve or score)."""
    return {"id": sid, "stage": stage, "error": (s or {}).get("error", "not run")}
