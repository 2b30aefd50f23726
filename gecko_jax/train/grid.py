"""The classifier trainer's grid of runs: many runs trained by one compiled program, with early-stopping callbacks.

Runs that share a loss family (``smoothed``: ``ce`` / ``smoothed_ce`` with m outputs; ``forward``; ``gamblers``
with m + 1) are stacked on a leading "run" axis: every step ``jax.vmap``s the loss, gradient and optimiser update
over the runs, on the same batch, with each run's own labels (its noise rate) and hyperparameter (p, transition
matrix or payoff). An epoch is one jitted ``lax.scan`` over its batches, so a whole grid column compiles once and pays
Python overhead once per epoch. Every run of a grid starts from the same initial parameters; the loss is
:func:`gecko_jax.train.classifier.per_example_loss`, the optimiser :func:`gecko_jax.train.state.make_optimizer`.

Per epoch and run it records the mean training loss (what the gambler's L* rule reads), clean test accuracy and
cross-entropy (for m + 1 outputs over the m class logits renormalised), noisy-validation accuracy and cross-entropy
(with ``data.val_fraction > 0``), and (``score_train_rows``) the accuracy against the noisy training labels (how far
the runs have memorised them) and every training row's loss under its observed label and abstention score, with
the ROC-AUC of each for corrupted vs clean rows. Early-stopping rules
(:mod:`gecko_jax.train.early_stopping`) run after every epoch.

With ``workdir`` the state of each group is saved after every epoch and a rerun resumes it exactly.

Example::

    from gecko_jax.train import grid, grid_config, early_stopping
    cfg = grid_config.load_grid_config("experiments/gamblers/configs/mnist_symmetric.json", quick=True)
    result = grid.train_grid(cfg, rules=[early_stopping.LStarStop(halt=False)])
    result.runs[0]["test_acc"], result.runs[0]["stops"]
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import pickle
import platform
import time
from typing import Any, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gecko_jax import fileio
from gecko_jax.train.classifier import (EncoderHead, LinearHead, loss_hparam, num_outputs, observed_label_loss,
                                        per_example_loss)
from gecko_jax.errors import ConfigError
from gecko_jax.train.early_stopping import RunView, StopRule
from gecko_jax.train.grid_config import GridConfig, GridRun
from gecko_jax.train.grid_data import GridArrays, load_grid_data, take
from gecko_jax.train.state import make_optimizer

HISTORY_KEYS = ("train_loss", "test_acc", "test_loss", "val_acc", "val_loss", "train_fit", "abstain_auc", "loss_auc")


@dataclasses.dataclass
class GridResult:
    """What :func:`train_grid` returns: one JSON-ready dict per run (config order) and, with ``keep_params``, the
    parameters per run: ``params[name]["final"]`` and ``params[name][rule name]`` (the rule's selected epoch)."""

    config: dict
    runs: list
    wall_s: float
    machine: dict
    params: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"config": self.config, "runs": self.runs, "wall_s": self.wall_s, "machine": self.machine,
                "jax_backend": self.machine["jax_backend"]}


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of ``scores`` for ``positive`` rows (rank statistic; ties count 1/2; nan without both classes)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    pos, neg = positive.sum(), (~positive).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def machine_info() -> dict:
    """CPU model, core count, load average and JAX backend/devices: stated with every figure."""
    model, isa = platform.processor() or platform.machine(), "unknown ISA"
    try:
        info = pathlib.Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        isa = "AVX-512" if " avx512f" in info else "AVX2 only" if " avx2" in info else "no AVX2"
    except (OSError, StopIteration):
        pass
    return {"cpu": f"{model} ({isa})", "cores": os.cpu_count(), "load_avg": [round(x, 1) for x in os.getloadavg()],
            "jax_backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()][:1]}


# ----------------------------------------------------------------------------------------------------------------
# The compiled programs


def make_epoch_fn(module, tx, family: str, num_classes: int):
    """``epoch(params, opt_state, hparam, nll, inputs[S,B,...], labels[S,R,B]) -> (params, opt_state,
    mean_loss[R])``; params / opt_state / hparam / nll carry the leading run axis R."""

    def loss_fn(params, inputs, labels, hparam, nll):
        logits = module.apply({"params": params}, inputs, train=True)
        return per_example_loss(family, logits, labels, hparam, nll, num_classes).mean()

    def run_step(params, opt_state, inputs, labels, hparam, nll):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels, hparam, nll)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    vstep = jax.vmap(run_step, in_axes=(0, 0, None, 0, 0, 0))

    def epoch(params, opt_state, hparam, nll, inputs, labels):
        def body(carry, batch):
            p, s = carry
            p, s, loss = vstep(p, s, batch[0], batch[1], hparam, nll)
            return (p, s), loss

        (params, opt_state), batch_losses = jax.lax.scan(body, (params, opt_state), (inputs, labels))
        return params, opt_state, batch_losses.mean(axis=0)

    return jax.jit(epoch, donate_argnums=(0, 1))


