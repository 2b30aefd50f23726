"""Dropout with cheap counter-based random bits: 16 bits per element from an integer hash of its position.

    y = Dropout(0.1)(x, deterministic=False)      # flax.linen.Dropout's interface and its "dropout" rng stream

``flax.linen.Dropout`` draws a 32-bit threefry uniform per element and XLA keeps those ``uint32`` words for the
backward pass. In an encoder train step on CPU that generator took ~9-10 % of the step's CPU time (profiled,
BENCHMARKS.md), and the attention dropout's ``uint32[B, heads, L, L]`` words per layer a large share of memory.
Here:

- **Half the bits.** Each 32-bit word gives two 16-bit draws (where the last axis is even). An element is kept when
  its draw is >= ``round(rate * 65536)``, so the realised rate is within 1e-5 of ``rate`` (0.1 -> 0.100006) and
  kept values are scaled by the realised keep probability, which keeps the expectation exact.
- **A counter hash instead of threefry.** Word ``i`` (row-major position) is
  ``fmix32(fmix32(i ^ k0) ^ k1)``, with ``fmix32`` MurmurHash3's 32-bit finaliser (a bijection with full avalanche)
  and ``(k0, k1)`` two words drawn with ``jax.random.bits`` from the layer's ``make_rng`` key: ~14 integer
  operations per word against threefry-2x32's 20 rounds. Measured on the quickstart's fine-tuning step (AMD EPYC,
  AVX-512, 2 cores): 5.95-6.23 s against 6.40-6.94 s a step (BENCHMARKS.md, "Counter-hash dropout"). The hash is not
  cryptographic; dropout needs only uniform, uncorrelated draws (tests check rate, neighbours, the two halves of a
  word, and two keys), the same idea as the counter-based Philox/threefry generators with fewer rounds.

Integer arithmetic only, so the masks are bit-identical on every CPU and backend, on 1 or N devices (the counter is
the global position, whatever the sharding) and across resumption. Tensors of 2**32 words or more (beyond any
counter) draw their bits with ``jax.random.bits`` instead.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_LEVELS = 1 << 16
_MAX_COUNTER = 1 << 32  # words a 32-bit counter can number; larger tensors fall back to jax.random.bits


def fmix32(h):
    """MurmurHash3's 32-bit finaliser on ``uint32`` values (elementwise, wrapping arithmetic)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def random_words(rng, shape: tuple[int, ...]):
    """``uint32`` words of ``shape``: the counter hash of each word's row-major position under ``rng``."""
    if math.prod(shape) >= _MAX_COUNTER:
        return jax.random.bits(rng, shape, jnp.uint32)
    k = jax.random.bits(rng, (2,), jnp.uint32)
    # Row-major position from one iota per axis: each device of a sharded array computes just its own block.
    position, stride = jnp.zeros(shape, jnp.uint32), 1
    for axis in reversed(range(len(shape))):
        position = position + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    return fmix32(fmix32(position ^ k[0]) ^ k[1])


def keep_mask(rng, shape: tuple[int, ...], rate: float):
    """``(bool mask of shape, realised keep probability)``: True with probability ``1 - round(rate * 2**16) / 2**16``.

    Two 16-bit draws per 32-bit word where the last axis is even; otherwise the upper half of one word each.
    """
    threshold = min(max(int(round(rate * _LEVELS)), 0), _LEVELS)
    keep_prob = 1.0 - threshold / _LEVELS
    shape = tuple(int(s) for s in shape)
    if threshold >= _LEVELS:
        return jnp.zeros(shape, bool), keep_prob
    if shape and shape[-1] % 2 == 0:
        words = random_words(rng, shape[:-1] + (shape[-1] // 2,))
        draws = lax.bitcast_convert_type(words, jnp.uint16).reshape(shape)
    else:
        draws = (random_words(rng, shape) >> 16).astype(jnp.uint16)
    return draws >= jnp.uint16(threshold), keep_prob


class Dropout(nn.Module):
    """Drop-in for ``flax.linen.Dropout`` (no ``broadcast_dims``) that draws 16 random bits per element.

    Attributes:
      rate: probability of zeroing an element (0 <= rate <= 1).
      deterministic: default for the call argument (True: identity).
      rng_collection: the rng stream (``"dropout"``, as flax's).
    """

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if not 0.0 <= self.rate <= 1.0:  # NaN fails this too
            raise ValueError(f"dropout rate must be in [0, 1], got {self.rate!r}")
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        mask, keep_prob = keep_mask(rng, inputs.shape, self.rate)
        return lax.select(mask, inputs / jnp.asarray(keep_prob, inputs.dtype), jnp.zeros_like(inputs))
