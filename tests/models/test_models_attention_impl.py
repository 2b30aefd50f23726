"""Attention implementations (``EncoderConfig.attention_impl``): ``jax.nn.dot_product_attention`` ("xla", and the
cuDNN plan run through XLA) against the dense CPU path, forward and gradients, for padding masks, packed rows,
MPNet's relative bias and Gemma's GQA with causal / bidirectional / sliding-window masks; "cudnn" on a CPU; config
plumbing. Tiny shapes: seconds."""
from __future__ import annotations

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.errors import ConfigError
from gecko_jax.models import Encoder, EncoderConfig, load_pretrained
from gecko_jax.models import attention as attn
from gecko_jax.models import config as config_module
from gecko_jax.models import gemma3

GOLDEN = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "golden"
TOL = 1e-5  # CONTRIBUTING: float32 simple ops
MODEL_TOL = 1e-4  # CONTRIBUTING: whole model
ON_CPU = jax.default_backend() == "cpu"


def _qkv(seed, b=3, length=10, heads=4, kv_heads=4, d=8):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(kq, (b, length, heads, d)), jax.random.normal(kk, (b, length, kv_heads, d)),
            jax.random.normal(kv, (b, length, kv_heads, d)))


def _padding_mask():
    # right padded, full, batch filler (no token at all)
    return jnp.asarray([[1] * 7 + [0] * 3, [1] * 10, [0] * 10], jnp.int32)


def _packed_ids():
    return jnp.asarray([[1, 1, 1, 2, 2, 3, 3, 3, 0, 0], [1] * 10, [1, 1, 2, 2, 2, 2, 2, 2, 2, 0]], jnp.int32)


def _value_and_grads(fn, args, argnums):
    """``fn(*args)`` and the gradients of a fixed random projection of it (one jit: eager dispatch is slower)."""
    w = jax.random.normal(jax.random.PRNGKey(99), jax.eval_shape(fn, *args).shape)

    @jax.jit
    def both(*a):
        out, vjp = jax.vjp(lambda *x: fn(*x), *a)
        grads = vjp(w)
        return out, tuple(grads[i] for i in argnums)

    return both(*args)


def _assert_close(got, want, tol=TOL):
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.isfinite(np.asarray(w)).all()  # NaN == NaN would pass assert_allclose
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=tol, rtol=0)


@pytest.mark.parametrize("case", ["padding", "packed", "mpnet_bias", "mpnet_bias_packed"])
def test_xla_matches_dense_forward_and_gradients(case):
    q, k, v = _qkv(0)
    allowed = (attn.allowed_mask(_padding_mask()) if case in ("padding", "mpnet_bias")
               else attn.allowed_mask(None, _packed_ids()))
    bias = None
    if case.startswith("mpnet"):
        bias = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (1, 4, 10, 10))
    outs = {}
    for impl in ("dense", "xla"):
        def fn(q, k, v, bias, impl=impl):
            return attn.attention(q, k, v, allowed, bias=bias, impl=impl)

        outs[impl] = _value_and_grads(fn, (q, k, v, bias), (0, 1, 2) + ((3,) if bias is not None else ()))
    _assert_close(outs["xla"], outs["dense"])
    # query rows that see no key (batch filler, padding inside packed rows) are zeros in both, never NaN
    out = np.asarray(outs["xla"][0])
    assert np.isfinite(out).all() and np.isfinite(np.concatenate([np.ravel(g) for g in outs["xla"][1]])).all()
    if case in ("padding", "mpnet_bias"):
        assert np.abs(out[2]).max() == 0.0
    else:
        assert np.abs(out[0, 8:]).max() == 0.0 and np.abs(out[2, 9]).max() == 0.0


