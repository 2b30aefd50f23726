"""Encoder configuration: one typed dataclass for every encoder family, read from Hugging Face ``config.json``.

Families are registered by Hugging Face ``model_type`` in ``ARCHITECTURES`` (see ``gecko_jax.models.registry``):
adding RoBERTa/XLM-R, MPNet or a T5 encoder means a backbone module, a weight converter and a registry entry; the
config, pooling, projection and checkpoint code stay as they are.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Literal, Mapping

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")
_DTYPES = ("float32", "bfloat16")
_POOLINGS = ("mean", "cls")
_LAYER_TYPES = ("full_attention", "sliding_attention")
_ATTENTION_IMPLS = ("dense", "xla", "cudnn", "auto")  # = attention.IMPLEMENTATIONS (this module imports no jax)

# Fields of EncoderConfig that are ours (not Hugging Face's); saved under this key inside config.json.
GECKO_CONFIG_KEY = "gecko_jax"


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Shape and behaviour of a text encoder (a BERT-family transformer plus pooling head).

    Attributes mirror Hugging Face names where one exists, so ``from_hf`` is a rename, not a translation.
    """

    vocab_size: int = 30522  # rows of the word-embedding table
    hidden_size: int = 384  # width of the residual stream (d_model)
    num_layers: int = 6  # transformer blocks
    num_heads: int = 12  # attention heads; must divide hidden_size
    intermediate_size: int = 1536  # width of the feed-forward block
    max_position_embeddings: int = 512  # longest input the position table covers
    type_vocab_size: int = 2  # segment (token type) ids; 0 disables the table
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm
    hidden_act: str = "gelu"  # feed-forward activation, Hugging Face spelling ("gelu" is the exact erf GELU)
    hidden_dropout: float = 0.1  # dropout on embeddings and sublayer outputs (training only)
    attention_dropout: float = 0.1  # dropout on attention probabilities (training only)
    pad_token_id: int = 0  # id of [PAD]
    model_type: str = "bert"  # registry key (Hugging Face model_type)
    pooling: Literal["mean", "cls"] = "mean"  # mean over non-padding tokens, or the first ([CLS]) token
    normalize: bool = True  # L2-normalise the output embedding
    projection_dim: int | None = None  # optional linear head after pooling (sentence-transformers Dense module)
    projection_bias: bool = True  # whether the projection head has a bias
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; parameters always stay float32
    initializer_range: float = 0.02  # std of the truncated-normal init for fresh weights
    # Two-layer head (EmbeddingGemma's 768 -> 3072 -> 768): pooled -> projection_hidden_dim -> projection_dim, both
    # linear (sentence-transformers Dense modules with identity activation). None: at most one projection.
    projection_hidden_dim: int | None = None
    # ---- family-specific fields (families that do not use one ignore it) ----
    relative_attention_num_buckets: int = 32  # mpnet: T5-style relative position buckets, both directions together
    relative_attention_max_distance: int = 128  # mpnet: distances from here on share the last bucket
    attention_head_dim: int | None = None  # gemma3_text: per-head width when not hidden_size // num_heads (270M: 256)
    num_kv_heads: int | None = None  # gemma3_text: key/value heads (grouped-query attention); None = num_heads
    causal: bool = False  # gemma3_text: causal (decoder) attention; False = bidirectional (EmbeddingGemma's switch)
    sliding_window: int | None = None  # gemma3_text: window of the local layers, as written in config.json
    layer_types: tuple[str, ...] | None = None  # gemma3_text: "sliding_attention" | "full_attention" per layer
    rope_theta: float = 10000.0  # gemma3_text: RoPE base of full-attention layers
    rope_local_theta: float = 10000.0  # gemma3_text: RoPE base of sliding-attention layers
    rope_scaling_factor: float = 1.0  # gemma3_text: linear RoPE scaling of full-attention layers (Gemma 3 4B+: 8)
    query_pre_attn_scalar: float | None = None  # gemma3_text: scores scaled by this ** -0.5 (None: head_dim)
    # ---- runtime choices (not model properties: never written to config.json) ----
    # Attention kernel (gecko_jax/models/attention.py): "dense" (the CPU-tuned formulation), "xla" / "cudnn"
    # (jax.nn.dot_product_attention), "auto": cuDNN flash attention on a CUDA GPU when it applies, dense elsewhere.
    attention_impl: Literal["dense", "xla", "cudnn", "auto"] = "auto"

    def __post_init__(self):
        def positive(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")

        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            positive(name)
        if self.attention_head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"EncoderConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads "
                             f"({self.num_heads}), or set attention_head_dim")
        for name in ("attention_head_dim", "num_kv_heads", "sliding_window", "projection_hidden_dim"):
            if getattr(self, name) is not None:
                positive(name)
        if self.projection_hidden_dim is not None and self.projection_dim is None:
            raise ValueError("EncoderConfig.projection_hidden_dim needs projection_dim (the head's output width)")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"EncoderConfig.num_kv_heads ({self.num_kv_heads}) must divide num_heads "
                             f"({self.num_heads})")
        if self.layer_types is not None:
            if not isinstance(self.layer_types, tuple):
                object.__setattr__(self, "layer_types", tuple(self.layer_types))  # from JSON lists; stays hashable
            if len(self.layer_types) != self.num_layers or any(t not in _LAYER_TYPES for t in self.layer_types):
                raise ValueError(f"EncoderConfig.layer_types must list one of {_LAYER_TYPES} per layer "
                                 f"({self.num_layers}), got {self.layer_types!r}")
            if "sliding_attention" in self.layer_types and self.sliding_window is None:
                raise ValueError("EncoderConfig.layer_types has sliding_attention layers but sliding_window is None")
        for name in ("relative_attention_num_buckets", "relative_attention_max_distance"):
            positive(name)
        for name in ("rope_theta", "rope_local_theta", "rope_scaling_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EncoderConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise ValueError(f"EncoderConfig.type_vocab_size must be an int >= 0, got {self.type_vocab_size!r}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"EncoderConfig.hidden_act must be one of {_ACTIVATIONS}, got {self.hidden_act!r}")
        if self.pooling not in _POOLINGS:
            raise ValueError(f"EncoderConfig.pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.attention_impl not in _ATTENTION_IMPLS:
            raise ValueError(f"EncoderConfig.attention_impl must be one of {_ATTENTION_IMPLS}, got "
                             f"{self.attention_impl!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"EncoderConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        for name in ("hidden_dropout", "attention_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"EncoderConfig.{name} must be in [0, 1), got {rate!r}")
        if self.projection_dim is not None:
            positive("projection_dim")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"EncoderConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        from gecko_jax.models.registry import check_supported

        check_supported(self.model_type)

    @property
    def head_dim(self) -> int:
        return self.attention_head_dim or self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def output_dim(self) -> int:
        """Width of the pooled (and projected) embedding."""
        return self.projection_dim or self.hidden_size

    def replace(self, **changes) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **overrides) -> "EncoderConfig":
        """A small config for tests; the vocabulary matches BERT/MiniLM tokenizer ids by default."""
        base = dict(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                    max_position_embeddings=512)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | os.PathLike, **overrides) -> "EncoderConfig":
        """Build from a Hugging Face ``config.json`` (a dict, the file, or the folder holding it).

        Raises:
          FileNotFoundError: the path has no ``config.json``.
          ValueError: the ``model_type``/architecture is not supported, naming the supported ones.
        """
        source = "<dict>"
        if not isinstance(config, Mapping):
            path = pathlib.Path(config)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise FileNotFoundError(f"expected a Hugging Face config.json at {path}, found nothing")
            source = str(path)
            try:
                config = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        from gecko_jax.models.registry import get_architecture

        model_type = config.get("model_type")
        arch = get_architecture(model_type, source=source, architectures=config.get("architectures"))
        fields = arch.config_from_hf(config)
        fields.update(config.get(GECKO_CONFIG_KEY, {}))
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` dict (our own fields under ``"gecko_jax"``)."""
        from gecko_jax.models.registry import get_architecture

        out = get_architecture(self.model_type).config_to_hf(self)
        out[GECKO_CONFIG_KEY] = {
            "pooling": self.pooling,
            "normalize": self.normalize,
            "projection_dim": self.projection_dim,
            "projection_bias": self.projection_bias,
            "projection_hidden_dim": self.projection_hidden_dim,
        }
        return out
