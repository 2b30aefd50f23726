"""MPNet backbone (all-mpnet-base-v2 and other ``MPNetModel`` checkpoints) and its Hugging Face converters.

MPNet is a post-LayerNorm BERT-shaped encoder with two differences:

* **Relative position bias**: one table ``[num_buckets, heads]`` shared by all layers, looked up with T5-style
  bidirectional buckets of ``k - q`` (half the buckets per direction: distances below a quarter of the buckets
  exact, larger ones log-spaced up to ``relative_attention_max_distance``, then clipped) and added to the scaled
  scores before the padding mask. Distances are shift invariant, so packed and left-padded rows are unaffected.
* **Absolute positions** as RoBERTa's (``padding_idx + 1`` onwards over real tokens, padding at ``padding_idx`` =
  1), no token types. Layer norm eps comes from ``config.json`` (1e-5 for all-mpnet-base-v2, 1e-12 by default).

Layers are BERT's (``bert.BertLayer``, imported): MPNet's ``attn.q/k/v/o`` and ``attention.LayerNorm`` are renamed
to BERT's names and handed to BERT's converters, so both families share one weight layout.

Reference: Song et al., "MPNet: Masked and Permuted Pre-training for Language Understanding", NeurIPS 2020.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gecko_jax.models import bert
from gecko_jax.models.attention import allowed_mask
from gecko_jax.models.architecture import Architecture, register
from gecko_jax.models.roberta import offset_position_ids

_PAD = 1  # MPNetEmbeddings hard-codes padding_idx = 1, whatever config.json says


def relative_position_buckets(length: int, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """``int32[length, length]`` bucket of key ``k`` for query ``q`` (MPNet/T5 bidirectional rule).

    Computed on the host for the static length in float32, the precision the reference uses: bucket borders sit at
    powers of two (16, 32, 64 for the defaults), where the log ratio is exact in float32 too.
    """
    pos = np.arange(length)
    n = pos[:, None] - pos[None, :]  # q - k: positive for keys on the left
    half = num_buckets // 2
    out = np.where(n < 0, half, 0)
    n = np.abs(n)
    max_exact = half // 2
    safe = np.maximum(n, max_exact).astype(np.float32)  # small distances take the exact branch below
    ratio = np.log(safe / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (ratio * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (out + np.where(n < max_exact, n, large)).astype(np.int32)


class MPNetBackbone(nn.Module):
    """Token states ``float32[B, L, H]`` of an MPNet encoder; arguments as ``BertBackbone`` (no token types)."""

    config: Any

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, position_ids=None, packed_ids=None,
                 deterministic: bool = True):
        del token_type_ids  # MPNet has none
        cfg = self.config
        length = input_ids.shape[1]
        if length + _PAD + 1 > cfg.max_position_embeddings:
            raise ValueError(f"input length {length} plus the position offset {_PAD + 1} exceeds "
                             f"max_position_embeddings={cfg.max_position_embeddings}")
        mask = attention_mask if packed_ids is None else packed_ids > 0
        positions = offset_position_ids(mask, _PAD, position_ids)
        x = bert.BertEmbeddings(cfg, name="embeddings")(input_ids, None, positions, deterministic=deterministic)
        table = self.param("relative_attention_bias", nn.initializers.normal(cfg.initializer_range),
                           (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.float32)
        buckets = relative_position_buckets(length, cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance)
        rel = jnp.transpose(table[buckets], (2, 0, 1))[None]  # [1, heads, L, L]
        # Relative bias added to the scores first, then the boolean mask (as MPNet's additive finfo.min mask: the
        # scores of visible keys are the same numbers, hidden keys get weight 0 either way).
        allowed = allowed_mask(attention_mask, packed_ids)
        for i in range(cfg.num_layers):
            x = bert.BertLayer(cfg, name=f"layer_{i}")(x, allowed, deterministic=deterministic, bias=rel)
        return x


# ---------------------------------------------------------------------------------------------------------- config

def config_from_hf(hf: Mapping[str, Any]) -> dict:
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 514), type_vocab_size=0,
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=_PAD, initializer_range=hf.get("initializer_range", 0.02),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32), model_type="mpnet")


def config_to_hf(cfg) -> dict:
    return {
        "architectures": ["MPNetModel"], "model_type": "mpnet", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
        "layer_norm_eps": cfg.layer_norm_eps, "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout, "attention_probs_dropout_prob": cfg.attention_dropout,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets, "pad_token_id": _PAD,
        "bos_token_id": 0, "eos_token_id": 2, "initializer_range": cfg.initializer_range, "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------------------------------------- weights

# MPNet name -> BERT name (the inverse is applied on save).
_TO_BERT = ((re.compile(r"\.attention\.attn\.([qkv])\."), {"q": ".attention.self.query.", "k": ".attention.self.key.",
                                                            "v": ".attention.self.value."}),
            (re.compile(r"\.attention\.attn\.o\."), ".attention.output.dense."),
            (re.compile(r"\.attention\.LayerNorm\."), ".attention.output.LayerNorm."))
_FROM_BERT = ((".attention.self.query.", ".attention.attn.q."), (".attention.self.key.", ".attention.attn.k."),
              (".attention.self.value.", ".attention.attn.v."), (".attention.output.dense.", ".attention.attn.o."),
              (".attention.output.LayerNorm.", ".attention.LayerNorm."))


def _bert_name(name: str) -> str:
    for pattern, repl in _TO_BERT:
        if isinstance(repl, dict):
            name = pattern.sub(lambda m: repl[m.group(1)], name)
        else:
            name = pattern.sub(repl, name)
    return name


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg) -> dict:
    """Hugging Face ``MPNetModel`` tensors -> backbone params (BERT's converter on renamed tensors + the bias)."""
    params = bert.params_from_hf({_bert_name(k): v for k, v in tensors.items()}, cfg)
    params["relative_attention_bias"] = bert.take_tensor(tensors, "encoder.relative_attention_bias.weight",
                                                   (cfg.relative_attention_num_buckets, cfg.num_heads))
    return params


def params_to_hf(params: Mapping[str, Any], cfg) -> dict[str, np.ndarray]:
    """Backbone params -> Hugging Face ``MPNetModel`` tensor dict (inverse of ``params_from_hf``)."""
    out = {}
    for name, value in bert.params_to_hf(params, cfg).items():
        for old, new in _FROM_BERT:
            name = name.replace(old, new)
        out[name] = value
    out["encoder.relative_attention_bias.weight"] = np.ascontiguousarray(
        np.asarray(params["relative_attention_bias"], np.float32))
    return out


MPNET = register(Architecture(
    model_type="mpnet",
    hf_architectures=("MPNetModel", "MPNetForMaskedLM"),
    backbone=MPNetBackbone,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    hf_prefixes=("mpnet.",),
    hf_pooler=True,
))
