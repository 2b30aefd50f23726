"""Dense retrieval evaluation: encode a BEIR corpus once (cached), exact top-k by blocked matmul, trec_eval metrics."""
from __future__ import annotations

import pathlib
import time

import numpy as np

from data_gen.vectors import exact_topk

from gecko_jax.eval.beir import BeirData, load_beir
from gecko_jax.eval.cache import EmbeddingCache, encode_checked
from gecko_jax.vectors import truncate
from gecko_jax.eval.metrics import DEFAULT_METRICS, evaluate_run

EVAL_BLOCK = 16384  # corpus rows per matmul block in evaluation


def naive_topk(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference for :func:`exact_topk`: one full score matrix, stable sort (same tie rule)."""
    s = np.asarray(queries, np.float32) @ np.asarray(corpus, np.float32).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def retrieval_run(q_emb: np.ndarray, c_emb: np.ndarray, query_ids, doc_ids, k: int) -> dict[str, dict[str, float]]:
    """Top-k run as ``{query id: {doc id: score}}`` (the input format of :func:`evaluate_run`); float32 products
    (:func:`data_gen.vectors.exact_topk`), as every published figure was computed."""
    scores, idx = exact_topk(q_emb, c_emb, k, block_size=EVAL_BLOCK, dtype=np.float32)
    doc_ids = list(doc_ids)
    return {qid: {doc_ids[j]: float(s) for s, j in zip(scores[r], idx[r])} for r, qid in enumerate(query_ids)}


def encode_corpus(embedder, data: BeirData, *, task: str | None = None, cache: EmbeddingCache | None = None,
                  batch_size: int | None = None) -> np.ndarray:
    """Full-width embeddings ``[n_docs, d]`` of a BEIR corpus in file order (documents with their titles), through
    ``cache``: the one definition of the corpus cache key, shared by evaluation and hard-negative mining."""
    cache = cache or EmbeddingCache(None)
    doc_ids = list(data.corpus)
    titles = [data.corpus[d]["title"] for d in doc_ids]
    texts = [data.corpus[d]["text"] for d in doc_ids]
    fmt = {"kind": "document", "task": task, "titles": True}
    return cache.get_or_encode(embedder, texts, data_fp=data.corpus_fingerprint, fmt=fmt, task=task,
                               kind="document", titles=titles, batch_size=batch_size)


def evaluate_retrieval(embedder, data, *, split: str = "test", task: str | None = None, dims=None,
                       metrics=DEFAULT_METRICS, top_k: int = 1000, cache: EmbeddingCache | None = None,
                       batch_size: int | None = None) -> dict:
    """nDCG@10 / Recall@100 / MRR@10 (×100) of dense retrieval on a BEIR-layout dataset.

    Documents are encoded with ``kind="document"`` and their titles (the embedder turns them into
    ``title + " " + text``, or Gecko's ``title: … | text: …`` when a task is given); queries with ``kind="query"``
    and ``task``. Corpus embeddings are cached at full dimension; every value of ``dims`` truncates them.

    Args:
      embedder: object with ``encode(texts, *, task, kind, titles, ...)``.
      data: a folder in BEIR layout or a loaded :class:`BeirData`.
      split: qrels split.
      task: Gecko task string for queries (e.g. ``"fact checking"`` for SciFact), or ``None`` for raw text.
      dims: an int, ``None`` (full), or a sequence of them (one result per value, corpus encoded once).
      metrics: metric names (see :mod:`gecko_jax.eval.metrics`).
      top_k: documents kept per query (MTEB keeps 1000).
      cache: an :class:`EmbeddingCache`; ``None`` for no caching.
      batch_size: passed to ``encode``.

    Returns:
      ``{"metrics": {...}}`` for one ``dims``, or ``{dims: {"metrics": ...}}`` for a sequence; each with
      ``num_queries``, ``num_docs``, ``warnings`` (data problems counted by the reader) and timings in seconds.
    """
    if not isinstance(data, BeirData):
        data = load_beir(pathlib.Path(data), split=split)
    cache = cache or EmbeddingCache(None)
    doc_ids = list(data.corpus)
    t0 = time.perf_counter()
    c_full = encode_corpus(embedder, data, task=task, cache=cache, batch_size=batch_size)
    t_corpus = time.perf_counter() - t0
    query_ids = list(data.queries)
    t0 = time.perf_counter()
    q_full = encode_checked(embedder, [data.queries[q] for q in query_ids], task=task, kind="query",
                            batch_size=batch_size)
    t_queries = time.perf_counter() - t0
    many = isinstance(dims, (list, tuple))
    results = {}
    for d in (dims if many else [dims]):
        t0 = time.perf_counter()
        run = retrieval_run(truncate(q_full, d), truncate(c_full, d), query_ids, doc_ids, top_k)
        scores = evaluate_run(data.qrels, run, metrics)
        results[d] = {
            "metrics": {m: 100.0 * scores[m] for m in metrics},
            "main_score": 100.0 * scores[metrics[0]],
            "num_queries": scores["num_queries"], "num_docs": len(doc_ids), "dims": d or c_full.shape[1],
            "warnings": dict(data.warnings), "task": task,
            "seconds": {"encode_corpus": t_corpus, "encode_queries": t_queries,
                        "search_and_score": time.perf_counter() - t0},
        }
    return results if many else results[dims]
