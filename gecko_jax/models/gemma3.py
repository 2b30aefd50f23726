"""Gemma 3 text model as an encoder: causal (the LM as trained) or bidirectional (EmbeddingGemma's switch).

The Gemma 3 decoder stack, read from Hugging Face ``Gemma3TextModel`` / ``Gemma3ForCausalLM`` checkpoints
(``model_type: gemma3_text``) or from a GGUF file (``gguf_io``), returning the final-normed token states that the
shared ``Encoder`` mean-pools (and optionally projects: EmbeddingGemma's 768 -> 3072 -> 768 head is
``projection_hidden_dim=3072, projection_dim=768``).

Architecture (each point is a convention the reference outputs in ``shared/golden`` pin down):

* embeddings scaled by ``sqrt(hidden_size)`` (a float32 scalar); the LM head is the tied embedding table;
* RMSNorm in float32 with the ``(1 + w)`` scale (weights stored as offsets from 1, as Hugging Face does), four per
  block: ``h += post_attn_norm(attn(input_norm(h)))``, ``h += post_ffw_norm(mlp(pre_ffw_norm(h)))``; a final norm;
* GeGLU MLP ``down(gelu_tanh(gate(x)) * up(x))`` (gate and up fused into one matmul here);
* grouped-query attention (``num_kv_heads`` key/value heads), per-head RMSNorm on q and k *before* RoPE, RoPE in
  the rotate-half layout with ``rope_local_theta`` on sliding layers and ``rope_theta`` (optionally linearly
  scaled) on full layers, scores scaled by ``query_pre_attn_scalar ** -0.5`` (not ``head_dim ** -0.5``), softmax
  in float32, no biases anywhere;
* masks: causal mode lets query ``q`` see key ``k <= q``, and on sliding layers only ``q - k < sliding_window``.
  Bidirectional mode (``causal=False``) sees every key on full layers and ``|q - k| <= sliding_window // 2`` on
  sliding layers: transformers' ``use_bidirectional_attention`` turns the window into ``sliding_window // 2 + 1``
  with an exclusive bound (window 512 -> 257 keys each side, the token included). Padding hides keys only.

Packed rows (several texts per row, ``packed_ids``) restrict attention to the own text; RoPE and the windows only
depend on position differences, so each text encodes as if alone.

Attention runs densely here (``bias`` masks, the layout above) unless ``config.attention_impl`` picks
``jax.nn.dot_product_attention`` (``attention.resolve_impl``): the grouped key/value heads then go in as they are,
and the windows as ``is_causal`` / ``local_window_size`` flags (:func:`attention_window`) where cuDNN takes them.

Why not Google DeepMind's ``gemma`` package: it is built around its own checkpoint layout and sampling, and the
encoder contract here (HF/GGUF weights, bidirectional windows, packed rows, the shared ``Encoder`` head, our
fused-matmul CPU layout and ``NamedSharding`` of a plain params pytree) would have needed an adapter per point;
the model itself is ~150 lines.

Reference: Gemma Team, "Gemma 3 Technical Report", 2025; Vera et al., "EmbeddingGemma", 2025.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.models.attention import allowed_mask, fused_attention, resolve_impl
from gecko_jax.models.bert import take_tensor
from gecko_jax.models.architecture import Architecture, register
from gecko_jax.models import matmul
from gecko_jax.models.dropout import Dropout

_ACT = {
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
}
FULL, SLIDING = "full_attention", "sliding_attention"


def _dense(cfg, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=False, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32, name=name,
                    kernel_init=nn.initializers.normal(cfg.initializer_range), dot_general=matmul.dot_general)


def layer_types(cfg) -> tuple[str, ...]:
    """Per-layer attention type; without an explicit list, Gemma 3's pattern (every 6th layer full)."""
    if cfg.layer_types is not None:
        return tuple(cfg.layer_types)
    if cfg.sliding_window is None:
        return (FULL,) * cfg.num_layers
    return tuple(FULL if (i + 1) % 6 == 0 else SLIDING for i in range(cfg.num_layers))


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * (1 + scale)`` in float32; ``scale`` starts at 0 (offset parametrisation)."""

    eps: float

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return x * (1.0 + scale)


def rope_tables(positions, head_dim: int, theta: float, scaling: float = 1.0):
    """``(cos, sin)`` of shape ``float32[B, L, head_dim]`` for rotate-half RoPE (frequencies duplicated ``[f, f]``)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32) / np.float32(scaling)
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def visibility(cfg, attention_mask, packed_ids=None) -> dict[str, jax.Array]:
    """``bool[B, L, L]`` (query, key) visibility per layer type, padding (and other packed texts) hidden."""
    length = attention_mask.shape[1]
    idx = jnp.arange(length)
    delta = idx[:, None] - idx[None, :]  # q - k
    if packed_ids is None:
        keys = (attention_mask > 0)[:, None, :]
    else:
        keys = (packed_ids[:, :, None] == packed_ids[:, None, :]) & (packed_ids[:, None, :] > 0)
    if cfg.causal:
        full = delta >= 0
        local = full & (delta < (cfg.sliding_window or length + 1))
    else:
        full = jnp.ones_like(delta, dtype=bool)
        local = jnp.abs(delta) < ((cfg.sliding_window or 2 * length) // 2 + 1)
    return {FULL: keys & full[None], SLIDING: keys & local[None]}


def attention_window(cfg, kind: str) -> tuple[bool, tuple[int, int] | None]:
    """``(causal, (left, right) window or None)`` of a layer type: :func:`visibility` in the terms of
    ``attention.visibility_mask`` (the fused implementations' flags)."""
    if kind == FULL or cfg.sliding_window is None:
        return cfg.causal, None
    if cfg.causal:
        return True, (cfg.sliding_window - 1, 0)
    return False, (cfg.sliding_window // 2, cfg.sliding_window // 2)


class Gemma3Attention(nn.Module):
    config: Any
    theta: float
    scaling: float

    @nn.compact
    def __call__(self, x, bias, positions, *, deterministic: bool, fused: dict | None = None):
        """``bias``: additive ``float32[B, L, L]`` mask (dense), or None with ``fused``: the keyword arguments of
        ``attention.fused_attention`` (``implementation``, ``key_mask`` or ``pairs``, ``causal``, ``window``)."""
        cfg = self.config
        b, length, _ = x.shape
        nq, nkv, d = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        # One fused [H, (nq + 2 nkv) d] matmul: on CPU one wide matmul beats three narrow ones.
        qkv = _dense(cfg, (nq + 2 * nkv) * d, "qkv")(x)
        q = qkv[..., :nq * d].reshape(b, length, nq, d)
        k = qkv[..., nq * d:(nq + nkv) * d].reshape(b, length, nkv, d)
        v = qkv[..., (nq + nkv) * d:].reshape(b, length, nkv, d)
        q = RMSNorm(cfg.layer_norm_eps, name="q_norm")(q)
        k = RMSNorm(cfg.layer_norm_eps, name="k_norm")(k)
        cos, sin = rope_tables(positions, d, self.theta, self.scaling)
        dtype = jnp.dtype(cfg.dtype)
        q = (_rotate(q, cos, sin) * self._score_scale()).astype(dtype)
        k = _rotate(k, cos, sin).astype(dtype)
        if fused is not None:  # query heads grouped by key/value head in the same order as below
            ctx = fused_attention(q, k, v.astype(dtype), **fused).reshape(b, length, nq * d)
            return _dense(cfg, cfg.hidden_size, "o_proj")(ctx)
        q = q.reshape(b, length, nkv, nq // nkv, d)  # query heads grouped by the key/value head they share
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) + bias[:, None, None]
        probs = jax.nn.softmax(scores, axis=-1)
        probs = Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bkgqs,bskd->bqkgd", probs.astype(v.dtype), v.astype(dtype)).reshape(b, length, nq * d)
        return _dense(cfg, cfg.hidden_size, "o_proj")(ctx)

    def _score_scale(self) -> float:
        scalar = self.config.query_pre_attn_scalar or self.config.head_dim
        return float(np.float32(scalar) ** np.float32(-0.5))


class Gemma3Layer(nn.Module):
    config: Any
    kind: str  # FULL or SLIDING

    @nn.compact
    def __call__(self, x, bias, positions, *, deterministic: bool, fused: dict | None = None):
        cfg = self.config
        eps = cfg.layer_norm_eps
        drop = Dropout(cfg.hidden_dropout)
        theta, scaling = ((cfg.rope_theta, cfg.rope_scaling_factor) if self.kind == FULL
                          else (cfg.rope_local_theta, 1.0))
        h = RMSNorm(eps, name="input_layernorm")(x)
        h = Gemma3Attention(cfg, theta, scaling, name="self_attn")(h, bias, positions, deterministic=deterministic,
                                                                    fused=fused)
        x = x + drop(RMSNorm(eps, name="post_attention_layernorm")(h), deterministic=deterministic)
        h = RMSNorm(eps, name="pre_feedforward_layernorm")(x)
        gate_up = _dense(cfg, 2 * cfg.intermediate_size, "gate_up")(h)
        gate, up = gate_up[..., :cfg.intermediate_size], gate_up[..., cfg.intermediate_size:]
        h = _dense(cfg, cfg.hidden_size, "down_proj")(_ACT[cfg.hidden_act](gate) * up)
        return x + drop(RMSNorm(eps, name="post_feedforward_layernorm")(h), deterministic=deterministic)


class Gemma3Backbone(nn.Module):
    """Token states ``float32[B, L, H]`` after the final RMSNorm.

    Args (``__call__``): as ``BertBackbone``; ``token_type_ids`` is ignored, ``position_ids`` default to
    ``0..L-1`` for every row (right padding keeps real tokens at their positions; padding only hides keys).
    """

    config: Any

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, position_ids=None, packed_ids=None,
                 deterministic: bool = True):
        del token_type_ids
        cfg = self.config
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=nn.initializers.normal(cfg.initializer_range),
                         name="embed_tokens")
        x = embed(input_ids).astype(jnp.float32) * jnp.float32(np.sqrt(np.float32(cfg.hidden_size)))
        x = Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        impl = resolve_impl(cfg.attention_impl, dtype=jnp.dtype(cfg.dtype),
                            head_dim=cfg.head_dim, length=input_ids.shape[1],
                            dropout=not deterministic and cfg.attention_dropout > 0)
        if impl == "dense":
            masks = visibility(cfg, attention_mask, packed_ids)
            neg = jnp.finfo(jnp.float32).min  # not -inf: a query that sees no key (padding) softmaxes to uniform
            biases = {kind: jnp.where(m, 0.0, neg) for kind, m in masks.items()}
            fused = {kind: None for kind in masks}
        else:  # jax.nn.dot_product_attention: keys and windows as flags (cuDNN skips what they hide)
            keys = ({"key_mask": attention_mask > 0} if packed_ids is None
                    else {"pairs": allowed_mask(attention_mask, packed_ids)})
            biases = {FULL: None, SLIDING: None}
            fused = {}
            for kind in (FULL, SLIDING):
                causal, window = attention_window(cfg, kind)
                fused[kind] = dict(implementation=impl, causal=causal, window=window, **keys)
        for i, kind in enumerate(layer_types(cfg)):
            x = Gemma3Layer(cfg, kind, name=f"layer_{i}")(x, biases[kind], position_ids, deterministic=deterministic,
                                                          fused=fused[kind])
        return RMSNorm(cfg.layer_norm_eps, name="norm")(x)


