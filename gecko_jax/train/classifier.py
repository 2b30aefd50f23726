"""Classifier trainer task (the noisy-label papers): any linen module mapping a batch dict to logits.

Losses by name (``loss.name``): ``"ce"``; ``"smoothed_ce"`` (mass ``smoothing_p`` on the observed label);
``"gamblers"`` (the model has ``m + 1`` outputs, the last one "abstain"; payoff fixed by ``loss.payoff`` or per
example by ``losses.auto_payoff(method=loss.payoff_method)``; the first ``loss.nll_warmup_epochs`` epochs train
with plain cross-entropy on the ``m`` class logits, as the authors' code does).

Modules: :class:`TextClassifier` (our encoder + a linear head), :class:`MLPClassifier`, and any image module taking
``(images, train=...)`` through :class:`FieldAdapter` (e.g. ``gecko_jax.models.cnn.MnistCNN``).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gecko_jax import losses
from gecko_jax.data.batching import epoch_batches
from gecko_jax.train.config import TrainConfig


class TextClassifier(nn.Module):
    """Encoder embedding -> linear head. ``batch["text"]`` holds the token dict."""

    encoder: nn.Module
    num_outputs: int

    @nn.compact
    def __call__(self, batch: dict, *, deterministic: bool = True):
        t = batch["text"]
        emb = self.encoder(t["input_ids"], t["attention_mask"], t.get("token_type_ids"), deterministic=deterministic)
        return nn.Dense(self.num_outputs, name="head")(emb)


class MLPClassifier(nn.Module):
    """Flatten ``batch[field]`` -> ReLU MLP -> logits."""

    num_outputs: int
    hidden: Sequence[int] = (256,)
    field: str = "image"

    @nn.compact
    def __call__(self, batch: dict, *, deterministic: bool = True):
        x = jnp.asarray(batch[self.field], jnp.float32)
        if jnp.issubdtype(batch[self.field].dtype, jnp.integer):
            x = x / 255.0
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_outputs)(x)


class FieldAdapter(nn.Module):
    """Feed ``batch[field]`` to a module that takes an array and a ``train`` flag (the CNNs of models/cnn.py)."""

    inner: nn.Module
    field: str = "image"

    def __call__(self, batch: dict, *, deterministic: bool = True):
        return self.inner(batch[self.field], train=not deterministic)


def takes_batch_dict(module: nn.Module) -> bool:
    params = list(inspect.signature(type(module).__call__).parameters)
    return len(params) > 1 and params[1] == "batch"


@dataclasses.dataclass
class ClassifierTask:
    """Classifier training: ``module.apply({"params": p}, batch, deterministic=) -> logits``.

    Attributes:
      config: run config. module: the classifier. stream: training batches. num_classes: ``m`` (real classes).
      steps_per_epoch: optimizer steps per pass over the training set (for the NLL warm-up).
      eval_source: optional held-out source (``make_batch(indices)`` and ``len``) for :meth:`evaluate`.
      sample: one training batch (shapes for ``init``).
    """

    config: TrainConfig
    module: nn.Module
    stream: Any
    num_classes: int
    steps_per_epoch: int
    sample: dict
    eval_source: Any = None
    pretrained_encoder: Any = None  # params of a pretrained encoder for TextClassifier's "encoder" subtree

    @property
    def pretrained(self):
        if self.pretrained_encoder is None:
            return None
        params = dict(jax.jit(self.init_params)(jax.random.PRNGKey(self.config.seed)))
        params["encoder"] = self.pretrained_encoder
        return params

    def init_params(self, rng):
        return self.module.init({"params": rng, "dropout": rng}, self.sample)["params"]

    def init_frozen(self, params):
        return {}

    def logits(self, params, batch, rng=None, deterministic=True):
        rngs = {"dropout": rng} if rng is not None else None
        return self.module.apply({"params": params}, batch, deterministic=deterministic, rngs=rngs)

    def per_example(self, logits, labels, step):
        cfg = self.config.loss
        m = self.num_classes
        if cfg.name == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        if cfg.name == "smoothed_ce":
            return losses.smoothed_cross_entropy(logits, labels, p=cfg.smoothing_p)
        payoff = cfg.payoff if cfg.payoff is not None else losses.auto_payoff(logits, cfg.payoff_method)
        gamble = losses.gamblers(logits, labels, payoff=payoff)
        if cfg.nll_warmup_epochs == 0:
            return gamble
        nll = optax.softmax_cross_entropy_with_integer_labels(logits[..., :m], labels)
        warm = step < cfg.nll_warmup_epochs * self.steps_per_epoch
        return jnp.where(warm, nll, gamble)

    def loss_fn(self, params, batch, rng, step, frozen):
        logits = self.logits(params, batch, rng, deterministic=False)
        where = batch["where"]
        per = self.per_example(logits, batch["label"], step)
        count = jnp.maximum(jnp.sum(where), 1)
        loss = jnp.sum(jnp.where(where, per, 0.0)) / count
        acc = jnp.sum(jnp.where(where, jnp.argmax(logits[..., :self.num_classes], -1) == batch["label"], 0)) / count
        return loss, {"train_accuracy": acc}

    def step_loss(self):
        return self.loss_fn

    def negatives_per_query(self) -> None:
        return None

    def evaluate(self, params, mesh=None) -> dict:
        """Accuracy on ``eval_source``: fixed-size batches, the last padded and masked out."""
        if self.eval_source is None:
            return {}
        if not hasattr(self, "_eval_fn"):
            self._eval_fn = jax.jit(lambda p, b: jnp.argmax(self.logits(p, b)[..., :self.num_classes], -1))
        correct = total = 0
        for idx, valid in epoch_batches(len(self.eval_source), self.config.data.batch_size, remainder="pad"):
            batch = self.eval_source.make_batch(idx)
            pred = np.asarray(self._eval_fn(params, {k: v for k, v in batch.items() if k != "label"}))
            correct += int(np.sum((pred == batch["label"]) & valid))
            total += int(valid.sum())
        return {"eval_accuracy": correct / max(total, 1)}

    def export(self, params, directory):
        return None
