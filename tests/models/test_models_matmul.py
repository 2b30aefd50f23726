"""gecko_jax.models.matmul: the backbones' matmuls; autodiff's gradients, with the right operand's in a YNNPACK form."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gecko_jax.models.matmul as matmul_module
from gecko_jax.models import Encoder, EncoderConfig
from gecko_jax.models.attention import attention
from gecko_jax.models.matmul import (_left_grad_cpu, _left_grad_plain, dense_matmul, dot_general, matmul,
                                     matmul_nt)


def _plain_dense(x, w):
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _plain_matmul(a, b, preferred_element_type=None):
    return jnp.einsum("...mk,...kn->...mn", a, b, preferred_element_type=preferred_element_type)


def _plain_matmul_nt(a, b, preferred_element_type=None):
    return jnp.einsum("...mk,...nk->...mn", a, b, preferred_element_type=preferred_element_type)


def _mlp_loss(mm):
    def f(x, w1, w2):  # widening layer (in < out), then narrowing (in > out): both forms of the weight gradient
        return jnp.sum(jnp.sin(mm(jnp.tanh(mm(x, w1)), w2)))
    return f


def _assert_grads_close(got, want, rtol=1e-5, atol=1e-5):
    for g, r in zip(got, want):
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), rtol=rtol, atol=atol)


@pytest.mark.parametrize("x_shape", [(3, 5, 8), (7, 8)])
def test_dense_gradients_equal_autodiff_of_the_plain_matmul(x_shape):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    w1, w2 = jax.random.normal(keys[1], (8, 24)), jax.random.normal(keys[2], (24, 8))
    np.testing.assert_allclose(dense_matmul(x, w1), _plain_dense(x, w1), rtol=1e-6)
    got = jax.jit(jax.grad(_mlp_loss(dense_matmul), argnums=(0, 1, 2)))(x, w1, w2)
    want = jax.jit(jax.grad(_mlp_loss(_plain_dense), argnums=(0, 1, 2)))(x, w1, w2)
    _assert_grads_close(got, want)


@pytest.mark.parametrize("fn, plain, b_shape", [(matmul, _plain_matmul, (2, 3, 6, 4)),     # [.., k, n], k > n
                                                 (matmul, _plain_matmul, (2, 3, 6, 9)),     # k < n
                                                 (matmul_nt, _plain_matmul_nt, (2, 3, 4, 6)),  # [.., n, k], n < k
                                                 (matmul_nt, _plain_matmul_nt, (2, 3, 9, 6))])  # n > k
def test_batched_gradients_equal_autodiff_of_the_einsum(fn, plain, b_shape):
    keys = jax.random.split(jax.random.key(1), 3)
    a, b = jax.random.normal(keys[0], (2, 3, 5, 6)), jax.random.normal(keys[1], b_shape)
    np.testing.assert_allclose(fn(a, b), plain(a, b), rtol=1e-5, atol=1e-6)
    cot = jax.random.normal(keys[2], plain(a, b).shape)

    def loss(f):
        return lambda a, b: jnp.sum(jnp.tanh(f(a, b)) * cot)
    _assert_grads_close(jax.jit(jax.grad(loss(fn), argnums=(0, 1)))(a, b),
                        jax.jit(jax.grad(loss(plain), argnums=(0, 1)))(a, b))


@pytest.mark.parametrize("shapes", [((4, 64, 8), (4, 64, 24)), ((64, 24), (64, 8))])
def test_both_forms_of_the_left_contraction_equal_it(shapes):
    keys = jax.random.split(jax.random.key(2), 2)
    a, dy = jax.random.normal(keys[0], shapes[0]), jax.random.normal(keys[1], shapes[1])
    want = np.einsum("...mk,...mn->...kn", np.asarray(a, np.float64), np.asarray(dy, np.float64))
    for fn in (_left_grad_cpu, _left_grad_plain):
        np.testing.assert_allclose(jax.jit(fn)(a, dy), want, rtol=1e-5, atol=1e-5)


def test_bfloat16_operands_with_a_float32_product():
    keys = jax.random.split(jax.random.key(3), 3)
    a = jax.random.normal(keys[0], (2, 8, 16)).astype(jnp.bfloat16)
    b = jax.random.normal(keys[1], (2, 8, 16)).astype(jnp.bfloat16)
    cot = jax.random.normal(keys[2], (2, 8, 8))
    y = matmul_nt(a, b, preferred_element_type=jnp.float32)
    assert y.dtype == jnp.float32
    got = jax.grad(lambda a, b: jnp.sum(matmul_nt(a, b, preferred_element_type=jnp.float32) * cot), (0, 1))(a, b)
    want = jax.grad(lambda a, b: jnp.sum(_plain_matmul_nt(a, b, jnp.float32) * cot), (0, 1))(a, b)
    _assert_grads_close(got, want, rtol=2e-2, atol=2e-2)  # both end in a bfloat16 cast
    gx, gw = jax.grad(lambda x, w: jnp.sum(dense_matmul(x, w).astype(jnp.float32)), (0, 1))(
        jnp.ones((4, 8), jnp.bfloat16), jnp.full((8, 16), 0.5, jnp.bfloat16))
    assert gx.dtype == gw.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(gw, np.float32), 4.0)
    np.testing.assert_allclose(np.asarray(gx, np.float32), 8.0)


def _first_axis_dots(fn, *args):
    """Dots of the compiled CPU program whose left operand is contracted over another axis than its last."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    rank = {m.group(1): len([d for d in m.group(2).split(",") if d])
            for m in re.finditer(r"(%[\w.\-]+) = \w+\[([\d,]*)\]", text)}
    dots = re.findall(r"dot\((%[\w.\-]+), %[\w.\-]+\), [^\n]*?lhs_contracting_dims=\{(\d+)\}", text)
    assert dots
    return [(lhs, int(c)) for lhs, c in dots if int(c) != rank[lhs] - 1]


