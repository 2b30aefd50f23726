"""Loss functions of gecko_jax: pure JAX functions, arrays in, per-example losses out (optax style).

One family per module, all re-exported here:

- ``contrastive``: :func:`gecko_contrastive` (Gecko eqs. 2-3, in-batch + hard + same-tower negatives, id masks).
- ``matryoshka``: :func:`matryoshka` wrapper and :func:`truncate` (MRL sub-dimensions).
- ``debiasing``: :func:`content_conditional_debiasing` (CCD loss), :func:`cced` metric, :func:`kernel_distance`.
- ``smoothing``: :func:`smoothed_cross_entropy` (p-parameterisation), :func:`forward_corrected_cross_entropy`,
  :func:`optimal_smoothing` p*(r), :func:`agnostic_smoothing`, :func:`p_to_epsilon` / :func:`epsilon_to_p`.
- ``gamblers``: :func:`gamblers`, :func:`auto_payoff`, :func:`gamblers_stop_threshold`, :func:`gamblers_predict`.

This package imports only jax, optax and numpy (never Flax or model code), so TPU scripts and notebooks can use
it on its own.
"""
from gecko_jax.losses.contrastive import gecko_contrastive
from gecko_jax.losses.debiasing import cced, content_conditional_debiasing, kernel_distance
from gecko_jax.losses.gamblers import auto_payoff, gamblers, gamblers_predict, gamblers_stop_threshold
from gecko_jax.losses.matryoshka import matryoshka, truncate
from gecko_jax.losses.smoothing import (agnostic_smoothing, epsilon_to_p, forward_corrected_cross_entropy,
                                        optimal_smoothing, p_to_epsilon, smoothed_cross_entropy)

__all__ = [
    "gecko_contrastive",
    "matryoshka",
    "truncate",
    "content_conditional_debiasing",
    "cced",
    "kernel_distance",
    "smoothed_cross_entropy",
    "forward_corrected_cross_entropy",
    "optimal_smoothing",
    "agnostic_smoothing",
    "p_to_epsilon",
    "epsilon_to_p",
    "gamblers",
    "auto_payoff",
    "gamblers_stop_threshold",
    "gamblers_predict",
]
