"""MPNet, RoBERTa, XLM-R and Gemma 3 (causal + bidirectional) against ../shared/golden's tiny PyTorch references,
plus packing, save/load, the two-layer head and GGUF reading on tiny models (seconds; real weights: *_real.py)."""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from gecko_jax.models import Encoder, EncoderConfig, load_pretrained, mean_pool, save_pretrained
from gecko_jax.models import gemma3
from gecko_jax.models.mpnet import relative_position_buckets
from gecko_jax.models.roberta import offset_position_ids

GOLDEN = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "golden"
TINY = ("mpnet", "roberta", "xlm_roberta", "gemma3_causal", "gemma3_bidirectional")
ATOL = 1e-4  # CONTRIBUTING: whole model; the references were reproduced to ~3e-6


def _golden(name):
    ref = json.loads((GOLDEN / f"tiny_{name}.json").read_text())
    return ref, np.asarray(ref["inputs"]["input_ids"], np.int32), np.asarray(ref["inputs"]["attention_mask"], np.int32)


def _tokens(cfg, params, ids, mask, **kw):
    enc = Encoder(cfg)
    return np.asarray(enc.apply({"params": params}, ids, mask, method=enc.encode_tokens, **kw))


@pytest.fixture(scope="module")
def tiny():
    return {name: load_pretrained(GOLDEN / "tiny" / name) for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_tiny_checkpoint_matches_pytorch_reference(tiny, name):
    ref, ids, mask = _golden(name)
    cfg, params = tiny[name]
    assert cfg.model_type == ref["config"]["model_type"]
    tokens = _tokens(cfg, params, ids, mask)
    want = np.asarray(ref["outputs"]["last_hidden_state"], np.float32)
    np.testing.assert_allclose(tokens[mask == 1], want[mask == 1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(mean_pool(tokens, mask)), np.asarray(ref["outputs"]["mean_pooled"],
                                                                                np.float32), atol=ATOL, rtol=0)


def test_gemma_modes_differ_and_bidirectional_flag_is_read(tiny):
    causal, bidi = tiny["gemma3_causal"][0], tiny["gemma3_bidirectional"][0]
    assert causal.causal and not bidi.causal and causal.sliding_window == bidi.sliding_window == 8
    _, ids, mask = _golden("gemma3_causal")
    a = _tokens(causal, tiny["gemma3_causal"][1], ids, mask)
    b = _tokens(bidi, tiny["gemma3_bidirectional"][1], ids, mask)
    assert np.abs(a - b)[mask == 1].max() > 0.1  # same weights: only the masks differ


@pytest.mark.parametrize("name, pad", [("roberta", 1), ("xlm_roberta", 1), ("mpnet", 1)])
def test_offset_position_ids_match_reference(name, pad):
    ref, ids, mask = _golden(name)
    got = np.asarray(offset_position_ids(jnp.asarray(mask), pad))
    np.testing.assert_array_equal(got, np.asarray(ref["reference_position_ids"]))
    # packed rows: 0-based positions within each text get the same offset
    np.testing.assert_array_equal(np.asarray(offset_position_ids(jnp.ones((1, 3)), pad, jnp.array([[0, 1, 0]]))),
                                  [[pad + 1, pad + 2, pad + 1]])


@pytest.mark.parametrize("name", ["gemma3_causal", "gemma3_bidirectional"])
def test_gemma_masks_match_reference(tiny, name):
    ref, _, mask = _golden(name)
    masks = gemma3.visibility(tiny[name][0], jnp.asarray(mask))
    for kind, want in ref["reference_attention_masks_by_layer_type"].items():
        np.testing.assert_array_equal(np.asarray(masks[kind]).astype(int), np.asarray(want), err_msg=kind)


def test_mpnet_buckets_follow_the_t5_rule():
    b = relative_position_buckets(200)
    # key k, query q: k - q = +d on the right gets +16; distances 0..7 exact; 8..15 log-spaced up to 128, clipped
    assert b[0, 0] == 0 and b[5, 0] == 5 and b[0, 5] == 16 + 5
    assert b[16, 0] == 10 and b[32, 0] == 12 and b[64, 0] == 14 and b[127, 0] == 15 and b[199, 0] == 15
    assert b[15, 0] == 9 and b[0, 199] == 31


@pytest.mark.parametrize("name", TINY)
def test_packed_rows_equal_one_text_per_row(tiny, name):
    cfg, params = tiny[name]
    _, ids, mask = _golden(name)
    lengths = mask[:3].sum(1)  # rows 0..2 are right padded
    texts = [ids[r, :lengths[r]] for r in (1, 2)]
    width = int(sum(len(t) for t in texts)) + 3
    row = np.full((1, width), cfg.pad_token_id, np.int32)
    packed = np.zeros((1, width), np.int32)
    pos = np.zeros((1, width), np.int32)
    col = 0
    for k, t in enumerate(texts):
        row[0, col:col + len(t)], packed[0, col:col + len(t)], pos[0, col:col + len(t)] = t, k + 1, np.arange(len(t))
        col += len(t)
    enc = Encoder(cfg)
    got = enc.apply({"params": params}, row, packed, pos, max_sequences=2, method=enc.encode_packed)[0]
    want = enc.apply({"params": params}, ids[1:3], mask[1:3])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_save_pretrained_writes_the_hf_names_and_reloads(tiny, name, tmp_path):
    ref, ids, mask = _golden(name)
    cfg, params = tiny[name]
    out = save_pretrained(tmp_path / name, cfg, params)
    saved = load_file(str(out / "model.safetensors"))
    # exactly the tensor names of the transformers class (pooler.dense included for the encoders): nothing missing
    # or unexpected when transformers / sentence-transformers load the folder
    assert sorted(saved) == sorted(ref["weights"])
    assert all(list(saved[k].shape) == ref["weights"][k] for k in saved)
    assert not list(tmp_path.glob(f"{name}/**/.*.tmp"))  # atomic writes leave no temporaries
    cfg2, params2 = load_pretrained(out)
    assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    hf = json.loads((out / "config.json").read_text())
    assert hf["model_type"] == ref["config"]["model_type"]
    assert hf["architectures"] == ref["config"]["architectures"]


def test_bert_export_has_the_pooler(tmp_path):
    cfg = EncoderConfig.tiny(num_layers=1)
    params = Encoder(cfg).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))["params"]
    saved = load_file(str(save_pretrained(tmp_path, cfg, params) / "model.safetensors"))
    np.testing.assert_array_equal(saved["pooler.dense.weight"], np.eye(cfg.hidden_size, dtype=np.float32))
    np.testing.assert_array_equal(saved["pooler.dense.bias"], np.zeros(cfg.hidden_size, np.float32))
    cfg2, params2 = load_pretrained(tmp_path)  # and loading ignores it
    assert sorted(params2["backbone"]) == sorted(params["backbone"])


