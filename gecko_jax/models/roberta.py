"""RoBERTa and XLM-RoBERTa backbones: BERT's layers with padding-offset positions and one token type.

What differs from BERT (``gecko_jax.models.bert``), and nothing else:

* Position ids come from the padding: real tokens get ``pad_token_id + 1, pad_token_id + 2, ...`` counted over
  non-padding tokens only, padding gets ``pad_token_id`` (a row that is never trained). A left-padded row therefore
  encodes exactly like the same text right-padded. Hugging Face counts ``input_ids != pad_token_id``; we count
  ``attention_mask``, the same set of tokens for every tokenizer output (and well defined for packed rows, where
  ``position_ids`` restart at 0 per text and we add the offset).
* ``type_vocab_size`` is 1: every token adds ``token_type_embeddings[0]``.

The layers, their parameter names and the weight converters are BERT's (imported, not copied), so the fused-QKV
layout, dtype policy and any speed work on ``bert.py`` apply here unchanged. Checkpoints of task models carry a
``roberta.`` prefix (``RobertaForMaskedLM``), which loading strips; ``lm_head.*`` and ``pooler.*`` are not used.

Reference: Liu et al., "RoBERTa: A Robustly Optimized BERT Pretraining Approach", 2019; Conneau et al.,
"Unsupervised Cross-lingual Representation Learning at Scale" (XLM-R), ACL 2020.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from gecko_jax.models import bert
from gecko_jax.models.attention import allowed_mask
from gecko_jax.models.architecture import Architecture, register


def offset_position_ids(attention_mask, pad_token_id: int, position_ids=None):
    """Hugging Face's padding-aware positions: ``pad + 1 + (index among real tokens)``, padding at ``pad``.

    Args:
      attention_mask: ``int|bool[B, L]``, 1 for real tokens.
      pad_token_id: the padding id (RoBERTa/XLM-R/MPNet: 1).
      position_ids: ``int[B, L]`` 0-based positions within each text (packed rows), or None to count real tokens.

    Returns:
      ``int32[B, L]`` rows of the position table.
    """
    real = attention_mask > 0
    if position_ids is None:
        position_ids = jnp.cumsum(real.astype(jnp.int32), axis=1) - 1
    return jnp.where(real, position_ids.astype(jnp.int32) + pad_token_id + 1, pad_token_id)


class RobertaBackbone(nn.Module):
    """Token states ``float32[B, L, H]`` of a RoBERTa / XLM-R encoder; arguments as ``BertBackbone``."""

    config: Any

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, position_ids=None, packed_ids=None,
                 deterministic: bool = True):
        cfg = self.config
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        mask = attention_mask if packed_ids is None else packed_ids > 0
        positions = offset_position_ids(mask, cfg.pad_token_id, position_ids)
        if input_ids.shape[1] + cfg.pad_token_id + 1 > cfg.max_position_embeddings:
            raise ValueError(f"input length {input_ids.shape[1]} plus the position offset {cfg.pad_token_id + 1} "
                             f"exceeds max_position_embeddings={cfg.max_position_embeddings}")
        x = bert.BertEmbeddings(cfg, name="embeddings")(input_ids, token_type_ids, positions,
                                                        deterministic=deterministic)
        allowed = allowed_mask(attention_mask, packed_ids)  # boolean: no float [.., L, L] buffer (models/attention.py)
        for i in range(cfg.num_layers):
            x = bert.BertLayer(cfg, name=f"layer_{i}")(x, allowed, deterministic=deterministic)
        return x


def _config_from_hf(model_type: str):
    def convert(hf: Mapping[str, Any]) -> dict:
        fields = bert.config_from_hf(hf)
        fields.update(model_type=model_type, type_vocab_size=hf.get("type_vocab_size", 1),
                      pad_token_id=hf.get("pad_token_id", 1), max_position_embeddings=hf.get("max_position_embeddings",
                                                                                             514))
        return fields

    return convert


def _config_to_hf(architecture: str, model_type: str):
    def convert(cfg) -> dict:
        out = bert.config_to_hf(cfg)
        out.update(architectures=[architecture], model_type=model_type, bos_token_id=0, eos_token_id=2)
        return out

    return convert


ROBERTA = register(Architecture(
    model_type="roberta",
    hf_architectures=("RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification"),
    backbone=RobertaBackbone,
    config_from_hf=_config_from_hf("roberta"),
    config_to_hf=_config_to_hf("RobertaModel", "roberta"),
    params_from_hf=bert.params_from_hf,
    params_to_hf=bert.params_to_hf,
    hf_prefixes=("roberta.",),
    hf_pooler=True,
))

XLM_ROBERTA = register(Architecture(
    model_type="xlm-roberta",
    hf_architectures=("XLMRobertaModel", "XLMRobertaForMaskedLM", "XLMRobertaForSequenceClassification"),
    backbone=RobertaBackbone,
    config_from_hf=_config_from_hf("xlm-roberta"),
    config_to_hf=_config_to_hf("XLMRobertaModel", "xlm-roberta"),
    params_from_hf=bert.params_from_hf,
    params_to_hf=bert.params_to_hf,
    hf_prefixes=("roberta.",),
    hf_pooler=True,
))
