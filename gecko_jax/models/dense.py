"""The backbones' dense matmul, with a weight gradient that XLA:CPU's fast matmul kernels accept.

    nn.Dense(features, ..., dot_general=dense.dot_general)     # what the BERT-family and Gemma backbones use

Forward and input gradient are the usual ``y = x @ w`` and ``dx = dy @ w^T``. The weight gradient
``dw = x^T @ dy`` contracts over the token axis, which is the *first* axis of both operands. Autodiff hands XLA
that contraction as it is, and XLA:CPU's YNNPACK dot kernels only take a left operand whose contracted axis is the
last one, so every weight gradient fell back to Eigen's contraction: a third of a training step's matmul FLOPs,
slower per FLOP, on a second thread pool that competed with YNNPACK's for the same two cores (a third of the
step's Eigen time went on packing its operands; BENCHMARKS.md "Weight gradients on YNNPACK").

Here the backward pass transposes the narrower of ``x`` and ``dy`` (``[tokens, width]`` -> ``[width, tokens]``,
a memory-bound copy of a few milliseconds) and computes ``dw`` (or ``dw^T``, for a layer that narrows) as a plain
matmul with the token axis last on the left. ``optimization_barrier`` keeps XLA from folding the transposes back
into the dot. Only CPU takes this branch (``lax.platform_dependent``): GPU and TPU matmul libraries take any
operand order, and there the plain contraction stays.

The result is the same gradient up to float summation order (test: ``tests/models/test_models_dense.py``).
"""
from __future__ import annotations

import jax
from jax import lax


def _matmul(x, w):
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _weight_grad_plain(x2, dy2):
    return lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))


def _weight_grad_cpu(x2, dy2):
    if x2.shape[1] <= dy2.shape[1]:  # transpose the narrower operand: [tokens, in] -> [in, tokens]
        xt = lax.optimization_barrier(x2.T)
        return lax.dot_general(xt, dy2, (((1,), (0,)), ((), ())))
    dyt = lax.optimization_barrier(dy2.T)  # [out, tokens]; dw^T = dy^T x, then a weight-sized transpose
    return lax.optimization_barrier(lax.dot_general(dyt, x2, (((1,), (0,)), ((), ())))).T


@jax.custom_vjp
def dense_matmul(x, w):
    """``x[..., in] @ w[in, out]``; its VJP computes the weight gradient as described in the module docstring."""
    return _matmul(x, w)


def _fwd(x, w):
    return _matmul(x, w), (x, w)


def _bwd(res, dy):
    x, w = res
    dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    dw = lax.platform_dependent(x2, dy2, cpu=_weight_grad_cpu, default=_weight_grad_plain)
    return dx.astype(x.dtype), dw.astype(w.dtype)


dense_matmul.defvjp(_fwd, _bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """Drop-in ``dot_general`` for ``flax.linen.Dense``: its own contraction (last axis of ``lhs`` with the first
    of a 2-D ``rhs``, no batch axes, default precision) goes through :func:`dense_matmul`; anything else is passed
    to ``lax.dot_general`` unchanged."""
    (lc, rc), (lb, rb) = dimension_numbers
    if (lb or rb or rhs.ndim != 2 or tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or precision is not None
            or preferred_element_type is not None or lhs.dtype != rhs.dtype):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    return dense_matmul(lhs, rhs)
