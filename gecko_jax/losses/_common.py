"""Helpers shared by the loss modules: safe norms, input checks, masks.

Kept free of anything but jax/numpy so that ``gecko_jax.losses`` stays importable without Flax model code; norms and
normalisation are :mod:`gecko_jax.vectors`' (shared with the encoders).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.vectors import l2_normalize, safe_norm  # noqa: F401  (the losses' spelling)

def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value known at trace time (Python number, numpy array or non-traced jax array)."""
    return not isinstance(x, jax.core.Tracer)


def check_float(name: str, x: Any, func: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{func}: `{name}` must be a floating-point array, got dtype {x.dtype}")
    return x


def check_int(name: str, x: Any, func: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{func}: `{name}` must hold integer class indices, got dtype {x.dtype}")
    return x


def check_labels_in_range(labels: jax.Array, num_classes: int, func: str, what: str = "labels") -> None:
    """Range check that only runs on concrete labels (inside ``jit`` the values are unknown)."""
    if is_concrete(labels) and labels.size:
        lo, hi = int(np.min(np.asarray(labels))), int(np.max(np.asarray(labels)))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{func}: `{what}` must lie in [0, {num_classes}), got values in [{lo}, {hi}]")


def check_where(where: Any, shape: tuple[int, ...], func: str) -> jax.Array | None:
    """Validate a per-example mask of ``shape`` (the loss's output shape) and return it as bool."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{func}: `where` must be a boolean mask, got dtype {where.dtype}")
    try:
        jnp.broadcast_shapes(where.shape, shape)
    except ValueError:
        raise ValueError(
            f"{func}: `where` must broadcast to the per-example shape {shape}, got {where.shape}") from None
    return jnp.broadcast_to(where, shape)


def apply_where(loss: jax.Array, where: jax.Array | None) -> jax.Array:
    """Zero the loss of masked-out examples (their gradient is zero too)."""
    if where is None:
        return loss
    return jnp.where(where, loss, jnp.zeros_like(loss))


def concrete_float_array(x: Any) -> np.ndarray | None:
    """``x`` as a numpy float array when it is concrete, else ``None`` (then range checks are skipped)."""
    if not is_concrete(x):
        return None
    return np.asarray(x, dtype=np.float64)