def _tiny_gemma(**overrides):
    base = dict(model_type="gemma3_text", vocab_size=1000, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                attention_head_dim=8, intermediate_size=48, sliding_window=4, type_vocab_size=0,
                layer_types=("sliding_attention", "full_attention"), hidden_dropout=0.0, attention_dropout=0.0,
                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, initializer_range=0.1)
    return EncoderConfig(**{**base, **overrides})


def test_two_layer_projection_head_round_trips(tmp_path):
    cfg = _tiny_gemma(projection_hidden_dim=24, projection_dim=16, projection_bias=False)
    ids = jnp.asarray(np.random.default_rng(0).integers(4, 1000, (2, 9)), jnp.int32)
    mask = jnp.ones_like(ids)
    params = Encoder(cfg).init(jax.random.key(1), ids, mask)["params"]
    assert params["projection_hidden"]["kernel"].shape == (32, 24) and params["projection"]["kernel"].shape == (24, 16)
    out = save_pretrained(tmp_path / "m", cfg, params)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    dense = [json.loads((out / m["path"] / "config.json").read_text()) for m in modules[2:4]]
    assert [(d["in_features"], d["out_features"], d["bias"]) for d in dense] == [(32, 24, False), (24, 16, False)]
    cfg2, params2 = load_pretrained(out)
    assert (cfg2.projection_hidden_dim, cfg2.projection_dim, cfg2.projection_bias) == (24, 16, False)
    a = Encoder(cfg).apply({"params": params}, ids, mask)
    b = Encoder(cfg2).apply({"params": params2}, ids, mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert a.shape == (2, 16)


def test_gemma_bfloat16_compute_stays_close():
    cfg = _tiny_gemma()
    ids = jnp.asarray(np.random.default_rng(2).integers(4, 1000, (3, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[2, 7:].set(0)
    params = Encoder(cfg).init(jax.random.key(0), ids, mask)["params"]
    a = np.asarray(Encoder(cfg).apply({"params": params}, ids, mask))
    b = np.asarray(Encoder(cfg.replace(dtype="bfloat16")).apply({"params": params}, ids, mask))
    assert b.dtype == np.float32 and np.min(np.sum(a * b, axis=1)) > 0.99


def test_gemma_gradients_reach_every_parameter():
    cfg = _tiny_gemma()
    ids = jnp.asarray(np.random.default_rng(3).integers(4, 1000, (4, 10)), jnp.int32)
    mask = jnp.ones_like(ids)
    params = Encoder(cfg).init(jax.random.key(0), ids, mask)["params"]

    def loss(p):
        e = Encoder(cfg).apply({"params": p}, ids, mask)
        return -jnp.sum(e[0] * e[1]) + jnp.sum(e[2] * e[3])

    grads = jax.jit(jax.grad(loss))(params)
    norms = jax.tree.leaves(jax.tree.map(lambda g: float(jnp.abs(g).max()), grads))
    assert all(np.isfinite(norms)) and min(norms) > 0


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="attn_logit_softcapping"):
        gemma3.config_from_hf({"attn_logit_softcapping": 50.0, "num_hidden_layers": 2})
    with pytest.raises(ValueError, match="num_kv_heads"):
        _tiny_gemma(num_kv_heads=3)
    with pytest.raises(ValueError, match="layer_types"):
        _tiny_gemma(layer_types=("sliding_attention",))
    with pytest.raises(ValueError, match="gemma3_text.*mpnet.*roberta"):
        EncoderConfig.from_hf({"model_type": "t5"})


def test_rope_settings_from_transformers_4_and_5_configs():
    v5 = gemma3._rope_from_hf({"rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}})
    v4 = gemma3._rope_from_hf({"rope_theta": 1e6, "rope_local_base_freq": 1e4,
                               "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    assert v5 == v4 == {"rope_theta": 1e6, "rope_local_theta": 1e4, "rope_scaling_factor": 8.0}
    with pytest.raises(ValueError, match="yarn"):
        gemma3._rope_from_hf({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


# ------------------------------------------------------------------------------------------------------ GGUF
def _write_gguf(path, hf_tensors, cfg, *, arch="gemma3", quantize_embedding=False):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.layer_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_sliding_window(cfg.sliding_window)
    inverse = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm",
               "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, value in hf_tensors.items():
        is_norm = "norm" in name
        stem = name[:-len(".weight")]
        if stem == "embed_tokens":
            gname = "token_embd.weight"
        elif stem == "norm":
            gname = "output_norm.weight"
        else:
            _, layer, rest = stem.split(".", 2)
            gname = f"blk.{layer}.{inverse[rest]}.weight"
        value = np.asarray(value, np.float32) + (1.0 if is_norm else 0.0)  # llama.cpp stores 1 + w
        if quantize_embedding and stem == "embed_tokens":
            q = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_reader_maps_every_tensor_and_the_config(tiny, tmp_path):
    from gecko_jax.models import gguf_io

    cfg, params = tiny["gemma3_causal"]
    hf = gemma3.params_to_hf(jax.tree.map(np.asarray, params["backbone"]), cfg)
    _write_gguf(tmp_path / "tiny.gguf", hf, cfg)
    # GGUF has no query_pre_attn_scalar: llama.cpp (and we) use head_dim; the tiny reference uses 256
    cfg_g, params_g = gguf_io.load_gguf(tmp_path / "tiny.gguf", causal=True, query_pre_attn_scalar=256)
    assert cfg_g.replace(initializer_range=cfg.initializer_range, max_position_embeddings=cfg.max_position_embeddings,
                         layer_norm_eps=cfg.layer_norm_eps) == cfg
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), params_g, params)
    ref, ids, mask = _golden("gemma3_causal")
    tokens = _tokens(cfg_g, params_g, ids, mask)
    want = np.asarray(ref["outputs"]["last_hidden_state"], np.float32)
    np.testing.assert_allclose(tokens[mask == 1], want[mask == 1], atol=ATOL, rtol=0)
    assert not gguf_io.load_gguf(tmp_path / "tiny.gguf")[0].causal  # the encoder default: bidirectional


def test_gguf_quantised_tensor_is_dequantised(tiny, tmp_path):
    gguf = pytest.importorskip("gguf")
    from gecko_jax.models import gguf_io

    cfg, params = tiny["gemma3_causal"]
    hf = gemma3.params_to_hf(jax.tree.map(np.asarray, params["backbone"]), cfg)
    _write_gguf(tmp_path / "q.gguf", hf, cfg, quantize_embedding=True)
    got = gguf_io.read_gguf_tensors(tmp_path / "q.gguf")["embed_tokens.weight"]
    want = gguf.dequantize(gguf.quants.quantize(hf["embed_tokens.weight"], gguf.GGMLQuantizationType.Q8_0),
                           gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(got, want)
    assert 0 < np.abs(got - hf["embed_tokens.weight"]).max() < 0.02  # really quantised, and close


def test_gguf_errors_name_the_file(tiny, tmp_path):
    from gecko_jax.models import gguf_io

    cfg, params = tiny["gemma3_causal"]
    hf = gemma3.params_to_hf(jax.tree.map(np.asarray, params["backbone"]), cfg)
    _write_gguf(tmp_path / "llama.gguf", hf, cfg, arch="llama")
    with pytest.raises(ValueError, match=r"llama\.gguf.*general\.architecture is 'llama'"):
        gguf_io.load_gguf(tmp_path / "llama.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match=r"junk\.gguf: not a readable GGUF"):
        gguf_io.load_gguf(tmp_path / "junk.gguf")
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        gguf_io.load_gguf(tmp_path / "missing.gguf")