def make_eval_fn(module, family: str, per_run_labels: bool = False):
    """``evaluate(params[R], inputs[C,B,...], labels[C,B] (or [C,R,B]), valid[C,B]) -> (correct[R], nll_sum[R],
    probs[R,C,B,K(+1)])``; ``probs`` is the softmax over all outputs (the abstention score last for gambler's)."""

    def one(params, inputs, labels):
        logits = module.apply({"params": params}, inputs, train=False)
        class_logits = logits[..., :-1] if family == "gamblers" else logits
        logp = jax.nn.log_softmax(class_logits, axis=-1)
        nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
        correct = jnp.argmax(class_logits, axis=-1) == labels
        return correct, nll, jax.nn.softmax(logits, axis=-1)

    vone = jax.vmap(one, in_axes=(0, None, 0 if per_run_labels else None))

    def evaluate(params, inputs, labels, valid):
        def body(carry, chunk):
            correct, nll, probs = vone(params, chunk[0], chunk[1])
            v = chunk[2]
            return (carry[0] + jnp.sum(correct * v, axis=-1), carry[1] + jnp.sum(nll * v, axis=-1)), probs

        r = jax.tree_util.tree_leaves(params)[0].shape[0]
        (correct, nll), probs = jax.lax.scan(body, (jnp.zeros(r), jnp.zeros(r)), (inputs, labels, valid))
        return correct, nll, jnp.moveaxis(probs, 0, 1)

    return jax.jit(evaluate)


def chunked(tree: Any, chunk: int, axis: int = 0) -> tuple[Any, np.ndarray]:
    """Pads ``axis`` of every array to a multiple of ``chunk`` and splits it into ``[C, chunk]`` (moved to the
    front); returns ``(chunks, valid[C, chunk])``."""
    n = jax.tree_util.tree_leaves(tree)[0].shape[axis]
    c = -(-n // chunk)
    pad = c * chunk - n
    valid = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]).reshape(c, chunk)

    def split(x):
        x = np.moveaxis(x, axis, 0)
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        return np.moveaxis(x.reshape((c, chunk) + x.shape[1:]), 1, axis + 1) if axis else \
            x.reshape((c, chunk) + x.shape[1:])

    return jax.tree_util.tree_map(split, tree), valid


def build_module(cfg: GridConfig, outputs: int):
    """``(module, pretrained params or None)`` for ``cfg.model.classifier`` with ``outputs`` logits."""
    kind = cfg.model.classifier
    if kind == "linear":
        return LinearHead(outputs), None
    if kind == "text_head":
        from gecko_jax.train.encoders import encoder_from_model_config

        # Dropout off: the vmapped scan carries no per-step RNG.
        _, params, _, encoder = encoder_from_model_config(dataclasses.replace(cfg.model, dropout=0.0),
                                                          cfg.data.max_length)
        return EncoderHead(encoder, outputs), params
    from gecko_jax.models import cnn

    name = kind.split(":", 1)[1]
    if name not in cnn.__all__ or not isinstance(getattr(cnn, name), type):
        raise ConfigError(f"field 'model.classifier': no CNN {name!r} in gecko_jax.models.cnn")
    return getattr(cnn, name)(num_outputs=outputs), None


