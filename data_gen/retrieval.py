"""Nearest-neighbour retrieval for FRet step 2a: exact blocked top-k in numpy, behind a small ``Retriever`` protocol.

``embed_fn(texts: list[str]) -> np.ndarray [n, d]`` is injected (the CLI wires ``gecko_jax.Embedder``); vectors are
L2-normalised here, so the score is cosine similarity. An approximate index (ScaNN, FAISS) can implement
``Retriever.search`` with the same signature.
"""
from __future__ import annotations

import hashlib
import re
from typing import Callable, Protocol, Sequence

import numpy as np

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def exact_topk(queries: np.ndarray, docs: np.ndarray, k: int, *, block_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, scanning ``docs`` in blocks so memory stays ``O(q * (block + k))``.

    .. math:: \\mathrm{top}_k(j \\mapsto \\langle q, d_j \\rangle), \\quad \\text{ties broken by the smaller index } j.

    Args:
      queries: ``[q, d]`` float array.
      docs: ``[n, d]`` float array.
      k: neighbours per query, ``1 <= k``; capped at ``n``.
      block_size: documents per block.

    Returns:
      ``(indices [q, k] int64, scores [q, k] float32)``, best first.

    Example:
      >>> idx, s = exact_topk(np.eye(3), np.eye(3), 2)
      >>> idx[:, 0].tolist()
      [0, 1, 2]
    """
    # float64 products: a float32 GEMM rounds a row's scores differently depending on how many other queries share
    # the batch, which would make a resumed run (fewer queries per batch) differ from an uninterrupted one.
    queries = np.asarray(queries, dtype=np.float64)
    docs = np.asarray(docs, dtype=np.float32)
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"exact_topk: expected queries [q, d] and docs [n, d] with equal d, got {queries.shape} "
                         f"and {docs.shape}")
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    n = docs.shape[0]
    k = min(k, n)
    best_s = np.full((queries.shape[0], 0), -np.inf, dtype=np.float64)
    best_i = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for start in range(0, n, block_size):
        s = queries @ docs[start:start + block_size].astype(np.float64).T
        i = np.broadcast_to(np.arange(start, start + s.shape[1], dtype=np.int64), s.shape)
        cat_s = np.concatenate([best_s, s], axis=1)
        cat_i = np.concatenate([best_i, i], axis=1)
        # lexsort: last key is primary -> by score descending, then index ascending (deterministic ties).
        order = np.lexsort((cat_i, -cat_s), axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, order, axis=1)
        best_i = np.take_along_axis(cat_i, order, axis=1)
    return best_i, best_s.astype(np.float32)


class Retriever(Protocol):
    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class ExactRetriever:
    """Exact cosine retrieval over a fixed document matrix (normalised once)."""

    def __init__(self, doc_vecs: np.ndarray, *, block_size: int = 8192):
        self.docs = l2_normalize(doc_vecs)
        self.block_size = block_size

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_topk(l2_normalize(query_vecs), self.docs, k, block_size=self.block_size)


_WORD = re.compile(r"[a-z0-9]+")


def hashed_bow_embed(texts: Sequence[str], dims: int = 512) -> np.ndarray:
    """A dependency-free, deterministic bag-of-words embedder (signed feature hashing of lower-cased words).

    Only for tests, demos and boxes without an encoder: it matches words, not meaning.
    """
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for r, t in enumerate(texts):
        for w in _WORD.findall(t.lower()):
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            out[r, h % dims] += 1.0 if (h >> 63) & 1 else -1.0
    return l2_normalize(out)
