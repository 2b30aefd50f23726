"""optimizer.frozen: named parameter subtrees get no update and no optimizer state."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gecko_jax.train.config import ConfigError, OptimizerConfig
from gecko_jax.train.state import make_optimizer


def _params():
    return {"backbone": {"embed_tokens": {"embedding": jnp.ones((5, 3))}, "layer_0": {"kernel": jnp.ones((3, 3))}},
            "projection": {"kernel": jnp.ones((3, 2))}}


def test_frozen_prefix_gets_zero_updates_and_no_state():
    tx, _ = make_optimizer(OptimizerConfig(learning_rate=0.1, frozen=("backbone/embed_tokens",)), total_steps=10)
    params = _params()
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    updates, state = tx.update(grads, state, params)
    assert float(jnp.abs(updates["backbone"]["embed_tokens"]["embedding"]).max()) == 0.0
    assert float(jnp.abs(updates["backbone"]["layer_0"]["kernel"]).min()) > 0
    assert float(jnp.abs(updates["projection"]["kernel"]).min()) > 0
    # Adam moments exist for trained leaves only (the frozen branch holds no arrays of the table's size)
    sizes = [x.size for x in jax.tree.leaves(state) if hasattr(x, "size") and x.ndim == 2]
    assert 15 not in sizes and 9 in sizes


def test_frozen_nothing_is_plain_training_and_bad_prefix_fails():
    plain, _ = make_optimizer(OptimizerConfig(learning_rate=0.1), total_steps=10)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    u, _ = plain.update(grads, plain.init(params), params)
    frozen_other, _ = make_optimizer(OptimizerConfig(learning_rate=0.1, frozen=("projection",)), total_steps=10)
    v, _ = frozen_other.update(grads, frozen_other.init(params), params)
    np.testing.assert_allclose(v["backbone"]["layer_0"]["kernel"], u["backbone"]["layer_0"]["kernel"], rtol=1e-6)
    assert float(jnp.abs(v["projection"]["kernel"]).max()) == 0.0
    tx, _ = make_optimizer(OptimizerConfig(frozen=("backbone/nope",)), total_steps=10)
    with pytest.raises(ValueError, match="matches no parameter"):
        tx.init(params)
    with pytest.raises(ConfigError, match="optimizer.frozen"):
        OptimizerConfig(frozen=("/backbone",))