# ----------------------------------------------------------------------------------------------------------------
# One compiled group


@dataclasses.dataclass
class _Group:
    """Training state of one group of runs (one loss family, at most ``max_parallel_runs``)."""

    runs: list
    family: str
    hparam: np.ndarray
    warmup: np.ndarray
    labels: np.ndarray  # [R, N] observed training labels
    corrupted: np.ndarray  # [R, N]
    val_labels: np.ndarray | None  # [R, Nval] noisy validation labels
    params: Any
    opt_state: Any
    epoch: int = 0
    hist: dict = dataclasses.field(default_factory=lambda: {k: [] for k in HISTORY_KEYS + ("epoch_s",)})
    abstain_by_epoch: list = dataclasses.field(default_factory=list)
    loss_by_epoch: list = dataclasses.field(default_factory=list)
    stops: dict = dataclasses.field(default_factory=dict)  # rule -> run index -> {"selected", "stop_epoch"}
    snapshots: dict = dataclasses.field(default_factory=dict)  # (rule, run index) -> host params
    rng_state: dict | None = None


def _init_group(cfg: GridConfig, runs: list[GridRun], data: GridArrays, module, pretrained, tx) -> _Group:
    r, k = len(runs), data.num_classes
    one = module.init(jax.random.key(cfg.seed), take(data.train_inputs, np.arange(1)))["params"]
    if pretrained is not None:
        one = dict(one, encoder=pretrained)
    # Same initialisation for every run: grid differences come from the loss and labels only.
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (r,) + x.shape).copy(), one)
    hparam = np.stack([loss_hparam(run.loss, k, run.noise_rate, cfg.data.noise_type if cfg.data.noise_type != "none"
                                   else "symmetric") for run in runs])
    val = None if data.val_noisy is None else np.stack([data.val_noisy[float(run.noise_rate)] for run in runs])
    return _Group(runs=runs, family=runs[0].family, hparam=hparam,
                  warmup=np.asarray([run.loss.nll_warmup_epochs if run.family == "gamblers" else 0 for run in runs]),
                  labels=np.stack([data.noisy_label[float(run.noise_rate)] for run in runs]),
                  corrupted=np.stack([data.corrupted[float(run.noise_rate)] for run in runs]),
                  val_labels=val, params=params, opt_state=jax.vmap(tx.init)(params))


def _train_epoch(cfg: GridConfig, g: _Group, data: GridArrays, epoch_fn, rng: np.random.Generator) -> None:
    n, b = data.num_train, cfg.data.batch_size
    steps = n // b
    perm = rng.permutation(n)[: steps * b]
    ex = jax.tree_util.tree_map(lambda x: x[perm].reshape((steps, b) + x.shape[1:]), data.train_inputs)
    ey = g.labels[:, perm].reshape(len(g.runs), steps, b).transpose(1, 0, 2)
    nll = g.epoch < g.warmup
    g.params, g.opt_state, train_loss = epoch_fn(g.params, g.opt_state, g.hparam, nll, ex, ey)
    g.hist["train_loss"].append(np.asarray(train_loss, np.float64))


