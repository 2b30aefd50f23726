"""Encoding helpers for evaluation: output checks, Matryoshka truncation, and an on-disk embedding cache.

Cache key (all four parts are hashed together; change any and the entry is recomputed):

1. **model fingerprint** — sha256 over every parameter array (tree path, dtype, shape, bytes) plus the model config.
   Chosen over "model dir + mtime" because evaluation is also run on in-memory models during and after training,
   whose weights have no file, and because a copied or re-saved folder with the same weights should hit the cache.
   Hashing MiniLM's 22.7M parameters takes ~0.3 s; the digest is remembered per object for as long as its
   parameters are the very same immutable ``jax.Array`` leaves (and its config and ``max_length`` unchanged), so a
   model evaluated several times is hashed once. An object may instead expose a string attribute ``fingerprint``
   (used as is); with neither, caching is off for that model.
2. **data fingerprint** — sha256 of the bytes of the data file(s) read (e.g. ``corpus.jsonl``).
3. **formatting** — everything passed to ``encode`` that changes the input text: task, kind, symmetric, titles used.
4. **dims** — the cache stores full-dimension vectors; truncation happens after loading (see :func:`truncate`), so
   one entry serves every Matryoshka dimension. The dims value therefore is not part of the key by design.

Files: ``<cache_dir>/<key>.npy`` (float32) plus ``<key>.json`` with the readable key parts; written atomically
(``gecko_jax.fileio``: temp file + fsync + ``os.replace``) so a crash never leaves a torn entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import weakref
from collections.abc import Sequence

import numpy as np

from gecko_jax.vectors import truncate  # noqa: F401  (re-exported: every evaluator's Matryoshka cut)

log = logging.getLogger(__name__)


def default_cache_dir() -> pathlib.Path:
    """``$GECKO_JAX_CACHE/eval`` or ``~/.cache/gecko_jax/eval``."""
    from gecko_jax.datasets import cache_root

    root = str(cache_root())
    return pathlib.Path(root) / "eval"


def _config_repr(config) -> str:
    if config is None:
        return ""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    if isinstance(config, dict):
        return json.dumps(config, sort_keys=True, default=str)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return json.dumps(to_dict(), sort_keys=True, default=str)
    return repr(config)


def model_fingerprint(embedder) -> str | None:
    """A stable hex digest of the model's weights and config, or ``None`` when it cannot be determined.

    Args:
      embedder: object with an ``encode`` method; fingerprinted from ``embedder.fingerprint`` (str) if present, else
        from ``embedder.params`` (any pytree of arrays) and ``embedder.config``.
    """
    fp = getattr(embedder, "fingerprint", None)
    if isinstance(fp, str) and fp:
        return fp
    params = getattr(embedder, "params", None)
    if params is None:
        return None
    import jax

    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
        return None
    # Truncation length changes the embeddings of long texts without touching params or config.
    tail = (_config_repr(getattr(embedder, "config", None)) +
            f"{type(embedder).__qualname__}|max_length={getattr(embedder, 'max_length', None)}")
    arrays = [leaf for _, leaf in leaves]
    memo = _remembered(embedder)
    if memo is not None and memo[1] == treedef and memo[2] == tail and len(memo[0]) == len(arrays) and \
            all(ref() is leaf for ref, leaf in zip(memo[0], arrays)):
        return memo[3]
    h = hashlib.sha256()
    for key_path, leaf in leaves:
        arr = np.asarray(leaf)
        h.update(jax.tree_util.keystr(key_path).encode())
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(tail.encode())
    digest = h.hexdigest()
    if all(isinstance(a, jax.Array) for a in arrays):  # immutable: the same objects always hold the same bytes
        try:
            _FINGERPRINTS[embedder] = ([weakref.ref(a) for a in arrays], treedef, tail, digest)
        except TypeError:  # not weak-referenceable or not hashable: no memo
            pass
    return digest


# object -> (weak refs to its parameter leaves, tree structure, config/max_length text, digest)
_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _remembered(embedder):
    try:
        return _FINGERPRINTS.get(embedder)
    except TypeError:
        return None


def encode_checked(embedder, texts: Sequence[str], **kwargs) -> np.ndarray:
    """Call ``embedder.encode(texts, **kwargs)`` and check the contract: float ``[len(texts), d]``, finite."""
    texts = list(texts)
    if not texts:
        raise ValueError("nothing to encode: the text list is empty")
    out = np.asarray(embedder.encode(texts, **kwargs), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(texts):
        raise ValueError(f"{type(embedder).__name__}.encode returned shape {out.shape}, expected [{len(texts)}, d]")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{type(embedder).__name__}.encode returned non-finite values")
    return out


class EmbeddingCache:
    """Full-dimension embeddings on disk and in memory, keyed by model, data and formatting (module docstring).

    Args:
      directory: where entries live; ``None`` keeps them in memory only (for the life of this object).
      memory: also keep entries in memory (a suite encodes e.g. Banking77 test once for classification and
        clustering). ``EmbeddingCache(None, memory=False)`` always encodes.
    """

    def __init__(self, directory=None, *, memory: bool = True):
        self.directory = None if directory is None else pathlib.Path(directory)
        self.memory = {} if memory else None
        self.hits = 0
        self.misses = 0

    def key(self, model_fp: str, data_fp: str, fmt: dict) -> str:
        blob = json.dumps({"model": model_fp, "data": data_fp, "format": fmt}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get_or_encode(self, embedder, texts: Sequence[str], *, data_fp: str, fmt: dict, **encode_kwargs) -> np.ndarray:
        """Cached ``encode_checked(embedder, texts, **encode_kwargs)``; ``fmt`` must describe the formatting.

        Args:
          embedder: the model; its fingerprint (see :func:`model_fingerprint`) is part of the key.
          texts: the inputs (their number is checked against the cached entry).
          data_fp: fingerprint of the data the texts come from.
          fmt: the formatting options that change the encoded text (task, kind, symmetric, titles).
          **encode_kwargs: passed to ``embedder.encode``.
        """
        enabled = self.directory is not None or self.memory is not None
        model_fp = model_fingerprint(embedder) if enabled else None
        if model_fp is None:
            self.misses += 1
            return encode_checked(embedder, texts, **encode_kwargs)
        key = self.key(model_fp, data_fp, fmt)
        if self.memory is not None and key in self.memory and self.memory[key].shape[0] == len(texts):
            self.hits += 1
            return self.memory[key]
        path = self.directory / f"{key}.npy" if self.directory is not None else None
        if path is not None and path.is_file():
            try:
                arr = np.load(path)
            except (OSError, ValueError) as e:
                log.warning("unreadable cache entry %s (%s): re-encoding", path, e)
            else:
                if arr.ndim == 2 and arr.shape[0] == len(texts):
                    self.hits += 1
                    if self.memory is not None:
                        self.memory[key] = arr
                    return arr
                log.warning("cache entry %s has shape %s, expected %d rows: re-encoding", path, arr.shape, len(texts))
        self.misses += 1
        arr = encode_checked(embedder, texts, **encode_kwargs)
        if self.memory is not None:
            self.memory[key] = arr
        if self.directory is None:
            return arr
        from gecko_jax.fileio import save_npy, write_text

        save_npy(self.directory / f"{key}.npy", arr)
        write_text(self.directory / f"{key}.json", json.dumps(
            {"model": model_fp, "data": data_fp, "format": fmt, "shape": list(arr.shape)}, sort_keys=True))
        return arr
