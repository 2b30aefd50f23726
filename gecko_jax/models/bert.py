"""BERT-family backbone (BERT, MiniLM, and checkpoints in the ``BertModel`` layout) and its Hugging Face converters.

Post-LayerNorm transformer (Devlin et al., 2019): ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``, learned absolute
positions and token-type embeddings. Query/key/value are one fused ``[H, 3H]`` matmul: on CPU one wide matmul runs
closer to peak than three narrow ones, and on accelerators it is the usual layout. Matmuls run in the compute dtype
(``config.dtype``); LayerNorm, softmax and the residual stream stay float32 so that bfloat16 compute loses little.

Reference: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers", NAACL 2019;
Wang et al., "MiniLM", NeurIPS 2020.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.models.attention import allowed_mask, attention
from gecko_jax.models.architecture import Architecture, register
from gecko_jax.models import matmul
from gecko_jax.models.dropout import Dropout

_ACT = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # Hugging Face "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def _dense(config, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=jnp.dtype(config.dtype), param_dtype=jnp.float32, name=name,
                    kernel_init=nn.initializers.normal(config.initializer_range), dot_general=matmul.dot_general)


def _layer_norm(config, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


class BertEmbeddings(nn.Module):
    config: Any

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids=None, *, deterministic: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        seq_len = input_ids.shape[1]
        if position_ids is None:
            if seq_len > cfg.max_position_embeddings:
                raise ValueError(f"input length {seq_len} exceeds max_position_embeddings="
                                 f"{cfg.max_position_embeddings}")
            position_ids = jnp.arange(seq_len)[None, :]
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init, name="word_embeddings")(input_ids)
        pos = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                       name="position_embeddings")(position_ids)
        x = x + pos
        if cfg.type_vocab_size:
            x = x + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                             name="token_type_embeddings")(token_type_ids)
        x = _layer_norm(cfg, "layer_norm")(x)
        return Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Self-attention sublayer: fused QKV projection, :func:`gecko_jax.models.attention.attention`, output projection.

    ``mask`` is a boolean ``allowed`` mask broadcastable to ``[B, heads, L, L]`` (see ``attention.allowed_mask``); a
    float additive bias (the earlier interface: 0 = attend, ``finfo.min`` = masked) is still accepted. ``bias``:
    float scores added before the mask (MPNet's relative positions), or None. ``config.attention_impl`` picks the
    kernel (``attention.resolve_impl``).
    """

    config: Any

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool, bias=None):
        cfg = self.config
        b, length, _ = x.shape
        if mask.dtype != jnp.bool_:  # additive float scores: finfo.min hides a key, other values are added
            allowed = mask > jnp.finfo(jnp.float32).min / 2
            scores = jnp.where(allowed, mask, 0.0)  # hidden keys: the boolean mask, not a huge finite number
            mask, bias = allowed, scores if bias is None else scores + bias
        qkv = _dense(cfg, 3 * cfg.hidden_size, "qkv")(x).reshape(b, length, 3, cfg.num_heads, cfg.head_dim)
        dropout = None
        if not deterministic and cfg.attention_dropout > 0:
            dropout = functools.partial(Dropout(cfg.attention_dropout), deterministic=False)
        ctx = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask, dropout=dropout, bias=bias,
                        impl=cfg.attention_impl)
        return _dense(cfg, cfg.hidden_size, "out")(ctx)


class BertLayer(nn.Module):
    config: Any

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool, bias=None):
        cfg = self.config
        drop = Dropout(cfg.hidden_dropout)
        h = BertSelfAttention(cfg, name="attention")(x, mask, deterministic=deterministic, bias=bias)
        x = _layer_norm(cfg, "attention_norm")(x + drop(h, deterministic=deterministic).astype(jnp.float32))
        h = _ACT[cfg.hidden_act](_dense(cfg, cfg.intermediate_size, "mlp_in")(x))
        h = _dense(cfg, cfg.hidden_size, "mlp_out")(h)
        return _layer_norm(cfg, "mlp_norm")(x + drop(h, deterministic=deterministic).astype(jnp.float32))


class BertBackbone(nn.Module):
    """Token states ``[B, L, H]`` (float32) of a BERT encoder.

    Args (``__call__``):
      input_ids: ``int[B, L]`` token ids.
      attention_mask: ``int|bool[B, L]``, 1 for real tokens, 0 for padding.
      token_type_ids: ``int[B, L]`` token types (BERT's sentence A/B), or None for all zeros.
      position_ids: ``int[B, L]`` positions, or None for ``0..L-1``.
      packed_ids: ``int[B, L]`` for packed rows: several sequences share a row, numbered 1, 2, ... (0 = padding);
        attention stays within a sequence, so each one is encoded exactly as if alone (with ``position_ids``
        restarting at 0 for each). None for one sequence per row.
      deterministic: disable dropout (True for inference).
    """

    config: Any

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, position_ids=None, packed_ids=None,
                 deterministic: bool = True):
        cfg = self.config
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = BertEmbeddings(cfg, name="embeddings")(input_ids, token_type_ids, position_ids,
                                                   deterministic=deterministic)
        # Boolean mask, computed once per call ([B, 1, 1, L], or [B, 1, L, L] block-diagonal for packed rows).
        mask = allowed_mask(attention_mask, packed_ids)
        for i in range(cfg.num_layers):
            x = BertLayer(cfg, name=f"layer_{i}")(x, mask, deterministic=deterministic)
        return x