def _evaluate_epoch(cfg: GridConfig, g: _Group, data: GridArrays, evals: dict) -> None:
    """Test (and noisy-validation) accuracy / CE; with ``score_train_rows``, per-row scores and their AUCs."""
    chunk = cfg.eval_batch
    test_x, valid = chunked(data.test_inputs, chunk)
    test_y, _ = chunked(data.test_label, chunk)
    correct, nll_sum, _ = evals["test"](g.params, test_x, test_y, valid)
    g.hist["test_acc"].append(np.asarray(correct, np.float64) / len(data.test_label))
    g.hist["test_loss"].append(np.asarray(nll_sum, np.float64) / len(data.test_label))
    if g.val_labels is not None:
        val_x, valid = chunked(data.val_inputs, chunk)
        val_y, _ = chunked(g.val_labels, chunk, axis=1)
        correct, nll_sum, _ = evals["val"](g.params, val_x, val_y, valid)
        g.hist["val_acc"].append(np.asarray(correct, np.float64) / g.val_labels.shape[1])
        g.hist["val_loss"].append(np.asarray(nll_sum, np.float64) / g.val_labels.shape[1])
    if not cfg.score_train_rows:
        return
    train_x, valid = chunked(data.train_inputs, chunk)
    train_y, _ = chunked(data.clean_label, chunk)
    _, _, probs = evals["test"](g.params, train_x, train_y, valid)
    n, r = data.num_train, len(g.runs)
    probs = np.asarray(probs, np.float64).reshape(r, -1, probs.shape[-1])[:, :n]
    # Each training row's loss under its observed (noisy) label and, for gambler's runs, its abstention score (the
    # authors' noise_or_not.py histograms): both should be higher on corrupted rows.
    classes = probs[..., :data.num_classes]
    # How far the runs have fitted (memorised) their noisy training labels: accuracy against the observed labels.
    g.hist["train_fit"].append(np.mean(np.argmax(classes, axis=-1) == g.labels, axis=-1))
    row_loss = observed_label_loss(probs, g.labels, g.family, g.hparam, g.epoch - 1 < g.warmup)
    g.loss_by_epoch.append(row_loss.astype(np.float32))
    g.hist["loss_auc"].append(np.array([roc_auc(row_loss[i], g.corrupted[i]) for i in range(r)]))
    if g.family == "gamblers":
        abstain = probs[..., -1]
        g.abstain_by_epoch.append(abstain.astype(np.float32))
        g.hist["abstain_auc"].append(np.array([roc_auc(abstain[i], g.corrupted[i]) for i in range(r)]))


def _run_history(g: _Group, i: int) -> dict:
    return {k: [float(h[i]) for h in g.hist[k]] for k in HISTORY_KEYS}


def _apply_rules(g: _Group, rules: Sequence[StopRule], keep_params: bool) -> bool:
    """Runs every rule on every run not yet stopped by it; returns True when the group may halt."""
    done = np.zeros(len(g.runs), bool)
    for rule in rules:
        records = g.stops.setdefault(rule.name, {})
        for i, run in enumerate(g.runs):
            if not rule.applies(run):
                continue
            rec = records.setdefault(i, {"selected": None, "stop_epoch": None})
            if rec["stop_epoch"] is None:
                selected, stop = rule.update(RunView(run, g.epoch, _run_history(g, i)))
                rec["selected"] = selected
                rec["stop_epoch"] = g.epoch if stop else None
                if keep_params and selected == g.epoch:
                    g.snapshots[(rule.name, i)] = jax.device_get(jax.tree_util.tree_map(lambda x: x[i], g.params))
            done[i] |= rule.halt and rec["stop_epoch"] is not None
    return bool(rules) and bool(done.all())


# ----------------------------------------------------------------------------------------------------------------
# Resume: the group state after each epoch, in one file written atomically


def _group_path(workdir, cfg: GridConfig, runs: list[GridRun], rules) -> pathlib.Path:
    config = {k: v for k, v in cfg.to_dict().items() if k != "description"}  # free text: editing it keeps the resume
    key = json.dumps({"config": config, "runs": [r.name for r in runs],
                      "rules": [repr(rule) for rule in rules]}, sort_keys=True, default=str)
    return pathlib.Path(workdir) / f"{cfg.name}_{runs[0].family}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"


def _save_group(path: pathlib.Path, g: _Group) -> None:
    host = {f.name: getattr(g, f.name) for f in dataclasses.fields(g) if f.name not in ("params", "opt_state")}
    blob = {"host": host, "device": flax.serialization.to_bytes({"params": g.params, "opt_state": g.opt_state})}
    fileio.write_bytes(path, pickle.dumps(blob))


