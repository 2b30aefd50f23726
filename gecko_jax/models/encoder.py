"""The text encoder: a registered backbone, pooling, an optional projection head, L2 normalisation.

The public boundary is functional: ``Encoder(config).apply({"params": params}, input_ids, attention_mask)`` is a
pure function of a params pytree and arrays, so ``jax.jit``, ``NamedSharding`` and ``jax.grad`` take it as is.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gecko_jax.models.config import EncoderConfig
from gecko_jax.models.registry import get_architecture
from gecko_jax import vectors
from gecko_jax.vectors import l2_normalize  # noqa: F401  (re-exported)

NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps, so zero vectors (all-padding rows) stay zero, not NaN


def truncate_embeddings(x, dims: int | None):
    """Matryoshka truncation (:func:`gecko_jax.vectors.truncate`) with the encoders' normalisation (``eps``)."""
    return vectors.truncate(x, dims, eps=NORM_EPS)


def mean_pool(tokens, attention_mask):
    r"""Mean of token states over non-padding positions.

    .. math:: e_b = \frac{\sum_t m_{bt} h_{bt}}{\max(\sum_t m_{bt}, 10^{-9})}

    Args:
      tokens: ``float[B, L, H]`` token states.
      attention_mask: ``int|bool[B, L]``, 1 for real tokens.

    Returns:
      ``float32[B, H]``; an all-padding row gives zeros.
    """
    mask = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(tokens.astype(jnp.float32) * mask, axis=1)
    return summed / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)  # sentence-transformers' clamp


def cls_pool(tokens, attention_mask=None):
    """State of the first ([CLS]) token: ``float[B, L, H] -> float32[B, H]``."""
    del attention_mask
    return tokens[:, 0].astype(jnp.float32)


_POOLERS = {"mean": mean_pool, "cls": cls_pool}


class Encoder(nn.Module):
    """Sentence encoder: ``(input_ids, attention_mask[, token_type_ids]) -> float32[B, D]`` embeddings.

    ``D`` is ``config.projection_dim`` when a projection head is configured, else ``config.hidden_size``. Rows are
    L2-normalised when ``config.normalize``; an all-padding row (batch filler) comes out as zeros.

    Example:
      >>> cfg = EncoderConfig.tiny()
      >>> module = Encoder(cfg)
      >>> ids = jnp.array([[101, 7592, 102, 0]]); mask = (ids != 0).astype(jnp.int32)
      >>> params = module.init(jax.random.key(0), ids, mask)["params"]
      >>> module.apply({"params": params}, ids, mask).shape
      (1, 32)
    """

    config: EncoderConfig

    def setup(self):
        cfg = self.config
        self.backbone = get_architecture(cfg.model_type).backbone(cfg, name="backbone")
        if cfg.projection_hidden_dim is not None:  # EmbeddingGemma-style two-layer head: first (inner) layer
            self.projection_hidden = nn.Dense(cfg.projection_hidden_dim, use_bias=cfg.projection_bias,
                                              dtype=jnp.float32, param_dtype=jnp.float32,
                                              kernel_init=nn.initializers.normal(cfg.initializer_range))
        if cfg.projection_dim is not None:
            self.projection = nn.Dense(cfg.projection_dim, use_bias=cfg.projection_bias, dtype=jnp.float32,
                                       param_dtype=jnp.float32,
                                       kernel_init=nn.initializers.normal(cfg.initializer_range))

    def encode_tokens(self, input_ids, attention_mask, token_type_ids=None, *, deterministic: bool = True):
        """Token states ``float32[B, L, H]`` before pooling (for token-level heads and distillation)."""
        return self.backbone(input_ids, attention_mask, token_type_ids, deterministic=deterministic)

    def pool(self, tokens, attention_mask):
        """Pooling, projection and normalisation of token states: ``[B, L, H] -> [B, D]``."""
        return self._head(_POOLERS[self.config.pooling](tokens, attention_mask))

    def encode_packed(self, input_ids, packed_ids, position_ids, token_type_ids=None, *, max_sequences: int,
                      deterministic: bool = True):
        """Embeddings of several sequences packed into each row: ``-> float32[B, max_sequences, D]``.

        Sequence ``k`` (1-based in ``packed_ids``) of row ``b`` comes out at ``[b, k - 1]``; unused slots are zeros.
        Attention is block-diagonal and positions restart per sequence, so each embedding equals the unpacked one
        (up to float rounding) while short texts stop paying for padding.

        Args:
          input_ids: ``int[B, L]``.
          packed_ids: ``int[B, L]``, sequence number per token (1, 2, ...), 0 for padding.
          position_ids: ``int[B, L]``, position within its own sequence.
          token_type_ids: ``int[B, L]`` or None.
          max_sequences: static number of output slots per row.
        """
        tokens = self.backbone(input_ids, packed_ids > 0, token_type_ids, position_ids=position_ids,
                               packed_ids=packed_ids, deterministic=deterministic)
        slots = jnp.arange(1, max_sequences + 1)[None, :, None]
        weights = (packed_ids[:, None, :] == slots)  # [B, S, L]
        if self.config.pooling == "cls":
            weights = weights & (position_ids[:, None, :] == 0)
        weights = weights.astype(jnp.float32)
        summed = jnp.einsum("bsl,blh->bsh", weights, tokens.astype(jnp.float32))
        return self._head(summed / jnp.maximum(weights.sum(-1, keepdims=True), 1e-9))

    def encode_segments(self, input_ids, packed_ids, position_ids, segment_ids, token_type_ids=None, *,
                        num_segments: int, deterministic: bool = True):
        """Embeddings of texts packed several to a row, in text order: ``-> float32[num_segments, D]``.

        The training-side twin of :meth:`encode_packed` (``Tokenizer.pack`` builds the inputs): ``segment_ids``
        (``int[B, L]``) names the text each token belongs to (``num_segments`` for padding), so pooling is one
        segment sum and the output needs no gather. Block-diagonal attention and per-sequence positions make each
        embedding equal the unpacked one; rows can be sharded over devices (the sum then reduces across them).
        """
        tokens = self.backbone(input_ids, packed_ids > 0, token_type_ids, position_ids=position_ids,
                               packed_ids=packed_ids, deterministic=deterministic)
        weights = packed_ids > 0
        if self.config.pooling == "cls":
            weights = weights & (position_ids == 0)
        weights = weights.astype(jnp.float32).reshape(-1)
        seg = segment_ids.reshape(-1)
        flat = tokens.astype(jnp.float32).reshape(-1, tokens.shape[-1]) * weights[:, None]
        summed = jax.ops.segment_sum(flat, seg, num_segments=num_segments + 1)[:num_segments]
        counts = jax.ops.segment_sum(weights, seg, num_segments=num_segments + 1)[:num_segments]
        return self._head(summed / jnp.maximum(counts, 1e-9)[:, None])

    def _head(self, emb):
        if self.config.projection_hidden_dim is not None:
            emb = self.projection_hidden(emb)
        if self.config.projection_dim is not None:
            emb = self.projection(emb)
        if self.config.normalize:
            emb = l2_normalize(emb, eps=NORM_EPS)
        return emb

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, deterministic: bool = True,
                 return_tokens: bool = False) -> Any:
        tokens = self.encode_tokens(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        emb = self.pool(tokens, attention_mask)
        return (emb, tokens) if return_tokens else emb
