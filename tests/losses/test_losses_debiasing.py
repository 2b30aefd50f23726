"""Tests for gecko_jax.losses.content_conditional_debiasing / cced / kernel_distance."""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gecko_jax.losses import cced, content_conditional_debiasing, kernel_distance

TOL = dict(rtol=1e-5, atol=1e-5)


def np_dist(u, v, kernel, gamma):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if kernel == "cosine":
        return 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    if kernel == "euclidean":
        return math.sqrt(np.sum((u - v) ** 2))
    return 1 - math.exp(-np.sum((u - v) ** 2) / (2 * gamma ** 2))


def np_rho(x, rho, delta=1.0):
    if rho == "abs":
        return abs(x)
    if rho == "square":
        return x * x
    return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x)


def ref_ccd(groups, neutral, ref, *, rho, beta, kernel, gamma, normalize=True):
    """Loop-based reading of PAPERS.md 2.2: sum over ordered pairs + beta * ||f(x_n) - f_0(x_n)||."""
    out = np.zeros(len(groups))
    for t in range(len(groups)):
        gs = [unit(g) if normalize else g for g in groups[t]]
        n = unit(neutral[t]) if normalize else neutral[t]
        r = unit(ref[t]) if normalize else ref[t]
        d = [np_dist(g, n, kernel, gamma) for g in gs]
        bias = sum(np_rho(d[a] - d[b], rho) for a, b in itertools.permutations(range(len(gs)), 2))
        out[t] = bias + beta * np.linalg.norm(np.asarray(n, np.float64) - r)
    return out


def ref_cced(groups, neutral, *, kernel, gamma):
    out = []
    for gs, n in zip(groups, neutral):
        d = [np_dist(unit(g), unit(n), kernel, gamma) for g in gs]
        pairs = list(itertools.permutations(range(len(gs)), 2))
        out.append(sum(abs(d[a] - d[b]) for a, b in pairs) / len(pairs))
    return np.array(out)


@pytest.fixture
def tuples():
    rng = np.random.default_rng(3)
    groups = rng.normal(size=(4, 3, 6)).astype(np.float32)
    neutral = rng.normal(size=(4, 6)).astype(np.float32)
    ref = (neutral + 0.3 * rng.normal(size=(4, 6))).astype(np.float32)
    return groups, neutral, ref


def test_golden_two_groups_cosine():
    groups = jnp.array([[[1.0, 0.0], [0.6, 0.8]]])
    neutral = jnp.array([[1.0, 0.0]])
    ref = jnp.array([[0.8, 0.6]])
    # d_a = 0, d_b = 1 - 0.6 = 0.4 -> 2 * 0.4 ordered pairs; anchor ||(0.2, -0.6)|| = sqrt(0.4); beta = 0.5.
    golden = 0.8 + 0.5 * math.sqrt(0.4)
    got = content_conditional_debiasing(groups, neutral, ref, rho="abs", beta=0.5, kernel="cosine")
    np.testing.assert_allclose(got, [golden], **TOL)
    np.testing.assert_allclose(cced(groups, neutral, kernel="cosine"), [0.4], **TOL)
    # RBF: |d_a - d_b| = |K_a - K_b| with K_a = 1, K_b = exp(-||(0.4, -0.8)||^2 / 2) = exp(-0.4).
    np.testing.assert_allclose(cced(groups, neutral, kernel="rbf", gamma=1.0), [1 - math.exp(-0.4)], **TOL)


@pytest.mark.parametrize("kernel", ["cosine", "euclidean", "rbf"])
@pytest.mark.parametrize("rho", ["abs", "square", "huber"])
def test_matches_reference(tuples, kernel, rho):
    groups, neutral, ref = tuples
    got = content_conditional_debiasing(groups, neutral, ref, rho=rho, beta=2.0, kernel=kernel, gamma=0.7)
    np.testing.assert_allclose(got, ref_ccd(groups, neutral, ref, rho=rho, beta=2.0, kernel=kernel, gamma=0.7),
                               **TOL)
    np.testing.assert_allclose(cced(groups, neutral, kernel=kernel, gamma=0.7),
                               ref_cced(groups, neutral, kernel=kernel, gamma=0.7), **TOL)


def test_unnormalized_and_huber_delta(tuples):
    groups, neutral, ref = tuples
    got = content_conditional_debiasing(groups, neutral, ref, rho="square", beta=0.3, kernel="euclidean",
                                        normalize=False)
    want = ref_ccd(groups, neutral, ref, rho="square", beta=0.3, kernel="euclidean", gamma=1.0, normalize=False)
    np.testing.assert_allclose(got, want, **TOL)
    # huber with a huge delta is 0.5 * square.
    big = content_conditional_debiasing(groups, neutral, ref, rho="huber", huber_delta=100.0, beta=0.0)
    sq = content_conditional_debiasing(groups, neutral, ref, rho="square", beta=0.0)
    np.testing.assert_allclose(big, 0.5 * sq, **TOL)


def test_cced_is_the_mean_abs_bias_term(tuples):
    groups, neutral, ref = tuples
    g = groups.shape[1]
    bias = content_conditional_debiasing(groups, neutral, ref, rho="abs", beta=0.0, kernel="rbf", gamma=0.5)
    np.testing.assert_allclose(cced(groups, neutral, kernel="rbf", gamma=0.5), bias / (g * (g - 1)), **TOL)


