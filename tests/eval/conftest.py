"""Fixtures for the eval tests: a deterministic bag-of-words embedder with the ``Embedder.encode`` signature."""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from gecko_jax.data.formatting import format_text


class BagOfWordsEmbedder:
    """Hashing bag-of-words: each lower-cased word adds 1 to dimension crc32(word) % dim; rows L2-normalised.

    Same ``encode`` contract as ``gecko_jax.Embedder`` (formatting through ``gecko_jax.data.formatting``), so the eval
    code runs fast and its results can be recomputed by hand in the tests. Records every call in ``calls``.
    """

    def __init__(self, dim: int = 64, seed: int = 0):
        self.dim = dim
        self.seed = seed
        self.calls: list[dict] = []
        self.fingerprint = f"bow-{dim}-{seed}"

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[(zlib.crc32(w.encode()) + self.seed) % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def encode(self, texts, *, task=None, kind="query", titles=None, symmetric=False, dims=None, batch_size=None,
               show_progress=None):
        texts = list(texts)
        self.calls.append({"n": len(texts), "task": task, "kind": kind, "titles": titles is not None,
                           "symmetric": symmetric, "dims": dims, "first": texts[0] if texts else None})
        formatted = [format_text(t, kind=kind, task=task, symmetric=symmetric,
                                 title=None if titles is None else titles[i]) for i, t in enumerate(texts)]
        if task is None and titles is not None and kind == "document":
            formatted = [f"{ti} {t}" if ti else t for ti, t in zip(titles, texts)]
        out = np.stack([self.vector(t) for t in formatted]) if formatted else np.zeros((0, self.dim), np.float32)
        if dims is not None:
            out = out[:, :dims]
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)


@pytest.fixture
def bow():
    return BagOfWordsEmbedder()


@pytest.fixture
def bow_cls():
    return BagOfWordsEmbedder
