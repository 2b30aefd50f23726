"""The noisy-label papers' small CNNs: shapes, parameter counts, parity with a naive lax.conv reference."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.models.cnn import CifarSmallCNN, MnistCNN, PatchConv, count_params, max_pool_2x2, to_float_images


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("model_cls,shape,outputs,n_params", [
    # conv1 20*25+20, conv2 50*20*25+50, fc1 800*500+500, fc2 500*K+K
    (MnistCNN, (28, 28, 1), 10, 520 + 25050 + 400500 + 5010),
    (MnistCNN, (28, 28, 1), 11, 520 + 25050 + 400500 + 5511),
    # conv1 6*3*25+6, conv2 16*6*25+16, fc1 400*120+120, fc2 120*84+84, fc3 84*K+K
    (CifarSmallCNN, (32, 32, 3), 10, 456 + 2416 + 48120 + 10164 + 850),
    (CifarSmallCNN, (32, 32, 3), 11, 456 + 2416 + 48120 + 10164 + 935),
])
def test_output_shape_and_parameter_count(model_cls, shape, outputs, n_params):
    model = model_cls(num_outputs=outputs)
    x = _images((5,) + shape)
    params = model.init(jax.random.key(0), x)["params"]
    assert count_params(params) == n_params
    logits = model.apply({"params": params}, x, train=False)
    assert logits.shape == (5, outputs) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    jitted = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, x)
    np.testing.assert_allclose(jitted, logits, rtol=1e-5, atol=1e-5)


def _naive_mnist_cnn(params, x):
    """Reference written from the paper's description with lax primitives (conv, reduce_window)."""
    def conv(x, p):
        y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p["bias"]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    x = x.astype(jnp.float32) / 255.0
    x = pool(jax.nn.relu(conv(x, params["conv1"])))
    x = pool(jax.nn.relu(conv(x, params["conv2"])))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["fc1"]["kernel"] + params["fc1"]["bias"])
    return x @ params["fc2"]["kernel"] + params["fc2"]["bias"]


def test_mnist_cnn_matches_naive_reference_values_and_grads():
    model = MnistCNN(num_outputs=11)
    x = _images((4, 28, 28, 1), seed=1)
    params = model.init(jax.random.key(1), x)["params"]
    got = model.apply({"params": params}, x)
    want = _naive_mnist_cnn(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    y = jnp.array([0, 3, 9, 1])

    def loss(f):
        return lambda p: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(f(p)), y[:, None], axis=-1))

    g_got = jax.grad(loss(lambda p: model.apply({"params": p}, x)))(params)
    g_want = jax.grad(loss(lambda p: _naive_mnist_cnn(p, x)))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g_got), jax.tree_util.tree_leaves(g_want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_patch_conv_equals_flax_conv():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 12, 10, 4)), jnp.float32)
    ours = PatchConv(7, kernel_size=(5, 3))
    ref = nn.Conv(7, (5, 3), padding="VALID")
    p_ours = ours.init(jax.random.key(0), x)["params"]
    p_ref = ref.init(jax.random.key(0), x)["params"]
    assert jax.tree_util.tree_map(jnp.shape, p_ours) == jax.tree_util.tree_map(jnp.shape, p_ref)
    np.testing.assert_allclose(ours.apply({"params": p_ours}, x), ref.apply({"params": p_ours}, x),
                               rtol=1e-5, atol=1e-5)


def test_max_pool_2x2_equals_flax_max_pool():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 6, 3)), jnp.float32)
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


def test_uint8_and_unit_float_inputs_agree():
    model = CifarSmallCNN(num_outputs=10)
    x = _images((3, 32, 32, 3), seed=4)
    params = model.init(jax.random.key(0), x)["params"]
    a = model.apply({"params": params}, x)
    b = model.apply({"params": params}, to_float_images(x))
    c = model.apply({"params": params}, x.astype(np.float32) / 255.0)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(to_float_images(x))) <= 1.0


def test_wrong_input_shape_or_dtype_is_a_clear_error():
    model = MnistCNN()
    with pytest.raises(ValueError, match=r"MnistCNN: expected images \[B, 28, 28, 1\]"):
        model.init(jax.random.key(0), jnp.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match=r"CifarSmallCNN: expected images \[B, 32, 32, 3\]"):
        CifarSmallCNN().init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    with pytest.raises(TypeError, match="expected uint8 or float"):
        to_float_images(np.zeros((1, 28, 28, 1), np.int32))
