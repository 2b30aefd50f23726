"""Shared loop of the noisy-label experiments (label smoothing, gambler's loss): many runs in one compiled program.

Runs that share a model shape and a loss family (``ce``/``smoothed_ce`` with K outputs; ``gamblers`` with K + 1)
are stacked on a leading "run" axis and trained together: every step ``jax.vmap``s the loss, gradient and optimiser
update over the runs, on the same image batch, with each run's own labels (its noise rate) and hyperparameter
(``p`` or payoff ``o``). An epoch is one jitted ``lax.scan`` over its batches, so a whole p-grid column (or the whole
grid) compiles once and pays Python overhead once per epoch. ``ce`` is ``smoothed_ce`` at ``p = 1``.

Per epoch and run it records: mean training loss (the quantity the gambler's early-stopping rule reads), clean test
accuracy and clean test cross-entropy (for K + 1 outputs over the K class logits renormalised), and for gambler's
runs the abstention score ``softmax(f(x))_{m+1}`` of every training row with the ROC-AUC of that score for
corrupted vs clean rows.

Until ``gecko_jax.train``'s classifier trainer lands, this is the experiments' trainer; it uses only
``gecko_jax.losses``, ``gecko_jax.models.cnn``, ``gecko_jax.data.tfds_local`` and optax.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gecko_jax import losses
from gecko_jax.data import tfds_local
from gecko_jax.losses.gamblers import PAYOFF_METHODS
from gecko_jax.models.cnn import CifarSmallCNN, MnistCNN


class LinearHead(nn.Module):
    """A linear classifier over fixed features (the text sets: frozen sentence embeddings -> m or m + 1 logits)."""

    num_outputs: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        return nn.Dense(self.num_outputs)(x.astype(jnp.float32))


LOSSES = ("ce", "smoothed_ce", "gamblers")
# Text sets ("mr", "sst2") are embedded once by the frozen encoder (`text_features`); a linear head is trained.
MODELS = {"mnist": MnistCNN, "cifar10": CifarSmallCNN, "mr": LinearHead, "sst2": LinearHead}
TEXT_ENCODER = "all-MiniLM-L6-v2"
OPTIMIZERS = ("adam", "sgd")
# Payoff used for the NLL warm-up epochs of the gambler's loss (authors' "1000 + m": abstaining never pays).
_NLL_PAYOFF_OFFSET = 1000.0


class ConfigError(ValueError):
    """A config value is wrong; the message names the file, the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of a grid.

    Attributes:
      name: unique label of the run (used in results and plots).
      loss: ``"ce"``, ``"smoothed_ce"`` or ``"gamblers"``.
      noise_rate: label-noise rate n of this run's training labels.
      p: mass on the observed label for ``smoothed_ce`` (``ce`` forces 1.0).
      payoff: gambler's payoff o (1 < o <= K), or ``"auto"`` for the per-example ``payoff_method`` heuristic.
      payoff_method: ``"euc"``, ``"mid"`` or ``"exp"`` (used when ``payoff == "auto"``).
      warmup_epochs: gambler's runs: first epochs trained as NLL (o = 1000 + K); None = the config's
        ``gamblers_warmup_epochs``.
    """

    name: str
    loss: str
    noise_rate: float
    p: float = 1.0
    payoff: float | str = 9.9
    payoff_method: str = "euc"
    warmup_epochs: int | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"run {self.name!r}: loss={self.loss!r}, expected one of {LOSSES}")
        if not 0.0 <= float(self.noise_rate) < 1.0:
            raise ConfigError(f"run {self.name!r}: noise_rate={self.noise_rate}, expected 0 <= n < 1")
        if self.loss == "ce" and self.p != 1.0:
            object.__setattr__(self, "p", 1.0)
        if not 0.0 < float(self.p) <= 1.0:
            raise ConfigError(f"run {self.name!r}: p={self.p}, expected 0 < p <= 1")
        if self.loss == "gamblers":
            if self.payoff != "auto" and not (isinstance(self.payoff, (int, float)) and self.payoff > 1.0):
                raise ConfigError(f"run {self.name!r}: payoff={self.payoff!r}, expected a number > 1 or 'auto'")
            if self.payoff_method not in PAYOFF_METHODS:
                raise ConfigError(f"run {self.name!r}: payoff_method={self.payoff_method!r}, expected euc/mid/exp")

    @property
    def family(self) -> str:
        return "gamblers" if self.loss == "gamblers" else "smoothed"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A set of runs on one dataset with one optimiser setting (parsed from ``configs/*.json``).

    Attributes:
      name: experiment name (output folder name).
      dataset: ``"mnist"`` or ``"cifar10"``.
      noise_type: ``"symmetric"`` or ``"pairflip"``.
      runs: the runs; a config may give ``"grid"`` instead (see :func:`expand_grid`).
      subset: training rows kept (seeded subset; None = all).
      test_subset: test rows kept (None = all).
      epochs: training epochs.
      batch_size: examples per step (the last partial batch of each epoch is dropped; shuffling changes it).
      optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
      lr: learning rate.
      momentum: SGD momentum.
      gamblers_warmup_epochs: first epochs of gambler's runs trained as NLL (o = 1000 + K).
      seed: seeds the label noise, the subset, the shuffling and the initialisation (same init for all runs).
      max_parallel_runs: runs stacked into one compiled program at most (bounds memory; more runs = more chunks).
      quick: field overrides applied by ``--quick``.
    """

    name: str
    dataset: str
    runs: tuple[RunSpec, ...]
    noise_type: str = "symmetric"
    subset: int | None = None
    test_subset: int | None = None
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    gamblers_warmup_epochs: int = 0
    seed: int = 0
    max_parallel_runs: int = 20
    quick: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.dataset not in MODELS:
            raise ConfigError(f"{self.name}: dataset={self.dataset!r}, expected one of {tuple(MODELS)}")
        if self.noise_type not in ("symmetric", "pairflip"):
            raise ConfigError(f"{self.name}: noise_type={self.noise_type!r}, expected 'symmetric' or 'pairflip'")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{self.name}: optimizer={self.optimizer!r}, expected one of {OPTIMIZERS}")
        for field, value in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{self.name}: {field}={value!r}, expected an int >= 1")
        if not self.runs:
            raise ConfigError(f"{self.name}: no runs")
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.name}: run names must be unique, got duplicates in {names}")
        unknown = set(self.quick) - {f.name for f in dataclasses.fields(self)} - {"runs_filter"}
        if unknown:
            raise ConfigError(f"{self.name}: quick overrides unknown fields {sorted(unknown)}")

    @property
    def num_classes(self) -> int:
        return tfds_local.NUM_CLASSES[self.dataset]

    def quick_version(self) -> "ExperimentConfig":
        """The ``--quick`` variant: fields from ``quick`` replaced; ``runs_filter`` keeps runs whose name matches."""
        over = dict(self.quick)
        keep = over.pop("runs_filter", None)
        runs = self.runs if keep is None else tuple(r for r in self.runs if r.name in keep)
        return dataclasses.replace(self, runs=runs, quick={}, **over)


