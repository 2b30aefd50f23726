"""FRet (Gecko, Lee et al. 2024, Sec. 3): LLM-generated (task, query) pairs with LLM-mined positives and negatives.

Stages, each idempotent and resumable, joined by passage id (never by position), each writing its own JSONL in
``workdir`` with one atomic line per record:

1. ``queries.jsonl``: ``LLM(P_QG, p_seed) -> (task, query)``, strictly parsed; parse failures are recorded.
2. ``neighbours.jsonl``: top-N passages for ``task + query`` by an injected ``embed_fn`` and a retriever (exact
   blocked top-k by default, an ANN index for large corpora: :mod:`data_gen.ann`); the seed is always a candidate
   (it replaces the N-th neighbour when not retrieved).
3. ``scores.jsonl``: query likelihood :math:`QL(q,p) = \\log P(q \\mid p, P_{QL})` and relevance classification
   (:math:`\\log P(\\text{Yes})`, or the expected 0-3 label) for every candidate, with the same LLM, through the
   routes the server offers (:mod:`data_gen.scoring`; without prompt log-probs: RC alone, ``rc_only``).
4-5. ``out``: rankings fused by reciprocal rank without a constant, weighted by a per-run calibration
   (:func:`~data_gen.stages.calibrate`; with every weight 1 it is the paper's)

   .. math:: R(q,p) = w_{QL}/r_{QL}(q,p) + w_{RC}/r_{RC}(q,p),

   positive = top-1 by R (may differ from the seed), hard negative = the lowest-ranked candidate or a uniformly
   random other candidate. The output file is rewritten atomically from ``scores.jsonl`` on every run.

The per-record work is :mod:`data_gen.stages`, shared with the Apache Beam pipeline (:mod:`data_gen.beam_fret`).
Memory does not grow with the corpus beyond the vectors and the index: the corpus may be a
:class:`~data_gen.corpus.CorpusStore` (offsets, not text), stage files are indexed by id on disk
(:class:`~data_gen.jsonl.JsonlIndex`) and streamed, document vectors are sharded on disk.

A re-run skips every id already done; LLM calls are also cached (``CachedLLM``), so a crash costs at most the calls in
flight. Records whose LLM call failed after all retries are retried on the next run; parse failures only with
``retry_failed=True`` (greedy decoding would repeat them).

Reference: J. Lee et al., "Gecko: Versatile Text Embeddings Distilled from Large Language Models", arXiv:2403.20327.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .corpus import CorpusStore, Passage, corpus_files, iter_corpus, open_corpus
from .errors import InputError
from .files import atomic_file, check_outputs
from .formatting import format_document, format_query
from .jsonl import JsonlAppender, JsonlError, JsonlIndex, text_fingerprint
from .llm import CachedLLM
from .retrieval import EmbedFn, Retriever, VectorShards, doc_texts_key, l2_normalize
from .runner import parallel_map
from .scoring import ScoreAssembler, ScoringPlan, plan_scoring
from .stages import (CalibrationCounts, FRetConfig, calibrate, final_record, fuse_and_select, generate_failure,
                     generate_one, later_failure, neighbour_record, ranks_descending, reciprocal_rank_fusion,
                     sample_seed_ids, seed_cosine, selected_ids)

log = logging.getLogger(__name__)

__all__ = ["FRetPipeline", "FRetConfig", "FRetSummary", "StageStats", "Passage", "load_corpus", "open_corpus",
           "choose_seeds", "sample_seed_ids", "fuse_and_select", "reciprocal_rank_fusion", "ranks_descending",
           "stage_paths", "failures_path"]

_OK, _PARSE, _LLM = 1, 2, 3


def stage_paths(workdir: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The stage files in ``workdir``: ``queries.jsonl``, ``neighbours.jsonl``, ``scores.jsonl``."""
    w = Path(workdir)
    return w / "queries.jsonl", w / "neighbours.jsonl", w / "scores.jsonl"


