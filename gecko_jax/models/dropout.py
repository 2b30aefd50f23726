"""Dropout with half the random bits: one 32-bit threefry word masks two elements.

    y = Dropout(0.1)(x, deterministic=False)      # flax.linen.Dropout's interface and its "dropout" rng stream

``flax.linen.Dropout`` draws a 32-bit uniform per element and XLA keeps those ``uint32`` words for the backward
pass. In an encoder train step that is the biggest single share of memory after the activations themselves: the
attention dropout alone is a ``uint32[B, heads, L, L]`` tensor per layer (a packed all-MiniLM-L6-v2 step of 80 x 128
tokens kept 14 of them, 0.9 GB of its 5 GB temp buffer, and generating them was ~9 % of the step's CPU time).
Here each 32-bit word is split into two 16-bit draws, so the generator does half the work and the kept mask is
``uint16``. An element is kept when its draw is >= ``round(rate * 65536)``, so the realised rate is within 1e-5
of ``rate`` (0.1 -> 0.100006) and kept values are scaled by the realised keep probability, which keeps the
expectation exact. Draws come from ``jax.random.bits`` on the layer's ``make_rng`` key, so they are the same on
1 or N devices and across resumption, like flax's.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_LEVELS = 1 << 16


def keep_mask(rng, shape: tuple[int, ...], rate: float):
    """``(bool mask of shape, realised keep probability)``: True with probability ``1 - round(rate * 2**16) / 2**16``.

    Two 16-bit draws per 32-bit word where the last axis is even; otherwise the upper half of one word each.
    """
    threshold = min(max(int(round(rate * _LEVELS)), 0), _LEVELS)
    keep_prob = 1.0 - threshold / _LEVELS
    shape = tuple(int(s) for s in shape)
    if shape and shape[-1] % 2 == 0:
        words = jax.random.bits(rng, shape[:-1] + (shape[-1] // 2,), jnp.uint32)
        draws = lax.bitcast_convert_type(words, jnp.uint16).reshape(shape)
    else:
        draws = (jax.random.bits(rng, shape, jnp.uint32) >> 16).astype(jnp.uint16)
    return draws >= jnp.uint16(threshold) if threshold < _LEVELS else jnp.zeros(shape, bool), keep_prob


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
