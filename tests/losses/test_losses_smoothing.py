"""Tests for gecko_jax.losses smoothing: p-parameterised label smoothing, forward correction, p*(r), p_agn."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from gecko_jax.losses import (agnostic_smoothing, epsilon_to_p, forward_corrected_cross_entropy, optimal_smoothing,
                              p_to_epsilon, smoothed_cross_entropy)

TOL = dict(rtol=1e-5, atol=1e-5)


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def ref_smoothed(logits, labels, p):
    out = []
    for z, y in zip(logits, labels):
        k = len(z)
        ls = np_log_softmax(z)
        target = [p if c == y else (1 - p) / (k - 1) for c in range(k)]
        out.append(-sum(t * l for t, l in zip(target, ls)))
    return np.array(out)


def ref_forward(logits, labels, p):
    out = []
    for z, y in zip(logits, labels):
        k = len(z)
        t = np.full((k, k), (1 - p) / (k - 1))
        np.fill_diagonal(t, p)
        out.append(-math.log((np.exp(np_log_softmax(z)) @ t)[y]))
    return np.array(out)


@pytest.fixture
def data():
    rng = np.random.default_rng(4)
    logits = (3 * rng.normal(size=(6, 5))).astype(np.float32)
    labels = rng.integers(0, 5, size=6).astype(np.int32)
    return logits, labels


def test_golden():
    # logits (2, 0, 0), y = 0, p = 0.8: log s = (2 - a, -a, -a), a = log(e^2 + 2).
    a = math.log(math.exp(2) + 2)
    golden_ls = -(0.8 * (2 - a) + 0.1 * (-a) * 2)
    golden_fc = -math.log(0.1 + 0.7 * math.exp(2 - a))
    z, y = jnp.array([[2.0, 0.0, 0.0]]), jnp.array([0])
    np.testing.assert_allclose(smoothed_cross_entropy(z, y, p=0.8), [golden_ls], **TOL)
    np.testing.assert_allclose(forward_corrected_cross_entropy(z, y, p=0.8), [golden_fc], **TOL)


@pytest.mark.parametrize("p", [1.0, 0.9, 0.5, 0.2, 0.05])
def test_match_references(data, p):
    logits, labels = data
    np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, p=p), ref_smoothed(logits, labels, p), **TOL)
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, labels, p=p),
                               ref_forward(logits, labels, p), **TOL)


def test_p_one_is_cross_entropy(data):
    logits, labels = data
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, p=1.0), ce, **TOL)
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, labels, p=1.0), ce, **TOL)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
def test_matches_optax_smooth_labels(data, eps):
    logits, labels = data
    k = logits.shape[-1]
    want = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, k), eps))
    p = epsilon_to_p(eps, k)
    np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, p=p), want, **TOL)
    assert p_to_epsilon(p, k) == pytest.approx(eps, abs=1e-12)


def test_per_example_p_and_batch_shapes(data):
    logits, labels = data
    p = np.linspace(0.3, 1.0, 6).astype(np.float32)
    got = smoothed_cross_entropy(logits, labels, p=p)
    want = [smoothed_cross_entropy(logits[i:i + 1], labels[i:i + 1], p=float(p[i]))[0] for i in range(6)]
    np.testing.assert_allclose(got, want, **TOL)
    for fn in (smoothed_cross_entropy, forward_corrected_cross_entropy):
        flat = fn(logits, labels, p=0.7)
        np.testing.assert_allclose(fn(logits.reshape(2, 3, 5), labels.reshape(2, 3), p=0.7).reshape(-1), flat,
                                   **TOL)
        np.testing.assert_allclose(jax.vmap(lambda z, y: fn(z, y, p=0.7))(logits, labels), flat, **TOL)
        np.testing.assert_allclose(jax.jit(lambda z, y, q: fn(z, y, p=q))(logits, labels, 0.7), flat, **TOL)


def test_where(data):
    logits, labels = data
    where = np.array([1, 0, 1, 1, 0, 1], bool)
    for fn in (smoothed_cross_entropy, forward_corrected_cross_entropy):
        got = fn(logits, labels, p=0.6, where=where)
        np.testing.assert_array_equal(np.asarray(got)[~where], 0.0)
        np.testing.assert_allclose(got[where], fn(logits, labels, p=0.6)[where], **TOL)
        g = jax.grad(lambda z: fn(z, labels, p=0.6, where=where).sum())(logits)
        assert np.all(np.asarray(g)[~where] == 0) and np.all(np.asarray(g)[where] != 0)


def test_forward_correction_is_stable_for_large_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]])
    labels = jnp.array([2, 1])
    got = forward_corrected_cross_entropy(logits, labels, p=0.8)
    # s_y = 0 for row 0 -> -log(c) with c = 0.1; s_y = 1 for row 1 -> -log(p).
    np.testing.assert_allclose(got, [-math.log(0.1), -math.log(0.8)], **TOL)
    g = jax.grad(lambda z: forward_corrected_cross_entropy(z, labels, p=0.8).sum())(logits)
    assert np.all(np.isfinite(g))


def test_check_grads(data):
    logits, labels = data
    with jax.enable_x64(True):
        z = jnp.asarray(logits, jnp.float64)
        for fn, p in [(smoothed_cross_entropy, 0.7), (forward_corrected_cross_entropy, 0.7),
                      (forward_corrected_cross_entropy, 0.1), (forward_corrected_cross_entropy, 1.0)]:
            check_grads(jax.jit(lambda x, fn=fn, p=p: fn(x, labels, p=p)), (z,), order=1, modes=("rev",))
        check_grads(jax.jit(lambda x: smoothed_cross_entropy(x, labels, p=0.7)), (z,), order=2, modes=("rev",))


@pytest.mark.parametrize("noise, want", [(0.2, 0.644), (0.4, 0.378), (0.5, 0.278), (0.6, 0.200), (0.8, 0.111)])
def test_optimal_smoothing_known_values(noise, want):
    assert round(optimal_smoothing(noise, 10), 3) == want


def test_optimal_smoothing_properties():
    assert optimal_smoothing(0.0, 10) == pytest.approx(1.0)
    assert optimal_smoothing(0.9, 10) == pytest.approx(0.1)  # r = 1/K -> uniform
    assert round(optimal_smoothing(0.2, 2), 2) == 0.68
    assert round(optimal_smoothing(0.5, 100), 4) == 0.2525
    # p* = P(two independent noisy labels agree), computed from the symmetric channel by brute force.
    for k, n in [(3, 0.3), (10, 0.45)]:
        t = np.full((k, k), n / (k - 1))
        np.fill_diagonal(t, 1 - n)
        assert optimal_smoothing(n, k) == pytest.approx(float((t[0] ** 2).sum()), abs=1e-12)
    arr = optimal_smoothing(np.array([0.2, 0.5]), 10)
    np.testing.assert_allclose(arr, [optimal_smoothing(0.2, 10), optimal_smoothing(0.5, 10)])


@pytest.mark.parametrize("k", [2, 10, 100])
def test_agnostic_is_mean_of_optimal(k):
    r = np.linspace(1 / k, 1, 20001)
    mean = np.trapezoid(optimal_smoothing(1 - r, k), r) / (1 - 1 / k)
    assert agnostic_smoothing(k) == pytest.approx(mean, abs=1e-6)
    assert agnostic_smoothing(10) == pytest.approx(0.4)


def test_bad_input(data):
    logits, labels = data
    with pytest.raises(ValueError, match=r"r = 1 - noise_rate must be >= 1/K"):
        optimal_smoothing(0.95, 10)
    with pytest.raises(ValueError, match=r"noise_rate.*\[0, 1\]"):
        optimal_smoothing(-0.1, 10)
    with pytest.raises(ValueError, match="num_classes"):
        agnostic_smoothing(1)
    with pytest.raises(ValueError, match=r"`p`.*\[0.0, 1\]"):
        smoothed_cross_entropy(logits, labels, p=1.2)
    with pytest.raises(ValueError, match=r"`p`.*\(0.0, 1\]"):
        forward_corrected_cross_entropy(logits, labels, p=0.0)
    with pytest.raises(ValueError, match=r"labels.*\[0, 5\)"):
        smoothed_cross_entropy(logits, labels + 5, p=0.9)
    with pytest.raises(TypeError, match="integer"):
        smoothed_cross_entropy(logits, labels.astype(np.float32), p=0.9)
    with pytest.raises(ValueError, match=r"labels.*shape \(6,\)"):
        forward_corrected_cross_entropy(logits, labels[:3], p=0.9)


def ref_forward_matrix(logits, labels, t):
    return np.array([-math.log((np.exp(np_log_softmax(z)) @ np.asarray(t, np.float64))[y])
                     for z, y in zip(logits, labels)])


def test_forward_transition_matrix_matches_reference_and_symmetric_p(data):
    from gecko_jax.data.noise import pairflip_transition, symmetric_transition

    logits, labels = data
    t_pair = np.asarray(pairflip_transition(5, 0.3), np.float32)     # has zero entries
    got = jax.jit(lambda z: forward_corrected_cross_entropy(z, labels, transition=t_pair))(logits)
    np.testing.assert_allclose(got, ref_forward_matrix(logits, labels, t_pair), **TOL)
    # The symmetric channel as a matrix equals the closed form in p (diagonal p = 1 - n).
    t_sym = np.asarray(symmetric_transition(5, 0.4), np.float32)
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, labels, transition=t_sym),
                               forward_corrected_cross_entropy(logits, labels, p=0.6), **TOL)
    # Identity channel = plain cross-entropy; per-example matrices broadcast over the batch.
    eye = np.eye(5, dtype=np.float32)
    np.testing.assert_allclose(forward_corrected_cross_entropy(logits, labels, transition=eye),
                               optax.softmax_cross_entropy_with_integer_labels(logits, labels), **TOL)
    per_row = np.stack([t_pair if i % 2 else t_sym for i in range(len(labels))])
    mixed = forward_corrected_cross_entropy(logits, labels, transition=per_row)
    np.testing.assert_allclose(mixed[1::2], got[1::2], **TOL)


def test_forward_transition_grads_and_where(data):
    from gecko_jax.data.noise import pairflip_transition

    logits, labels = data
    t = np.asarray(pairflip_transition(5, 0.25))
    with jax.enable_x64(True):
        check_grads(jax.jit(lambda x: forward_corrected_cross_entropy(x, labels, transition=jnp.asarray(t))),
                    (jnp.asarray(logits, jnp.float64),), order=1, modes=("rev",))
    where = np.array([1, 0, 1, 1, 0, 1], bool)
    g = jax.grad(lambda z: forward_corrected_cross_entropy(z, labels, transition=t, where=where).sum())(logits)
    assert np.all(np.asarray(g)[~where] == 0) and np.all(np.isfinite(g))


def test_forward_transition_bad_input(data):
    logits, labels = data
    with pytest.raises(ValueError, match="exactly one of `p`"):
        forward_corrected_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match="exactly one of `p`"):
        forward_corrected_cross_entropy(logits, labels, p=0.9, transition=np.eye(5))
    with pytest.raises(ValueError, match=r"shape \[..., K, K\] with K = 5"):
        forward_corrected_cross_entropy(logits, labels, transition=np.eye(4))
    with pytest.raises(ValueError, match="row-stochastic"):
        forward_corrected_cross_entropy(logits, labels, transition=np.full((5, 5), 0.3))