def expand_grid(grid: dict, where: str) -> list[dict]:
    """Expands ``{"loss": .., "p": [..], "noise_rate": [..], ...}`` into runs (list-valued fields are crossed)."""
    keys = [k for k, v in grid.items() if isinstance(v, list)]
    runs = [dict()]
    for k in keys:
        runs = [dict(r, **{k: v}) for r in runs for v in grid[k]]
    out = []
    for r in runs:
        spec = {k: v for k, v in grid.items() if k not in keys} | r
        if "loss" not in spec:
            raise ConfigError(f"{where}: grid needs a 'loss' field")
        spec.setdefault("name", "_".join([spec["loss"]] + [f"{k}{spec[k]}" for k in keys]))
        out.append(spec)
    return out


def load_config(path: str | pathlib.Path) -> ExperimentConfig:
    """Parses and validates a config file; errors name the file and the field."""
    path = pathlib.Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = set(raw) - fields - {"grid", "description"}
    if unknown:
        raise ConfigError(f"{path}: unknown fields {sorted(unknown)}; expected some of {sorted(fields)}")
    run_dicts = list(raw.pop("runs", []))
    for g in ([raw.pop("grid")] if isinstance(raw.get("grid"), dict) else raw.pop("grid", [])):
        run_dicts += expand_grid(g, str(path))
    raw.pop("description", None)
    run_fields = {f.name for f in dataclasses.fields(RunSpec)}
    runs = []
    for i, r in enumerate(run_dicts):
        bad = set(r) - run_fields
        if bad:
            raise ConfigError(f"{path}: runs[{i}] has unknown fields {sorted(bad)}; expected {sorted(run_fields)}")
        try:
            runs.append(RunSpec(**r))
        except ConfigError as e:
            raise ConfigError(f"{path}: runs[{i}]: {e}") from None
    try:
        return ExperimentConfig(runs=tuple(runs), **raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# The compiled programs


def _make_optimizer(cfg: ExperimentConfig) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(cfg.lr)
    return optax.sgd(cfg.lr, momentum=cfg.momentum)


def _make_epoch_fn(model, tx, family: str, num_classes: int):
    """Returns ``epoch(params, opt_state, hparam, nll, images[S,B,...], labels[S,R,B]) -> (params, opt_state,
    mean_loss[R])``; params/opt_state/hparam carry the leading run axis R."""

    def loss_fn(params, images, labels, hparam, nll):
        logits = model.apply({"params": params}, images, train=True)
        if family == "smoothed":
            per_example = losses.smoothed_cross_entropy(logits, labels, p=hparam)
        else:
            # hparam <= 0 marks an auto-payoff run (-1 euc, -2 mid, -3 exp); `nll` is this run's warm-up flag.
            auto = jnp.select([hparam == -2.0, hparam == -3.0],
                              [losses.auto_payoff(logits, method="mid"), losses.auto_payoff(logits, method="exp")],
                              losses.auto_payoff(logits, method="euc"))
            payoff = jnp.where(hparam > 0, hparam, auto)
            payoff = jnp.where(nll, _NLL_PAYOFF_OFFSET + num_classes, payoff)
            per_example = losses.gamblers(logits, labels, payoff=payoff)
        return per_example.mean()

    def run_step(params, opt_state, images, labels, hparam, nll):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels, hparam, nll)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    vstep = jax.vmap(run_step, in_axes=(0, 0, None, 0, 0, 0))

    def epoch(params, opt_state, hparam, nll, images, labels):
        def body(carry, batch):
            p, s = carry
            p, s, loss = vstep(p, s, batch[0], batch[1], hparam, nll)
            return (p, s), loss

        (params, opt_state), batch_losses = jax.lax.scan(body, (params, opt_state), (images, labels))
        return params, opt_state, batch_losses.mean(axis=0)

    return jax.jit(epoch, donate_argnums=(0, 1))


