"""Encoder (BERT backbone, pooling, projection, normalisation) against a naive numpy reference."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from gecko_jax.models import Encoder, EncoderConfig, l2_normalize, mean_pool, truncate_embeddings
from gecko_jax.models import bert


pytestmark = pytest.mark.usefixtures("fast_compiles")


def _ids(rng, cfg, lengths, length):
    ids = np.zeros((len(lengths), length), np.int32)
    mask = np.zeros((len(lengths), length), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(103, cfg.vocab_size, size=n)
        ids[i, 0], ids[i, n - 1] = 101, 102
        mask[i, :n] = 1
    return ids, mask


def _init(cfg, length=16, seed=0):
    cfg = cfg.replace(vocab_size=1000)  # a small table keeps init cheap; ids stay below 1000
    module = Encoder(cfg)
    ids = jnp.ones((1, length), jnp.int32)
    params = jax.jit(module.init)(jax.random.key(seed), ids, ids)["params"]
    # Random (not ones/zeros) LayerNorm params so the reference checks scale/bias wiring too.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return module, jax.tree.unflatten(treedef, leaves)


def _naive_forward(cfg, params, ids, mask):
    """Textbook BERT in numpy float64 from Hugging Face tensors (independent of our param layout)."""
    t = {k: np.asarray(v, np.float64) for k, v in bert.params_to_hf(params["backbone"], cfg).items()}

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * t[p + ".weight"] + t[p + ".bias"]

    def lin(x, p):
        return x @ t[p + ".weight"].T + t[p + ".bias"]

    b, length = ids.shape
    x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:length][None]
         + t["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)])
    x = ln(x, "embeddings.LayerNorm")
    nh, hd = cfg.num_heads, cfg.head_dim
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{n}").reshape(b, length, nh, hd).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + np.where(mask[:, None, None, :] > 0, 0.0, -1e30)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = ln(x + lin(a.transpose(0, 2, 1, 3).reshape(b, length, -1), f"{p}.attention.output.dense"),
               f"{p}.attention.output.LayerNorm")
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = ln(x + lin(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    m = mask[..., None].astype(np.float64)
    e = (x * m).sum(1) / m.sum(1) if cfg.pooling == "mean" else x[:, 0]
    if cfg.projection_dim:
        e = e @ np.asarray(params["projection"]["kernel"], np.float64) + np.asarray(params["projection"]["bias"])
    if cfg.normalize:
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    return e


@pytest.mark.parametrize("overrides", [
    {},
    {"pooling": "cls", "projection_dim": 8},
    {"normalize": False, "num_heads": 4},
])
def test_encoder_matches_naive_numpy_reference(overrides):
    module, params = _init(EncoderConfig.tiny(**overrides))
    cfg = module.config
    ids, mask = _ids(np.random.default_rng(0), cfg, [16, 5, 2], 16)
    got = np.asarray(jax.jit(module.apply)({"params": params}, ids, mask))
    want = _naive_forward(cfg, params, ids, mask)
    assert got.dtype == np.float32 and got.shape == (3, cfg.output_dim)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_padding_does_not_change_embeddings():
    module, params = _init(EncoderConfig.tiny())
    ids, mask = _ids(np.random.default_rng(1), module.config, [7, 3], 8)
    apply = jax.jit(module.apply)
    short = apply({"params": params}, ids, mask)
    long_ids = np.pad(ids, ((0, 0), (0, 24)))
    long_mask = np.pad(mask, ((0, 0), (0, 24)))
    np.testing.assert_allclose(apply({"params": params}, long_ids, long_mask), short, atol=1e-5)


def test_all_padding_row_is_zero_not_nan():
    module, params = _init(EncoderConfig.tiny())
    ids = np.zeros((2, 8), np.int32)
    mask = np.zeros((2, 8), np.int32)
    mask[0, :3] = 1
    out = np.asarray(jax.jit(module.apply)({"params": params}, ids, mask))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], 0.0)
    np.testing.assert_allclose(np.linalg.norm(out[0]), 1.0, rtol=1e-5)


def test_return_tokens_and_encode_tokens_agree():
    module, params = _init(EncoderConfig.tiny())
    ids, mask = _ids(np.random.default_rng(2), module.config, [6, 4], 8)
    emb, tokens = jax.jit(lambda p: module.apply({"params": p}, ids, mask, return_tokens=True))(params)
    tokens2 = jax.jit(lambda p: module.apply({"params": p}, ids, mask, method=Encoder.encode_tokens))(params)
    assert tokens.shape == (2, 8, module.config.hidden_size)
    np.testing.assert_allclose(tokens, tokens2, atol=1e-6)
    np.testing.assert_allclose(emb, l2_normalize(mean_pool(tokens, mask)), atol=1e-6)


def test_dropout_needs_rng_and_changes_output_only_in_training():
    module, params = _init(EncoderConfig.tiny())
    ids, mask = _ids(np.random.default_rng(3), module.config, [8, 8], 8)
    eval_out = jax.jit(module.apply)({"params": params}, ids, mask)
    train = jax.jit(lambda p, key: module.apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": key}))
    a, b, c = (train(params, jax.random.key(k)) for k in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    assert np.abs(np.asarray(a) - np.asarray(eval_out)).max() > 1e-3
    with pytest.raises(Exception, match="dropout"):
        module.apply({"params": params}, ids, mask, deterministic=False)


def test_gradients_flow_to_every_parameter():
    module, params = _init(EncoderConfig.tiny(projection_dim=8))
    ids, mask = _ids(np.random.default_rng(4), module.config, [8, 5], 8)
    # token_type_ids all zero: the type-1 row gets no gradient, every other leaf must.
    grads = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, ids, mask)[:, 0])))(params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g)) and "word_embeddings" not in
            jax.tree_util.keystr(k) and "token_type" not in jax.tree_util.keystr(k)]
    assert not dead


def test_bfloat16_compute_keeps_float32_params_and_is_close():
    module, params = _init(EncoderConfig.tiny())
    ids, mask = _ids(np.random.default_rng(5), module.config, [16, 9], 16)
    f32 = np.asarray(jax.jit(module.apply)({"params": params}, ids, mask))
    bf16_module = Encoder(module.config.replace(dtype="bfloat16"))
    bf16_params = jax.jit(bf16_module.init)(jax.random.key(0), ids, mask)["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16_params))
    out = np.asarray(jax.jit(bf16_module.apply)({"params": params}, ids, mask))
    assert out.dtype == np.float32
    cos = (out * f32).sum(-1)
    assert cos.min() > 0.99, cos


def test_truncate_embeddings_matches_naive():
    x = np.random.default_rng(6).normal(size=(5, 12)).astype(np.float32)
    got = truncate_embeddings(x, 4)
    want = x[:, :4] / np.linalg.norm(x[:, :4], axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(truncate_embeddings(jnp.asarray(x), 4), want, rtol=1e-6)
    np.testing.assert_allclose(truncate_embeddings(x, None), x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)
    for bad in (0, 13, 2.5, True):
        with pytest.raises(ValueError, match=r"dims must be an int in \[1, 12\]"):
            truncate_embeddings(x, bad)


def test_input_longer_than_position_table_is_rejected():
    cfg = EncoderConfig.tiny(max_position_embeddings=8)
    module = Encoder(cfg)
    ids = jnp.ones((1, 9), jnp.int32)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=8"):
        module.init(jax.random.key(0), ids, ids)
