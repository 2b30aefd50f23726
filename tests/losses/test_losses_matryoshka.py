"""Tests for gecko_jax.losses.matryoshka / truncate."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gecko_jax.losses import content_conditional_debiasing, gecko_contrastive, matryoshka, truncate

TOL = dict(rtol=1e-5, atol=1e-5)


def np_truncate(x, d):
    x = np.asarray(x, np.float64)[..., :d]
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    p = (q + rng.normal(size=(4, 8))).astype(np.float32)
    n = rng.normal(size=(4, 2, 8)).astype(np.float32)
    return q, p, n


def test_truncate_golden_and_reference():
    np.testing.assert_allclose(truncate(jnp.array([3.0, 4.0, 12.0]), 2), [0.6, 0.8], **TOL)
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(truncate(x, 3), np_truncate(x, 3), **TOL)
    np.testing.assert_allclose(truncate(x, 2, axis=1), np.moveaxis(np_truncate(np.moveaxis(x, 1, -1), 2), -1, 1),
                               **TOL)
    np.testing.assert_allclose(jax.jit(truncate, static_argnums=1)(x, 3), np_truncate(x, 3), **TOL)
    np.testing.assert_array_equal(truncate(jnp.zeros((2, 4)), 2), np.zeros((2, 2)))  # no NaN for zero vectors
    with jax.enable_x64(True):
        check_grads(lambda a: truncate(a, 3), (jnp.asarray(x, jnp.float64),), order=2, modes=("rev",))


def test_full_dim_alone_equals_base(batch):
    q, p, n = batch
    ids = np.array([0, 1, 0, 2])
    base = gecko_contrastive(q, p, n, temperature=0.05, ids=ids)
    mrl = matryoshka(gecko_contrastive, dims=(8,))
    np.testing.assert_allclose(mrl(q, p, n, temperature=0.05, ids=ids), base, **TOL)
    np.testing.assert_allclose(mrl(q, p, negatives=n, temperature=0.05, ids=ids), base, **TOL)


def test_weighted_sum_matches_manual_truncation(batch):
    q, p, n = batch
    mrl = matryoshka(gecko_contrastive, dims=(8, 3), weights=(1.0, 0.5))
    got = mrl(q, p, negatives=n, temperature=0.1)
    want = (gecko_contrastive(q, p, n, temperature=0.1)
            + 0.5 * gecko_contrastive(np_truncate(q, 3).astype(np.float32), np_truncate(p, 3).astype(np.float32),
                                      np_truncate(n, 3).astype(np.float32), temperature=0.1))
    np.testing.assert_allclose(got, want, **TOL)
    # The truncated term really differs from the full one (the test would not notice a no-op truncation otherwise).
    assert not np.allclose(gecko_contrastive(q, p, n, temperature=0.1),
                           gecko_contrastive(np_truncate(q, 3), np_truncate(p, 3), np_truncate(n, 3), temperature=0.1))


def test_masks_and_ids_pass_through(batch):
    q, p, n = batch
    where = np.array([True, True, False, True])
    mrl = matryoshka(gecko_contrastive, dims=(8, 4))
    got = mrl(q, p, n, temperature=0.1, where=where, ids=np.array([1, 2, 3, 1]))
    assert got.shape == (4,) and float(got[2]) == 0.0
    want = sum(gecko_contrastive(np_truncate(q, d), np_truncate(p, d), np_truncate(n, d), temperature=0.1,
                                 where=where, ids=np.array([1, 2, 3, 1])) for d in (8, 4))
    np.testing.assert_allclose(got, want, **TOL)


def test_wraps_debiasing(batch):
    rng = np.random.default_rng(2)
    groups = rng.normal(size=(3, 2, 8)).astype(np.float32)
    neutral = rng.normal(size=(3, 8)).astype(np.float32)
    ref = (neutral + 0.1 * rng.normal(size=(3, 8))).astype(np.float32)
    mrl = matryoshka(content_conditional_debiasing, dims=(8, 5), weights=(1.0, 2.0))
    got = mrl(groups, neutral, ref, kernel="cosine", beta=1.0)
    want = (content_conditional_debiasing(groups, neutral, ref, kernel="cosine", beta=1.0)
            + 2.0 * content_conditional_debiasing(np_truncate(groups, 5), np_truncate(neutral, 5),
                                                  np_truncate(ref, 5), kernel="cosine", beta=1.0))
    np.testing.assert_allclose(got, want, **TOL)


def test_jit_vmap_and_grads(batch):
    q, p, n = batch
    mrl = matryoshka(gecko_contrastive, dims=(8, 4))
    fn = lambda a, b, c: mrl(a, b, c, temperature=0.2)
    np.testing.assert_allclose(jax.jit(fn)(q, p, n), fn(q, p, n), **TOL)
    stacked = jax.vmap(fn)(np.stack([q, p]), np.stack([p, q]), np.stack([n, n]))
    np.testing.assert_allclose(stacked[1], fn(p, q, n), **TOL)
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x, jnp.float64) for x in (q, p, n))
        check_grads(jax.jit(fn), args, order=1, modes=("rev",))


def test_bad_input(batch):
    q, p, _ = batch
    with pytest.raises(ValueError, match=r"`d` must be an int in \[1, 8\]"):
        matryoshka(gecko_contrastive, dims=(16,))(q, p)
    with pytest.raises(ValueError, match="one entry per dim"):
        matryoshka(gecko_contrastive, dims=(8, 4), weights=(1.0,))
    with pytest.raises(ValueError, match="positive ints"):
        matryoshka(gecko_contrastive, dims=())
    with pytest.raises(ValueError, match="non-negative"):
        matryoshka(gecko_contrastive, dims=(8,), weights=(-1.0,))
    with pytest.raises(TypeError, match="callable"):
        matryoshka("gecko", dims=(8,))
