"""Picklable recipes for the LLM client and the embedder, resolved where they are used.

The CLI builds its LLM and embedder from them; Beam workers receive the same recipes and build their own copies in
``DoFn.setup`` (one per worker process), so nothing heavy or unpicklable crosses process boundaries and an injected
embedder (``gecko-data``'s ``--embedder gecko``, which pulls in JAX) is imported only inside the process that embeds.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .llm import LLMSpec  # noqa: F401  (re-exported: the specs travel together)

EmbedFn = Callable[[Any], np.ndarray]


@dataclass(frozen=True)
class EmbedderSpec:
    """How to build FRet's embed functions, picklable so that Beam workers build their own.

    ``kind``: ``hash`` (bag of words, no model), ``module:function`` (any importable ``texts -> [n, d]`` function), or
    a name the caller registered (``gecko-data``'s ``gecko``) with ``factory`` set: the ``module:function`` of a
    ``model -> (document embed_fn, query embed_fn or None)`` factory, imported where the spec is built. data_gen
    itself names no embedder package: the caller injects one (``gecko_jax.cli.gecko_data`` injects
    ``gecko_jax.embedder.fret_embed_fns``). ``label`` names the factory in records (``"{label}:{model}"``).
    """

    kind: str = "hash"
    model: str = "all-MiniLM-L6-v2"
    options: dict = field(default_factory=dict)
    factory: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "hash":
            return "hashed-bow-512"
        if self.factory is not None:
            return f"{self.label or self.kind}:{self.model}"
        return self.kind

    def build(self) -> tuple[EmbedFn, EmbedFn | None]:
        """``(document embed_fn, query embed_fn or None for the same)``."""
        if self.kind == "hash":
            from .retrieval import hashed_bow_embed
            return hashed_bow_embed, None
        if self.factory is not None:
            return _load(self.factory, f"--embedder {self.kind}")(self.model)
        if ":" in self.kind:
            return _load(self.kind, f"--embedder {self.kind}"), None
        raise InputError(f"--embedder: expected 'hash', 'module:function' or an embedder this command provides, got "
                         f"{self.kind!r} (the gecko_jax embedder is 'gecko' of the gecko-data command)")


def _load(path: str, what: str):
    mod, fn = path.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise InputError(f"{what}: cannot load {path} ({e})") from None
