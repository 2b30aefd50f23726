"""gecko_jax.models.dense: the backbones' matmul; same gradients as autodiff, weight gradient in a YNNPACK form."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gecko_jax.models.dense as dense_module
from gecko_jax.models import Encoder, EncoderConfig
from gecko_jax.models.dense import _weight_grad_cpu, _weight_grad_plain, dense_matmul, dot_general


def _loss(matmul):
    def f(x, w1, w2):  # widening layer (in < out), then narrowing (in > out): both branches of the weight gradient
        h = jnp.tanh(matmul(x, w1))
        return jnp.sum(jnp.sin(matmul(h, w2)))
    return f


def _plain(x, w):
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


@pytest.mark.parametrize("x_shape", [(3, 5, 8), (7, 8)])
def test_gradients_equal_autodiff_of_the_plain_matmul(x_shape):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    w1, w2 = jax.random.normal(keys[1], (8, 24)), jax.random.normal(keys[2], (24, 8))
    np.testing.assert_allclose(dense_matmul(x, w1), _plain(x, w1), rtol=1e-6)
    got = jax.jit(jax.grad(_loss(dense_matmul), argnums=(0, 1, 2)))(x, w1, w2)
    want = jax.jit(jax.grad(_loss(_plain), argnums=(0, 1, 2)))(x, w1, w2)
    for g, r in zip(got, want):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shapes", [((64, 8), (64, 24)), ((64, 24), (64, 8))])
def test_both_weight_gradient_forms_equal_the_contraction(shapes):
    keys = jax.random.split(jax.random.key(1), 2)
    x2, dy2 = jax.random.normal(keys[0], shapes[0]), jax.random.normal(keys[1], shapes[1])
    want = np.asarray(x2, np.float64).T @ np.asarray(dy2, np.float64)
    for fn in (_weight_grad_cpu, _weight_grad_plain):
        np.testing.assert_allclose(jax.jit(fn)(x2, dy2), want, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_their_dtypes():
    x = jnp.ones((4, 8), jnp.bfloat16)
    w = jnp.full((8, 16), 0.5, jnp.bfloat16)
    gx, gw = jax.grad(lambda x, w: jnp.sum(dense_matmul(x, w).astype(jnp.float32)), argnums=(0, 1))(x, w)
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(gw, np.float32), 4.0)
    np.testing.assert_allclose(np.asarray(gx, np.float32), 8.0)


def test_compiled_cpu_gradient_contracts_no_left_operand_over_its_first_axis():
    """The point of the module: on CPU no dot of the backward pass has its left operand contracted over axis 0
    (that form is not taken by YNNPACK). The autodiff form has two such dots here, so this check can fail."""
    x = jnp.ones((2, 16, 8))
    w1, w2 = jnp.ones((8, 24)), jnp.ones((24, 8))

    def first_axis_dots(matmul):
        text = jax.jit(jax.grad(_loss(matmul), argnums=(1, 2))).lower(x, w1, w2).compile().as_text()
        dots = [line for line in text.splitlines() if " dot(" in line]
        assert dots
        return [d for d in dots if re.search(r"lhs_contracting_dims=\{0\}", d)]

    assert len(first_axis_dots(_plain)) == 2
    assert first_axis_dots(dense_matmul) == []


def test_dot_general_passes_other_contractions_through():
    a, b = jnp.arange(24.0).reshape(2, 3, 4), jnp.arange(40.0).reshape(2, 4, 5)
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(dot_general(a, b, batched), lax.dot_general(a, b, batched))
    m, n = jnp.arange(12.0).reshape(3, 4), jnp.arange(20.0).reshape(5, 4)
    transposed = (((1,), (1,)), ((), ()))
    np.testing.assert_array_equal(dot_general(m, n, transposed), lax.dot_general(m, n, transposed))


def test_encoder_gradients_equal_those_with_the_plain_dot(monkeypatch):
    cfg = EncoderConfig.tiny(vocab_size=200, projection_dim=8)
    ids = jnp.asarray(np.random.default_rng(0).integers(103, 200, size=(3, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 7:].set(0)

    def grads():
        module = Encoder(cfg)  # _dense reads dense.dot_general when the module is built
        params = module.init(jax.random.key(0), ids, mask)["params"]
        return jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, ids, mask) ** 3)))(params)

    got = grads()
    monkeypatch.setattr(dense_module, "dot_general", lax.dot_general)
    want = grads()
    flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(flat_got) == len(flat_want)
    for g, r in zip(flat_got, flat_want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
