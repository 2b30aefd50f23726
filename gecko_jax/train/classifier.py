"""Classifier trainer (the noisy-label papers): the losses, the modules and the single-run task.

Losses by name (``loss.name``), one definition (:func:`per_example_loss`) shared by the single-run task here and
the vmapped grid of runs (:mod:`gecko_jax.train.grid`):

- ``"ce"``: cross-entropy (= ``smoothed_ce`` at ``p = 1``);
- ``"smoothed_ce"``: mass ``smoothing_p`` on the observed label; ``"optimal"`` is p*(r) at the assumed noise rate,
  ``"agnostic"`` is (K + 2) / (3K);
- ``"forward_ce"``: forward correction through a transition matrix (symmetric / pair-flip at the assumed rate, or
  explicit);
- ``"gamblers"``: ``m + 1`` outputs, the last one "abstain"; payoff fixed (``loss.payoff``) or per example by one
  of the three ``losses.auto_payoff`` schedules (``payoff_method`` ``euc`` / ``mid`` / ``exp``); during the first
  ``loss.nll_warmup_epochs`` epochs the payoff is ``1000 + m`` (abstaining never pays: NLL), as the authors' code.

Modules: :class:`TextClassifier` (our encoder + a linear head), :class:`MLPClassifier`, and any image module taking
``(images, train=...)`` through :class:`FieldAdapter` (e.g. ``gecko_jax.models.cnn.MnistCNN``). The grid trainer
calls modules as ``apply(params, inputs, train=...)``: the CNNs, :class:`LinearHead` and :class:`EncoderHead`.
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
from gecko_jax.errors import ConfigError
from gecko_jax.train.config import LossConfig, TrainConfig

# Loss name -> family. Runs of one family share a compiled program in the grid (one output width, one formula).
LOSS_FAMILIES = {"ce": "smoothed", "smoothed_ce": "smoothed", "forward_ce": "forward", "gamblers": "gamblers"}
# Payoff used during the gambler's NLL warm-up: 1000 + m, the authors' "abstaining never pays".
NLL_PAYOFF_OFFSET = 1000.0
# The automatic payoff schedules travel as negative codes in the same per-run array as fixed payoffs (o > 1).
AUTO_PAYOFF_CODES = {"euc": -1.0, "mid": -2.0, "exp": -3.0}


def loss_family(name: str) -> str:
    """``"smoothed"``, ``"forward"`` or ``"gamblers"`` for a classifier loss name."""
    if name not in LOSS_FAMILIES:
        raise ConfigError(f"config field 'loss.name': expected one of {sorted(LOSS_FAMILIES)}, got {name!r}")
    return LOSS_FAMILIES[name]


def num_outputs(loss_name: str, num_classes: int) -> int:
    """Logits of the model: ``m + 1`` for the gambler's loss (the last is "abstain"), else ``m``."""
    return num_classes + 1 if loss_family(loss_name) == "gamblers" else num_classes


def loss_hparam(loss: LossConfig, num_classes: int, noise_rate: float, noise_type: str) -> np.ndarray:
    """The per-run number (or matrix) :func:`per_example_loss` needs, resolved from the config.

    ``smoothed`` family: the mass p (``ce``: 1; ``"optimal"``: p*(r) at ``loss.assumed_noise_rate`` or else the
    data's ``noise_rate``; ``"agnostic"``: (K + 2) / (3K)). ``forward``: the ``[K, K]`` transition matrix.
    ``gamblers``: the fixed payoff, or the negative code of an automatic schedule (:data:`AUTO_PAYOFF_CODES`).
    """
    rate = noise_rate if loss.assumed_noise_rate is None else loss.assumed_noise_rate
    family = loss_family(loss.name)
    if family == "gamblers":
        code = AUTO_PAYOFF_CODES[loss.payoff_method] if loss.payoff is None else float(loss.payoff)
        return np.float32(code)
    if family == "forward":
        return transition_matrix(loss.transition or noise_type, num_classes, rate)
    if loss.name == "ce":
        return np.float32(1.0)
    if loss.smoothing_p == "optimal":
        return np.float32(losses.optimal_smoothing(rate, num_classes))
    if loss.smoothing_p == "agnostic":
        return np.float32(losses.agnostic_smoothing(num_classes))
    return np.float32(loss.smoothing_p)


def transition_matrix(spec: str | list, num_classes: int, rate: float) -> np.ndarray:
    """``float32[K, K]``: the ``"symmetric"`` / ``"pairflip"`` channel at ``rate``, or an explicit matrix."""
    from gecko_jax.data import noise

    if spec == "symmetric":
        return np.asarray(noise.symmetric_transition(num_classes, rate), np.float32)
    if spec == "pairflip":
        return np.asarray(noise.pairflip_transition(num_classes, rate), np.float32)
    t = np.asarray(spec, np.float32)
    if t.shape != (num_classes, num_classes) or np.any(t < 0) or np.any(np.abs(t.sum(-1) - 1) > 1e-4):
        raise ConfigError(f"config field 'loss.transition': expected a row-stochastic [{num_classes}, "
                          f"{num_classes}] matrix, 'symmetric' or 'pairflip', got shape {t.shape}")
    return t


