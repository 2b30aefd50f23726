"""Tests for gecko_jax.data.noise: transition matrices and seeded label corruption."""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from gecko_jax.data import noise as noise_mod
from gecko_jax.data.noise import corrupt_labels, pairflip_transition, symmetric_transition


def test_golden_matrices():
    np.testing.assert_allclose(symmetric_transition(3, 0.3), [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15],
                                                              [0.15, 0.15, 0.7]], atol=1e-12)
    np.testing.assert_allclose(pairflip_transition(3, 0.2), [[0.8, 0.2, 0.0], [0.0, 0.8, 0.2], [0.2, 0.0, 0.8]],
                               atol=1e-12)
    # K = 2: pair flip and symmetric coincide.
    np.testing.assert_allclose(pairflip_transition(2, 0.4), symmetric_transition(2, 0.4), atol=1e-12)
    for k, n in [(10, 0.0), (10, 0.45), (4, 1.0)]:
        for t in (symmetric_transition(k, n), pairflip_transition(k, n)):
            np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-12)
            np.testing.assert_allclose(np.diag(t), 1 - n, atol=1e-12)


@pytest.mark.parametrize("make", [symmetric_transition, pairflip_transition])
def test_empirical_rates_match_matrix(make):
    k, n_per_class = 5, 40_000
    t = make(k, 0.35)
    labels = np.repeat(np.arange(k), n_per_class)
    noisy, corrupted = corrupt_labels(labels, t, seed=123)
    counts = np.zeros((k, k))
    np.add.at(counts, (labels, noisy), 1)
    empirical = counts / n_per_class
    # 6 binomial standard deviations: a correct sampler fails with probability < 1e-8 per cell.
    bound = 6 * np.sqrt(t * (1 - t) / n_per_class) + 1e-12
    assert np.all(np.abs(empirical - t) <= bound), np.abs(empirical - t).max()
    assert abs(corrupted.mean() - 0.35) < 6 * np.sqrt(0.35 * 0.65 / labels.size)


def test_matches_naive_inverse_cdf_sampler():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 4, size=300)
    t = rng.dirichlet(np.ones(4), size=4)
    noisy, corrupted = corrupt_labels(labels, t, seed=77)
    u = np.random.default_rng(77).random(labels.size)  # same stream the function draws from
    want = []
    for y, ui in zip(labels, u):
        acc, pick = 0.0, len(t) - 1
        for j, pj in enumerate(t[y]):
            acc += pj
            if ui < acc:
                pick = j
                break
        want.append(pick)
    np.testing.assert_array_equal(noisy, want)
    np.testing.assert_array_equal(corrupted, noisy != labels)


def test_seed_determinism_and_mask():
    labels = np.random.default_rng(0).integers(0, 10, size=(50, 20)).astype(np.int32)
    t = pairflip_transition(10, 0.5)
    a, ma = corrupt_labels(labels, t, seed=5)
    b, mb = corrupt_labels(labels, t, seed=5)
    c, _ = corrupt_labels(labels, t, seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert a.shape == labels.shape and a.dtype == labels.dtype
    np.testing.assert_array_equal(ma, a != labels)
    np.testing.assert_array_equal(a[ma], (labels[ma] + 1) % 10)  # pair flip goes to the next class only
    np.testing.assert_array_equal(a[~ma], labels[~ma])
    # The global numpy RNG is not touched.
    state = np.random.get_state()[1].copy()
    corrupt_labels(labels, t, seed=5)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_extremes():
    labels = np.arange(8) % 4
    same, mask = corrupt_labels(labels, symmetric_transition(4, 0.0), seed=1)
    np.testing.assert_array_equal(same, labels)
    assert not mask.any()
    flipped, mask = corrupt_labels(labels, pairflip_transition(4, 1.0), seed=1)
    np.testing.assert_array_equal(flipped, (labels + 1) % 4)
    assert mask.all()
    empty, mask = corrupt_labels(np.zeros(0, np.int64), symmetric_transition(3, 0.5), seed=0)
    assert empty.shape == (0,) and mask.shape == (0,)


def test_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        symmetric_transition(1, 0.1)
    with pytest.raises(ValueError, match=r"noise.*\[0, 1\]"):
        pairflip_transition(3, 1.5)
    with pytest.raises(ValueError, match="row 1 sums to"):
        corrupt_labels(np.zeros(3, int), np.array([[1.0, 0.0], [0.3, 0.3]]), seed=0)
    with pytest.raises(ValueError, match="square"):
        corrupt_labels(np.zeros(3, int), np.ones((2, 3)) / 3, seed=0)
    with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
        corrupt_labels(np.array([0, 3]), symmetric_transition(3, 0.1), seed=0)
    with pytest.raises(TypeError, match="integers"):
        corrupt_labels(np.array([0.0, 1.0]), symmetric_transition(3, 0.1), seed=0)


def test_module_imports_numpy_only():
    tree = ast.parse(pathlib.Path(noise_mod.__file__).read_text())
    roots = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert roots <= {"numpy", "__future__", "typing"}, roots
