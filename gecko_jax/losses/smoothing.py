"""Label smoothing in the p-parameterisation (mass on the observed label), its forward-corrected variant, and the
optimal / noise-agnostic smoothing levels for symmetric label noise."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.losses._common import (apply_where, check_float, check_int, check_labels_in_range, check_where,
                                      concrete_float_array)

__all__ = [
    "smoothed_cross_entropy",
    "forward_corrected_cross_entropy",
    "optimal_smoothing",
    "agnostic_smoothing",
    "p_to_epsilon",
    "epsilon_to_p",
]


def smoothed_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    p: float | jax.Array,
    where: jax.Array | None = None,
) -> jax.Array:
    r"""Cross-entropy against a smoothed target that keeps mass ``p`` on the observed label.

    .. math::
        \tilde y_k = p\,1[k = y] + \frac{1 - p}{K - 1}\,1[k \ne y], \qquad
        \ell(x, y) = -\sum_{k=1}^{K} \tilde y_k \log \mathrm{softmax}(f(x))_k .

    ``p = 1`` is plain cross-entropy and ``p = 1/K`` the uniform target. This is the same family as
    ``optax.smooth_labels`` with :math:`\varepsilon = (1 - p)K/(K - 1)` (see :func:`p_to_epsilon`); the
    p-form is the paper's, where :math:`p^*(r)` (:func:`optimal_smoothing`) is stated.

    Args:
      logits: unnormalised scores, shape ``[..., K]``, ``K >= 2``.
      labels: observed integer labels in ``[0, K)``, shape ``[...]``.
      p: mass on the observed label, in ``[0, 1]``; a scalar or an array broadcastable to ``labels``.
      where: optional boolean mask of valid examples, shape ``[...]`` (one flag per example, unlike
        ``optax.softmax_cross_entropy``'s class-axis ``where``); masked examples have loss 0.

    Returns:
      Per-example losses, shape ``[...]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import smoothed_cross_entropy
      >>> loss = smoothed_cross_entropy(jnp.array([[2.0, 0.0, 0.0]]), jnp.array([0]), p=0.8)
      >>> print(f"{float(loss[0]):.4f}")
      0.6395

    References:
      Chen, Ziyin, Wang, Liang, "An Investigation of how Label Smoothing Affects Generalization",
      arXiv:2010.12648 (2020); code: chenblair/optimal_label_smoothing ``loss.py::smoothing_loss``.
    """
    func = "smoothed_cross_entropy"
    logits, labels, k = _check_logits_labels(logits, labels, func)
    _check_p(p, k, func, lower=0.0)
    where = check_where(where, labels.shape, func)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    ls_y = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    ls_sum = jnp.sum(log_probs, axis=-1)
    off = (1.0 - p) / (k - 1)
    # sum_k y~_k log s_k = p log s_y + off * (sum_k log s_k - log s_y): no [..., K] target is materialised.
    loss = -(p * ls_y + off * (ls_sum - ls_y))
    return apply_where(loss, where)


def forward_corrected_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    p: float | jax.Array | None = None,
    transition: jax.Array | None = None,
    where: jax.Array | None = None,
) -> jax.Array:
    r"""Forward-corrected cross-entropy: the prediction goes through the label-noise channel :math:`T` first.

    .. math::
        \ell(x, y) = -\log\big[(\mathrm{softmax}(f(x))\, T)_y\big]
                   = -\log \sum_i \mathrm{softmax}(f(x))_i\, T_{iy},

    with :math:`T_{ij} = P(\text{observed } j \mid \text{clean } i)` (rows sum to 1). Give either ``p``, the
    symmetric channel :math:`(T_p)_{ii} = p,\ (T_p)_{ij} = (1 - p)/(K - 1)`, computed as
    :math:`-\log\big(c + (p - c)\,s_y\big)` with :math:`c = (1-p)/(K-1)` (the label-smoothing paper's
    "fsmoothing"), or any ``transition`` matrix (e.g. ``gecko_jax.data.noise.pairflip_transition``), computed as a
    ``logsumexp`` of :math:`\log s_i + \log T_{iy}` (zero entries are fine). ``p = 1`` / ``T = I`` is plain
    cross-entropy (Patrini et al. 2017). Both paths work in log space and are stable for large logits.

    Args:
      logits: unnormalised scores, shape ``[..., K]``.
      labels: observed integer labels in ``[0, K)``, shape ``[...]``.
      p: diagonal of :math:`T_p` in ``(0, 1]`` (scalar or broadcastable to ``labels``). For symmetric noise
        rate ``n`` the true channel is ``p = 1 - n``.
      transition: row-stochastic matrix ``[K, K]`` (or ``[..., K, K]`` broadcastable to the batch), instead of
        ``p``. Concrete matrices are checked (non-negative, rows summing to 1 within 1e-4).
      where: optional boolean mask of valid examples, shape ``[...]``.

    Returns:
      Per-example losses, shape ``[...]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import forward_corrected_cross_entropy
      >>> forward_corrected_cross_entropy(jnp.array([[2.0, 0.0, 0.0]]), jnp.array([0]), p=0.8).round(4)
      Array([0.4294], dtype=float32)
      >>> t = jnp.array([[0.8, 0.2, 0.0], [0.0, 0.8, 0.2], [0.2, 0.0, 0.8]])     # pair-flip, n = 0.2
      >>> loss = forward_corrected_cross_entropy(jnp.array([[2.0, 0.0, 0.0]]), jnp.array([1]), transition=t)
      >>> print(f"{float(loss[0]):.4f}")
      1.4163

    References:
      arXiv:2010.12648; code: chenblair/optimal_label_smoothing ``loss.py::fsmoothing_loss``; Patrini et al.,
      "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach", CVPR 2017.
    """
    func = "forward_corrected_cross_entropy"
    logits, labels, k = _check_logits_labels(logits, labels, func)
    if (p is None) == (transition is None):
        raise ValueError(f"{func}: give exactly one of `p` (symmetric channel) and `transition` (a [K, K] matrix)")
    where = check_where(where, labels.shape, func)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    if transition is not None:
        t = _check_transition(transition, k, func)
        # log sum_i s_i T[i, y]: gather column y of T for every example, then logsumexp over i.
        cols = jnp.take_along_axis(jnp.broadcast_to(t, labels.shape + (k, k)),
                                   labels[..., None, None], axis=-1)[..., 0]
        log_t = jnp.log(jnp.where(cols > 0, cols, 1.0))
        loss = -jax.nn.logsumexp(jnp.where(cols > 0, log_probs + log_t, -jnp.inf), axis=-1)
        return apply_where(loss, where)
    _check_p(p, k, func, lower=0.0, strict_lower=True)
    ls_y = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    p = jnp.asarray(p, dtype=log_probs.dtype)
    c = (1.0 - p) / (k - 1)
    up = p >= c
    # p >= c (the usual case): log(c + (p-c) s_y) = logaddexp(log c, log(p-c) + log s_y), exact for p = 1 where
    # log c = -inf. p < c (an anti-correlated channel): log c + log1p(-(c-p)/c * s_y). Each branch gets harmless
    # inputs where it is not selected, so neither leaks a NaN gradient through the `where`.
    up_val = jnp.logaddexp(jnp.log(c), jnp.log(jnp.where(up, p - c, 1.0)) + ls_y)
    ratio = jnp.where(up, 0.0, (c - p) / jnp.where(up, 1.0, c))
    down_val = jnp.log(jnp.where(up, 1.0, c)) + jnp.log1p(-ratio * jnp.exp(ls_y))
    loss = -jnp.where(up, up_val, down_val)
    return apply_where(loss, where)


def _check_transition(transition: Any, k: int, func: str) -> jax.Array:
    t = check_float("transition", transition, func)
    if t.ndim < 2 or t.shape[-2:] != (k, k):
        raise ValueError(f"{func}: `transition` must have shape [..., K, K] with K = {k}, got {t.shape}")
    v = concrete_float_array(t)
    if v is not None and (np.any(v < 0) or np.any(np.abs(v.sum(-1) - 1) > 1e-4) or np.any(~np.isfinite(v))):
        raise ValueError(f"{func}: `transition` must be row-stochastic (entries >= 0, rows summing to 1), "
                         f"got row sums {np.round(v.sum(-1), 4).tolist()}")
    return t


def optimal_smoothing(noise_rate: float | np.ndarray, num_classes: int) -> float | np.ndarray:
    r"""Predicted optimal smoothing :math:`p^*(r)` for symmetric label noise.

    .. math:: p^*(r) = \frac{1 - 2r + K r^2}{K - 1} = r^2 + \frac{(1 - r)^2}{K - 1}, \qquad r = 1 - n,

    the probability that two independent noisy labels of the same input agree; valid for :math:`r \ge 1/K`.
    :math:`p^*(1) = 1` (no smoothing) and :math:`p^*(1/K) = 1/K` (uniform).

    Args:
      noise_rate: symmetric noise rate :math:`n \in [0, 1 - 1/K]` (a float or numpy array).
      num_classes: :math:`K \ge 2`.

    Returns:
      :math:`p^*` with the shape of ``noise_rate`` (a Python float for a scalar input).

    Examples:
      >>> from gecko_jax.losses import optimal_smoothing
      >>> round(optimal_smoothing(0.2, 10), 3)
      0.644

    References:
      arXiv:2010.12648; code: chenblair/optimal_label_smoothing ``main.py --optimal_smoothing``.
    """
    k = _check_num_classes(num_classes, "optimal_smoothing")
    n = np.asarray(noise_rate, dtype=np.float64)
    if np.any(~np.isfinite(n)) or np.any(n < 0) or np.any(n > 1):
        raise ValueError(f"optimal_smoothing: `noise_rate` must lie in [0, 1], got {noise_rate!r}")
    r = 1.0 - n
    if np.any(r < 1.0 / k - 1e-12):
        raise ValueError(
            f"optimal_smoothing: clean rate r = 1 - noise_rate must be >= 1/K = {1.0 / k:.4g} (beyond that the "
            f"noisy label is less likely to be right than a uniform guess), got noise_rate={noise_rate!r}")
    p = (1.0 - 2.0 * r + k * r * r) / (k - 1)
    return float(p) if p.ndim == 0 else p


def agnostic_smoothing(num_classes: int) -> float:
    r"""Noise-rate-agnostic smoothing default :math:`p_{\mathrm{agn}} = (K + 2) / (3K)`.

    .. math:: p_{\mathrm{agn}} = \frac{K + 2}{3K} = \frac{1}{1 - 1/K}\int_{1/K}^{1} p^*(r)\, dr,

    the average of :func:`optimal_smoothing` over a clean rate uniform on :math:`[1/K, 1]` (0.4 for K = 10).

    Args:
      num_classes: :math:`K \ge 2`.

    Returns:
      :math:`p_{\mathrm{agn}}` as a float.

    Examples:
      >>> from gecko_jax.losses import agnostic_smoothing
      >>> agnostic_smoothing(10)
      0.4

    References:
      arXiv:2010.12648; code: chenblair/optimal_label_smoothing commit 84424b9 ``--agnostic_smoothing``.
    """
    k = _check_num_classes(num_classes, "agnostic_smoothing")
    return (k + 2) / (3 * k)


def p_to_epsilon(p: Any, num_classes: int) -> Any:
    r"""Convert the paper's ``p`` (mass on the observed label) to ``optax.smooth_labels``' ``alpha`` (ε).

    .. math:: \varepsilon = \frac{(1 - p) K}{K - 1}

    so that ``optax.smooth_labels(one_hot, eps)`` equals the target of :func:`smoothed_cross_entropy`.

    Args:
      p: mass on the observed label (scalar or array).
      num_classes: :math:`K \ge 2`.

    Returns:
      ε with the shape of ``p``.

    Examples:
      >>> from gecko_jax.losses import p_to_epsilon
      >>> round(p_to_epsilon(0.91, 10), 6)
      0.1
    """
    k = _check_num_classes(num_classes, "p_to_epsilon")
    return (1.0 - p) * k / (k - 1)


def epsilon_to_p(epsilon: Any, num_classes: int) -> Any:
    r"""Convert ``optax.smooth_labels``' ``alpha`` (ε) to the paper's ``p``: :math:`p = 1 - \varepsilon +
    \varepsilon / K`.

    Args:
      epsilon: the usual label-smoothing strength (scalar or array).
      num_classes: :math:`K \ge 2`.

    Returns:
      ``p`` with the shape of ``epsilon``.

    Examples:
      >>> from gecko_jax.losses import epsilon_to_p
      >>> round(epsilon_to_p(0.1, 10), 6)
      0.91
    """
    k = _check_num_classes(num_classes, "epsilon_to_p")
    return 1.0 - epsilon + epsilon / k


def _check_num_classes(num_classes: Any, func: str) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"{func}: `num_classes` must be an int >= 2, got {num_classes!r}")
    return int(num_classes)


def _check_logits_labels(logits, labels, func):
    logits = check_float("logits", logits, func)
    labels = check_int("labels", labels, func)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{func}: `logits` must have shape [..., K] with K >= 2, got {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{func}: `labels` must have shape {logits.shape[:-1]} (logits without the class axis), "
                         f"got {labels.shape}")
    k = logits.shape[-1]
    check_labels_in_range(labels, k, func)
    return logits, labels, k


def _check_p(p: Any, k: int, func: str, *, lower: float, strict_lower: bool = False) -> None:
    v = concrete_float_array(p)
    if v is None:
        return
    bad = (v <= lower) if strict_lower else (v < lower)
    if np.any(bad) or np.any(v > 1) or np.any(~np.isfinite(v)):
        lo = "(" if strict_lower else "["
        raise ValueError(f"{func}: `p` (mass on the observed label) must lie in {lo}{lower}, 1], got {p!r}")
