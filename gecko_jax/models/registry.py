"""Encoder families keyed by Hugging Face ``model_type``.

An entry bundles what differs between families: the backbone module, the config field renames, and the weight
converters to and from Hugging Face tensor names. Pooling, projection, normalisation, checkpoint I/O and the
``Embedder`` are shared. To add RoBERTa/XLM-R (BERT with a position offset of ``pad_token_id + 1`` and no token
types), MPNet (relative position bias) or a T5 encoder (RMSNorm, relative buckets, no biases): write the backbone and
converters in their own module and call ``register`` at its import below.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How one encoder family maps onto ``EncoderConfig`` and Hugging Face checkpoints.

    Attributes:
      model_type: Hugging Face ``model_type`` this entry serves.
      hf_architectures: ``architectures`` names in ``config.json`` that carry a compatible encoder.
      backbone: ``(config, name) -> flax Module`` returning token states ``[B, L, H]``.
      config_from_hf: ``hf_dict -> dict`` of ``EncoderConfig`` fields.
      config_to_hf: ``EncoderConfig -> hf_dict``.
      params_from_hf: ``(tensors, config) -> backbone params``; ``tensors`` maps HF names (prefix stripped) to arrays.
      params_to_hf: ``(backbone params, config) -> {hf name: np.ndarray}``.
      hf_prefixes: name prefixes of task-model checkpoints (e.g. ``bert.`` in ``BertForMaskedLM``) to strip.
    """

    model_type: str
    hf_architectures: tuple[str, ...]
    backbone: Callable[..., Any]
    config_from_hf: Callable[[Mapping[str, Any]], dict]
    config_to_hf: Callable[[Any], dict]
    params_from_hf: Callable[[Mapping[str, np.ndarray], Any], dict]
    params_to_hf: Callable[[Mapping[str, Any], Any], dict]
    hf_prefixes: tuple[str, ...] = ()


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.model_type] = arch
    return arch


def _ensure_builtin():
    if not ARCHITECTURES:
        from gecko_jax.models import bert  # noqa: F401  (registers "bert")


def check_supported(model_type: str) -> None:
    get_architecture(model_type)


def get_architecture(model_type: str | None, *, source: str = "config", architectures=None) -> Architecture:
    """The registry entry for ``model_type``; a ValueError naming the supported types otherwise."""
    _ensure_builtin()
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    supported = ", ".join(sorted(ARCHITECTURES))
    arch_note = f" (architectures={list(architectures)})" if architectures else ""
    if model_type is None:
        raise ValueError(f"{source}: no 'model_type' field{arch_note}; expected one of the supported encoder "
                         f"families: {supported}")
    raise ValueError(f"{source}: unsupported model_type {model_type!r}{arch_note}; gecko_jax encoders support: "
                     f"{supported}. Add a family in gecko_jax/models/registry.py.")
