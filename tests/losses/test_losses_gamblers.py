"""Tests for gecko_jax.losses gambler's loss, payoff heuristics, L* and prediction."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from gecko_jax.losses import auto_payoff, gamblers, gamblers_predict, gamblers_stop_threshold

TOL = dict(rtol=1e-5, atol=1e-5)


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_gamblers(logits, labels, payoff, eps=1e-10):
    """The authors' formula, row by row: -log(p_y + p_abstain / o + 1e-10)."""
    payoff = np.broadcast_to(np.asarray(payoff, np.float64), (len(labels),))
    out = []
    for z, y, o in zip(logits, labels, payoff):
        p = np_softmax(z)
        out.append(-math.log(p[y] + p[-1] / o + eps))
    return np.array(out)


def ref_auto(logits, method):
    out = []
    for z in logits:
        p = np_softmax(z)
        cls, a = p[:-1], p[-1]
        if method == "euc":
            out.append(((1 - a) ** 2 + 1e-10) / np.sum(cls ** 2))
        elif method == "mid":
            out.append(((1 - a) + 1e-10) / np.sum(cls ** 2))
        else:
            c = cls + 1e-10
            out.append(math.exp(-(np.sum(c * np.log(c)) + 1e-10) / np.sum(c)))
    return np.array(out)


@pytest.fixture
def data():
    rng = np.random.default_rng(5)
    logits = (2 * rng.normal(size=(6, 5))).astype(np.float32)  # m = 4 classes + abstain
    labels = rng.integers(0, 4, size=6).astype(np.int32)
    return logits, labels


def test_golden():
    # All-zero logits over m = 3 (+ abstain): every p = 1/4 -> -log(1/4 + 1/8) with o = 2.
    got = gamblers(jnp.zeros((1, 4)), jnp.array([2]), payoff=2.0, eps=0.0)
    np.testing.assert_allclose(got, [-math.log(0.375)], **TOL)


@pytest.mark.parametrize("payoff", [1.5, 2.7, 4.0])
def test_matches_reference(data, payoff):
    logits, labels = data
    np.testing.assert_allclose(gamblers(logits, labels, payoff=payoff), ref_gamblers(logits, labels, payoff), **TOL)


def test_per_example_payoff(data):
    logits, labels = data
    o = jnp.array([1.2, 2.0, 3.0, 4.0, 1.01, 3.9], jnp.float32)
    np.testing.assert_allclose(gamblers(logits, labels, payoff=o), ref_gamblers(logits, labels, np.asarray(o)),
                               **TOL)


@pytest.mark.parametrize("payoff", [1.5, 2.0, 9.9])
def test_all_mass_on_abstain_costs_log_payoff(payoff):
    logits = jnp.array([[0.0] * 10 + [200.0], [-5.0, 3.0] + [0.0] * 8 + [300.0]])
    np.testing.assert_allclose(gamblers(logits, jnp.array([3, 1]), payoff=payoff, eps=0.0), [math.log(payoff)] * 2,
                               **TOL)
    np.testing.assert_allclose(gamblers(logits, jnp.array([3, 1]), payoff=payoff), [math.log(payoff)] * 2, **TOL)


def test_payoff_above_m_is_cross_entropy(data):
    logits, labels = data
    m = logits.shape[-1] - 1
    # (a) abstention switched off (abstain logit -1e4 -> p_abstain = 0): exactly CE on the m classes.
    off = logits.copy()
    off[:, -1] = -1e4
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], labels)
    got = gamblers(off, labels, payoff=1000.0 + m, allow_nll_payoff=True, eps=0.0)
    np.testing.assert_allclose(got, ce, **TOL)
    # (b) with abstain mass: l_o = -log p_y - log1p(p_abs / (o p_y)) -> CE over the m+1 outputs as o grows.
    with jax.enable_x64(True):
        z = jnp.asarray(logits, jnp.float64)
        p = np_softmax(logits)
        p_y, p_abs = p[np.arange(6), labels], p[:, -1]
        nll = -np.log(p_y)
        gaps = []
        for o in [m + 1.0, 1e2, 1e4, 1e6]:
            lo = np.asarray(gamblers(z, labels, payoff=o, allow_nll_payoff=True, eps=0.0))
            np.testing.assert_allclose(lo, nll - np.log1p(p_abs / (o * p_y)), rtol=1e-12)
            gap = np.abs(lo - nll)
            assert np.all(gap <= p_abs / (o * p_y))
            gaps.append(gap.max())
        assert gaps[0] > gaps[1] > gaps[2] > gaps[3]
        # first-order limit: o * (CE - l_o) -> p_abs / p_y (log1p(x) = x + O(x^2), x <= 1.3e-4 at o = 1e6).
        np.testing.assert_allclose(gap * o, p_abs / p_y, rtol=1e-3)


