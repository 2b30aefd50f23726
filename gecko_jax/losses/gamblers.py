"""Gambler's loss with an abstention output, its payoff heuristics and the analytical early-stopping threshold."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.losses._common import (apply_where, check_float, check_int, check_labels_in_range, check_where,
                                      concrete_float_array)

__all__ = ["gamblers", "auto_payoff", "gamblers_stop_threshold", "gamblers_predict", "PAYOFF_METHODS"]

PAYOFF_METHODS = ("euc", "mid", "exp")


def gamblers(
    logits: jax.Array,
    labels: jax.Array,
    *,
    payoff: float | jax.Array,
    where: jax.Array | None = None,
    eps: float = 1e-10,
    allow_nll_payoff: bool = False,
) -> jax.Array:
    r"""Gambler's loss: cross-entropy where the model may bet part of its mass on "abstain" at payoff ``o``.

    With :math:`m + 1` outputs, :math:`p = \mathrm{softmax}(f(x))` over all of them, :math:`p_{m+1}` the
    abstention score and payoff :math:`o`:

    .. math:: \ell_o(x, y) = -\log\Big(p_y(x) + \frac{p_{m+1}(x)}{o} + \epsilon\Big), \qquad 1 < o \le m.

    Smaller :math:`o` makes abstaining cheaper (stronger robustness to label noise); for :math:`o > m` abstaining
    is never worthwhile and the loss behaves like cross-entropy on the :math:`m` classes (the authors' code uses
    :math:`o = 1000 + m` as "off", e.g. for warm-up epochs: pass ``allow_nll_payoff=True`` for that). A model
    that puts all mass on abstain pays :math:`\log o`. Computed in log space
    (``logaddexp``), so large logits are safe; :math:`\epsilon` reproduces the authors' ``1e-10`` (0 disables it).

    Args:
      logits: unnormalised scores, shape ``[..., m + 1]``, ``m >= 2``; the last column is abstain.
      labels: integer labels in ``[0, m)``, shape ``[...]``.
      payoff: :math:`o`, a scalar or a per-example array broadcastable to ``labels`` (e.g. from
        :func:`auto_payoff`). Concrete (Python / numpy) values are validated to satisfy ``1 < o <= m``; jax
        arrays are taken as computed per-example payoffs and not checked (``auto_payoff``'s ``'euc'`` lies in
        ``[1, m]`` by construction).
      where: optional boolean mask of valid examples, shape ``[...]``; masked examples have loss 0.
      eps: the constant added inside the log (``>= 0``).
      allow_nll_payoff: accept concrete ``o > m`` (abstention switched off).

    Returns:
      Per-example losses, shape ``[...]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import gamblers
      >>> logits = jnp.array([[0.0, 0.0, 0.0, 50.0]])    # m = 3, all mass on abstain
      >>> gamblers(logits, jnp.array([1]), payoff=2.5).round(4)   # log(2.5)
      Array([0.9163], dtype=float32)

    References:
      Ziyin et al., "Learning Not to Learn in the Presence of Noisy Labels", arXiv:2002.06541 (ICML 2020);
      Ziyin et al., "Deep Gamblers: Learning to Abstain with Portfolio Theory", NeurIPS 2019; code:
      chenblair/noisy-label-gamblers ``main.py::train``.
    """
    func = "gamblers"
    logits, labels, m = _check_gambler_inputs(logits, labels, func)
    _check_payoff(payoff, m, func, allow_nll_payoff)
    e = concrete_float_array(eps)
    if e is not None and not (e.ndim == 0 and e >= 0):
        raise ValueError(f"{func}: `eps` must be a scalar >= 0, got {eps!r}")
    where = check_where(where, labels.shape, func)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    ls_y = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    ls_abstain = log_probs[..., -1]
    log_bet = jnp.logaddexp(ls_y, ls_abstain - jnp.log(jnp.asarray(payoff, dtype=log_probs.dtype)))
    log_bet = jnp.logaddexp(log_bet, jnp.log(jnp.asarray(eps, dtype=log_probs.dtype)))
    return apply_where(-log_bet, where)


def auto_payoff(logits: jax.Array, method: str = "euc") -> jax.Array:
    r"""Per-example payoff from the current prediction ("auto-scheduling"; no gradient flows through it).

    With :math:`p = \mathrm{softmax}(f(x))` over the :math:`m + 1` outputs and :math:`a = p_{m+1}`:

    .. math::
        o_{\mathrm{euc}} = \frac{(1 - a)^2}{\sum_{j \le m} p_j^2} = \frac{1}{\sum_j q_j^2},\ q_j = \frac{p_j}{1-a},
        \qquad o_{\mathrm{mid}} = \frac{1 - a}{\sum_{j \le m} p_j^2},
        \qquad o_{\mathrm{exp}} = \exp\Big(-\frac{\sum_{j \le m} p_j \log p_j}{\sum_{j \le m} p_j}\Big).

    ``euc`` (the paper's default) is the inverse Simpson index of the class bet, the "effective number of
    classes" in :math:`[1, m]`. The authors' ``1e-10`` guards are kept (numerator of ``euc``/``mid``, inside the
    log and sums of ``exp``).

    Args:
      logits: unnormalised scores, shape ``[..., m + 1]`` (last = abstain).
      method: ``"euc"``, ``"mid"`` or ``"exp"``.

    Returns:
      Payoffs, shape ``[...]``, wrapped in ``jax.lax.stop_gradient``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import auto_payoff
      >>> auto_payoff(jnp.array([[0.0, 0.0, 0.0, -1e9]]), "euc").round(4)   # uniform over 3 classes
      Array([3.], dtype=float32)

    References:
      arXiv:2002.06541; code: chenblair/noisy-label-gamblers ``main.py`` (``--lambda_type``).
    """
    func = "auto_payoff"
    logits = check_float("logits", logits, func)
    if logits.ndim < 1 or logits.shape[-1] < 3:
        raise ValueError(f"{func}: `logits` must have shape [..., m + 1] with m >= 2 classes, got {logits.shape}")
    if method not in PAYOFF_METHODS:
        raise ValueError(f"{func}: `method` must be one of {PAYOFF_METHODS}, got {method!r}")
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)
    classes, abstain = probs[..., :-1], probs[..., -1]
    if method == "euc":
        o = (jnp.square(1.0 - abstain) + 1e-10) / jnp.sum(jnp.square(classes), axis=-1)
    elif method == "mid":
        o = ((1.0 - abstain) + 1e-10) / jnp.sum(jnp.square(classes), axis=-1)
    else:
        cols = classes + 1e-10
        o = jnp.exp(-(jnp.sum(cols * jnp.log(cols), axis=-1) + 1e-10) / jnp.sum(cols, axis=-1))
    return jax.lax.stop_gradient(o)


def gamblers_stop_threshold(noise_rate: float | np.ndarray, payoff: float | np.ndarray) -> float | np.ndarray:
    r"""Analytical early-stopping threshold :math:`L^*` of the gambler's loss under symmetric noise.

    .. math:: L^* = -\Big[r \log r + (1 - r)\log\frac{1 - r}{o - 1}\Big], \qquad r = 1 - n > 1/o.

    The training loss plateaus at :math:`L^*` once the clean signal is learned while the corrupted points are
    bet on abstention (optimal abstention :math:`b = o(1-r)/(o-1)`); stop at the first epoch whose mean training
    loss falls below it, since going lower means memorising noisy labels.

    Args:
      noise_rate: symmetric noise rate :math:`n \in [0, 1)` (float or numpy array).
      payoff: the fixed payoff :math:`o > 1` used in training.

    Returns:
      :math:`L^*` with the broadcast shape of the inputs (a Python float for scalars).

    Examples:
      >>> from gecko_jax.losses import gamblers_stop_threshold
      >>> round(gamblers_stop_threshold(0.5, 9.9), 3)
      1.786

    References:
      arXiv:2002.06541; code: chenblair/noisy-label-gamblers ``main.py::main`` (``--early_stopping``).
    """
    func = "gamblers_stop_threshold"
    n = np.asarray(noise_rate, dtype=np.float64)
    o = np.asarray(payoff, dtype=np.float64)
    if np.any(~np.isfinite(n)) or np.any(n < 0) or np.any(n >= 1):
        raise ValueError(f"{func}: `noise_rate` must lie in [0, 1), got {noise_rate!r}")
    if np.any(~np.isfinite(o)) or np.any(o <= 1):
        raise ValueError(f"{func}: `payoff` must be > 1, got {payoff!r}")
    r = 1.0 - n
    if np.any(r * o <= 1):
        raise ValueError(
            f"{func}: needs clean rate r = 1 - noise_rate > 1/payoff (else the optimal abstention exceeds 1 and "
            f"the clean signal is not learnable), got noise_rate={noise_rate!r}, payoff={payoff!r}")
    # 0 log 0 = 0 at r = 1 (no noise): the threshold is then 0.
    noisy = np.where(r < 1, (1 - r) * np.log(np.where(r < 1, (1 - r), 1.0) / (o - 1)), 0.0)
    out = -(r * np.log(r) + noisy)
    return float(out) if out.ndim == 0 else out


def gamblers_predict(logits: jax.Array) -> jax.Array:
    r"""Class prediction that ignores the abstain column: :math:`\arg\max_{j \le m} f(x)_j`.

    Args:
      logits: unnormalised scores, shape ``[..., m + 1]`` (last = abstain).

    Returns:
      Integer predictions in ``[0, m)``, shape ``[...]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gecko_jax.losses import gamblers_predict
      >>> gamblers_predict(jnp.array([[0.1, 2.0, 0.3, 9.0]]))
      Array([1], dtype=int32)
    """
    logits = check_float("logits", logits, "gamblers_predict")
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"gamblers_predict: `logits` must have shape [..., m + 1], got {logits.shape}")
    return jnp.argmax(logits[..., :-1], axis=-1)


def _check_gambler_inputs(logits, labels, func):
    logits = check_float("logits", logits, func)
    labels = check_int("labels", labels, func)
    if logits.ndim < 1 or logits.shape[-1] < 3:
        raise ValueError(f"{func}: `logits` must have shape [..., m + 1] with m >= 2 classes plus abstain, "
                         f"got {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{func}: `labels` must have shape {logits.shape[:-1]}, got {labels.shape}")
    m = logits.shape[-1] - 1
    check_labels_in_range(labels, m, func, what="labels (the abstain column is not a label)")
    return logits, labels, m


def _check_payoff(payoff: Any, m: int, func: str, allow_nll_payoff: bool) -> None:
    if isinstance(payoff, jax.Array):
        return  # computed per-example payoffs (auto_payoff / a schedule): see the docstring
    o = concrete_float_array(payoff)
    if np.any(~np.isfinite(o)) or np.any(o <= 1):
        raise ValueError(f"{func}: `payoff` must be > 1 (o <= 1 makes abstaining always better), got {payoff!r}")
    if not allow_nll_payoff and np.any(o > m):
        raise ValueError(
            f"{func}: `payoff` must be <= m = {m} (for o > m abstaining never pays and the loss is plain "
            f"cross-entropy); pass allow_nll_payoff=True to switch abstention off on purpose, got {payoff!r}")