def lm_logits(backbone_params: Mapping[str, Any], hidden) -> jax.Array:
    """Next-token logits ``float32[..., vocab]`` from final states with the tied embedding (Gemma 3 has no
    final-logit softcapping)."""
    table = jnp.asarray(backbone_params["embed_tokens"]["embedding"], jnp.float32)
    return jnp.einsum("...h,vh->...v", hidden.astype(jnp.float32), table)


# ---------------------------------------------------------------------------------------------------------- config

def _rope_from_hf(hf: Mapping[str, Any]) -> dict:
    """Thetas and linear scaling from transformers 5 ``rope_parameters`` or 4.x ``rope_theta``/``rope_scaling``."""
    params = hf.get("rope_parameters")
    if isinstance(params, Mapping) and (FULL in params or SLIDING in params):
        full, local = dict(params.get(FULL) or {}), dict(params.get(SLIDING) or {})
    else:
        full = dict(hf.get("rope_scaling") or {})
        full.setdefault("rope_theta", hf.get("rope_theta", 1_000_000.0))
        local = {"rope_type": "default", "rope_theta": hf.get("rope_local_base_freq", 10_000.0)}
    for kind, p in ((FULL, full), (SLIDING, local)):
        rope_type = p.get("rope_type", p.get("type", "default"))
        if rope_type not in ("default", "linear") or (kind == SLIDING and rope_type != "default"):
            raise ValueError(f"RoPE type {rope_type!r} on {kind} layers is not supported; gecko_jax Gemma 3 supports "
                             "'default' on both and 'linear' on full-attention layers")
    factor = float(full.get("factor", 1.0)) if full.get("rope_type", full.get("type")) == "linear" else 1.0
    return dict(rope_theta=float(full.get("rope_theta", 1_000_000.0)),
                rope_local_theta=float(local.get("rope_theta", 10_000.0)), rope_scaling_factor=factor)


