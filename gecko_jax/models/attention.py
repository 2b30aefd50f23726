"""Multi-head scaled dot-product attention shared by the encoder backbones, written for XLA:CPU.

    out = attention(q, k, v, allowed)          # q, k, v: [B, L, heads, head_dim]; allowed: bool [B, 1|heads, 1|L, L]

Mathematically ``softmax(q k^T / sqrt(d) masked) v``; the formulation is chosen for speed on CPU (profiled on a
256-token MiniLM row, BENCHMARKS.md "Encode speed: profile"):

- **Heads first, once.** q, k and v are laid out ``[B, heads, L, d]`` with one transpose each, so both batched
  matmuls run on contiguous per-head blocks (the ``bqhd`` einsum form made XLA insert layout copies around them).
- **Boolean mask, no float bias tensor.** ``where(allowed, s, -inf)`` inside the softmax fusion instead of adding a
  ``finfo.min`` bias that XLA broadcast to a ``[B, heads, L, L]`` float buffer per call.
- **Deferred normalisation.** ``exp(s - max)`` goes straight into the second matmul and the ``[B, heads, L, d]``
  result is divided by the row sums, instead of normalising the ``[B, heads, L, L]`` probabilities first: one pass
  over the big tensor less. Dropout (training) scales ``exp`` elementwise, which commutes with the division.

A ``lax.map`` over batch rows (each row's scores in cache) measured the same as this batched form inside the whole
model, so the batched form stays: it is also the one gradients and accelerators handle best.

A fully masked query row (padding rows, batch filler) gives zeros, not NaN: its max is ``-inf`` and is replaced by 0.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _core(q, k, v, allowed, dropout: Callable | None, bias=None):
    """``q, k, v``: ``[..., heads, L, d]`` (q already scaled); ``allowed`` (and ``bias``, if any) broadcastable to
    ``[..., heads, L, L]``."""
    s = jnp.einsum("...qd,...kd->...qk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    s = jnp.where(allowed, s, -jnp.inf)
    # Any shift leaves softmax unchanged, so the max carries no gradient (and costs no backward pass).
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # fully masked row: exp(-inf) = 0 everywhere, no NaN
    e = jnp.exp(s - m)
    den = jnp.sum(e, axis=-1, keepdims=True)
    if dropout is not None:
        e = dropout(e)
    out = jnp.einsum("...qk,...kd->...qd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out / jnp.maximum(den, jnp.finfo(jnp.float32).tiny)


def attention(q, k, v, allowed, *, dropout: Callable | None = None, bias=None):
    """Multi-head attention: ``[B, L, heads, d]`` x3 -> ``float32[B, L, heads * d]``.

    Args:
      q, k, v: ``[B, L, heads, d]`` in the compute dtype (q is scaled by ``1/sqrt(d)`` here).
      allowed: ``bool`` broadcastable to ``[B, heads, L, L]`` (e.g. ``[B, 1, 1, L]`` padding mask or
        ``[B, 1, L, L]`` block-diagonal packing mask): True where query ``i`` may attend to key ``j``.
      dropout: elementwise function applied to the unnormalised attention weights (training), or None.
      bias: optional ``float32`` additive scores broadcastable to ``[B, heads, L, L]`` (MPNet's relative position
        bias); added before the mask. None (BERT, RoBERTa): no float ``[.., L, L]`` buffer at all.

    Returns:
      ``float32[B, L, heads * d]``.
    """
    b, length, heads, d = q.shape
    q = q * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
    q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))  # [B, heads, L, d]
    out = _core(q, k, v, allowed, dropout, bias)
    return jnp.transpose(out, (0, 2, 1, 3)).reshape(b, length, heads * d)


def allowed_mask(attention_mask, packed_ids=None):
    """Boolean attention mask: ``[B, 1, 1, L]`` from a padding mask, or ``[B, 1, L, L]`` block-diagonal from
    ``packed_ids`` (several sequences per row, numbered 1, 2, ...; 0 = padding)."""
    if packed_ids is None:
        return (attention_mask > 0)[:, None, None, :]
    return ((packed_ids[:, :, None] == packed_ids[:, None, :]) & (packed_ids[:, None, :] > 0))[:, None]
