"""EncoderConfig and Hugging Face / sentence-transformers checkpoint I/O."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gecko_jax.models import Encoder, EncoderConfig, load_pretrained, save_pretrained
from gecko_jax.models import bert


def _tiny(**overrides):
    cfg = EncoderConfig.tiny(**overrides)
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.jit(Encoder(cfg).init)(jax.random.key(0), ids, ids)["params"]
    return cfg, params


def test_tiny_defaults_match_the_minilm_vocabulary():
    cfg = EncoderConfig.tiny()
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size) == \
        (30522, 32, 2, 2, 64)
    assert EncoderConfig.tiny(hidden_size=16).hidden_size == 16


def test_from_hf_reads_minilm_config(minilm_path):
    cfg = EncoderConfig.from_hf(minilm_path)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size) == (384, 6, 12, 1536)
    assert cfg.layer_norm_eps == 1e-12 and cfg.hidden_act == "gelu" and cfg.model_type == "bert"
    assert EncoderConfig.from_hf(cfg.to_hf()) == cfg


@pytest.mark.parametrize("field, value, match", [
    ("hidden_size", 31, "divisible by num_heads"),
    ("pooling", "max", "pooling must be one of"),
    ("dtype", "float16", "dtype must be one of"),
    ("num_layers", 0, "num_layers must be a positive int"),
    ("hidden_act", "mish", "hidden_act must be one of"),
    ("hidden_dropout", 1.0, r"hidden_dropout must be in \[0, 1\)"),
    ("model_type", "t5", "unsupported model_type 't5'.*support: bert, gemma3_text, mpnet, roberta, xlm-roberta"),
])
def test_config_validation_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        EncoderConfig.tiny(**{field: value})


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5EncoderModel"]}))
    with pytest.raises(ValueError, match=r"config.json: unsupported model_type 't5' \(architectures="
                                         r"\['T5EncoderModel'\]\).*support: bert"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Foo"]}))
    with pytest.raises(ValueError, match="no 'model_type' field"):
        EncoderConfig.from_hf(tmp_path)


def test_missing_folder_and_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)
    cfg, _ = _tiny()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf()))
    with pytest.raises(FileNotFoundError, match="no weights in .*expected model.safetensors"):
        load_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="Found pytorch_model.bin: convert it to safetensors"):
        load_pretrained(tmp_path)
    with pytest.raises(TypeError, match="model path must be a str"):
        load_pretrained(None)


def test_save_load_round_trip_with_projection_and_cls(tmp_path):
    cfg, params = _tiny(pooling="cls", projection_dim=8, normalize=False)
    save_pretrained(tmp_path, cfg, params, max_seq_length=64)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Dense"]
    pooling = json.loads((tmp_path / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and not pooling["pooling_mode_mean_tokens"]
    assert json.loads((tmp_path / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    dense = load_file(str(tmp_path / "2_Dense" / "model.safetensors"))
    assert dense["linear.weight"].shape == (8, 32)  # torch Linear layout [out, in]
    cfg2, params2 = load_pretrained(tmp_path)
    assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_saved_weights_use_hugging_face_names_and_layout(tmp_path):
    cfg, params = _tiny()
    save_pretrained(tmp_path, cfg, params)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    q = tensors["encoder.layer.0.attention.self.query.weight"]
    kernel = np.asarray(params["backbone"]["layer_0"]["attention"]["qkv"]["kernel"])
    np.testing.assert_array_equal(q, kernel[:, :32].T)
    assert tensors["encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["architectures"] == ["BertModel"] and hf["num_hidden_layers"] == 2
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]


def test_task_model_prefix_and_unused_heads_are_handled(tmp_path):
    cfg, params = _tiny()
    tensors = {"bert." + k: v for k, v in bert.params_to_hf(params["backbone"], cfg).items()}
    tensors["cls.predictions.bias"] = np.zeros(cfg.vocab_size, np.float32)
    tensors["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    hf = cfg.to_hf()
    hf.pop("gecko_jax")
    hf["architectures"] = ["BertForMaskedLM"]
    (tmp_path / "config.json").write_text(json.dumps(hf))
    _, params2 = load_pretrained(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_shape_mismatch_names_the_tensor(tmp_path):
    cfg, params = _tiny()
    save_pretrained(tmp_path, cfg, params, sentence_transformers=False)
    hf = json.loads((tmp_path / "config.json").read_text())
    hf["intermediate_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"'encoder.layer.0.intermediate.dense.weight' has shape \(64, 32\), "
                                         r"expected \(128, 32\)"):
        load_pretrained(tmp_path)


def test_unsupported_sentence_transformers_module(tmp_path):
    cfg, params = _tiny()
    save_pretrained(tmp_path, cfg, params)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match="pooling mode 'max_tokens' is not supported"):
        load_pretrained(tmp_path)