def _make_eval_fn(model, family: str):
    """Returns ``evaluate(params[R], images[C,B,...], labels[C,B], valid[C,B]) -> (correct[R], nll_sum[R],
    probs[R,C,B,K(+1)])`` (``probs``: softmax over all outputs, the abstention score last for gambler's runs)."""

    def one(params, images, labels):
        logits = model.apply({"params": params}, images, train=False)
        class_logits = logits[..., :-1] if family == "gamblers" else logits
        logp = jax.nn.log_softmax(class_logits, axis=-1)
        nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
        correct = jnp.argmax(class_logits, axis=-1) == labels
        return correct, nll, jax.nn.softmax(logits, axis=-1)

    vone = jax.vmap(one, in_axes=(0, None, None))

    def evaluate(params, images, labels, valid):
        def body(carry, chunk):
            correct, nll, abstain = vone(params, chunk[0], chunk[1])
            v = chunk[2]
            return (carry[0] + jnp.sum(correct * v, axis=-1), carry[1] + jnp.sum(nll * v, axis=-1)), abstain

        r = jax.tree_util.tree_leaves(params)[0].shape[0]
        (correct, nll), abstain = jax.lax.scan(body, (jnp.zeros(r), jnp.zeros(r)), (images, labels, valid))
        return correct, nll, jnp.moveaxis(abstain, 0, 1)

    return jax.jit(evaluate)


