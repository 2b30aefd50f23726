"""The registry entry type of an encoder family and the table it is registered in.

Family modules (``bert.py``, ``roberta.py``, ``mpnet.py``, ``gemma3.py``) import :func:`register` from here and call
it at import; :mod:`gecko_jax.models.registry` imports every built-in family, so the dependency runs one way
(registry -> families -> this module) and no import has to hide inside a function.
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
      hf_pooler: the Hugging Face base class has a ``pooler.dense`` layer (BERT, RoBERTa, MPNet). gecko_jax never
        uses it, but ``save_pretrained`` writes one (identity weight, zero bias: ``pooler_output`` = tanh of the
        first token's state) so that transformers / sentence-transformers load the folder with no missing keys.
    """

    model_type: str
    hf_architectures: tuple[str, ...]
    backbone: Callable[..., Any]
    config_from_hf: Callable[[Mapping[str, Any]], dict]
    config_to_hf: Callable[[Any], dict]
    params_from_hf: Callable[[Mapping[str, np.ndarray], Any], dict]
    params_to_hf: Callable[[Mapping[str, Any], Any], dict]
    hf_prefixes: tuple[str, ...] = ()
    hf_pooler: bool = False


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.model_type] = arch
    return arch
