"""Gradient caching equals the full-batch computation (loss and gradients), with and without Matryoshka."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402
from gecko_jax.train.gradcache import GradCachedLoss, chunk_keys, from_chunks, to_chunks, tower_key  # noqa: E402


def _task(tmp_path, **loss):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 32)
    raw = th.contrastive_raw(data, loss=loss, data={"batch_size": 16, "hard_negatives": 2})
    config = train.from_dict(raw)
    task = train.build_task(config)
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, task.stream.batch(0))
    return task, params, batch


def _close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol)


def test_chunk_layout_roundtrip():
    x = jnp.arange(24).reshape(12, 2)
    c = to_chunks(x, 3)
    assert c.shape == (3, 4, 2) and c[1, :, 0].tolist() == [2, 8, 14, 20]  # strided rows: every device in every chunk
    np.testing.assert_array_equal(from_chunks(c), x)


@pytest.mark.parametrize("matryoshka", [(), (32, 16)])
def test_grad_cache_equals_full_batch(tmp_path, matryoshka):
    task, params, batch = _task(tmp_path, matryoshka_dims=list(matryoshka))
    assert "negative" in batch and batch["negative"]["input_ids"].shape[0] == 32
    rng, step = jax.random.PRNGKey(1), jnp.zeros((), jnp.int32)
    full = jax.jit(jax.value_and_grad(lambda p: task.emb_loss(
        {t: task.embed(p, batch[t], None, True) for t in ("query", "positive", "negative")}, batch, step, {}),
        has_aux=True))
    (loss_ref, aux_ref), g_ref = full(params)
    cached = GradCachedLoss(task.embed, task.emb_loss, ("query", "positive", "negative"), num_chunks=4,
                            deterministic=True)
    (loss, aux), g = jax.jit(cached.value_and_grad)(params, batch, rng, step, {})
    assert np.isfinite(float(loss_ref)) and float(loss_ref) > 0
    np.testing.assert_allclose(float(loss), float(loss_ref), atol=1e-5, rtol=1e-5)
    _close(g, g_ref)
    # the gradient is not trivially zero, and Matryoshka really changes the loss
    assert float(optax_norm(g_ref)) > 1e-3
    if matryoshka:
        from gecko_jax.losses import gecko_contrastive

        e = {t: task.embed(params, batch[t], None, True) for t in ("query", "positive", "negative")}
        plain = gecko_contrastive(e["query"], e["positive"], e["negative"].reshape(16, 2, -1), temperature=0.05,
                                  ids=batch["ids"], negative_ids=batch["negative_ids"]).mean()
        assert abs(float(plain) - float(loss_ref)) > 1e-3


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))


def test_grad_cache_recompute_uses_the_same_dropout_keys(tmp_path):
    """With dropout on, the cached gradient equals the gradient of the same chunk-wise forward pass."""
    task, params, batch = _task(tmp_path)
    rng, step, n = jax.random.PRNGKey(2), jnp.zeros((), jnp.int32), 2
    towers = ("query", "positive", "negative")

    def chunkwise_forward(p):
        embs = {}
        for i, t in enumerate(towers):
            keys = chunk_keys(tower_key(rng, i), n)
            chunks = jax.tree.map(lambda x: to_chunks(x, n), batch[t])
            out = [task.embed(p, jax.tree.map(lambda x: x[j], chunks), keys[j], False) for j in range(n)]
            embs[t] = from_chunks(jnp.stack(out))
        return task.emb_loss(embs, batch, step, {})

    (loss_ref, _), g_ref = jax.jit(jax.value_and_grad(chunkwise_forward, has_aux=True))(params)
    cached = GradCachedLoss(task.embed, task.emb_loss, towers, n, deterministic=False)
    (loss, _), g = jax.jit(cached.value_and_grad)(params, batch, rng, step, {})
    np.testing.assert_allclose(float(loss), float(loss_ref), atol=1e-5, rtol=1e-5)
    _close(g, g_ref)
    # dropout is really on: the deterministic loss differs
    det = GradCachedLoss(task.embed, task.emb_loss, towers, n, deterministic=True)
    assert abs(float(det(params, batch, rng, step, {})[0]) - float(loss)) > 1e-4