def _chunks(x: np.ndarray, chunk: int):
    """Pads the first axis to a multiple of ``chunk`` and reshapes to ``[C, chunk, ...]``; returns (x, valid)."""
    n = x.shape[0]
    c = -(-n // chunk)
    pad = c * chunk - n
    valid = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]).reshape(c, chunk)
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    return x.reshape((c, chunk) + x.shape[1:]), valid


def _roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of ``scores`` for ``positive`` rows (rank statistic; ties count 1/2)."""
    from scipy.stats import rankdata

    pos, neg = positive.sum(), (~positive).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


# ----------------------------------------------------------------------------------------------------------------
# Driver


def features_cache_dir() -> pathlib.Path:
    """``$GECKO_JAX_CACHE/features`` (default ``~/.cache/gecko_jax/features``): cached sentence embeddings."""
    from gecko_jax.datasets import cache_root

    return cache_root() / "features"


def text_features(name: str, split: str, *, cache_dir=None, embedder=None, log=print, **load_kwargs) -> np.ndarray:
    """``float32[N, 384]``: the frozen ``all-MiniLM-L6-v2`` embeddings of every sentence of a text split, in the
    split's row order; computed once and cached as ``<cache_dir>/<name>_<split>_<encoder>_<sha>.npy`` where
    ``sha`` hashes the sentences (a changed split gets a new file)."""
    import hashlib

    texts = tfds_local.load_split(name, split, **load_kwargs)["text"]
    sha = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else features_cache_dir()
    path = cache_dir / f"{name}_{split}_{TEXT_ENCODER}_{sha}.npy"
    if path.exists():
        return np.load(path)
    if embedder is None:
        from gecko_jax import Embedder

        embedder = Embedder.from_pretrained(TEXT_ENCODER)
    t0 = time.perf_counter()
    feats = np.asarray(embedder.encode(list(texts), show_progress=False), np.float32)
    log(f"[features] {name}/{split}: {feats.shape} in {time.perf_counter() - t0:.1f}s -> {path}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats


def load_data(cfg: ExperimentConfig, **load_kwargs) -> dict[str, Any]:
    """Training inputs (images, or sentence embeddings for the text sets), one noisy label vector per distinct noise
    rate of the runs, and the clean test split."""
    rates = sorted({float(r.noise_rate) for r in cfg.runs})
    noisy = {n: tfds_local.load_noisy_split(cfg.dataset, "train", noise_type=cfg.noise_type, noise_rate=n,
                                            seed=cfg.seed, subset=cfg.subset, **load_kwargs) for n in rates}
    first = noisy[rates[0]]
    test = tfds_local.load_split(cfg.dataset, "test", **load_kwargs)
    t_idx = tfds_local.select_subset(len(test["label"]), cfg.test_subset, seed=cfg.seed)
    if "image" not in first:                                    # a text set: frozen-encoder features
        first = dict(first, image=text_features(cfg.dataset, "train", **load_kwargs)[first["index"]])
        test = dict(test, image=text_features(cfg.dataset, "test", **load_kwargs))
    return {"train_images": first["image"], "clean_label": first["clean_label"],
            "noisy_label": {n: d["label"] for n, d in noisy.items()},
            "corrupted": {n: d["corrupted"] for n, d in noisy.items()},
            "test_images": test["image"][t_idx], "test_label": test["label"][t_idx]}


def train_group(cfg: ExperimentConfig, runs: list[RunSpec], data: dict[str, Any], *, log=print,
                eval_chunk: int = 1000) -> list[dict[str, Any]]:
    """Trains ``runs`` (one loss family) together; returns one history dict per run."""
    family = runs[0].family
    k = cfg.num_classes
    model = MODELS[cfg.dataset](num_outputs=k + 1 if family == "gamblers" else k)
    tx = _make_optimizer(cfg)
    r = len(runs)
    key = jax.random.key(cfg.seed)
    one = model.init(key, jnp.asarray(data["train_images"][:1]))["params"]
    # Same initialisation for every run: grid differences come from the loss and labels only.
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (r,) + x.shape).copy(), one)
    opt_state = jax.vmap(tx.init)(params)
    if family == "smoothed":
        hparam = np.asarray([run.p for run in runs], np.float32)
    else:
        code = {"euc": -1.0, "mid": -2.0, "exp": -3.0}
        hparam = np.asarray([code[run.payoff_method] if run.payoff == "auto" else float(run.payoff) for run in runs],
                            np.float32)
    warmup = np.asarray([_warmup(cfg, run) for run in runs])
    labels = np.stack([data["noisy_label"][float(run.noise_rate)] for run in runs])      # [R, N]
    corrupted = np.stack([data["corrupted"][float(run.noise_rate)] for run in runs])
    images = data["train_images"]
    n, b = images.shape[0], cfg.batch_size
    steps = n // b
    if steps == 0:
        raise ConfigError(f"{cfg.name}: batch_size={b} exceeds the {n} training rows")
    epoch_fn = _make_epoch_fn(model, tx, family, k)
    eval_fn = _make_eval_fn(model, family)
    test_x, test_valid = _chunks(data["test_images"], eval_chunk)
    test_y, _ = _chunks(data["test_label"], eval_chunk)
    train_x, train_valid = _chunks(images, eval_chunk)
    train_y, _ = _chunks(data["clean_label"], eval_chunk)
    rng = np.random.default_rng(cfg.seed + 1)
    hist = {k_: [] for k_ in ("train_loss", "test_acc", "test_loss", "abstain_auc", "loss_auc", "epoch_s")}
    abstain_by_epoch, loss_by_epoch = [], []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        perm = rng.permutation(n)[: steps * b]
        ex = images[perm].reshape((steps, b) + images.shape[1:])
        ey = labels[:, perm].reshape(r, steps, b).transpose(1, 0, 2)
        nll = epoch < warmup
        params, opt_state, train_loss = epoch_fn(params, opt_state, hparam, nll, ex, ey)
        correct, nll_sum, _ = eval_fn(params, test_x, test_y, test_valid)
        hist["train_loss"].append(np.asarray(train_loss, np.float64))
        hist["test_acc"].append(np.asarray(correct, np.float64) / len(data["test_label"]))
        hist["test_loss"].append(np.asarray(nll_sum, np.float64) / len(data["test_label"]))
        # Training rows: the abstention score, and each row's loss under its observed (noisy) label (the authors'
        # noise_or_not.py histograms both): both should be higher on corrupted rows.
        _, _, probs = eval_fn(params, train_x, train_y, train_valid)
        probs = np.asarray(probs, np.float64).reshape(r, -1, probs.shape[-1])[:, :n]
        row_loss = _observed_label_loss(probs, labels, family, hparam, nll)
        loss_by_epoch.append(row_loss.astype(np.float32))
        hist["loss_auc"].append(np.array([_roc_auc(row_loss[i], corrupted[i]) for i in range(r)]))
        if family == "gamblers":
            abstain = probs[..., -1]
            abstain_by_epoch.append(abstain.astype(np.float32))
            hist["abstain_auc"].append(np.array([_roc_auc(abstain[i], corrupted[i]) for i in range(r)]))
        hist["epoch_s"].append(time.perf_counter() - t0)
        log(f"[{cfg.name}/{family}] epoch {epoch + 1}/{cfg.epochs} {hist['epoch_s'][-1]:.1f}s "
            f"acc {np.round(hist['test_acc'][-1], 3).tolist()}")
    return [_run_result(cfg, run, i, hist, abstain_by_epoch, loss_by_epoch, corrupted[i])
            for i, run in enumerate(runs)]


def _observed_label_loss(probs, labels, family, hparam, nll) -> np.ndarray:
    """``[R, N]`` per-row loss under the observed label: ``-log p_y`` (ce / smoothed runs, the "small-loss" score) or
    the gambler's ``-log(p_y + p_{m+1} / o)`` with the run's payoff (auto: the ``euc`` value from the prediction;
    during NLL warm-up: ``o = 1000 + K``)."""
    p_y = np.take_along_axis(probs, labels[..., None].astype(np.int64), axis=-1)[..., 0]
    if family != "gamblers":
        return -np.log(p_y + 1e-10)
    k = probs.shape[-1] - 1
    abst = probs[..., -1]
    euc = (1.0 - abst) ** 2 / np.maximum((probs[..., :-1] ** 2).sum(-1), 1e-12)
    o = np.where(np.asarray(hparam)[:, None] > 0, np.asarray(hparam, np.float64)[:, None], euc)
    o = np.where(np.asarray(nll)[:, None], _NLL_PAYOFF_OFFSET + k, o)
    return -np.log(p_y + abst / o + 1e-10)


def _warmup(cfg: ExperimentConfig, run: RunSpec) -> int:
    if run.family != "gamblers":
        return 0
    return cfg.gamblers_warmup_epochs if run.warmup_epochs is None else run.warmup_epochs


def _run_result(cfg, run: RunSpec, i: int, hist, abstain_by_epoch, loss_by_epoch, corrupted) -> dict[str, Any]:
    out = dataclasses.asdict(run)
    for key in ("train_loss", "test_acc", "test_loss", "abstain_auc", "loss_auc"):
        out[key] = [float(h[i]) for h in hist[key]]
    out["epoch_s"] = [float(s) for s in hist["epoch_s"]]
    acc = out["test_acc"]
    out["final_test_acc"] = acc[-1]
    out["best_test_acc"] = max(acc)
    out["best_epoch"] = int(np.argmax(acc)) + 1
    out["corrupted_fraction"] = float(np.mean(corrupted))
    # L* is derived for symmetric noise (PAPERS.md 4.2); under pair-flip noise it is applied as is (a heuristic:
    # there the noisy label is predictable from the clean class, so the plateau argument does not hold).
    if run.loss == "gamblers" and run.payoff != "auto" and (1 - run.noise_rate) * float(run.payoff) > 1:
        threshold = losses.gamblers_stop_threshold(run.noise_rate, float(run.payoff))
        below = [e for e, l in enumerate(out["train_loss"]) if e >= _warmup(cfg, run) and l < threshold]
        out["stop_threshold"] = float(threshold)
        out["stop_epoch"] = below[0] + 1 if below else None
        out["stop_test_acc"] = acc[below[0]] if below else None
    stop = out.get("stop_epoch") or len(loss_by_epoch)
    for tag, e in (("final", len(loss_by_epoch)), ("stop", stop)):
        if abstain_by_epoch:
            s = abstain_by_epoch[e - 1][i]
            out[f"abstain_{tag}"] = {"clean": np.histogram(s[~corrupted], bins=20, range=(0, 1))[0].tolist(),
                                     "corrupted": np.histogram(s[corrupted], bins=20, range=(0, 1))[0].tolist(),
                                     "auc": _roc_auc(s, corrupted)}
        if loss_by_epoch:
            out[f"loss_auc_{tag}"] = _roc_auc(loss_by_epoch[e - 1][i], corrupted)
    return out


def run_experiment(cfg: ExperimentConfig, *, log=print, **load_kwargs) -> dict[str, Any]:
    """Loads the data once, trains each loss family's runs as one vmapped program, returns all histories."""
    t0 = time.perf_counter()
    data = load_data(cfg, **load_kwargs)
    log(f"[{cfg.name}] data: train {data['train_images'].shape}, test {data['test_images'].shape} "
        f"({time.perf_counter() - t0:.1f}s)")
    results = []
    for family in ("smoothed", "gamblers"):
        group = [r for r in cfg.runs if r.family == family]
        for start in range(0, len(group), cfg.max_parallel_runs):
            results += train_group(cfg, group[start:start + cfg.max_parallel_runs], data, log=log)
    by_name = {r["name"]: r for r in results}
    return {"config": dataclasses.asdict(cfg), "runs": [by_name[r.name] for r in cfg.runs],
            "wall_s": time.perf_counter() - t0, "jax_backend": jax.default_backend()}