def config_from_hf(hf: Mapping[str, Any]) -> dict:
    if hf.get("attn_logit_softcapping") is not None:
        raise ValueError(f"attn_logit_softcapping={hf['attn_logit_softcapping']} is not supported (Gemma 3 has "
                         "none; Gemma 2 checkpoints use it)")
    num_layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None and hf.get("sliding_window") is not None:
        pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
        types = [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=num_layers,
        num_heads=hf["num_attention_heads"], num_kv_heads=hf.get("num_key_value_heads"),
        attention_head_dim=hf.get("head_dim", 256), intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 32768), type_vocab_size=0,
        layer_norm_eps=hf.get("rms_norm_eps", 1e-6),
        hidden_act=hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh",
        hidden_dropout=0.0, attention_dropout=float(hf.get("attention_dropout", 0.0) or 0.0),
        pad_token_id=hf.get("pad_token_id", 0) or 0, initializer_range=hf.get("initializer_range", 0.02),
        causal=not hf.get("use_bidirectional_attention", False), sliding_window=hf.get("sliding_window"),
        layer_types=tuple(types) if types is not None else None,
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256), model_type="gemma3_text", **_rope_from_hf(hf))


def config_to_hf(cfg) -> dict:
    full = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling_factor != 1.0:
        full = {"rope_type": "linear", "factor": cfg.rope_scaling_factor, "rope_theta": cfg.rope_theta}
    return {
        "architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim, "hidden_activation": cfg.hidden_act,
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.layer_norm_eps,
        "attention_bias": False, "attention_dropout": cfg.attention_dropout,
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar or cfg.head_dim, "sliding_window": cfg.sliding_window,
        "layer_types": list(layer_types(cfg)), "use_bidirectional_attention": not cfg.causal,
        "rope_parameters": {FULL: full, SLIDING: {"rope_type": "default", "rope_theta": cfg.rope_local_theta}},
        # transformers 4.x spellings of the same values (5.x reads rope_parameters and drops these)
        "rope_theta": cfg.rope_theta, "rope_local_base_freq": cfg.rope_local_theta,
        "final_logit_softcapping": None, "attn_logit_softcapping": None, "tie_word_embeddings": True,
        "pad_token_id": cfg.pad_token_id, "bos_token_id": 2, "eos_token_id": 1,
        "initializer_range": cfg.initializer_range, "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------------------------------------- weights

def params_from_hf(tensors: Mapping[str, np.ndarray], cfg) -> dict:
    """``Gemma3TextModel`` tensors (prefix stripped; Linear weights ``[out, in]``, norms as offsets) -> params."""
    h, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    nq, nkv = cfg.num_heads, cfg.kv_heads

    def kernel(name, n_in, n_out):
        return take_tensor(tensors, f"{name}.weight", (n_out, n_in)).T

    def norm(name, width=h):
        return {"scale": take_tensor(tensors, f"{name}.weight", (width,))}

    params: dict[str, Any] = {"embed_tokens": {"embedding": take_tensor(tensors, "embed_tokens.weight", (cfg.vocab_size, h))},
                              "norm": norm("norm")}
    for i in range(cfg.num_layers):
        p = f"layers.{i}"
        attn = f"{p}.self_attn"
        params[f"layer_{i}"] = {
            "input_layernorm": norm(f"{p}.input_layernorm"),
            "post_attention_layernorm": norm(f"{p}.post_attention_layernorm"),
            "pre_feedforward_layernorm": norm(f"{p}.pre_feedforward_layernorm"),
            "post_feedforward_layernorm": norm(f"{p}.post_feedforward_layernorm"),
            "self_attn": {
                "qkv": {"kernel": np.concatenate([kernel(f"{attn}.q_proj", h, nq * d), kernel(f"{attn}.k_proj", h, nkv * d),
                                                  kernel(f"{attn}.v_proj", h, nkv * d)], axis=1)},
                "o_proj": {"kernel": np.ascontiguousarray(kernel(f"{attn}.o_proj", nq * d, h))},
                "q_norm": norm(f"{attn}.q_norm", d), "k_norm": norm(f"{attn}.k_norm", d),
            },
            "gate_up": {"kernel": np.concatenate([kernel(f"{p}.mlp.gate_proj", h, f), kernel(f"{p}.mlp.up_proj", h, f)],
                                                 axis=1)},
            "down_proj": {"kernel": np.ascontiguousarray(kernel(f"{p}.mlp.down_proj", f, h))},
        }
    return params


def params_to_hf(params: Mapping[str, Any], cfg) -> dict[str, np.ndarray]:
    """Backbone params -> ``Gemma3TextModel`` tensor dict (inverse of ``params_from_hf``)."""
    f, d, nq, nkv = cfg.intermediate_size, cfg.head_dim, cfg.num_heads, cfg.kv_heads

    def arr(x):
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32))

    out = {"embed_tokens.weight": arr(params["embed_tokens"]["embedding"]), "norm.weight": arr(params["norm"]["scale"])}
    for i in range(cfg.num_layers):
        p, lp = f"layers.{i}", params[f"layer_{i}"]
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            out[f"{p}.{name}.weight"] = arr(lp[name]["scale"])
        attn = lp["self_attn"]
        qkv = np.asarray(attn["qkv"]["kernel"])
        out[f"{p}.self_attn.q_proj.weight"] = arr(qkv[:, :nq * d].T)
        out[f"{p}.self_attn.k_proj.weight"] = arr(qkv[:, nq * d:(nq + nkv) * d].T)
        out[f"{p}.self_attn.v_proj.weight"] = arr(qkv[:, (nq + nkv) * d:].T)
        out[f"{p}.self_attn.o_proj.weight"] = arr(np.asarray(attn["o_proj"]["kernel"]).T)
        out[f"{p}.self_attn.q_norm.weight"] = arr(attn["q_norm"]["scale"])
        out[f"{p}.self_attn.k_norm.weight"] = arr(attn["k_norm"]["scale"])
        gate_up = np.asarray(lp["gate_up"]["kernel"])
        out[f"{p}.mlp.gate_proj.weight"] = arr(gate_up[:, :f].T)
        out[f"{p}.mlp.up_proj.weight"] = arr(gate_up[:, f:].T)
        out[f"{p}.mlp.down_proj.weight"] = arr(np.asarray(lp["down_proj"]["kernel"]).T)
    return out


GEMMA3 = register(Architecture(
    model_type="gemma3_text",
    hf_architectures=("Gemma3TextModel", "Gemma3ForCausalLM"),
    backbone=Gemma3Backbone,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    hf_prefixes=("model.",),
))