def per_example_loss(family: str, logits, labels, hparam, nll, num_classes: int):
    """Per-example training loss of one run: the single definition behind both classifier trainers.

    Args:
      family: :func:`loss_family` of the loss name.
      logits: ``[B, m]`` (``[B, m + 1]`` for ``gamblers``). labels: ``int[B]`` observed labels.
      hparam: from :func:`loss_hparam` (a traced scalar / matrix inside the vmapped grid).
      nll: bool scalar, gambler's warm-up (payoff ``1000 + m``); ignored by the other families.
      num_classes: ``m``.

    Returns:
      ``[B]`` losses.
    """
    if family == "smoothed":
        return losses.smoothed_cross_entropy(logits, labels, p=hparam)
    if family == "forward":
        return losses.forward_corrected_cross_entropy(logits, labels, transition=hparam)
    auto = jnp.select([hparam == -2.0, hparam == -3.0],
                      [losses.auto_payoff(logits, method="mid"), losses.auto_payoff(logits, method="exp")],
                      losses.auto_payoff(logits, method="euc"))
    payoff = jnp.where(hparam > 0, hparam, auto)
    payoff = jnp.where(nll, NLL_PAYOFF_OFFSET + num_classes, payoff)
    return losses.gamblers(logits, labels, payoff=payoff)


def observed_label_loss(probs: np.ndarray, labels: np.ndarray, family: str, hparam, nll) -> np.ndarray:
    """``[R, N]`` each training row's loss under its observed label, from ``probs`` (softmax over all outputs).

    ``-log p_y`` for the ``smoothed`` family (the "small-loss" score), ``-log (p T)_y`` for ``forward``, and the
    gambler's ``-log(p_y + p_{m+1} / o)`` with the run's payoff (automatic schedules: the ``euc`` value; during the
    NLL warm-up ``o = 1000 + m``). The authors' ``noise_or_not.py`` histogram: higher on corrupted rows.
    """
    labels = np.asarray(labels, np.int64)[..., None]
    if family == "forward":
        channel = np.einsum("rnk,rkj->rnj", probs, np.asarray(hparam, np.float64))
        return -np.log(np.take_along_axis(channel, labels, axis=-1)[..., 0] + 1e-10)
    p_y = np.take_along_axis(probs, labels, axis=-1)[..., 0]
    if family != "gamblers":
        return -np.log(p_y + 1e-10)
    k = probs.shape[-1] - 1
    abst = probs[..., -1]
    # as losses.auto_payoff's 'euc' (its 1e-10 guard): a row that abstains fully gets a finite payoff, not 0
    euc = ((1.0 - abst) ** 2 + 1e-10) / np.maximum((probs[..., :-1] ** 2).sum(-1), 1e-30)
    o = np.where(np.asarray(hparam)[:, None] > 0, np.asarray(hparam, np.float64)[:, None], euc)
    o = np.where(np.asarray(nll)[:, None], NLL_PAYOFF_OFFSET + k, o)
    return -np.log(p_y + abst / o + 1e-10)


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


class LinearHead(nn.Module):
    """A linear classifier over fixed features (frozen sentence embeddings -> logits); grid calling convention."""

    num_outputs: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        return nn.Dense(self.num_outputs)(x.astype(jnp.float32))


class EncoderHead(nn.Module):
    """Our encoder fine-tuned end to end + a linear head; ``tokens`` holds ``input_ids`` / ``attention_mask``.

    Grid calling convention ``(inputs, train=...)``; the grid runs it with dropout off (no per-step RNG), so
    ``train`` only matters for encoders built with dropout > 0.
    """

    encoder: nn.Module
    num_outputs: int

    @nn.compact
    def __call__(self, tokens: dict, train: bool = False):
        emb = self.encoder(tokens["input_ids"], tokens["attention_mask"], tokens.get("token_type_ids"),
                           deterministic=not train)
        return nn.Dense(self.num_outputs, name="head")(emb)


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
        cfg, d = self.config.loss, self.config.data
        if cfg.name == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        hparam = loss_hparam(cfg, self.num_classes, d.noise_rate, "symmetric" if d.noise_type == "none" else
                             d.noise_type)
        warm = step < cfg.nll_warmup_epochs * self.steps_per_epoch
        return per_example_loss(loss_family(cfg.name), logits, labels, hparam, warm, self.num_classes)

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
