"""Vector operations on NumPy arrays shared by data_gen and gecko_jax: unit rows and exact top-k.

NumPy only (the bottom layer: data_gen imports no ML framework, and ``gecko_jax.vectors`` hands NumPy arrays here), so
FRet's retrieval and gecko_jax's evaluation normalise and rank with the same code.
"""
from __future__ import annotations

import numpy as np


def l2_normalize(x, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    r"""``x / max(||x||_2, eps)`` along ``axis``, as float32 (zero rows stay zero).

    Example:
      >>> l2_normalize(np.array([[3.0, 4.0]])).tolist()
      [[0.6000000238418579, 0.800000011920929]]
    """
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def exact_topk(queries, docs, k: int, *, block_size: int = 8192,
               dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact top-k by inner product, scanning ``docs`` in blocks so memory stays ``O(q * (block + k))``.

    .. math:: \mathrm{top}_k(j \mapsto \langle q, d_j \rangle), \quad \text{ties broken by the smaller index } j.

    Args:
      queries: ``[q, d]`` float array.
      docs: ``[n, d]`` float array (kept as float32).
      k: neighbours per query, ``1 <= k``; capped at ``n``.
      block_size: documents per block.
      dtype: the products' precision. float64 (default, FRet) makes a row's scores independent of how many other
        queries share the call, so a resumed run equals an uninterrupted one (a float32 GEMM rounds a row
        differently with the batch size); float32 is what the evaluation uses (its published figures).

    Returns:
      ``(scores [q, k'] float32, indices [q, k'] int64)``, best first, ``k' = min(k, n)`` (the order of
      ``jax.lax.top_k``).

    Example:
      >>> s, idx = exact_topk(np.eye(3), np.eye(3), 2)
      >>> idx[:, 0].tolist()
      [0, 1, 2]
    """
    queries = np.asarray(queries, dtype=dtype)
    docs = np.asarray(docs, dtype=np.float32)
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"exact_topk: queries [q, d] and docs [n, d] must share d, got {queries.shape} and "
                         f"{docs.shape}")
    if k < 1 or block_size < 1:
        raise ValueError(f"exact_topk: k and block_size must be >= 1, got k={k}, block_size={block_size}")
    n = docs.shape[0]
    k = min(k, n)
    best_s = np.full((queries.shape[0], 0), -np.inf, dtype=dtype)
    best_i = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for start in range(0, n, block_size):
        s = queries @ docs[start:start + block_size].astype(dtype).T
        i = np.broadcast_to(np.arange(start, start + s.shape[1], dtype=np.int64), s.shape)
        cat_s = np.concatenate([best_s, s], axis=1)
        cat_i = np.concatenate([best_i, i], axis=1)
        # lexsort: last key is primary -> by score descending, then index ascending (deterministic ties).
        order = np.lexsort((cat_i, -cat_s), axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, order, axis=1)
        best_i = np.take_along_axis(cat_i, order, axis=1)
    return best_s.astype(np.float32), best_i
