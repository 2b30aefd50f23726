"""FRet (Gecko, Lee et al. 2024, Sec. 3): LLM-generated (task, query) pairs with LLM-mined positives and negatives.

Stages, each idempotent and resumable, joined by passage id (never by position), each writing its own JSONL in
``workdir`` with one atomic line per record:

1. ``queries.jsonl``: ``LLM(P_QG, p_seed) -> (task, query)``, strictly parsed; parse failures are recorded.
2. ``neighbours.jsonl``: top-N passages for ``task + query`` by an injected ``embed_fn`` (exact blocked top-k); the
   seed is always a candidate (it replaces the N-th neighbour when not retrieved).
3. ``scores.jsonl``: query likelihood :math:`QL(q,p) = \\log P(q \\mid p, P_{QL})` and relevance classification
   :math:`RC(q,p) = \\log P(\\text{Yes} \\mid q, p, P_{RC})` for every candidate, with the same LLM.
4-5. ``out``: rankings fused by reciprocal rank without a constant,

   .. math:: R(q,p) = 1/r_{QL}(q,p) + 1/r_{RC}(q,p),

   positive = top-1 by R (may differ from the seed), hard negative = the lowest-ranked candidate or a uniformly
   random other candidate. The output file is rewritten atomically from ``scores.jsonl`` on every run.

A re-run skips every id already done; LLM calls are also cached (``CachedLLM``), so a crash costs at most the calls in
flight. Records whose LLM call failed after all retries are retried on the next run; parse failures only with
``retry_failed=True`` (greedy decoding would repeat them).

Reference: J. Lee et al., "Gecko: Versatile Text Embeddings Distilled from Large Language Models", arXiv:2403.20327.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError
from .files import atomic_file, check_outputs
from .jsonl import JsonlAppender, JsonlError, iter_jsonl, load_by_id, record_id, record_text, write_jsonl_atomic
from .llm import GREEDY, CachedLLM, FatalLLMError, LLMError
from .prompts import (PROMPT_VERSION, QUERY_GENERATION, ParseError, passage_text, query_likelihood_prompt,
                      relevance_prompt)
from .retrieval import EmbedFn, ExactRetriever, l2_normalize
from .runner import parallel_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""


def stage_paths(workdir: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The stage files in ``workdir``: ``queries.jsonl``, ``neighbours.jsonl``, ``scores.jsonl``."""
    w = Path(workdir)
    return w / "queries.jsonl", w / "neighbours.jsonl", w / "scores.jsonl"


