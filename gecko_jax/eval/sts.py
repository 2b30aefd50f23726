"""Semantic textual similarity: Spearman × 100 between cosine similarity and gold scores (MTEB's STS main score)."""
from __future__ import annotations

import csv
import hashlib
import pathlib
import time

import numpy as np

from gecko_jax.errors import InputError
from gecko_jax.fileio import decode_utf8

from gecko_jax.eval.cache import EmbeddingCache
from gecko_jax.vectors import truncate


def read_stsb(path) -> tuple[list[str], list[str], np.ndarray, str]:
    """Read an STS Benchmark CSV (``sts-test.csv``): tab-separated, fields 5-7 are score, sentence1, sentence2.

    Some rows carry extra trailing columns (sources); they are ignored. Quotes are literal (``csv.QUOTE_NONE``):
    sentences contain unbalanced ``"`` characters.

    Returns:
      ``(sentences1, sentences2, scores [n] float32, sha256 of the file)``.

    Raises:
      InputError: a non-UTF-8 byte, a row with fewer than 7 fields, or a score that is not a number in [0, 5] (file:line named).
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    s1, s2, scores = [], [], []
    reader = csv.reader(decode_utf8(raw, path).splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    for lineno, row in enumerate(reader, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 7:
            raise InputError(f"{path}:{lineno}: expected >= 7 tab-separated fields "
                             f"(genre, file, year, id, score, sentence1, sentence2), got {len(row)}")
        try:
            score = float(row[4])
        except ValueError:
            raise InputError(f"{path}:{lineno}: field 5 (score) must be a number in [0, 5], got {row[4]!r}") from None
        if not 0.0 <= score <= 5.0:
            raise InputError(f"{path}:{lineno}: field 5 (score) must be in [0, 5], got {score}")
        s1.append(row[5])
        s2.append(row[6])
        scores.append(score)
    if not scores:
        raise InputError(f"{path}: no STS pairs found")
    return s1, s2, np.asarray(scores, dtype=np.float32), hashlib.sha256(raw).hexdigest()


def pair_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``[n, d]`` arrays -> ``[n]``."""
    a = truncate(a, None)
    b = truncate(b, None)
    return np.sum(a * b, axis=1)


def evaluate_sts(embedder, path, *, task: str | None = None, symmetric: bool = True, dims=None,
                 cache: EmbeddingCache | None = None, batch_size: int | None = None) -> dict:
    """STS-B style evaluation: Spearman and Pearson × 100 of cosine(s1, s2) against gold scores.

    Each distinct sentence is encoded once. With a Gecko ``task`` (``"semantic similarity"``) and ``symmetric=True``
    both sides get ``task: … | query: …`` (Gecko's symmetric format, PAPERS.md 1.4); with ``task=None`` the raw text.

    Args:
      embedder: object with ``encode``.
      path: an STS-B CSV file (``sts-test.csv``).
      task: Gecko task string or ``None``.
      symmetric: encode both sides as queries (True), or sentence2 as a document (False).
      dims: int, ``None`` or a sequence of them.
      cache: optional :class:`EmbeddingCache`.
      batch_size: passed to ``encode``.

    Returns:
      ``{"metrics": {"spearman", "pearson"}, "main_score", "num_pairs", "dims", "seconds"}`` (or a dict by dims).
    """
    from scipy.stats import pearsonr, spearmanr

    s1, s2, gold, data_fp = read_stsb(path)
    cache = cache or EmbeddingCache(None)
    t0 = time.perf_counter()
    if symmetric:
        uniq = sorted(set(s1) | set(s2))
        emb = cache.get_or_encode(embedder, uniq, data_fp=data_fp, fmt={"kind": "query", "task": task, "sts": "all"},
                                  task=task, kind="query", batch_size=batch_size)
        pos = {s: i for i, s in enumerate(uniq)}
        e1 = emb[[pos[s] for s in s1]]
        e2 = emb[[pos[s] for s in s2]]
    else:
        e1 = cache.get_or_encode(embedder, s1, data_fp=data_fp, fmt={"kind": "query", "task": task, "sts": 1},
                                 task=task, kind="query", batch_size=batch_size)
        e2 = cache.get_or_encode(embedder, s2, data_fp=data_fp, fmt={"kind": "document", "task": task, "sts": 2},
                                 task=task, kind="document", batch_size=batch_size)
    t_enc = time.perf_counter() - t0
    many = isinstance(dims, (list, tuple))
    out = {}
    for d in (dims if many else [dims]):
        cos = pair_cosine(truncate(e1, d), truncate(e2, d))
        sp = 100.0 * float(spearmanr(cos, gold).statistic)
        pe = 100.0 * float(pearsonr(cos, gold).statistic)
        out[d] = {"metrics": {"spearman": sp, "pearson": pe}, "main_score": sp, "num_pairs": len(gold),
                  "dims": d or e1.shape[1], "task": task, "symmetric": symmetric, "seconds": {"encode": t_enc}}
    return out if many else out[dims]
