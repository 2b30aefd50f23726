r"""Unit rows and Matryoshka truncation: the one definition the losses, the encoders and the evaluation share.

NumPy arrays in give NumPy float32 out (computed by :mod:`data_gen.vectors`, the code FRet's retrieval uses); JAX
arrays (traced ones included) give JAX arrays out, with a zero, not NaN, gradient at the origin. ``losses`` and
``models`` both import this module and never each other. JAX is not imported here: an array can only be a JAX array
once JAX is loaded, so NumPy-only callers (the evaluation behind ``gecko-jax --help``) stay light.

.. math:: \mathrm{normalize}(x) = x / \lVert x \rVert_2, \qquad \mathrm{truncate}(x, d) = x_{1:d} / \lVert x_{1:d} \rVert_2

Reference: Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.
"""
from __future__ import annotations

import sys

import numpy as np

from data_gen import vectors as np_vectors

# Below this squared norm a vector counts as zero; the double-``where`` keeps the gradient finite there.
_TINY = 1e-12


def _is_jax(x) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def safe_norm(x, axis: int = -1, keepdims: bool = False):
    """Euclidean norm with a zero (not NaN) gradient at the origin.

    ``jnp.linalg.norm`` has an infinite derivative at 0, which is exactly where a debiasing anchor term starts
    (the fine-tuned model equals its frozen copy at step 0), so the square root only sees safe values.
    """
    import jax.numpy as jnp  # loaded already: ``x`` is a JAX array

    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
    is_zero = sq <= _TINY
    return jnp.where(is_zero, 0.0, jnp.sqrt(jnp.where(is_zero, 1.0, sq)))


def l2_normalize(x, axis: int = -1, *, eps: float | None = None):
    """Scale ``x`` to unit L2 norm along ``axis``; all-zero vectors stay zero instead of becoming NaN.

    ``eps=None`` (the losses'): ``x / ||x||`` with a finite gradient at the origin (:func:`safe_norm`).
    ``eps > 0`` (the encoders'): ``x / max(||x||, eps)``, ``torch.nn.functional.normalize``'s formula, so exported
    models embed as in PyTorch. Forward values agree; the two differ in the last bits of a gradient.
    JAX in (traced too), JAX out; anything else (NumPy, lists) NumPy float32 out (:func:`data_gen.vectors.l2_normalize`,
    ``max(||x||, 1e-12)``).
    """
    if not _is_jax(x):
        return np_vectors.l2_normalize(x, axis=axis)
    import jax.numpy as jnp  # loaded already: ``x`` is a JAX array

    if eps is not None:
        return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True)), eps)
    norm = safe_norm(x, axis=axis, keepdims=True)
    return x / jnp.where(norm > 0, norm, 1.0)


def truncate(x, dims: int | None, axis: int = -1, *, name: str = "dims", eps: float | None = None):
    r"""Matryoshka truncation: the first ``dims`` coordinates along ``axis``, L2-renormalised.

    Args:
      x: embeddings ``[..., D]`` (feature axis ``axis``), NumPy or JAX.
      dims: ``1 <= dims <= D``; None keeps every coordinate (rows are still renormalised).
      axis: the feature axis.
      name: what the caller calls ``dims``, for the error message.
      eps: as in :func:`l2_normalize`.

    Returns:
      ``[..., dims]``, unit norm along ``axis`` (all-zero prefixes stay zero); NumPy float32 for NumPy input.

    Example:
      >>> truncate(np.array([[3., 4., 12.]]), 2)
      array([[0.6, 0.8]], dtype=float32)
    """
    if dims is not None:
        full = np.shape(x)[axis]
        if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or not 1 <= dims <= full:
            raise ValueError(f"{name} must be an int in [1, {full}] (the size of the embedding axis), got {dims!r}")
        if _is_jax(x):
            import jax  # loaded already: ``x`` is a JAX array

            x = jax.lax.slice_in_dim(x, 0, int(dims), axis=axis)
        else:
            x = np.asarray(x, np.float32)
            index = [slice(None)] * x.ndim
            index[axis] = slice(0, int(dims))
            x = x[tuple(index)]
    return l2_normalize(x, axis=axis, eps=eps)
