"""Synthetic label noise for the robustness experiments: transition matrices and seeded corruption (numpy only).

Matches the generators of the gambler's-loss code (``data/utils.py``: ``noisify_multiclass_symmetric``,
``noisify_pairflip``) and the symmetric setting of the label-smoothing paper (PAPERS.md 3.1, 4.4).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["symmetric_transition", "pairflip_transition", "corrupt_labels", "check_transition"]


def symmetric_transition(num_classes: int, noise: float) -> np.ndarray:
    r"""Symmetric noise: keep the label with probability ``1 - noise``, else move to one of the other K-1 classes.

    .. math:: T_{ii} = 1 - n, \qquad T_{ij} = \frac{n}{K - 1}\ (i \ne j).

    Args:
      num_classes: K >= 2.
      noise: flip probability n in [0, 1].

    Returns:
      Row-stochastic ``[K, K]`` float64 matrix, ``T[i, j] = P(noisy = j | clean = i)``.

    Examples:
      >>> symmetric_transition(3, 0.3)
      array([[0.7 , 0.15, 0.15],
             [0.15, 0.7 , 0.15],
             [0.15, 0.15, 0.7 ]])
    """
    k = _check_k_noise(num_classes, noise, "symmetric_transition")
    t = np.full((k, k), noise / (k - 1), dtype=np.float64)
    np.fill_diagonal(t, 1.0 - noise)
    return t


def pairflip_transition(num_classes: int, noise: float) -> np.ndarray:
    r"""Pair-flip noise: class i moves to class (i + 1) mod K with probability ``noise``.

    .. math:: T_{ii} = 1 - n, \qquad T_{i, (i+1) \bmod K} = n.

    Args:
      num_classes: K >= 2.
      noise: flip probability n in [0, 1].

    Returns:
      Row-stochastic ``[K, K]`` float64 matrix.

    Examples:
      >>> pairflip_transition(3, 0.2)
      array([[0.8, 0.2, 0. ],
             [0. , 0.8, 0.2],
             [0.2, 0. , 0.8]])
    """
    k = _check_k_noise(num_classes, noise, "pairflip_transition")
    t = np.eye(k, dtype=np.float64) * (1.0 - noise)
    t[np.arange(k), (np.arange(k) + 1) % k] += noise
    return t


def corrupt_labels(
    labels: Any, transition: Any, *, seed: int | np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    r"""Draw a noisy label for every example from row ``labels[i]`` of ``transition``.

    .. math:: \tilde y_i \sim T_{y_i, \cdot}

    Deterministic given ``seed`` (a local ``np.random.default_rng``; no global RNG is touched).

    Args:
      labels: clean integer labels in ``[0, K)``, any shape.
      transition: row-stochastic ``[K, K]`` matrix, ``T[i, j] = P(noisy = j | clean = i)``.
      seed: seed for ``np.random.default_rng``.

    Returns:
      ``(noisy_labels, corrupted)``: noisy labels with the shape and dtype of ``labels``, and a boolean mask,
      same shape, True where the noisy label differs from the clean one.

    Examples:
      >>> noisy, flipped = corrupt_labels(np.zeros(1000, np.int64), symmetric_transition(10, 0.4), seed=0)
      >>> bool(0.35 < flipped.mean() < 0.45)
      True
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"corrupt_labels: `labels` must be integers, got dtype {labels.dtype}")
    t = check_transition(transition, "corrupt_labels")
    k = t.shape[0]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"corrupt_labels: `labels` must lie in [0, {k}) for a {k}x{k} transition, "
                         f"got values in [{labels.min()}, {labels.max()}]")
    rng = np.random.default_rng(seed)
    flat = labels.reshape(-1)
    u = rng.random(flat.shape[0])
    cdf = np.cumsum(t, axis=1)
    cdf[:, -1] = 1.0  # rounding must not leave u in (cdf[-1], 1) unassigned
    noisy = np.minimum((u[:, None] >= cdf[flat]).sum(axis=1), k - 1)
    noisy = noisy.astype(labels.dtype).reshape(labels.shape)
    return noisy, noisy != labels


def check_transition(transition: Any, func: str = "check_transition") -> np.ndarray:
    """Validate a row-stochastic square matrix and return it as float64."""
    t = np.asarray(transition, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 2:
        raise ValueError(f"{func}: `transition` must be a square [K, K] matrix with K >= 2, got shape {t.shape}")
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"{func}: `transition` entries must be finite and >= 0")
    sums = t.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-8):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"{func}: `transition` rows must sum to 1 (row {bad} sums to {sums[bad]:.6g})")
    return t


def _check_k_noise(num_classes: Any, noise: Any, func: str) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"{func}: `num_classes` must be an int >= 2, got {num_classes!r}")
    if not np.isscalar(noise) or not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"{func}: `noise` must be a float in [0, 1], got {noise!r}")
    return int(num_classes)