def failures_path(out_path: str | os.PathLike) -> Path:
    """Where the ids that produced no record are listed, with the stage and the error: ``<out>.failures.jsonl``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".failures.jsonl")


def load_corpus(path: str | os.PathLike) -> dict[str, Passage]:
    """Read a JSONL corpus into memory: ``{"_id" or "id", "text", "title" (optional)}`` per line (the BEIR layout).

    ``path`` may also be a folder of shards or a glob (:func:`~data_gen.corpus.corpus_files`). For corpora that do
    not fit in memory use :func:`~data_gen.corpus.open_corpus` (same validation, text stays on disk).

    Raises:
      InputError: the file is missing; JsonlError (an InputError) naming ``file:line`` and the field for a line that
      is not UTF-8 or not JSON, a missing/empty/mistyped field or a duplicate id.
    """
    files = corpus_files(path)
    out: dict[str, Passage] = {}
    for fi, lineno, _, p in iter_corpus(files):
        if p.id in out:
            raise JsonlError(f"{files[fi]}:{lineno}: duplicate id {p.id!r}")
        out[p.id] = p
    if not out:
        raise JsonlError(f"{files[0]}: the corpus is empty")
    return out


# ---- pipeline ---------------------------------------------------------------------------------------------------

@dataclass
class StageStats:
    todo: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0


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
    scoring: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)
    retriever: str = ""


class _Positions:
    """Corpus positions for any ``{id: Passage}`` mapping (a :class:`CorpusStore` has its own index)."""

    def __init__(self, corpus: Mapping[str, Passage]):
        if isinstance(corpus, CorpusStore):
            self.position, self.id_at, self.size = corpus.position, corpus.id_at, len(corpus)
        else:
            ids = list(corpus)
            pos = {pid: j for j, pid in enumerate(ids)}
            self.position = lambda pid: pos.get(pid, -1)
            self.id_at = ids.__getitem__
            self.size = len(ids)


def _query_fp(rec: dict) -> int:
    return text_fingerprint(rec.get("task") or "", rec.get("query") or "")


def _cands_fp(rec: dict, extra: str = "") -> int:
    return text_fingerprint(rec.get("query") or "", *[c["id"] for c in rec.get("candidates") or []], extra)


def _plan_key(provenance: dict | None) -> str:
    return json.dumps(provenance, sort_keys=True)


class FRetPipeline:
    """Runs the FRet stages over a corpus with an LLM (anything with ``generate``/``score``) and an ``embed_fn``.

    Args:
      llm: a backend, normally wrapped in :class:`~data_gen.llm.CachedLLM`.
      embed_fn: ``texts -> np.ndarray [n, d]``.
      corpus: passages by id (retrieval searches all of them): a dict, or a :class:`~data_gen.corpus.CorpusStore`
        for corpora too large for memory.
      workdir: folder for the stage files, the document vectors and the ANN index.
      config: :class:`FRetConfig`.
      embedder_name: recorded in the output and part of the document vectors' content key.
      query_embed_fn: for the (task, query) texts when queries and documents are encoded differently.
      retriever: a :class:`~data_gen.retrieval.Retriever` over the corpus in its order (e.g. an index built
        elsewhere), or ``VectorShards -> Retriever``; default: ``config.retriever`` (exact search up to
        ``config.ann_threshold`` passages, FAISS HNSW above).
      scoring: a :class:`~data_gen.scoring.ScoringPlan`; default: probe the server (``config.scoring_*``).

    Example:
      >>> pipe = FRetPipeline(CachedLLM(llm, cache), emb.encode, load_corpus("c.jsonl"), workdir="w")  # doctest: +SKIP
      >>> pipe.run(seed_ids, "fret.jsonl")  # doctest: +SKIP
    """

    def __init__(self, llm, embed_fn: EmbedFn, corpus: Mapping[str, Passage], *, workdir: str | os.PathLike,
                 config: FRetConfig | None = None, embedder_name: str = "custom",
                 query_embed_fn: EmbedFn | None = None,
                 retriever: Retriever | Callable[[VectorShards], Retriever] | None = None,
                 scoring: ScoringPlan | None = None):
        # CachedLLM understands `accept=`; a bare backend gets a cache-less wrapper so the call shape is the same.
        self.llm = llm if isinstance(llm, CachedLLM) else CachedLLM(llm, None)
        self.embed_fn = embed_fn
        self.query_embed_fn = query_embed_fn or embed_fn
        self.corpus = corpus
        self._pos = _Positions(corpus)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config or FRetConfig()
        self.embedder_name = embedder_name
        self.queries_path, self.neighbours_path, self.scores_path = stage_paths(self.workdir)
        self._retriever_arg = retriever
        self._retriever: Retriever | None = None
        self.plan = scoring
        self.fusion: dict = {}

    # -- stage 1 --
    def _queries_index(self) -> JsonlIndex:
        return JsonlIndex(self.queries_path, fingerprints={"tq": _query_fp},
                          flags=lambda r: _OK if r.get("ok") else _PARSE if r.get("error_kind") == "parse" else _LLM)

    def generate(self, seed_ids: Sequence[str]) -> StageStats:
        t0 = time.perf_counter()
        done = self._queries_index()

        def needs(pid):
            f = done.flags(pid)
            return f is None or f == _LLM or (f == _PARSE and self.config.retry_failed)
        todo = [i for i in seed_ids if needs(i)]
        done.close()
        st = StageStats(todo=len(todo))

        route = self.scoring_plan().generate

        def one(pid):
            p = self.corpus[pid]
            return generate_one(self.llm, pid, p.title, p.text, self.config, route)
        with JsonlAppender(self.queries_path) as w:
            def on_result(_pid, rec):
                w.append(rec)
                st.ok += rec["ok"]
                st.failed += not rec["ok"]
            parallel_map(one, todo, concurrency=self.config.concurrency, on_result=on_result,
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

    def _doc_texts(self) -> Iterator[str]:
        passages = self.corpus.passages() if isinstance(self.corpus, CorpusStore) else self.corpus.values()
        for p in passages:
            yield format_document(p.text, p.title)

    def doc_vectors(self) -> VectorShards:
        """The corpus's document vectors, sharded under ``workdir`` (computed once per embedder and content)."""
        key = doc_texts_key(self.embedder_name, self._doc_texts())
        shards = VectorShards(self.workdir / f"vectors-{key[:16]}")
        if not shards.complete():
            bar = _progress_bar(self._pos.size, "fret 2/3 embed corpus", self.config.progress)
            shards.build(self._doc_texts(), self.embed_fn, batch_size=self.config.embed_batch_size,
                         shard_rows=self.config.embed_batch_size * 512,
                         progress=(lambda n: bar.update(n - bar.n)) if bar else None)
            if bar:
                bar.close()
        return shards

    def retriever(self) -> Retriever:
        if self._retriever is None:
            arg = self._retriever_arg
            if arg is not None and hasattr(arg, "search"):
                r = arg
            else:
                shards = self.doc_vectors()
                if arg is not None:
                    r = arg(shards)
                else:
                    from .ann import open_retriever  # faiss / scann only when asked for
                    r = open_retriever(shards, self.config.retriever, ann_threshold=self.config.ann_threshold)
            if r.size != self._pos.size:
                raise ValueError(f"retriever: expected an index over the {self._pos.size} corpus passages, got "
                                 f"{r.size} rows")
            self._retriever = r
        return self._retriever

    def retrieve(self, *, chunk: int = 8192) -> StageStats:
        t0 = time.perf_counter()
        queries = self._queries_index()
        done = JsonlIndex(self.neighbours_path, fingerprints={"tq": _query_fp})
        pos, offs = [], []
        for off in queries.offsets():
            q = queries.read_at(off)
            j = self._pos.position(q["id"])
            if q.get("ok") and j >= 0 and done.fingerprint(q["id"], "tq") != _query_fp(q):
                pos.append(j)
                offs.append(off)
        done.close()
        order = np.argsort(np.asarray(pos, np.int64), kind="stable")  # corpus order, whatever order stage 1 ended
        st = StageStats(todo=len(order))
        if len(order):
            retriever = self.retriever()
            n = min(self.config.neighbours, self._pos.size)
            with JsonlAppender(self.neighbours_path) as w:
                for a in range(0, len(order), chunk):
                    todo = [queries.read_at(offs[i]) for i in order[a:a + chunk]]
                    qv = self._embed([format_query(q["query"], q["task"])
                                      for q in todo], self.query_embed_fn)
                    idx, sc = retriever.search(qv, n)
                    for q, qvec, ii, ss in zip(todo, l2_normalize(qv), idx, sc):
                        seed_pos = self._pos.position(q["id"])
                        w.append(neighbour_record(
                            q, ii, ss, self._pos.id_at, seed_pos,
                            lambda: seed_cosine(retriever.doc_vector(seed_pos), qvec),
                            include_seed=self.config.include_seed, embedder=self.embedder_name,
                            retriever=retriever.name))
                        st.ok += 1
        queries.close()
        st.seconds = time.perf_counter() - t0
        return st

    # -- stage 3 --
    def scoring_plan(self) -> ScoringPlan:
        """The scoring routes (probed once per run, and the probe is cached with the LLM calls)."""
        if self.plan is None:
            self.plan = plan_scoring(self.llm, rc_labels=self.config.rc_labels, ql=self.config.scoring_ql,
                                     rc=self.config.scoring_rc)
        return self.plan

    def score(self) -> StageStats:
        t0 = time.perf_counter()
        plan = self.scoring_plan()
        key = _plan_key(plan.provenance())
        neigh = JsonlIndex(self.neighbours_path)
        done = JsonlIndex(self.scores_path, fingerprints={"c": lambda r: _cands_fp(r, _plan_key(r.get("scoring")))},
                          flags=lambda r: _OK if r.get("ok") else _LLM)
        todo = []
        for off in neigh.offsets():
            nb = neigh.read_at(off)
            if done.flags(nb["id"]) != _OK or done.fingerprint(nb["id"], "c") != _cands_fp(nb, key):
                todo.append(off)
        done.close()
        st = StageStats(todo=len(todo))
        asm = ScoreAssembler(self.llm, plan, self.config.max_passage_chars)

        def items():
            for off in todo:
                nb = neigh.read_at(off)
                yield from asm.start(nb, {c["id"]: self.corpus[c["id"]] for c in nb["candidates"]})
        with JsonlAppender(self.scores_path) as w:
            def on_result(item, res):
                rec = asm.add(item, res)
                if rec is not None:
                    w.append(rec)
                    st.ok += rec["ok"]
                    st.failed += not rec["ok"]
            parallel_map(asm.call, items(), concurrency=self.config.concurrency, on_result=on_result,
                         desc="fret 2/3 score", progress=self.config.progress)
        neigh.close()
        st.seconds = time.perf_counter() - t0
        return st

    # -- stages 4-5 --
    def _valid_scores(self, seed_ids, queries: JsonlIndex, scores: JsonlIndex) -> Iterator[tuple[str, dict | None]]:
        """``(seed id, its scores record or None)``: a record counts when it is ok and its query is stage 1's."""
        for sid in seed_ids:
            ok = (queries.flags(sid) == _OK and scores.flags(sid) == _OK
                  and scores.fingerprint(sid, "tq") == queries.fingerprint(sid, "tq"))
            yield sid, scores.get(sid) if ok else None

    def calibration(self, seed_ids: Sequence[str]) -> dict:
        """The run's fusion weights (:func:`~data_gen.stages.calibrate`) from the scores of ``seed_ids``."""
        queries, scores = self._queries_index(), self._scores_index()
        counts = CalibrationCounts()
        for sid, s in self._valid_scores(seed_ids, queries, scores):
            if s is not None:
                counts.add(sid, s["candidates"])
        queries.close()
        scores.close()
        return calibrate(counts, fusion=self.config.fusion, min_records=self.config.calibration_min_records,
                         alpha=self.config.calibration_alpha)

    def _scores_index(self) -> JsonlIndex:
        return JsonlIndex(self.scores_path, fingerprints={"tq": _query_fp}, flags=lambda r: _OK if r.get("ok") else _LLM)

    def select(self, seed_ids: Sequence[str], out_path: str | os.PathLike) -> tuple[int, int, int]:
        """Write the final records for ``seed_ids`` (atomically) and a ``.failures.jsonl`` next to them.

        Returns ``(records, failures, positives that differ from the seed)``.
        """
        fusion = self.calibration(seed_ids)
        self.fusion = fusion
        log.info("fusion: %s weights %s (seed recall@1 %s, chance %.3f; %s)", fusion["method"], fusion["weights"],
                 {k: round(v, 3) for k, v in fusion["seed_recall_at_1"].items()}, fusion["chance"], fusion["note"])
        queries, scores = self._queries_index(), self._scores_index()
        neigh = JsonlIndex(self.neighbours_path)
        n = nf = differ = 0
        out_path = Path(out_path)
        with atomic_file(out_path) as out, atomic_file(failures_path(out_path)) as fails:
            for sid, s in self._valid_scores(seed_ids, queries, scores):
                if s is None:
                    if queries.flags(sid) != _OK:
                        rec = generate_failure(sid, queries.get(sid))
                    else:
                        rec = later_failure(sid, "score" if sid in neigh else "retrieve",
                                            scores.get(sid) if scores.flags(sid) is not None else None)
                    fails.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
                    nf += 1
                    continue
                pos_id, neg_id = selected_ids(s, config=self.config, fusion=fusion)
                rec = final_record(sid, s, {pos_id: self.corpus[pos_id], neg_id: self.corpus[neg_id]},
                                   config=self.config, fusion=fusion, model=self.llm.model, backend=self.llm.name,
                                   embedder=self.embedder_name, retriever=s.get("retriever") or "")
                out.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
                n += 1
                differ += not rec["positive_is_seed"]
        for ix in (queries, scores, neigh):
            ix.close()
        return n, nf, differ

    def run(self, seed_ids: Sequence[str], out_path: str | os.PathLike) -> FRetSummary:
        """All stages; safe to call again after a crash or with more seeds."""
        missing = [i for i in seed_ids if i not in self.corpus]
        if missing:
            raise KeyError(f"seed_ids: {len(missing)} ids are not in the corpus, e.g. {missing[:3]}")
        out_path = Path(out_path)
        check_outputs([("out", out_path), ("failures", failures_path(out_path))],
                      folders=[("workdir", self.workdir)])  # before any LLM call is paid for
        t0 = time.perf_counter()
        self.scoring_plan()  # probe once, at the start, and say what will be used
        s1 = self.generate(seed_ids)
        s2 = self.retrieve()
        s3 = self.score()
        n, nf, differ = self.select(seed_ids, out_path)
        queries = self._queries_index()
        flags = [queries.flags(i) for i in seed_ids]
        queries.close()
        gen = [f for f in flags if f is not None]
        parsed = sum(f == _OK for f in gen)
        return FRetSummary(
            seeds=len(seed_ids), records=n, failures=nf,
            parse_success_rate=parsed / len(gen) if gen else float("nan"),
            positive_differs_from_seed=differ / n if n else float("nan"),
            stages={"generate": asdict(s1), "retrieve": asdict(s2), "score": asdict(s3)},
            usage=self.llm.usage.as_dict(), seconds=time.perf_counter() - t0,
            scoring=self.plan.provenance(), fusion=self.fusion,
            retriever=self._retriever.name if self._retriever is not None else "")


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        import sys

        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, dynamic_ncols=True)


def choose_seeds(corpus_ids: Sequence[str], n: int | None, *, seed: int = 0) -> list[str]:
    """``n`` seed ids drawn uniformly without replacement (the paper samples seeds at random), in corpus order.

    Kept for callers that hold all ids; the CLI (both engines) uses :func:`~data_gen.stages.sample_seed_ids`,
    which streams and does not depend on the corpus order.
    """
    import random

    ids = list(corpus_ids)
    if n is None or n >= len(ids):
        return ids
    if n < 1:
        raise ValueError(f"passages: expected >= 1, got {n}")
    pick = set(random.Random(seed).sample(ids, n))
    return [i for i in ids if i in pick]