def failures_path(out_path: str | os.PathLike) -> Path:
    """Where the ids that produced no record are listed, with the stage and the error: ``<out>.failures.jsonl``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".failures.jsonl")


def load_corpus(path: str | os.PathLike) -> dict[str, Passage]:
    """Read a JSONL corpus: ``{"_id" or "id", "text", "title" (optional)}`` per line (the BEIR layout), UTF-8.

    Raises:
      InputError: the file is missing; JsonlError (an InputError) naming ``file:line`` and the field for a line that
      is not UTF-8 or not JSON, a missing/empty/mistyped field or a duplicate id.
    """
    out: dict[str, Passage] = {}
    path = Path(path)
    if not path.is_file():
        raise InputError(f"corpus: file not found: {path}")
    for lineno, rec in iter_jsonl(path, tolerate_torn_tail=False):
        where = f"{path}:{lineno}"
        pid = record_id(rec, where, "_id", "id")
        text = record_text(rec, f"{where} (id {pid})", "text")
        title = record_text(rec, f"{where} (id {pid})", "title", optional=True)
        if pid in out:
            raise JsonlError(f"{where}: duplicate id {pid!r}")
        out[pid] = Passage(id=pid, text=text, title=title)
    if not out:
        raise JsonlError(f"{path}: the corpus is empty")
    return out


@dataclass
class FRetConfig:
    """FRet settings. Values the paper does not publish are guesses, marked so.

    Attributes:
      neighbours: N, candidates per query (paper: not stated; its ablation's "p_20" suggests 20).
      negative: ``"lowest"`` (p_N, the paper's best row) or ``"random"`` (uniform over P minus the positive).
      include_seed: force the seed passage into the candidates (the paper does).
      max_passage_chars: passages are cut to this length inside prompts (small models have small contexts).
      gen_max_tokens: generation budget for task + query.
      query_template / doc_template: how (task, query) and (title, text) are given to ``embed_fn``.
      seed: seeds the random negative (per id, so resumed runs choose the same one).
      concurrency: LLM calls in flight.
      retry_failed: on a re-run, also retry ids whose output failed to parse.
    """

    neighbours: int = 20
    negative: str = "lowest"
    include_seed: bool = True
    max_passage_chars: int = 1000
    gen_max_tokens: int = 96
    query_template: str = "task: {task} | query: {query}"
    doc_template: str = "title: {title} | text: {text}"
    seed: int = 0
    concurrency: int = 1
    retry_failed: bool = False
    embed_batch_size: int = 128
    progress: bool = True

    def __post_init__(self):
        if self.neighbours < 2:
            raise ValueError(f"neighbours: expected >= 2 (a positive and a negative), got {self.neighbours}")
        if self.negative not in ("lowest", "random"):
            raise ValueError(f"negative: expected 'lowest' or 'random', got {self.negative!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency: expected >= 1, got {self.concurrency}")


# ---- ranking ----------------------------------------------------------------------------------------------------

def ranks_descending(scores: Sequence[float], tiebreak: Sequence[float]) -> list[int]:
    """1-based ranks by ``scores`` descending; equal scores are ordered by ``tiebreak`` ascending."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], tiebreak[i]))
    ranks = [0] * len(scores)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks


def reciprocal_rank_fusion(*rank_lists: Sequence[int]) -> list[float]:
    """:math:`R(p) = \\sum_m 1 / r_m(p)` with no smoothing constant (Gecko App. A), for 1-based ranks."""
    if not rank_lists:
        raise ValueError("reciprocal_rank_fusion: expected at least one ranking")
    n = len(rank_lists[0])
    for rl in rank_lists:
        if len(rl) != n or any(r < 1 for r in rl):
            raise ValueError(f"reciprocal_rank_fusion: expected rankings of equal length with ranks >= 1, got {rl}")
    return [sum(1.0 / rl[i] for rl in rank_lists) for i in range(n)]


def fuse_and_select(candidates: Sequence[dict], *, negative: str, rng_key: str) -> dict[str, Any]:
    """Rank candidates by RRF of their QL and RC rankings and pick the positive and the hard negative.

    Args:
      candidates: dicts with ``id``, ``retrieval_rank`` (1-based), ``ql``, ``rc``.
      negative: ``"lowest"`` or ``"random"``.
      rng_key: seeds the random choice (deterministic per record).

    Returns:
      ``{"candidates": [... with ql_rank, rc_rank, rrf, rank, sorted by rank], "positive_id", "negative_id"}``.
      Ties in R are broken by retrieval rank.
    """
    if len(candidates) < 2:
        raise ValueError(f"fuse_and_select: expected >= 2 candidates, got {len(candidates)}")
    rr = [c["retrieval_rank"] for c in candidates]
    ql_rank = ranks_descending([c["ql"] for c in candidates], rr)
    rc_rank = ranks_descending([c["rc"] for c in candidates], rr)
    fused = reciprocal_rank_fusion(ql_rank, rc_rank)
    final = ranks_descending(fused, rr)
    enriched = [dict(c, ql_rank=q, rc_rank=r, rrf=f, rank=k)
                for c, q, r, f, k in zip(candidates, ql_rank, rc_rank, fused, final)]
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


# ---- pipeline ---------------------------------------------------------------------------------------------------

@dataclass
class StageStats:
    todo: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0


class _PlainWriter:
    def __init__(self, f):
        self.write = f.write


@dataclass
class FRetSummary:
    seeds: int = 0
    records: int = 0
    failures: int = 0
    parse_success_rate: float = float("nan")
    positive_differs_from_seed: float = float("nan")
    stages: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    seconds: float = 0.0


class FRetPipeline:
    """Runs the FRet stages over a corpus with an LLM (anything with ``generate``/``score``) and an ``embed_fn``.

    Args:
      llm: a backend, normally wrapped in :class:`~data_gen.llm.CachedLLM`.
      embed_fn: ``texts -> np.ndarray [n, d]``.
      corpus: passages by id (retrieval searches all of them).
      workdir: folder for the stage files and the document-embedding cache.
      config: :class:`FRetConfig`.
      embedder_name: recorded in the output and part of the document-embedding cache key.
      query_embed_fn: for the (task, query) texts when queries and documents are encoded differently.

    Example:
      >>> pipe = FRetPipeline(CachedLLM(llm, cache), emb.encode, load_corpus("c.jsonl"), workdir="w")  # doctest: +SKIP
      >>> pipe.run(seed_ids, "fret.jsonl")  # doctest: +SKIP
    """

    def __init__(self, llm, embed_fn: EmbedFn, corpus: dict[str, Passage], *, workdir: str | os.PathLike,
                 config: FRetConfig | None = None, embedder_name: str = "custom",
                 query_embed_fn: EmbedFn | None = None):
        # CachedLLM understands `accept=`; a bare backend gets a cache-less wrapper so the call shape is the same.
        self.llm = llm if isinstance(llm, CachedLLM) else CachedLLM(llm, None)
        self.embed_fn = embed_fn
        self.query_embed_fn = query_embed_fn or embed_fn
        self.corpus = corpus
        self.ids = list(corpus)
        self._pos = {pid: j for j, pid in enumerate(self.ids)}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config or FRetConfig()
        self.embedder_name = embedder_name
        self.queries_path, self.neighbours_path, self.scores_path = stage_paths(self.workdir)

    # -- stage 1 --
    def _needs(self, rec: dict | None) -> bool:
        if rec is None:
            return True
        if rec.get("ok"):
            return False
        return self.config.retry_failed or rec.get("error_kind") != "parse"

    def _generate_one(self, pid: str) -> dict:
        p = self.corpus[pid]
        row = {"text": p.text, "title": p.title, "max_chars": self.config.max_passage_chars}
        task = QUERY_GENERATION

        def parses(text: str) -> bool:
            try:
                task.parse_output(text, row)
                return True
            except ParseError:
                return False
        try:
            raw = self.llm.generate(task.format_input(row), max_tokens=self.config.gen_max_tokens, stop=["\n\n"],
                                    **GREEDY, accept=parses)
        except FatalLLMError:  # the server refuses every call: stop the run
            raise
        except LLMError as e:
            return {"id": pid, "ok": False, "error_kind": "llm", "error": str(e)}
        try:
            out = task.parse_output(raw, row)
        except ParseError as e:
            return {"id": pid, "ok": False, "error_kind": "parse", "error": str(e), "raw": raw}
        return {"id": pid, "ok": True, **out, "raw": raw}

    def generate(self, seed_ids: Sequence[str]) -> StageStats:
        t0 = time.perf_counter()
        done = load_by_id(self.queries_path)
        todo = [i for i in seed_ids if self._needs(done.get(i))]
        st = StageStats(todo=len(todo))
        with JsonlAppender(self.queries_path) as w:
            def on_result(_pid, rec):
                w.append(rec)
                st.ok += rec["ok"]
                st.failed += not rec["ok"]
            parallel_map(self._generate_one, todo, concurrency=self.config.concurrency, on_result=on_result,
                         desc="fret 1/3 generate", progress=self.config.progress)
        st.seconds = time.perf_counter() - t0
        return st

    # -- stage 2 --
    def _embed(self, texts: list[str], fn: EmbedFn | None = None) -> np.ndarray:
        fn = fn or self.embed_fn
        bs = self.config.embed_batch_size
        parts = []
        for i in range(0, len(texts), bs):
            v = np.asarray(fn(texts[i:i + bs]), dtype=np.float32)
            if v.ndim != 2 or v.shape[0] != len(texts[i:i + bs]):
                raise ValueError(f"embed_fn: expected an array [n={len(texts[i:i + bs])}, d], got shape {v.shape}")
            parts.append(v)
        return np.concatenate(parts, axis=0)

    def _doc_vectors(self) -> np.ndarray:
        texts = [self.config.doc_template.format(title=self.corpus[i].title, text=self.corpus[i].text)
                 for i in self.ids]
        h = hashlib.sha256(json.dumps([self.embedder_name, texts]).encode()).hexdigest()
        path = self.workdir / f"doc_vectors.{h[:16]}.npy"
        if path.exists():
            v = np.load(path)
            if v.shape[0] == len(texts):
                return v
        v = self._embed(texts)
        with atomic_file(path, binary=True) as f:
            # Through a plain write(): given a real file numpy calls fwrite, whose short write on a full disk
            # raises an OSError without errno ("N requested and M written").
            np.save(_PlainWriter(f), v)
        return v

    def retrieve(self) -> StageStats:
        t0 = time.perf_counter()
        queries = load_by_id(self.queries_path)
        done = load_by_id(self.neighbours_path)
        todo = [q for i, q in queries.items() if q.get("ok") and (i not in done or done[i].get("query") != q["query"]
                                                                  or done[i].get("task") != q["task"])]
        todo.sort(key=lambda q: self._pos[q["id"]])  # corpus order, whatever order stage 1 finished in
        st = StageStats(todo=len(todo))
        if todo:
            retriever = ExactRetriever(self._doc_vectors())
            qv = self._embed([self.config.query_template.format(task=q["task"], query=q["query"]) for q in todo],
                             self.query_embed_fn)
            n = min(self.config.neighbours, len(self.ids))
            idx, sc = retriever.search(qv, n)
            with JsonlAppender(self.neighbours_path) as w:
                qn = l2_normalize(qv)
                for q, qvec, ii, ss in zip(todo, qn, idx, sc):
                    cands = [{"id": self.ids[j], "retrieval_rank": r, "retrieval_score": float(s)}
                             for r, (j, s) in enumerate(zip(ii, ss), 1)]
                    seed_in = any(c["id"] == q["id"] for c in cands)
                    if not seed_in and self.config.include_seed:
                        seed_score = float(np.float32(retriever.docs[self._pos[q["id"]]].astype(np.float64)
                                                      @ qvec.astype(np.float64)))
                        cands[-1] = {"id": q["id"], "retrieval_rank": n, "retrieval_score": seed_score}
                    w.append({"id": q["id"], "task": q["task"], "query": q["query"], "candidates": cands,
                              "seed_in_topn": seed_in, "embedder": self.embedder_name})
                    st.ok += 1
        st.seconds = time.perf_counter() - t0
        return st

    # -- stage 3 --
    def _score_call(self, item: tuple[str, int, str, str, str]) -> tuple[str, float | str]:
        _sid, _k, kind, query, cid = item
        p = self.corpus[cid]
        text = passage_text(p.title, p.text, self.config.max_passage_chars)
        try:
            if kind == "ql":
                prompt, lead = query_likelihood_prompt(text)
                return "ok", self.llm.score(prompt, lead + query)
            prompt, label = relevance_prompt(query, text)
            return "ok", self.llm.score(prompt, label)
        except FatalLLMError:  # the server refuses every call: stop the run
            raise
        except LLMError as e:
            return "error", f"{kind} score of {cid}: {e}"

    def score(self) -> StageStats:
        t0 = time.perf_counter()
        neigh = load_by_id(self.neighbours_path)
        done = load_by_id(self.scores_path)

        def stale(i, nb):
            d = done.get(i)
            return (d is None or not d.get("ok") or d.get("query") != nb["query"]
                    or [c["id"] for c in d["candidates"]] != [c["id"] for c in nb["candidates"]])
        todo = [nb for i, nb in neigh.items() if stale(i, nb)]
        st = StageStats(todo=len(todo))
        # One work item per LLM call, grouped by seed and by prompt kind so a local model's KV cache keeps the
        # shared preamble (and, for RC, the query) warm.
        items = [(nb["id"], k, kind, nb["query"], c["id"])
                 for nb in todo for kind in ("ql", "rc") for k, c in enumerate(nb["candidates"])]
        partial: dict[str, dict] = {nb["id"]: {"nb": nb, "left": 2 * len(nb["candidates"]), "ql": {}, "rc": {},
                                               "errors": []} for nb in todo}
        with JsonlAppender(self.scores_path) as w:
            def on_result(item, res):
                sid, k, kind = item[0], item[1], item[2]
                acc = partial[sid]
                status, val = res
                if status == "ok":
                    acc[kind][k] = val
                else:
                    acc["errors"].append(val)
                acc["left"] -= 1
                if acc["left"] == 0:
                    nb = acc["nb"]
                    if acc["errors"]:
                        rec = {"id": sid, "ok": False, "error_kind": "llm", "error": "; ".join(acc["errors"][:3]),
                               "query": nb["query"], "candidates": nb["candidates"]}
                        st.failed += 1
                    else:
                        cands = [dict(c, ql=acc["ql"][j], rc=acc["rc"][j]) for j, c in enumerate(nb["candidates"])]
                        rec = {"id": sid, "ok": True, "task": nb["task"], "query": nb["query"], "candidates": cands,
                               "seed_in_topn": nb.get("seed_in_topn")}
                        st.ok += 1
                    w.append(rec)
                    del partial[sid]
            parallel_map(self._score_call, items, concurrency=self.config.concurrency, on_result=on_result,
                         desc="fret 2/3 score", progress=self.config.progress)
        st.seconds = time.perf_counter() - t0
        return st

    # -- stages 4-5 --
    def select(self, seed_ids: Sequence[str], out_path: str | os.PathLike) -> tuple[int, int, int]:
        """Write the final records for ``seed_ids`` (atomically) and a ``.failures.jsonl`` next to them.

        Returns ``(records, failures, positives that differ from the seed)``.
        """
        queries = load_by_id(self.queries_path)
        scores = load_by_id(self.scores_path)
        neigh = load_by_id(self.neighbours_path)
        records, failures, differ = [], [], 0
        for sid in seed_ids:
            q, s = queries.get(sid), scores.get(sid)
            if q is None or not q.get("ok"):
                failures.append({"id": sid, "stage": "generate", **({k: q[k] for k in ("error_kind", "error", "raw")
                                                                      if k in q} if q else {"error": "not run"})})
                continue
            if s is None or not s.get("ok") or s.get("query") != q["query"]:
                failures.append({"id": sid, "stage": "score" if sid in neigh else "retrieve",
                                 "error": (s or {}).get("error", "not run")})
                continue
            sel = fuse_and_select(s["candidates"], negative=self.config.negative,
                                  rng_key=f"{self.config.seed}:{sid}")
            pos, neg = self.corpus[sel["positive_id"]], self.corpus[sel["negative_id"]]
            differ += pos.id != sid
            records.append({
                "id": sid, "seed_id": sid, "task": s["task"], "query": s["query"],
                "positive": {"id": pos.id, "title": pos.title, "text": pos.text},
                "negative": {"id": neg.id, "title": neg.title, "text": neg.text},
                "positive_is_seed": pos.id == sid, "seed_in_topn": s.get("seed_in_topn"),
                "candidates": sel["candidates"], "negative_strategy": self.config.negative,
                "model": self.llm.model, "backend": self.llm.name, "embedder": self.embedder_name,
                "prompt_version": PROMPT_VERSION,
            })
        out_path = Path(out_path)
        write_jsonl_atomic(out_path, records)
        write_jsonl_atomic(failures_path(out_path), failures)
        return len(records), len(failures), differ

    def run(self, seed_ids: Sequence[str], out_path: str | os.PathLike) -> FRetSummary:
        """All stages; safe to call again after a crash or with more seeds."""
        missing = [i for i in seed_ids if i not in self.corpus]
        if missing:
            raise KeyError(f"seed_ids: {len(missing)} ids are not in the corpus, e.g. {missing[:3]}")
        out_path = Path(out_path)
        check_outputs([("out", out_path), ("failures", failures_path(out_path))],
                      folders=[("workdir", self.workdir)])  # before any LLM call is paid for
        t0 = time.perf_counter()
        s1 = self.generate(seed_ids)
        s2 = self.retrieve()
        s3 = self.score()
        n, nf, differ = self.select(seed_ids, out_path)
        queries = load_by_id(self.queries_path)
        gen = [queries[i] for i in seed_ids if i in queries]
        parsed = sum(bool(r.get("ok")) for r in gen)
        return FRetSummary(
            seeds=len(seed_ids), records=n, failures=nf,
            parse_success_rate=parsed / len(gen) if gen else float("nan"),
            positive_differs_from_seed=differ / n if n else float("nan"),
            stages={"generate": asdict(s1), "retrieve": asdict(s2), "score": asdict(s3)},
            usage=self.llm.usage.as_dict(), seconds=time.perf_counter() - t0)


def choose_seeds(corpus_ids: Sequence[str], n: int | None, *, seed: int = 0) -> list[str]:
    """``n`` seed ids drawn uniformly without replacement (the paper samples seeds at random), in corpus order."""
    ids = list(corpus_ids)
    if n is None or n >= len(ids):
        return ids
    if n < 1:
        raise ValueError(f"passages: expected >= 1, got {n}")
    pick = set(random.Random(seed).sample(ids, n))
    return [i for i in ids if i in pick]
