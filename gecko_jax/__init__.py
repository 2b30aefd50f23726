"""gecko-jax: compact text embedders distilled from LLMs (Gecko), fair embeddings, and robust training under label noise.

Public API (lazy: importing ``gecko_jax.losses`` does not pull in Flax model code)::

    import gecko_jax as gj
    emb = gj.Embedder.from_pretrained("all-MiniLM-L6-v2")
    vecs = emb.encode(texts, task="search result", kind="query", dims=256)
    from gecko_jax import losses, train, eval
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY_ATTRS = {
    "Embedder": ("gecko_jax.embedder", "Embedder"),
}
_SUBMODULES = ("losses", "models", "data", "datasets", "train", "eval", "embedder", "cli", "runtime", "vectors", "recipes")

__all__ = ["Embedder", *_SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in _LAZY_ATTRS:
        module, attr = _LAZY_ATTRS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"gecko_jax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gecko_jax' has no attribute {name!r}")
