"""The text encoder a training config names: pretrained weights (a folder or known name) or a tiny random init."""
from __future__ import annotations

from gecko_jax.data.tokenize import Tokenizer
from gecko_jax.embedder import resolve_model_path
from gecko_jax.errors import ConfigError
from gecko_jax.models import Encoder, EncoderConfig, load_pretrained
from gecko_jax.train.config import TrainConfig


def load_encoder(config: TrainConfig):
    """``(encoder_config, pretrained_params | None, tokenizer | None, Encoder module)`` from ``config.model``."""
    return encoder_from_model_config(config.model, config.data.max_length)


def encoder_from_model_config(m, max_length: int):
    """:func:`load_encoder` from a ``ModelConfig`` and the token cap (also used by the classifier grid)."""
    overrides = {} if m.dropout is None else {"hidden_dropout": m.dropout, "attention_dropout": m.dropout}
    if m.dtype is not None:
        overrides["dtype"] = m.dtype
    if m.attention_impl is not None:
        overrides["attention_impl"] = m.attention_impl
    params = None
    if m.pretrained is not None:
        folder = resolve_model_path(m.pretrained)
        enc_cfg, params = load_pretrained(folder, **overrides)
    elif m.tiny is not None:
        enc_cfg = EncoderConfig.tiny(**{**m.tiny, **overrides})
    else:
        raise ConfigError("config field 'model': set 'pretrained' (folder or known name) or 'tiny' (random init)")
    tok_source = m.tokenizer or m.pretrained
    tokenizer = None
    if tok_source is not None:
        tokenizer = Tokenizer.from_pretrained(resolve_model_path(tok_source), max_length=max_length)
    return enc_cfg, params, tokenizer, Encoder(enc_cfg)
