"""One definition of unit rows, Matryoshka truncation and Gecko's input format, shared by both packages."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_gen import formatting as dg_formatting
from data_gen import vectors as dg_vectors
from gecko_jax import losses, models, vectors
from gecko_jax.data import formatting
from gecko_jax.eval import cache, retrieval


def test_every_spelling_is_the_one_definition():
    assert models.l2_normalize is vectors.l2_normalize
    assert cache.truncate is vectors.truncate and retrieval.exact_topk is dg_vectors.exact_topk
    assert formatting.format_document is dg_formatting.format_document
    assert formatting.format_query is dg_formatting.format_query


def test_numpy_and_jax_agree_and_keep_their_array_type():
    x = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    want = x[:, :4] / np.linalg.norm(x[:, :4], axis=1, keepdims=True)
    got_np, got_jax = vectors.truncate(x, 4), vectors.truncate(jnp.asarray(x), 4)
    assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float32 and isinstance(got_jax, jax.Array)
    np.testing.assert_allclose(got_np, want, rtol=1e-6)
    np.testing.assert_allclose(got_jax, want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(vectors.truncate, static_argnums=1)(x, 4), want, rtol=1e-6)
    np.testing.assert_allclose(losses.truncate(jnp.asarray(x), 4), want, rtol=1e-6)
    np.testing.assert_allclose(vectors.truncate(x, None), x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(vectors.l2_normalize(np.zeros((2, 3), np.float32)), np.zeros((2, 3)))
    np.testing.assert_array_equal(vectors.l2_normalize(jnp.zeros((2, 3))), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"dims must be an int in \[1, 12\]"):
        vectors.truncate(x, 13)


def test_exact_topk_float32_is_the_evaluation_path():
    rng = np.random.default_rng(1)
    q = rng.integers(-3, 4, size=(9, 8)).astype(np.float32)  # small integers: products exact in float32
    c = rng.integers(-3, 4, size=(70, 8)).astype(np.float32)
    c[40] = c[2]
    for bs in (1, 16, 1000):
        s, i = dg_vectors.exact_topk(q, c, 10, block_size=bs, dtype=np.float32)
        s2, i2 = retrieval.naive_topk(q, c, 10)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(s, s2)
        assert s.dtype == np.float32 and i.dtype == np.int64


def test_gecko_format_writes_none_for_a_missing_title():
    assert dg_formatting.format_document("t", None) == "title: none | text: t"
    assert dg_formatting.format_document("t", "") == "title: none | text: t"
    assert dg_formatting.format_document("t", "T") == "title: T | text: t"
    assert dg_formatting.format_query("q", "fact checking") == "task: fact checking | query: q"
