"""The backbones' matmuls, with gradients in the operand order XLA:CPU's fast matmul kernels accept.

    nn.Dense(features, ..., dot_general=matmul.dot_general)   # the BERT-family and Gemma projections
    s = matmul.matmul_nt(q, k)                               # attention scores  [..., q, d] x [..., k, d]
    o = matmul.matmul(e, v)                                  # attention output  [..., q, k] x [..., k, d]

Forward values are plain ``lax.dot_general`` calls. The backward passes differ from autodiff's in one respect.
A matmul's gradient with respect to its *right* operand contracts over the left operand's rows
(``dw = x^T dy`` for a projection: the token axis; ``dv = e^T do`` and ``dk = ds^T q`` in attention), and autodiff
hands XLA that contraction as it is: a left operand contracted over its second-to-last axis. XLA:CPU's YNNPACK dot
kernels take a left operand only when its contracted axis is the last one, so those matmuls fell back to Eigen's
contraction: a third of a training step's matmul FLOPs, slower per FLOP, packing its operands, on a second thread
pool that competed with YNNPACK's for the same cores (BENCHMARKS.md "Weight gradients on YNNPACK").

Here such a gradient is computed with the contracted axis last on the left: the narrower of its two operands is
transposed (a memory-bound copy of a few milliseconds; for attention a ``[..., L, head_dim]`` tensor, never the
``[..., L, L]`` weights), and when that is the cotangent the product comes out transposed and is transposed back (a
weight-sized or ``[..., L, head_dim]`` copy). ``optimization_barrier`` keeps XLA from folding the transposes back
into the dots. Only CPU takes this form (``lax.platform_dependent``); GPU and TPU matmul libraries take any operand
order, and there the plain contraction stays.

Gradients equal autodiff's up to float summation order (``tests/models/test_models_matmul.py``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _bdot(a, b, ca: int, cb: int, out_dtype):
    """``a`` and ``b`` share their leading (batch) axes; contract axis ``ca`` of ``a`` with ``cb`` of ``b``."""
    batch = tuple(range(a.ndim - 2))
    return lax.dot_general(a, b, (((ca % a.ndim,), (cb % b.ndim,)), (batch, batch)), preferred_element_type=out_dtype)


def _t(x):
    return jnp.swapaxes(x, -1, -2)


def _left_grad_plain(a, dy):
    """``a^T dy`` over the rows ``m``: ``[..., m, k]`` and ``[..., m, n]`` -> ``[..., k, n]``, as autodiff has it."""
    return _bdot(a, dy, -2, -2, None)


def _left_grad_cpu(a, dy):
    """The same product with the contracted axis last on the left: transpose the narrower of ``a`` and ``dy``."""
    if a.shape[-1] <= dy.shape[-1]:
        return _bdot(lax.optimization_barrier(_t(a)), dy, -1, -2, None)
    return _t(lax.optimization_barrier(_bdot(lax.optimization_barrier(_t(dy)), a, -1, -2, None)))


def _transposed_product(a, dy):
    """``a^T dy`` (``[..., m, k]``, ``[..., m, n]`` -> ``[..., k, n]``) in the form this platform's matmuls run best."""
    return lax.platform_dependent(a, dy, cpu=_left_grad_cpu, default=_left_grad_plain)


def _common_dtype(a, b, dy):
    """The backward pass's operands in one dtype: a float32 cotangent of a bfloat16 product (``preferred_element_type``)
    meets the bfloat16 operands in float32; the gradients are cast back to each operand's dtype."""
    dtype = jnp.result_type(a, b, dy)
    return a.astype(dtype), b.astype(dtype), dy.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _matmul(a, b, out_dtype, transpose_b: bool):
    """``a @ b`` (``b: [..., k, n]``) or, with ``transpose_b``, ``a @ b^T`` (``b: [..., n, k]``)."""
    return _bdot(a, b, -1, -1 if transpose_b else -2, out_dtype)


def _matmul_fwd(a, b, out_dtype, transpose_b):
    return _matmul(a, b, out_dtype, transpose_b), (a, b)


def _matmul_bwd(out_dtype, transpose_b, res, dy):
    a, b = res                                       # a: [..., m, k]; dy: [..., m, n]
    a, b, dy = _common_dtype(a, b, dy)
    if transpose_b:                                  # b: [..., n, k]
        da = _bdot(dy, b, -1, -2, None)              # [..., m, k]
        db = _transposed_product(dy, a)              # dy^T a: [..., n, k]
    else:                                            # b: [..., k, n]
        da = _bdot(dy, b, -1, -1, None)              # [..., m, k]
        db = _transposed_product(a, dy)              # a^T dy: [..., k, n]
    return da.astype(res[0].dtype), db.astype(res[1].dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(a, b, *, preferred_element_type=None):
    """``a @ b`` for ``a: [..., m, k]``, ``b: [..., k, n]`` with the same leading (batch) axes."""
    _check(a, b)
    return _matmul(a, b, preferred_element_type, False)


def matmul_nt(a, b, *, preferred_element_type=None):
    """``a @ b^T`` for ``a: [..., m, k]``, ``b: [..., n, k]`` with the same leading (batch) axes."""
    _check(a, b)
    return _matmul(a, b, preferred_element_type, True)


def _check(a, b):
    if a.ndim < 2 or a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"matmul operands need the same leading axes, got shapes {a.shape} and {b.shape}")


def dense_matmul(x, w):
    """``x[..., in] @ w[in, out]`` (a projection): the tokens of ``x`` flattened into the rows of one matmul."""
    y = matmul(x.reshape(-1, x.shape[-1]), w)
    return y.reshape(*x.shape[:-1], w.shape[-1])


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """Drop-in ``dot_general`` for ``flax.linen.Dense``: its own contraction (last axis of ``lhs`` with the first
    of a 2-D ``rhs``, no batch axes, default precision, one dtype) goes through :func:`dense_matmul`; anything else
    is passed to ``lax.dot_general`` unchanged."""
    (lc, rc), (lb, rb) = dimension_numbers
    if (lb or rb or rhs.ndim != 2 or tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or precision is not None
            or preferred_element_type is not None or lhs.dtype != rhs.dtype):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    return dense_matmul(lhs, rhs)
