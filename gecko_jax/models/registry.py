"""Encoder families keyed by Hugging Face ``model_type``.

An entry bundles what differs between families: the backbone module, the config field renames, and the weight
converters to and from Hugging Face tensor names. Pooling, projection, normalisation, checkpoint I/O and the
``Embedder`` are shared. Registered: ``bert`` (``bert.py``), ``roberta`` and ``xlm-roberta`` (``roberta.py``: BERT
with padding-offset positions), ``mpnet`` (``mpnet.py``: relative position bias) and ``gemma3_text``
(``gemma3.py``: a Gemma 3 decoder used as a causal or bidirectional encoder; GGUF files via ``gguf_io.py``).
To add a family (a T5 encoder, say): write the backbone and converters in their own module, call ``register`` at
its import, and import it in ``_ensure_builtin`` below.

A backbone is a Flax module ``(config, name)`` called as ``backbone(input_ids, attention_mask, token_type_ids, *,
position_ids=None, packed_ids=None, deterministic=True) -> float32[B, L, H]``; ``position_ids`` are 0-based within
each text (packed rows restart them) and ``packed_ids`` number the texts of a packed row (0 = padding). Any
family-specific offset (RoBERTa's ``pad + 1``) is the backbone's business.
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


_BUILTIN = frozenset({"bert", "roberta", "xlm-roberta", "mpnet", "gemma3_text"})


def _ensure_builtin():
    # All of them: importing one family module first (gemma3 registers bert and itself) must not hide the others.
    if not _BUILTIN <= ARCHITECTURES.keys():
        # Each import registers its families; bert first (the others import it).
        from gecko_jax.models import bert, gemma3, mpnet, roberta  # noqa: F401


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