@pytest.mark.parametrize("left_padded", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_cudnn_plan_with_sequence_lengths_matches_dense(left_padded, with_bias):
    """What "cudnn" sends (right-padded rows as sequence lengths, no mask tensor), run through XLA on the CPU; a
    left-padded row makes the run-time check take the mask branch instead."""
    q, k, v = _qkv(2)
    mask = np.array(_padding_mask())
    if left_padded:
        mask[0] = mask[0, ::-1]
    allowed = attn.allowed_mask(jnp.asarray(mask))
    bias = 0.5 * jax.random.normal(jax.random.PRNGKey(3), (1, 4, 10, 10)) if with_bias else None
    scale = 1 / np.sqrt(q.shape[-1])

    def plan(q, k, v):
        out = attn.fused_attention(q * scale, k, v, implementation="xla", key_mask=jnp.asarray(mask > 0), bias=bias,
                                   use_lengths=True)
        return out.reshape(*out.shape[:2], -1)

    def dense(q, k, v):
        return attn.attention(q, k, v, allowed, bias=bias, impl="dense")

    # with lengths, padding query rows are not computed (zeros); they are left out of the loss and the comparison
    real = mask > 0 if not left_padded else np.ones_like(mask, bool)
    w = jnp.asarray(real, jnp.float32)[:, :, None]
    (got, g_got), (want, g_want) = (_value_and_grads(lambda q, k, v, f=f: f(q, k, v) * w, (q, k, v), (0, 1, 2))
                                    for f in (plan, dense))
    _assert_close((got, g_got), (want, g_want))
    raw = np.asarray(jax.jit(plan)(q, k, v))
    assert np.isfinite(raw).all() and np.abs(raw[~real]).max(initial=0.0) == 0.0
    # which branch ran: lengths zero the padding queries (checked above); the mask branch, taken for a left-padded
    # row, gives them their attention over the real keys, as dense does
    if left_padded:
        assert np.abs(raw[0, :3]).max() > 0


@pytest.mark.parametrize("impl", ["dense", "xla"])
def test_float_additive_mask_still_accepted(impl):
    """``BertSelfAttention``'s earlier interface (one float mask: 0 / finfo.min, plus scores) equals the boolean
    mask with the scores as ``bias`` (how MPNet calls it now)."""
    from gecko_jax.models.bert import BertSelfAttention

    cfg = EncoderConfig.tiny(num_heads=4, attention_impl=impl)
    x = jax.random.normal(jax.random.PRNGKey(8), (3, 10, 32))
    allowed = attn.allowed_mask(_padding_mask())
    rel = 0.5 * jax.random.normal(jax.random.PRNGKey(9), (1, 4, 10, 10))
    module = BertSelfAttention(cfg)
    params = module.init(jax.random.PRNGKey(0), x, allowed, deterministic=True)
    new = module.apply(params, x, allowed, deterministic=True, bias=rel)
    old = module.apply(params, x, rel + jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min), deterministic=True)
    np.testing.assert_allclose(np.asarray(old), np.asarray(new), atol=TOL, rtol=0)


