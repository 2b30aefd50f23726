r"""Gradient caching (GradCache): contrastive batches far larger than what fits in memory at once.

A contrastive loss couples every row of the batch, so it cannot be split into independent micro-batches. But the
coupling is only through the embeddings, which are small. With towers ``t`` (query, positive, negatives, ...),
embeddings :math:`E_t = f_\theta(X_t)` and loss :math:`L(E)`:

.. math::
    \nabla_\theta L = \sum_t \sum_{c} J_{f_\theta}(X_{t,c})^\top \, \frac{\partial L}{\partial E_{t,c}}

1. embed every tower chunk by chunk with no gradient (no activations kept);
2. take :math:`\partial L / \partial E` on the full set of embeddings (cheap: ``[rows, D]``);
3. for each chunk, recompute the embedding and pull its slice of :math:`\partial L / \partial E` back through the
   encoder (one VJP per chunk, summed in a ``lax.scan`` carry), so only one chunk's activations are alive.

The recompute uses the same PRNG key per chunk as step 1, so dropout masks match and the result equals the
gradient of the chunk-wise forward exactly. Anything wrapping the loss of embeddings (Matryoshka, debiasing terms)
composes unchanged. Reference: Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup" (2021); the JAX ``grad_cached`` decorator of the GradCache repository.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

# embed_fn(params, tokens: dict of [n, L], rng, deterministic: bool) -> [n, D]
EmbedFn = Callable[[Any, dict, jax.Array, bool], jax.Array]
# emb_loss_fn(embeddings: {tower: [n, D]}, batch, step, frozen) -> (loss, metrics)
EmbLossFn = Callable[[dict, dict, jax.Array, Any], tuple[jax.Array, dict]]


def to_chunks(x: jax.Array, num_chunks: int) -> jax.Array:
    """``[N, ...] -> [num_chunks, N / num_chunks, ...]`` with chunk ``j`` = rows ``j, j + num_chunks, ...``.

    Strided (not contiguous) chunks: when ``N`` is sharded over devices, every chunk takes rows from every device,
    so all devices work on every chunk.
    """
    n = x.shape[0]
    return jnp.swapaxes(x.reshape(n // num_chunks, num_chunks, *x.shape[1:]), 0, 1)


def from_chunks(y: jax.Array) -> jax.Array:
    """Inverse of :func:`to_chunks`."""
    return jnp.swapaxes(y, 0, 1).reshape(y.shape[0] * y.shape[1], *y.shape[2:])


def tower_key(rng: jax.Array, index: int) -> jax.Array:
    return jax.random.fold_in(rng, index)


def chunk_keys(key: jax.Array, num_chunks: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_chunks))


def chunked_embed(embed_fn: EmbedFn, params, tokens: dict, key: jax.Array, num_chunks: int, *,
                  deterministic: bool) -> jax.Array:
    """Embed ``tokens`` chunk by chunk (chunk ``j`` uses ``fold_in(key, j)``); rows back in their original order."""
    xs = (jax.tree.map(lambda t: to_chunks(t, num_chunks), tokens), chunk_keys(key, num_chunks))

    def body(_, x):
        tok, k = x
        return None, embed_fn(params, tok, k, deterministic)

    _, out = jax.lax.scan(body, None, xs)
    return from_chunks(out)


def chunked_vjp(embed_fn: EmbedFn, params, tokens: dict, key: jax.Array, cotangent: jax.Array, num_chunks: int, *,
                deterministic: bool):
    """``sum_j J(chunk_j)^T cotangent_j``: the parameter gradient of ``<cotangent, embed(tokens)>``."""
    xs = (jax.tree.map(lambda t: to_chunks(t, num_chunks), tokens), chunk_keys(key, num_chunks),
          to_chunks(cotangent, num_chunks))

    def body(acc, x):
        tok, k, g = x
        _, pullback = jax.vjp(lambda p: embed_fn(p, tok, k, deterministic), params)
        (gp,) = pullback(g)
        return jax.tree.map(jnp.add, acc, gp), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(body, zeros, xs)
    return grads


class GradCachedLoss:
    """A contrastive loss over towers of token batches, computed in chunks (see the module docstring).

    Calling it gives ``(loss, metrics)`` like the plain loss; ``value_and_grad`` gives
    ``((loss, metrics), grads)`` with gradient caching, and :func:`gecko_jax.train.state.make_step` uses it.

    Args:
      embed_fn: ``(params, tokens, rng, deterministic) -> [n, D]``.
      emb_loss_fn: ``(embeddings, batch, step, frozen) -> (loss, metrics)``; ``embeddings`` maps tower name to
        ``[rows, D]``.
      towers: batch keys holding token dicts, in a fixed order (tower ``i`` draws its key as ``fold_in(rng, i)``).
      num_chunks: chunks per tower (every tower's row count must divide by it).
      deterministic: disable dropout.
    """

    def __init__(self, embed_fn: EmbedFn, emb_loss_fn: EmbLossFn, towers: Sequence[str], num_chunks: int, *,
                 deterministic: bool = False):
        self.embed_fn, self.emb_loss_fn = embed_fn, emb_loss_fn
        self.towers, self.num_chunks, self.deterministic = tuple(towers), num_chunks, deterministic

    def _embed_all(self, params, batch, rng):
        return {t: chunked_embed(self.embed_fn, params, batch[t], tower_key(rng, i), self.num_chunks,
                                 deterministic=self.deterministic)
                for i, t in enumerate(self.towers) if t in batch}

    def __call__(self, params, batch, rng, step, frozen):
        return self.emb_loss_fn(self._embed_all(params, batch, rng), batch, step, frozen)

    def value_and_grad(self, params, batch, rng, step, frozen):
        embs = jax.lax.stop_gradient(self._embed_all(params, batch, rng))
        (loss, aux), emb_grads = jax.value_and_grad(
            lambda e: self.emb_loss_fn(e, batch, step, frozen), has_aux=True)(embs)
        grads = jax.tree.map(jnp.zeros_like, params)
        for i, t in enumerate(self.towers):
            if t not in batch:
                continue
            g = chunked_vjp(self.embed_fn, params, batch[t], tower_key(rng, i), emb_grads[t], self.num_chunks,
                            deterministic=self.deterministic)
            grads = jax.tree.map(jnp.add, grads, g)
        return (loss, aux), grads
