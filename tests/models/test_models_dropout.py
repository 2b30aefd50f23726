"""gecko_jax.models.dropout: 16 counter-hash bits per element, flax.linen.Dropout's interface and statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gecko_jax.models.dropout as dropout_module
from gecko_jax.models.dropout import Dropout, keep_mask, random_words
from train_helpers import root_conftest  # noqa: F401  (fixture: tests/conftest.py's run_multidevice)


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


def _fmix32_reference(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's fmix32, written out in numpy uint64 arithmetic (masked to 32 bits)."""
    h = h.astype(np.uint64)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return h


def test_words_are_the_documented_counter_hash():
    key = jax.random.key(11)
    k0, k1 = (np.uint64(w) for w in np.asarray(jax.random.bits(key, (2,), jnp.uint32)))
    shape = (3, 5, 7)
    position = np.arange(np.prod(shape), dtype=np.uint64).reshape(shape)
    expected = _fmix32_reference(_fmix32_reference(position ^ k0) ^ k1).astype(np.uint32)
    np.testing.assert_array_equal(np.asarray(random_words(key, shape)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(random_words, static_argnums=1)(key, shape)), expected)
    # Known values of the finaliser itself (MurmurHash3 fmix32): 0 -> 0 and a bijection on a sample.
    assert int(dropout_module.fmix32(jnp.uint32(0))) == 0
    sample = np.asarray(dropout_module.fmix32(jnp.arange(1 << 16, dtype=jnp.uint32)))
    assert len(np.unique(sample)) == 1 << 16


def test_neighbours_and_two_keys_are_not_correlated():
    a = np.asarray(keep_mask(jax.random.key(7), (256, 1024), 0.5)[0], np.float64)
    b = np.asarray(keep_mask(jax.random.key(8), (256, 1024), 0.5)[0], np.float64)
    bound = lambda x: 5 / np.sqrt(x.size)  # noqa: E731
    pairs = {
        "next word along a row": (a[:, 1:-1:2], a[:, 2::2]),  # second draw of word j vs first of word j + 1
        "next row": (a[:-1], a[1:]),
        "two keys": (a, b),
        "two keys, shifted by one word": (a[:, :-2], b[:, 2:]),
    }
    for name, (x, y) in pairs.items():
        r = np.corrcoef(x.ravel(), y.ravel())[0, 1]
        assert abs(r) < bound(x), f"{name}: correlation {r:.4f}"


def test_counter_overflow_falls_back_to_threefry_bits(monkeypatch):
    key = jax.random.key(3)
    monkeypatch.setattr(dropout_module, "_MAX_COUNTER", 64)
    np.testing.assert_array_equal(np.asarray(random_words(key, (8, 8))),
                                  np.asarray(jax.random.bits(key, (8, 8), jnp.uint32)))
    under = np.asarray(random_words(key, (7, 9)))  # 63 words, under the limit: still the counter hash
    np.testing.assert_array_equal(under.ravel(), np.asarray(random_words(key, (63,))))
    assert not np.array_equal(under, np.asarray(jax.random.bits(key, (7, 9), jnp.uint32)))
    mask, keep_prob = keep_mask(key, (64, 64), 0.1)  # 2,048 words: fallback, same statistics
    assert abs(float(mask.mean()) - keep_prob) < 5 * np.sqrt(keep_prob * (1 - keep_prob) / mask.size)


def test_masks_of_a_sharded_array_equal_the_unsharded_ones(root_conftest):
    code = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from gecko_jax.models.dropout import keep_mask
assert jax.device_count() == 8
key, shape = jax.random.key(4), (16, 4, 32, 32)
ref = np.asarray(keep_mask(key, shape, 0.1)[0])
mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
out = jax.jit(lambda k: keep_mask(k, shape, 0.1)[0],
              out_shardings=NamedSharding(mesh, P("data", "model")))(key)
assert len(out.sharding.device_set) == 8
np.testing.assert_array_equal(np.asarray(out), ref)
print("ok")
"""
    proc = root_conftest.run_multidevice(code, devices=8, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