def test_reference_is_frozen_and_anchor_grad_is_finite(tuples):
    groups, neutral, _ = tuples
    fn = lambda gr, n, r: content_conditional_debiasing(gr, n, r, beta=1.0).sum()
    g_groups, g_neutral, g_ref = jax.grad(fn, argnums=(0, 1, 2))(groups, neutral, neutral)
    np.testing.assert_array_equal(g_ref, np.zeros_like(neutral))
    # At step 0 the trained model equals its frozen copy: ||n - n0|| = 0 must not give NaN gradients.
    assert np.all(np.isfinite(g_neutral)) and np.all(np.isfinite(g_groups))


def test_equal_distances_give_zero_bias():
    # Two groups mirrored around the neutral vector: every kernel distance is equal -> loss and CCED are 0.
    neutral = np.array([[1.0, 0.0, 0.0]], np.float32)
    groups = np.array([[[1.0, 0.5, 0.0], [1.0, -0.5, 0.0]]], np.float32)
    for kernel in ("cosine", "euclidean", "rbf"):
        assert float(content_conditional_debiasing(groups, neutral, neutral, kernel=kernel)[0]) == pytest.approx(
            0.0, abs=1e-6)
        assert float(cced(groups, neutral, kernel=kernel)[0]) == pytest.approx(0.0, abs=1e-6)


def test_where_jit_and_batch_shapes(tuples):
    groups, neutral, ref = tuples
    where = np.array([True, False, True, True])
    fn = lambda gr, n, r: content_conditional_debiasing(gr, n, r, rho="huber", beta=0.5, kernel="rbf", where=where)
    got = fn(groups, neutral, ref)
    assert float(got[1]) == 0.0
    full = content_conditional_debiasing(groups, neutral, ref, rho="huber", beta=0.5, kernel="rbf")
    np.testing.assert_allclose(got[where], full[where], **TOL)
    np.testing.assert_allclose(jax.jit(fn)(groups, neutral, ref), got, **TOL)
    grads = jax.grad(lambda gr: fn(gr, neutral, ref).sum())(groups)
    assert np.all(np.asarray(grads)[1] == 0) and np.any(np.asarray(grads)[0] != 0)
    np.testing.assert_array_equal(cced(groups, neutral, where=where)[1], 0.0)
    # [2, 2, G, D]: same as flattening the leading axes.
    g4, n4, r4 = groups.reshape(2, 2, 3, 6), neutral.reshape(2, 2, 6), ref.reshape(2, 2, 6)
    np.testing.assert_allclose(content_conditional_debiasing(g4, n4, r4).reshape(-1),
                               content_conditional_debiasing(groups, neutral, ref), **TOL)
    np.testing.assert_allclose(jax.vmap(cced)(g4, n4).reshape(-1), cced(groups, neutral), **TOL)


def test_check_grads(tuples):
    groups, neutral, ref = tuples
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x, jnp.float64) for x in (groups, neutral, ref))
        for kernel, rho in [("rbf", "abs"), ("euclidean", "huber"), ("cosine", "square")]:
            fn = jax.jit(lambda gr, n, kernel=kernel, rho=rho: content_conditional_debiasing(
                gr, n, args[2], rho=rho, beta=0.7, kernel=kernel, gamma=0.8))
            check_grads(fn, args[:2], order=1, modes=("rev",))
        check_grads(jax.jit(lambda gr, n: cced(gr, n, kernel="rbf", gamma=0.8)), args[:2], order=1, modes=("rev",))


def test_kernel_distance_reference():
    u, v = np.array([1.0, 2.0, 2.0], np.float32), np.array([0.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(kernel_distance(u, v, kernel="euclidean"), math.sqrt(1 + 4 + 1), **TOL)
    np.testing.assert_allclose(kernel_distance(u, v, kernel="cosine"), 1 - 2 / 3, **TOL)
    np.testing.assert_allclose(kernel_distance(u, v, kernel="rbf", gamma=2.0), 1 - math.exp(-6 / 8), **TOL)


def test_bad_input(tuples):
    groups, neutral, ref = tuples
    with pytest.raises(ValueError, match="G >= 2"):
        content_conditional_debiasing(groups[:, :1], neutral, ref)
    with pytest.raises(ValueError, match="neutral"):
        content_conditional_debiasing(groups, neutral[:3], ref)
    with pytest.raises(ValueError, match="neutral_ref"):
        content_conditional_debiasing(groups, neutral, ref[:, :5])
    with pytest.raises(ValueError, match="`rho` must be one of"):
        content_conditional_debiasing(groups, neutral, ref, rho="l1")
    with pytest.raises(TypeError, match="kernel width rho is the `gamma` argument"):
        content_conditional_debiasing(groups, neutral, ref, rho=0.5)
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        content_conditional_debiasing(groups, neutral, ref, kernel="dot")
    with pytest.raises(ValueError, match="`gamma` must be > 0"):
        cced(groups, neutral, gamma=0.0)
    with pytest.raises(ValueError, match="`beta` must be >= 0"):
        content_conditional_debiasing(groups, neutral, ref, beta=-1.0)