def save_figure(fig, path: str | pathlib.Path, *, dpi: int = 100) -> None:
    """Saves a matplotlib figure as a PNG re-encoded with a 256-colour palette (line plots and heat maps look the
    same; files stay well under the 200 KB the results folders allow)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    img.save(path, format="PNG", optimize=True)


def save_results(results: dict[str, Any], path: str | pathlib.Path) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float))


def cli(argv, *, here: pathlib.Path, analyse, check_quick) -> int:
    """Entry point shared by the experiment folders' ``run.py``.

    ``python experiments/<exp>/run.py [--quick] [--config configs/x.json ...]`` runs every config (or the given
    ones), writes ``results[_quick]/<name>.json``, then ``analyse(results, out_dir) -> summary dict`` (plots, tables)
    and, with ``--quick``, ``check_quick(summary)`` which raises if a measured direction does not hold.
    """
    import argparse

    ap = argparse.ArgumentParser(description=f"Run the {here.name} experiment")
    ap.add_argument("--quick", action="store_true", help="tiny budget (CI): the configs' `quick` overrides")
    ap.add_argument("--config", action="append", help="config file(s); default: all of configs/*.json")
    ap.add_argument("--out", default=None, help="output folder (default: results/ or results_quick/)")
    ap.add_argument("--analyse-only", action="store_true", help="redo summaries/plots from saved results JSON")
    ap.add_argument("--seed", type=int, default=None,
                    help="override the configs' seed (noise, shuffling, init); outputs are named <config>_seed<N>")
    ap.add_argument("--runs", default=None, help="comma-separated run names to keep (default: all of the config's)")
    args = ap.parse_args(argv)
    paths = [pathlib.Path(c) for c in args.config] if args.config else sorted((here / "configs").glob("*.json"))
    out_dir = pathlib.Path(args.out) if args.out else here / ("results_quick" if args.quick else "results")
    status = 0
    for path in paths:
        cfg = load_config(path)
        if args.quick:
            cfg = cfg.quick_version()
        if args.runs:
            keep = set(args.runs.split(","))
            cfg = dataclasses.replace(cfg, runs=tuple(r for r in cfg.runs if r.name in keep))
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed, name=f"{cfg.name}_seed{args.seed}")
        if args.analyse_only:
            results = json.loads((out_dir / f"{cfg.name}.json").read_text())
        else:
            results = run_experiment(cfg)
            save_results(results, out_dir / f"{cfg.name}.json")
        summary = analyse(results, out_dir)
        (out_dir / f"{cfg.name}_summary.json").write_text(json.dumps(summary, indent=1, default=float))
        print(json.dumps(summary, indent=1, default=float))
        if args.quick:
            check_quick(summary)
            print(f"[{cfg.name}] quick checks passed")
    return status