def _load_group(path: pathlib.Path, g: _Group) -> _Group:
    with open(path, "rb") as f:
        blob = pickle.load(f)
    device = flax.serialization.from_bytes({"params": g.params, "opt_state": g.opt_state}, blob["device"])
    restored = dataclasses.replace(g, **blob["host"])
    restored.params = jax.tree_util.tree_map(jnp.asarray, device["params"])
    restored.opt_state = jax.tree_util.tree_map(jnp.asarray, device["opt_state"])
    return restored


def _train_group(cfg: GridConfig, runs: list[GridRun], data: GridArrays, rules, *, workdir, keep_params,
                 log) -> tuple[list[dict], dict]:
    """Trains ``runs`` (one loss family) together; returns one result dict per run and the kept params."""
    module, pretrained = build_module(cfg, num_outputs(runs[0].loss.name, data.num_classes))
    steps = data.num_train // cfg.data.batch_size
    if steps == 0:
        raise ConfigError(f"{cfg.name}: data.batch_size={cfg.data.batch_size} exceeds the {data.num_train} "
                          "training rows")
    tx, _ = make_optimizer(cfg.optimizer, cfg.epochs * steps)
    g = _init_group(cfg, runs, data, module, pretrained, tx)
    path = _group_path(workdir, cfg, runs, rules) if workdir is not None else None
    rng = np.random.default_rng(cfg.seed + 1)
    if path is not None and path.exists():
        g = _load_group(path, g)
        rng.bit_generator.state = g.rng_state
        log(f"[{cfg.name}/{g.family}] resumed after epoch {g.epoch} from {path}")
    epoch_fn = make_epoch_fn(module, tx, g.family, data.num_classes)
    evals = {"test": make_eval_fn(module, g.family), "val": make_eval_fn(module, g.family, per_run_labels=True)}
    halted = False
    while g.epoch < cfg.epochs and not halted:
        t0 = time.perf_counter()
        _train_epoch(cfg, g, data, epoch_fn, rng)
        g.epoch += 1
        _evaluate_epoch(cfg, g, data, evals)
        halted = _apply_rules(g, rules, keep_params)
        g.hist["epoch_s"].append(time.perf_counter() - t0)
        g.rng_state = rng.bit_generator.state
        if path is not None:
            _save_group(path, g)
        log(f"[{cfg.name}/{g.family}] epoch {g.epoch}/{cfg.epochs} {g.hist['epoch_s'][-1]:.1f}s "
            f"acc {np.round(g.hist['test_acc'][-1], 3).tolist()}")
    kept = {}
    if keep_params:
        for i, run in enumerate(runs):
            kept[run.name] = {rule: p for (rule, j), p in g.snapshots.items() if j == i}
            kept[run.name]["final"] = jax.device_get(jax.tree_util.tree_map(lambda x: x[i], g.params))
    return [run_result(g, i, rules) for i in range(len(runs))], kept


# ----------------------------------------------------------------------------------------------------------------
# Results


def _histograms(scores: np.ndarray, corrupted: np.ndarray) -> dict:
    return {"clean": np.histogram(scores[~corrupted], bins=20, range=(0, 1))[0].tolist(),
            "corrupted": np.histogram(scores[corrupted], bins=20, range=(0, 1))[0].tolist(),
            "auc": roc_auc(scores, corrupted)}


def _run_fields(run: GridRun, hparam) -> dict:
    """The run's spec in the flat form the experiments' tables read (p resolved; payoff or "auto")."""
    loss = run.loss
    out = {"name": run.name, "loss": loss.name, "noise_rate": run.noise_rate,
           "loss_config": dataclasses.asdict(loss), "warmup_epochs": loss.nll_warmup_epochs if run.family ==
           "gamblers" else 0}
    if run.family == "smoothed":
        out["p"] = float(hparam)
    elif run.family == "gamblers":
        out.update(payoff=float(loss.payoff) if loss.payoff is not None else "auto", payoff_method=loss.payoff_method)
    return out


