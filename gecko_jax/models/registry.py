"""Encoder families keyed by Hugging Face ``model_type``.

An entry bundles what differs between families: the backbone module, the config field renames, and the weight
converters to and from Hugging Face tensor names. Pooling, projection, normalisation, checkpoint I/O and the
``Embedder`` are shared. Registered: ``bert`` (``bert.py``), ``roberta`` and ``xlm-roberta`` (``roberta.py``: BERT
with padding-offset positions), ``mpnet`` (``mpnet.py``: relative position bias) and ``gemma3_text``
(``gemma3.py``: a Gemma 3 decoder used as a causal or bidirectional encoder; GGUF files via ``gguf_io.py``).
To add a family (a T5 encoder, say): write the backbone and converters in their own module, call
``architecture.register`` at its import, and import that module below.

A backbone is a Flax module ``(config, name)`` called as ``backbone(input_ids, attention_mask, token_type_ids, *,
position_ids=None, packed_ids=None, deterministic=True) -> float32[B, L, H]``; ``position_ids`` are 0-based within
each text (packed rows restart them) and ``packed_ids`` number the texts of a packed row (0 = padding). Any
family-specific offset (RoBERTa's ``pad + 1``) is the backbone's business.
"""
from __future__ import annotations

# Each family registers itself at import (bert first: the others build on it).
from gecko_jax.models import bert, gemma3, mpnet, roberta  # noqa: F401
from gecko_jax.models.architecture import ARCHITECTURES, Architecture, register

__all__ = ["ARCHITECTURES", "Architecture", "register", "check_supported", "get_architecture"]


def check_supported(model_type: str) -> None:
    get_architecture(model_type)


def get_architecture(model_type: str | None, *, source: str = "config", architectures=None) -> Architecture:
    """The registry entry for ``model_type``; a ValueError naming the supported types otherwise."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    supported = ", ".join(sorted(ARCHITECTURES))
    arch_note = f" (architectures={list(architectures)})" if architectures else ""
    if model_type is None:
        raise ValueError(f"{source}: no 'model_type' field{arch_note}; expected one of the supported encoder "
                         f"families: {supported}")
    raise ValueError(f"{source}: unsupported model_type {model_type!r}{arch_note}; gecko_jax encoders support: "
                     f"{supported}. Add a family in gecko_jax/models/registry.py.")