# ---------------------------------------------------------------------------------------------------------- config

def config_from_hf(hf: Mapping[str, Any]) -> dict:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={hf['position_embedding_type']!r} is not supported; "
                         "gecko_jax BERT supports 'absolute'")
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=hf.get("pad_token_id", 0) or 0, initializer_range=hf.get("initializer_range", 0.02),
        model_type="bert")


def config_to_hf(cfg) -> dict:
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps, "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout, "attention_probs_dropout_prob": cfg.attention_dropout,
        "pad_token_id": cfg.pad_token_id, "initializer_range": cfg.initializer_range,
        "position_embedding_type": "absolute", "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------------------------------------- weights

def take_tensor(tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``tensors[name]`` as float32, checked against the shape config.json implies (every family's loader)."""
    if name not in tensors:
        raise KeyError(f"checkpoint is missing tensor {name!r} (expected shape {shape})")
    value = np.asarray(tensors[name], dtype=np.float32)
    if value.shape != shape:
        raise ValueError(f"checkpoint tensor {name!r} has shape {value.shape}, expected {shape} from config.json")
    return value


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg) -> dict:
    """Hugging Face ``BertModel`` tensors (``[out, in]`` Linear weights) -> backbone params (``[in, out]`` kernels)."""
    h, f = cfg.hidden_size, cfg.intermediate_size

    def linear(prefix, n_in, n_out):
        return {"kernel": take_tensor(tensors, f"{prefix}.weight", (n_out, n_in)).T.copy(),
                "bias": take_tensor(tensors, f"{prefix}.bias", (n_out,))}

    def norm(prefix):
        return {"scale": take_tensor(tensors, f"{prefix}.weight", (h,)), "bias": take_tensor(tensors, f"{prefix}.bias", (h,))}

    emb = {
        "word_embeddings": {"embedding": take_tensor(tensors, "embeddings.word_embeddings.weight", (cfg.vocab_size, h))},
        "position_embeddings": {"embedding": take_tensor(tensors, "embeddings.position_embeddings.weight",
                                                   (cfg.max_position_embeddings, h))},
        "layer_norm": norm("embeddings.LayerNorm"),
    }
    if cfg.type_vocab_size:
        emb["token_type_embeddings"] = {"embedding": take_tensor(tensors, "embeddings.token_type_embeddings.weight",
                                                           (cfg.type_vocab_size, h))}
    params = {"embeddings": emb}
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        q, k, v = (linear(f"{p}.attention.self.{n}", h, h) for n in ("query", "key", "value"))
        params[f"layer_{i}"] = {
            "attention": {
                "qkv": {"kernel": np.concatenate([q["kernel"], k["kernel"], v["kernel"]], axis=1),
                        "bias": np.concatenate([q["bias"], k["bias"], v["bias"]])},
                "out": linear(f"{p}.attention.output.dense", h, h),
            },
            "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
            "mlp_in": linear(f"{p}.intermediate.dense", h, f),
            "mlp_out": linear(f"{p}.output.dense", f, h),
            "mlp_norm": norm(f"{p}.output.LayerNorm"),
        }
    return params


def params_to_hf(params: Mapping[str, Any], cfg) -> dict[str, np.ndarray]:
    """Backbone params -> Hugging Face ``BertModel`` tensor dict (the inverse of ``params_from_hf``)."""
    h = cfg.hidden_size
    out: dict[str, np.ndarray] = {}

    def arr(x):
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32))

    def linear(prefix, p):
        out[f"{prefix}.weight"] = arr(np.asarray(p["kernel"]).T)
        out[f"{prefix}.bias"] = arr(p["bias"])

    def norm(prefix, p):
        out[f"{prefix}.weight"] = arr(p["scale"])
        out[f"{prefix}.bias"] = arr(p["bias"])

    emb = params["embeddings"]
    out["embeddings.word_embeddings.weight"] = arr(emb["word_embeddings"]["embedding"])
    out["embeddings.position_embeddings.weight"] = arr(emb["position_embeddings"]["embedding"])
    if cfg.type_vocab_size:
        out["embeddings.token_type_embeddings.weight"] = arr(emb["token_type_embeddings"]["embedding"])
    norm("embeddings.LayerNorm", emb["layer_norm"])
    for i in range(cfg.num_layers):
        p, lp = f"encoder.layer.{i}", params[f"layer_{i}"]
        kernel, bias = np.asarray(lp["attention"]["qkv"]["kernel"]), np.asarray(lp["attention"]["qkv"]["bias"])
        for j, name in enumerate(("query", "key", "value")):
            linear(f"{p}.attention.self.{name}",
                   {"kernel": kernel[:, j * h:(j + 1) * h], "bias": bias[j * h:(j + 1) * h]})
        linear(f"{p}.attention.output.dense", lp["attention"]["out"])
        norm(f"{p}.attention.output.LayerNorm", lp["attention_norm"])
        linear(f"{p}.intermediate.dense", lp["mlp_in"])
        linear(f"{p}.output.dense", lp["mlp_out"])
        norm(f"{p}.output.LayerNorm", lp["mlp_norm"])
    return out


BERT = register(Architecture(
    model_type="bert",
    hf_architectures=("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification"),
    backbone=BertBackbone,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    hf_prefixes=("bert.",),
    hf_pooler=True,
))