def _at_epoch(g: _Group, i: int, epoch: int, tag: str) -> dict:
    out = {}
    if g.abstain_by_epoch:
        out[f"abstain_{tag}"] = _histograms(g.abstain_by_epoch[epoch - 1][i], g.corrupted[i])
    if g.loss_by_epoch:
        out[f"loss_auc_{tag}"] = roc_auc(g.loss_by_epoch[epoch - 1][i], g.corrupted[i])
    return out


def run_result(g: _Group, i: int, rules: Sequence[StopRule]) -> dict:
    """One run's JSON-ready record: spec, per-epoch history, final / best epoch, and per rule its stop."""
    run = g.runs[i]
    out = _run_fields(run, g.hparam[i]) | _run_history(g, i)
    out["epoch_s"] = [float(s) for s in g.hist["epoch_s"]]
    acc = out["test_acc"]
    out.update(final_test_acc=acc[-1], best_test_acc=max(acc), best_epoch=int(np.argmax(acc)) + 1,
               epochs_run=g.epoch, corrupted_fraction=float(np.mean(g.corrupted[i])))
    out["stops"] = {}
    for rule in rules:
        rec = g.stops.get(rule.name, {}).get(i)
        if rec is None:
            continue
        sel = rec["selected"]
        stop = {"stop_epoch": rec["stop_epoch"], "selected_epoch": sel, **rule.describe(run),
                "test_acc": acc[sel - 1] if sel else None, "test_loss": out["test_loss"][sel - 1] if sel else None}
        out["stops"][rule.name] = stop | (_at_epoch(g, i, sel, "selected") if sel else {})
        if rule.name == "lstar":  # the flat keys of the earlier results files, which the READMEs' tables read
            out.update(stop_threshold=stop["threshold"], stop_epoch=rec["stop_epoch"], stop_test_acc=stop["test_acc"])
    out |= _at_epoch(g, i, g.epoch, "final")
    out |= _at_epoch(g, i, out.get("stop_epoch") or g.epoch, "stop")
    return out


def train_grid(cfg: GridConfig, *, data: GridArrays | None = None, rules: Sequence[StopRule] = (),
               workdir: str | pathlib.Path | None = None, keep_params: bool = False, log=print) -> GridResult:
    """Trains every run of ``cfg``: each loss family's runs as one vmapped program (``max_parallel_runs`` at most).

    Args:
      cfg: the grid. data: its arrays (:func:`~gecko_jax.train.grid_data.load_grid_data` when None).
      rules: early-stopping callbacks (:mod:`gecko_jax.train.early_stopping`), run after every epoch.
      workdir: folder for per-epoch group states; a rerun with the same config resumes where it stopped.
      keep_params: return each run's final parameters and those at each rule's selected epoch.
      log: progress printer.

    Returns:
      A :class:`GridResult` (runs in config order).
    """
    t0 = time.perf_counter()
    machine = machine_info()
    data = data if data is not None else load_grid_data(cfg, log=log)
    needs_val = [r.name for r in rules if getattr(r, "needs_validation", False)]
    if data.val_noisy is None and needs_val:
        raise ConfigError(f"{cfg.name}: rule(s) {needs_val} need a noisy validation split (data.val_fraction > 0)")
    results, params = [], {}
    for family in ("smoothed", "forward", "gamblers"):
        group = [r for r in cfg.runs if r.family == family]
        for start in range(0, len(group), cfg.max_parallel_runs):
            out, kept = _train_group(cfg, group[start:start + cfg.max_parallel_runs], data, rules,
                                     workdir=workdir, keep_params=keep_params, log=log)
            results += out
            params |= kept
    by_name = {r["name"]: r for r in results}
    return GridResult(config=cfg.to_dict(), runs=[by_name[r.name] for r in cfg.runs],
                      wall_s=time.perf_counter() - t0, machine=machine, params=params)
