"""gecko_jax.models.dropout: 16 random bits per element, flax.linen.Dropout's interface and statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.models.dropout import Dropout, keep_mask


@pytest.mark.parametrize("shape", [(64, 4, 128, 128), (33, 7)])  # even last axis: two draws a word; odd: one
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_matches_the_requested_rate(shape, rate):
    mask, keep_prob = keep_mask(jax.random.key(0), shape, rate)
    assert mask.shape == shape and mask.dtype == jnp.bool_
    assert abs(keep_prob - (1 - rate)) < 1e-4
    n = mask.size
    sd = np.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(float(mask.mean()) - keep_prob) < 5 * sd  # binomial: 5 standard deviations


def test_the_two_draws_of_one_word_are_not_correlated():
    mask, _ = keep_mask(jax.random.key(1), (512, 512), 0.5)
    m = np.asarray(mask, np.float64)
    a, b = m[:, 0::2].ravel(), m[:, 1::2].ravel()  # the two halves of each 32-bit word
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


def test_dropout_keeps_the_expectation_and_zeroes_the_rest():
    x = jnp.ones((256, 256))
    y = Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    vals = np.unique(np.asarray(y))
    _, keep_prob = keep_mask(jax.random.key(2), x.shape, 0.1)
    np.testing.assert_allclose(vals, [0.0, 1.0 / keep_prob], rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 5 * np.sqrt(0.1 / 0.9 / x.size)


def test_deterministic_rate_zero_and_rate_one():
    x = jnp.arange(12.0).reshape(3, 4)
    assert (Dropout(0.3).apply({}, x, deterministic=True) == x).all()
    assert (Dropout(0.0).apply({}, x, deterministic=False) == x).all()
    assert (Dropout(1.0).apply({}, x, deterministic=False) == 0).all()
    with pytest.raises(ValueError, match="dropout rate"):
        Dropout(1.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})


def test_same_key_same_mask_other_key_other_mask():
    x = jnp.ones((8, 128))
    f = lambda k: Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(k)})  # noqa: E731
    assert (f(3) == f(3)).all()
    assert not (f(3) == f(4)).all()


def test_gradient_is_the_mask_over_the_keep_probability():
    x = jnp.linspace(-1.0, 1.0, 64 * 64).reshape(64, 64)
    key = jax.random.key(5)
    g = jax.grad(lambda v: Dropout(0.25).apply({}, v, deterministic=False, rng=key).sum())(x)  # the key as given
    mask, keep_prob = keep_mask(key, x.shape, 0.25)
    np.testing.assert_allclose(np.asarray(g), np.where(np.asarray(mask), 1.0 / keep_prob, 0.0), rtol=1e-6)