def test_compiled_cpu_gradients_contract_every_left_operand_over_its_last_axis():
    """The point of the module: on CPU no dot of these backward passes has its left operand contracted over
    another axis than its last (that form is not taken by YNNPACK). Autodiff's form has such dots, so this can
    fail."""
    x, w1, w2 = jnp.ones((2, 16, 8)), jnp.ones((8, 24)), jnp.ones((24, 8))
    assert len(_first_axis_dots(jax.grad(_mlp_loss(_plain_dense), argnums=(1, 2)), x, w1, w2)) == 2
    assert _first_axis_dots(jax.grad(_mlp_loss(dense_matmul), argnums=(1, 2)), x, w1, w2) == []

    q = k = v = jnp.ones((2, 16, 2, 8))  # [B, L, heads, d]
    allowed = jnp.ones((2, 1, 1, 16), bool)

    def attn_loss(q, k, v):
        return jnp.sum(jnp.sin(attention(q, k, v, allowed)))

    assert _first_axis_dots(jax.grad(attn_loss, argnums=(0, 1, 2)), q, k, v) == []


def test_attention_gradients_equal_the_einsum_form(monkeypatch):
    keys = jax.random.split(jax.random.key(4), 4)
    q, k, v = (jax.random.normal(kk, (2, 12, 3, 8)) for kk in keys[:3])
    allowed = jnp.ones((2, 1, 1, 12), bool).at[1, ..., 9:].set(False)
    cot = jax.random.normal(keys[3], (2, 12, 24))

    def grads():
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v, allowed) * cot), (0, 1, 2)))(q, k, v)

    got = grads()
    monkeypatch.setattr(matmul_module, "matmul", _plain_matmul)
    monkeypatch.setattr(matmul_module, "matmul_nt", _plain_matmul_nt)
    _assert_grads_close(got, grads())


def test_dot_general_passes_other_contractions_through():
    a, b = jnp.arange(24.0).reshape(2, 3, 4), jnp.arange(40.0).reshape(2, 4, 5)
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(dot_general(a, b, batched), lax.dot_general(a, b, batched))
    m, n = jnp.arange(12.0).reshape(3, 4), jnp.arange(20.0).reshape(5, 4)
    transposed = (((1,), (1,)), ((), ()))
    np.testing.assert_array_equal(dot_general(m, n, transposed), lax.dot_general(m, n, transposed))


def test_mismatched_leading_axes_are_rejected():
    with pytest.raises(ValueError, match="same leading axes"):
        matmul(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 5)))


def test_encoder_gradients_equal_those_with_the_plain_dot(monkeypatch):
    cfg = EncoderConfig.tiny(vocab_size=200, projection_dim=8, attention_dropout=0.0, hidden_dropout=0.0)
    ids = jnp.asarray(np.random.default_rng(0).integers(103, 200, size=(3, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 7:].set(0)

    def grads():
        module = Encoder(cfg)  # _dense reads matmul.dot_general when the module is built
        params = module.init(jax.random.key(0), ids, mask)["params"]
        return jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, ids, mask) ** 3)))(params)

    got = grads()
    monkeypatch.setattr(matmul_module, "dot_general", lax.dot_general)
    monkeypatch.setattr(matmul_module, "matmul", _plain_matmul)
    monkeypatch.setattr(matmul_module, "matmul_nt", _plain_matmul_nt)
    want = grads()
    flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(flat_got) == len(flat_want)
    for g, r in zip(flat_got, flat_want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
