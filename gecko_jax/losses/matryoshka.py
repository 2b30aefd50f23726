"""Matryoshka Representation Learning (MRL): evaluate an embedding loss on nested prefixes of the embedding."""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax import vectors
from gecko_jax.losses._common import check_float

__all__ = ["matryoshka", "truncate"]

# Keyword arguments that hold embeddings (truncated like the positional arrays). Anything else, e.g. ``ids`` or
# ``where``, passes through unchanged.
EMBEDDING_KWARGS = ("negatives", "groups", "neutral", "neutral_ref", "query", "positive")


def truncate(x: jax.Array, d: int, axis: int = -1) -> jax.Array:
    r"""First ``d`` dimensions of ``x`` along ``axis``, L2-renormalised.

    .. math:: \mathrm{truncate}(x, d) = x_{1:d} / \|x_{1:d}\|_2

    Args:
      x: embeddings, shape ``[..., D]`` (feature axis ``axis``).
      d: number of leading dimensions to keep, ``1 <= d <= D``.
      axis: the feature axis.

    Returns:
      Array of shape ``[..., d]``, unit norm along ``axis`` (all-zero prefixes stay zero).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import truncate
      >>> truncate(jnp.array([3.0, 4.0, 12.0]), 2)
      Array([0.6, 0.8], dtype=float32)

    References:
      Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.
    """
    x = check_float("x", x, "truncate")
    if x.ndim == 0:
        raise ValueError("truncate: `x` must have a feature axis, got a scalar")
    return vectors.truncate(x, d, axis=axis, name="truncate: `d`")


def matryoshka(
    loss_fn: Callable[..., jax.Array],
    dims: Sequence[int] = (768, 256),
    weights: Sequence[float] | None = None,
) -> Callable[..., jax.Array]:
    r"""Wrap an embedding loss so it is evaluated on several nested prefixes of the embeddings and summed.

    .. math:: L_{\mathrm{MRL}}(E) = \sum_{d \in \mathrm{dims}} w_d\, L(\mathrm{truncate}(E, d))

    The wrapped function has the signature of ``loss_fn``. Which arguments are embeddings (and get truncated):
    every *positional* argument that is a floating-point array with at least one axis, plus the keyword
    arguments named in ``EMBEDDING_KWARGS`` (``negatives``, ``groups``, ``neutral``, ``neutral_ref``, ``query``,
    ``positive``) when they are arrays. Everything else (``ids``, ``where``, ``temperature``, ...) is passed through
    unchanged, so pass non-embedding floating-point arrays by keyword. The feature axis is the wrapped call's
    ``axis`` keyword when given, else the last axis.

    Args:
      loss_fn: an embedding loss returning per-example values, e.g. :func:`gecko_jax.losses.gecko_contrastive`.
      dims: the prefix sizes; each must not exceed the embedding size (checked at call time). Gecko uses
        ``(768, 256)``.
      weights: one non-negative weight per entry of ``dims`` (MRL default and ours: all 1; Gecko's are not
        published).

    Returns:
      A function with ``loss_fn``'s signature returning :math:`\sum_d w_d L_d`, per example (same shape as
      ``loss_fn``'s output).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gecko_jax.losses import gecko_contrastive, matryoshka
      >>> q, p = jax.random.normal(jax.random.key(0), (2, 4, 8))
      >>> mrl = matryoshka(gecko_contrastive, dims=(8, 4))
      >>> mrl(q, p, temperature=0.1).shape
      (4,)

    References:
      Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022; Gecko (arXiv:2403.20327) Sec. 3.
    """
    if not callable(loss_fn):
        raise TypeError(f"matryoshka: `loss_fn` must be callable, got {type(loss_fn).__name__}")
    dims = tuple(dims)
    if not dims or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
        raise ValueError(f"matryoshka: `dims` must be a non-empty sequence of positive ints, got {dims!r}")
    if weights is None:
        weights = (1.0,) * len(dims)
    weights = tuple(float(w) for w in weights)
    if len(weights) != len(dims):
        raise ValueError(f"matryoshka: `weights` needs one entry per dim ({len(dims)}), got {len(weights)}")
    if any(w < 0 for w in weights):
        raise ValueError(f"matryoshka: `weights` must be non-negative, got {weights!r}")

    @functools.wraps(loss_fn)
    def wrapped(*args: Any, **kwargs: Any) -> jax.Array:
        axis = kwargs.get("axis", -1)
        total = None
        for d, w in zip(dims, weights):
            t_args = [truncate(a, d, axis=axis) if _is_embedding(a) else a for a in args]
            t_kwargs = {k: (truncate(v, d, axis=axis) if k in EMBEDDING_KWARGS and _is_embedding(v)
                            else v) for k, v in kwargs.items()}
            term = w * loss_fn(*t_args, **t_kwargs)
            total = term if total is None else total + term
        return total

    return wrapped


def _is_embedding(a: Any) -> bool:
    return (isinstance(a, (jax.Array, np.ndarray)) and a.ndim >= 1
            and jnp.issubdtype(a.dtype, jnp.floating))