def test_abstaining_pays_only_below_m():
    # Uniform label distribution over m classes (the hardest case): betting uniformly costs log m, abstaining
    # costs log o -- abstention wins exactly when o < m.
    m = 4
    uniform = jnp.zeros((m, m + 1)).at[:, -1].set(-1e4)
    abstain = jnp.zeros((m, m + 1)).at[:, -1].set(100.0)
    labels = jnp.arange(m)
    for o, abstain_better in [(m - 0.5, True), (m + 0.5, False)]:
        l_bet = float(gamblers(uniform, labels, payoff=o, allow_nll_payoff=True).mean())
        l_abs = float(gamblers(abstain, labels, payoff=o, allow_nll_payoff=True).mean())
        assert l_bet == pytest.approx(math.log(m), abs=1e-5) and l_abs == pytest.approx(math.log(o), abs=1e-5)
        assert (l_abs < l_bet) == abstain_better


def test_where_jit_vmap_shapes(data):
    logits, labels = data
    where = np.array([1, 1, 0, 1, 0, 1], bool)
    got = gamblers(logits, labels, payoff=2.5, where=where)
    np.testing.assert_array_equal(np.asarray(got)[~where], 0.0)
    full = gamblers(logits, labels, payoff=2.5)
    np.testing.assert_allclose(got[where], full[where], **TOL)
    g = jax.grad(lambda z: gamblers(z, labels, payoff=2.5, where=where).sum())(logits)
    assert np.all(np.asarray(g)[~where] == 0) and np.all(np.abs(np.asarray(g)[where]).sum(-1) > 0)
    np.testing.assert_allclose(jax.jit(lambda z, y, o: gamblers(z, y, payoff=o))(logits, labels, 2.5), full, **TOL)
    np.testing.assert_allclose(gamblers(logits.reshape(2, 3, 5), labels.reshape(2, 3), payoff=2.5).reshape(-1),
                               full, **TOL)
    np.testing.assert_allclose(jax.vmap(lambda z, y: gamblers(z, y, payoff=2.5))(logits, labels), full, **TOL)


def test_check_grads(data):
    logits, labels = data
    with jax.enable_x64(True):
        z = jnp.asarray(logits, jnp.float64)
        check_grads(jax.jit(lambda x: gamblers(x, labels, payoff=2.2)), (z,), order=2, modes=("rev",))
    # With the per-example payoff from auto_payoff the gradient is that of a fixed payoff of the same value
    # (finite differences would see the payoff move, so check_grads does not apply there).
    o = auto_payoff(logits, "euc")
    g_auto = jax.grad(lambda x: gamblers(x, labels, payoff=auto_payoff(x, "euc")).sum())(logits)
    g_fixed = jax.grad(lambda x: gamblers(x, labels, payoff=o).sum())(logits)
    np.testing.assert_allclose(g_auto, g_fixed, **TOL)


@pytest.mark.parametrize("method", ["euc", "mid", "exp"])
def test_auto_payoff_reference(data, method):
    logits, _ = data
    np.testing.assert_allclose(auto_payoff(logits, method), ref_auto(logits, method), **TOL)
    np.testing.assert_allclose(jax.jit(auto_payoff, static_argnums=1)(logits, method), ref_auto(logits, method),
                               **TOL)
    np.testing.assert_allclose(auto_payoff(logits.reshape(2, 3, 5), method).reshape(-1), ref_auto(logits, method),
                               **TOL)
    # No gradient flows through the payoff.
    g = jax.grad(lambda z: auto_payoff(z, method).sum())(logits)
    np.testing.assert_array_equal(g, np.zeros_like(logits))


