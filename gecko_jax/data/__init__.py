"""Data utilities: Gecko input formatting, tokenisation and length buckets, JSONL readers and batching, tfds
builders over local files, label noise.

Heavy submodules (tensorflow-datasets, tokenizers) load lazily: ``from gecko_jax.data import load_split`` imports tfds
only then.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "format_text": "formatting", "format_query": "formatting", "format_document": "formatting",
    "Tokenizer": "tokenize",
    "symmetric_transition": "noise", "pairflip_transition": "noise", "corrupt_labels": "noise",
    "load_split": "tfds_local", "load_noisy_split": "tfds_local",
    "read_pairs": "jsonl", "read_fair_tuples": "jsonl", "read_labelled": "jsonl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"gecko_jax.data.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gecko_jax.data' has no attribute {name!r}")