def _reference_gqa(q, k, v, vis):
    """Plain softmax attention with grouped key/value heads; rows that see nothing give zeros."""
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    s = jnp.where(vis, s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", [gemma3.FULL, gemma3.SLIDING])
@pytest.mark.parametrize("packed", [False, True])
def test_gemma_windows_as_flags_equal_its_masks(causal, kind, packed):
    cfg = EncoderConfig.tiny(model_type="gemma3_text", num_heads=4, num_kv_heads=2, attention_head_dim=8,
                             type_vocab_size=0, causal=causal, sliding_window=4,
                             layer_types=(gemma3.SLIDING, gemma3.FULL))
    mask, ids = _padding_mask(), _packed_ids()
    want = gemma3.visibility(cfg, mask, ids if packed else None)[kind][:, None]
    is_causal, window = gemma3.attention_window(cfg, kind)
    keys = {"pairs": attn.allowed_mask(None, ids)} if packed else {"key_mask": mask > 0}
    got = attn.visibility_mask(10, causal=is_causal, window=window, **keys)
    np.testing.assert_array_equal(np.asarray(jnp.broadcast_to(got, want.shape)), np.asarray(want))
    # the fused call (mask tensor, and cuDNN's plan: lengths + is_causal / local_window_size) against a reference,
    # forward and gradients; rows that see no key (padding) are left out of the loss
    q, k, v = _qkv(4, heads=4, kv_heads=2)
    real = np.asarray(ids > 0 if packed else mask > 0)
    w = jnp.asarray(real, jnp.float32)[:, :, None, None]
    ref = _value_and_grads(lambda q, k, v: _reference_gqa(q, k, v, want) * w, (q, k, v), (0, 1, 2))
    for use_lengths in (False, True):
        def fused(q, k, v, use_lengths=use_lengths):
            return attn.fused_attention(q, k, v, implementation="xla", causal=is_causal, window=window,
                                        use_lengths=use_lengths, **keys)

        _assert_close(_value_and_grads(lambda q, k, v: fused(q, k, v) * w, (q, k, v), (0, 1, 2)), ref)
        out = np.asarray(jax.jit(fused)(q, k, v))
        blind = ~np.asarray(want).any(-1)[:, 0]  # query rows that see no key: zeros, never NaN
        assert np.isfinite(out).all() and np.abs(out[blind]).max(initial=0.0) == 0.0


def _gemma_cfg(causal, **kw):
    return EncoderConfig.tiny(model_type="gemma3_text", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                              num_kv_heads=2, attention_head_dim=8, intermediate_size=48, type_vocab_size=0,
                              causal=causal, sliding_window=4, layer_types=(gemma3.SLIDING, gemma3.FULL),
                              hidden_dropout=0.0, attention_dropout=0.0, layer_norm_eps=1e-6, normalize=False, **kw)


def _grads(cfg, params, fn):
    enc = Encoder(cfg)
    return _value_and_grads(lambda p: fn(enc, p), (params,), (0,))


@pytest.mark.slow  # ~10 s each (compiles of a 2-layer encoder's gradients); the attention call's are in the default
@pytest.mark.parametrize("causal, packed", [(True, False), (False, True)])
def test_gemma_encoder_xla_matches_dense_with_gradients(causal, packed):
    """Whole encoder (GQA, a sliding and a full layer): embeddings and parameter gradients, padded or packed rows."""
    cfg = _gemma_cfg(causal)
    ids = jax.random.randint(jax.random.PRNGKey(5), (3, 10), 3, 64)
    mask = _padding_mask().at[2, :4].set(1)  # no filler row: every text has tokens
    params = Encoder(cfg).init(jax.random.PRNGKey(0), ids, mask)["params"]
    if packed:  # block-diagonal pairs + windows, pooled per packed text
        pid = _packed_ids()
        pos = jnp.asarray([[0, 1, 2, 0, 1, 0, 1, 2, 0, 0], list(range(10)), [0, 1, 0, 1, 2, 3, 4, 5, 6, 0]], jnp.int32)
        fn = lambda enc, p: enc.apply({"params": p}, ids, pid, pos, max_sequences=3,  # noqa: E731
                                      method=enc.encode_packed)
    else:
        fn = lambda enc, p: enc.apply({"params": p}, ids, mask)  # noqa: E731
    res = {impl: _grads(cfg.replace(attention_impl=impl), params, fn) for impl in ("dense", "xla")}
    _assert_close(res["xla"], res["dense"], MODEL_TOL)


@pytest.mark.parametrize("name", ["mpnet", "roberta", "gemma3_causal", "gemma3_bidirectional"])
def test_golden_tiny_models_give_the_same_tokens_with_xla(name):
    cfg, params = load_pretrained(GOLDEN / "tiny" / name)
    ref = json.loads((GOLDEN / f"tiny_{name}.json").read_text())
    ids = np.asarray(ref["inputs"]["input_ids"], np.int32)
    mask = np.asarray(ref["inputs"]["attention_mask"], np.int32)  # includes left-padded rows
    tokens = {}
    for impl in ("dense", "xla"):
        enc = Encoder(cfg.replace(attention_impl=impl))
        tokens[impl] = np.asarray(jax.jit(lambda p, enc=enc: enc.apply({"params": p}, ids, mask,
                                                                       method=enc.encode_tokens))(params))
    np.testing.assert_allclose(tokens["xla"][mask == 1], tokens["dense"][mask == 1], atol=MODEL_TOL, rtol=0)
    want = np.asarray(ref["outputs"]["last_hidden_state"], np.float32)  # and both still match PyTorch
    np.testing.assert_allclose(tokens["xla"][mask == 1], want[mask == 1], atol=MODEL_TOL, rtol=0)


def test_bert_embeddings_and_gradients_dense_vs_xla():
    # normalize=False: the gradient of an L2 norm at the filler row's zero vector is NaN whatever the attention
    cfg = EncoderConfig.tiny(num_heads=4, hidden_dropout=0.0, attention_dropout=0.0, normalize=False)
    ids = jax.random.randint(jax.random.PRNGKey(6), (3, 10), 1000, 2000)
    mask = _padding_mask()
    params = Encoder(cfg).init(jax.random.PRNGKey(0), ids, mask)["params"]
    res = {impl: _grads(cfg.replace(attention_impl=impl), params,
                        lambda enc, p: enc.apply({"params": p}, ids, mask)) for impl in ("dense", "xla")}
    _assert_close(res["xla"], res["dense"], MODEL_TOL)
    emb = np.asarray(res["xla"][0])
    assert np.isfinite(emb).all() and np.abs(emb[2]).max() == 0.0  # filler row: zero embedding, as dense


def test_attention_dropout_falls_back_to_dense_once_logged(caplog):
    cfg = EncoderConfig.tiny(hidden_dropout=0.0, attention_dropout=0.3)
    ids = jax.random.randint(jax.random.PRNGKey(6), (2, 8), 1000, 2000)
    mask = jnp.ones((2, 8), jnp.int32)
    params = Encoder(cfg).init(jax.random.PRNGKey(0), ids, mask)["params"]
    attn._LOGGED.clear()
    out = {}
    with caplog.at_level(logging.INFO, logger="gecko_jax.models.attention"):
        for impl in ("dense", "xla"):
            enc = Encoder(cfg.replace(attention_impl=impl))
            out[impl] = jax.jit(lambda p, enc=enc: enc.apply({"params": p}, ids, mask, deterministic=False,
                                                             rngs={"dropout": jax.random.PRNGKey(1)}))(params)
    np.testing.assert_array_equal(np.asarray(out["xla"]), np.asarray(out["dense"]))  # same dropout mask: dense
    lines = [r.getMessage() for r in caplog.records if "no attention dropout" in r.getMessage()]
    assert len(lines) == 1 and "attention_impl='xla'" in lines[0], lines  # once, although 2 layers traced it


@pytest.mark.skipif(not ON_CPU, reason="checks the CPU behaviour of 'cudnn' / 'auto'")
def test_cudnn_on_cpu_is_a_one_line_error_and_auto_is_dense():
    with pytest.raises(ConfigError) as err:
        attn.resolve_impl("cudnn", dtype=jnp.bfloat16, head_dim=64, length=128, dropout=False)
    assert "needs a CUDA GPU" in str(err.value) and "\n" not in str(err.value)
    cfg = EncoderConfig.tiny(dtype="bfloat16")
    ids, mask = jnp.ones((2, 8), jnp.int32), jnp.ones((2, 8), jnp.int32)
    params = Encoder(cfg).init(jax.random.PRNGKey(0), ids, mask)["params"]
    with pytest.raises(ConfigError, match="attention_impl='cudnn' needs a CUDA GPU"):
        Encoder(cfg.replace(attention_impl="cudnn")).apply({"params": params}, ids, mask)
    assert attn.resolve_impl("auto", dtype=jnp.bfloat16, head_dim=64, length=128, dropout=False) == "dense"
    auto = Encoder(cfg.replace(attention_impl="auto")).apply({"params": params}, ids, mask)
    dense = Encoder(cfg.replace(attention_impl="dense")).apply({"params": params}, ids, mask)
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(dense))


def test_attention_impl_config_field(tmp_path):
    assert config_module._ATTENTION_IMPLS == attn.IMPLEMENTATIONS
    with pytest.raises(ValueError, match="EncoderConfig.attention_impl must be one of"):
        EncoderConfig.tiny(attention_impl="flash")
    cfg = EncoderConfig.tiny(attention_impl="xla")
    hf = cfg.to_hf()  # a runtime choice, not a model property: never saved
    assert "attention_impl" not in json.dumps(hf)
    assert EncoderConfig.from_hf(hf).attention_impl == "auto"  # old and new config.json files load with the default
    from gecko_jax import train
    from gecko_jax.train.tasks import encoder_from_model_config

    base = {"trainer": "contrastive", "data": {"datasets": [{"path": "x.jsonl"}]}}
    tc = train.from_dict({**base, "model": {"tiny": {"num_layers": 1}, "attention_impl": "xla"}})
    assert encoder_from_model_config(tc.model, 16)[0].attention_impl == "xla"
    with pytest.raises(ConfigError, match="model.attention_impl"):
        train.from_dict({**base, "model": {"tiny": {}, "attention_impl": "flash"}})