def test_auto_payoff_golden():
    # Uniform bet over m = 3 classes, no abstention: all methods give the effective number of classes, 3.
    uniform = jnp.array([[0.0, 0.0, 0.0, -1e4]])
    for method in ("euc", "mid", "exp"):
        np.testing.assert_allclose(auto_payoff(uniform, method), [3.0], **TOL)
    # A confident single-class bet gives o = 1; 'euc' ignores how much is on abstain, 'mid' does not.
    confident = jnp.array([[30.0, 0.0, 0.0, 30.0]])  # p = (1/2, ~0, ~0, 1/2)
    np.testing.assert_allclose(auto_payoff(confident, "euc"), [1.0], **TOL)
    np.testing.assert_allclose(auto_payoff(confident, "mid"), [2.0], **TOL)


@pytest.mark.parametrize("noise, want", [(0.2, 0.938), (0.5, 1.786), (0.8, 2.249)])
def test_stop_threshold_known_values(noise, want):
    assert round(gamblers_stop_threshold(noise, 9.9), 3) == want


def test_stop_threshold_is_the_plateau():
    # L* = min_b [ -r log(1 - b + b/o) - (1 - r) log(b/o) ]: the loss of a model that learned the clean signal
    # but bets b on abstain everywhere (PAPERS.md 4.2), minimised on a fine grid.
    b = np.linspace(1e-6, 1 - 1e-6, 2_000_001)
    for r, o in [(0.8, 9.9), (0.5, 9.9), (0.8, 1.95), (0.3, 5.0)]:
        plateau = np.min(-r * np.log(1 - b + b / o) - (1 - r) * np.log(b / o))
        assert gamblers_stop_threshold(1 - r, o) == pytest.approx(plateau, abs=1e-8)
    assert round(gamblers_stop_threshold(0.2, 1.95), 3) == 0.490
    assert gamblers_stop_threshold(0.0, 9.9) == 0.0
    np.testing.assert_allclose(gamblers_stop_threshold(np.array([0.2, 0.5]), np.array([9.9, 5.0])),
                               [gamblers_stop_threshold(0.2, 9.9), gamblers_stop_threshold(0.5, 5.0)], rtol=1e-12)


def test_predict_ignores_abstain():
    logits = jnp.array([[0.1, 2.0, 0.3, 9.0], [5.0, 1.0, 0.0, -3.0]])
    np.testing.assert_array_equal(gamblers_predict(logits), [1, 0])
    np.testing.assert_array_equal(gamblers_predict(logits.reshape(1, 2, 4)), [[1, 0]])
    np.testing.assert_array_equal(jax.jit(gamblers_predict)(logits), [1, 0])


def test_bad_input(data):
    logits, labels = data
    with pytest.raises(ValueError, match=r"`payoff` must be > 1"):
        gamblers(logits, labels, payoff=1.0)
    with pytest.raises(ValueError, match=r"`payoff` must be <= m = 4.*allow_nll_payoff"):
        gamblers(logits, labels, payoff=9.9)
    with pytest.raises(ValueError, match=r"abstain column is not a label"):
        gamblers(logits, np.full(6, 4, np.int32), payoff=2.0)
    with pytest.raises(ValueError, match=r"m >= 2"):
        gamblers(logits[:, :2], labels % 1, payoff=2.0)
    with pytest.raises(ValueError, match="method"):
        auto_payoff(logits, "entropy")
    with pytest.raises(ValueError, match=r"r = 1 - noise_rate > 1/payoff"):
        gamblers_stop_threshold(0.95, 9.9)
    with pytest.raises(ValueError, match=r"`payoff` must be > 1"):
        gamblers_stop_threshold(0.2, 1.0)
    with pytest.raises(ValueError, match=r"noise_rate"):
        gamblers_stop_threshold(1.0, 9.9)
