"""Typed config of a grid of classifier runs trained together (the noisy-label experiments).

A grid is one dataset, one model, one optimiser and one budget; its runs differ only in their training labels (the
noise rate) and their loss (:class:`~gecko_jax.train.config.LossConfig`: name, ``smoothing_p``, payoff schedule,
warm-up, transition matrix). Runs of one loss family are stacked on a leading axis and trained by one compiled
program (:func:`gecko_jax.train.grid.train_grid`).

JSON layout (``experiments/*/configs/*.json``)::

    {"name": "mnist_symmetric", "epochs": 15, "seed": 0,
     "data": {"dataset": "mnist", "subset": 4000, "test_subset": 2000, "batch_size": 128, "val_fraction": 0.1},
     "model": {"classifier": "cnn:MnistCNN"},
     "optimizer": {"name": "adam", "learning_rate": 0.001},
     "loss_defaults": {"nll_warmup_epochs": 0},
     "runs": [{"name": "nll_n0.5", "noise_rate": 0.5, "loss": {"name": "ce"}}, ...],
     "grid": {"name": "ls_p{smoothing_p}_n{noise_rate}", "loss": {"name": "smoothed_ce", "smoothing_p": [0.2, 1.0]},
              "noise_rate": [0.2, 0.6]},
     "quick": {"epochs": 2, "data": {"subset": 1000}, "runs": ["nll_n0.5"]}}

``grid`` crosses its list-valued fields (the first one outermost); ``loss_defaults`` fill every run's loss fields it
leaves unset; ``quick`` is merged into the file for ``--quick`` (its ``runs`` keeps only the runs named). Errors name
the file, the line and the field.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import re
from typing import Any

from gecko_jax.train.classifier import LOSS_FAMILIES, loss_family
from gecko_jax.errors import ConfigError
from gecko_jax.train.config import LossConfig, ModelConfig, OptimizerConfig

DATASETS = ("mnist", "cifar10", "mr", "sst2")
NOISE_TYPES = ("symmetric", "pairflip", "none")
# The papers' optimiser (Adam 1e-3, constant, no clipping); a config's "optimizer" section is merged over it.
PAPER_OPTIMIZER = {"name": "adam", "learning_rate": 1e-3, "schedule": "constant", "clip_norm": None,
                   "weight_decay": 0.0}


def _check(cond: bool, field: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"field {field!r}: expected {expected}, got {got!r}")


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One run of a grid: its name, the noise rate of its training labels and its loss."""

    name: str
    noise_rate: float = 0.0
    loss: LossConfig = dataclasses.field(default_factory=lambda: LossConfig(name="ce"))

    def __post_init__(self):
        _check(isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name)
        _check(isinstance(self.noise_rate, (int, float)) and 0.0 <= self.noise_rate < 1.0, "noise_rate",
               "a rate in [0, 1)", self.noise_rate)
        if isinstance(self.loss, dict):
            object.__setattr__(self, "loss", LossConfig(**_known(LossConfig, self.loss, "loss")))
        _check(self.loss.name in LOSS_FAMILIES, "loss.name", f"one of {sorted(LOSS_FAMILIES)}", self.loss.name)

    @property
    def family(self) -> str:
        return loss_family(self.loss.name)


@dataclasses.dataclass(frozen=True)
class GridData:
    """Data of a grid (``gecko_jax.data.tfds_local`` splits with synthetic label noise).

    Attributes:
      dataset: ``"mnist"``, ``"cifar10"``, ``"mr"`` or ``"sst2"``.
      noise_type: ``"symmetric"``, ``"pairflip"`` or ``"none"`` (every run's labels; the rate is per run).
      subset: training rows kept (seeded with seed 0, the same rows for every seed; None: all).
      test_subset: clean test rows kept (seeded with the grid's seed; None: all).
      val_fraction: fraction of the training rows held out as a *noisy* validation set (their labels carry the
        run's noise), for early stopping without clean labels; the same rows for every seed.
      batch_size: rows per step; the last partial batch of each epoch is dropped (the shuffle changes it).
      features: text sets only: train a head on the frozen sentence embeddings of this encoder (computed once and
        cached) instead of fine-tuning the encoder (``model.classifier = "text_head"``).
      max_length: text sets fine-tuned end to end: tokens per sentence (every batch is padded to it).
    """

    dataset: str
    noise_type: str = "symmetric"
    subset: int | None = None
    test_subset: int | None = None
    val_fraction: float = 0.0
    batch_size: int = 128
    features: str | None = None
    max_length: int = 64

    def __post_init__(self):
        _check(self.dataset in DATASETS, "data.dataset", f"one of {DATASETS}", self.dataset)
        _check(self.noise_type in NOISE_TYPES, "data.noise_type", f"one of {NOISE_TYPES}", self.noise_type)
        for name in ("subset", "test_subset"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, int) and v > 0), f"data.{name}", "null or an int > 0", v)
        _check(isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 0.5, "data.val_fraction",
               "a fraction in [0, 0.5)", self.val_fraction)
        _check(isinstance(self.batch_size, int) and self.batch_size > 0, "data.batch_size", "an int > 0",
               self.batch_size)
        _check(isinstance(self.max_length, int) and self.max_length > 0, "data.max_length", "an int > 0",
               self.max_length)

    @property
    def is_text(self) -> bool:
        return self.dataset in ("mr", "sst2")


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """A grid of classifier runs with one budget.

    Attributes:
      name: output name. data: :class:`GridData`. runs: the runs (unique names).
      model: the classifier (``"cnn:<name>"``, ``"linear"`` over frozen features, ``"text_head"`` = encoder
        ``model.pretrained`` fine-tuned end to end + a linear head).
      optimizer: optimiser (merged over :data:`PAPER_OPTIMIZER` when loaded from JSON).
      epochs: passes over the training rows. seed: label noise, test subset, shuffling and initialisation (every
        run of a grid starts from the same initial parameters).
      max_parallel_runs: runs per compiled program at most (bounds memory; more runs = more programs).
      eval_batch: rows per evaluation chunk.
      score_train_rows: every epoch, score every training row (abstention score, loss under its observed label)
        for the corrupted-vs-clean ROC-AUCs and histograms.
      description: free text. quick: overrides merged in for ``--quick`` (see the module docstring).
    """

    name: str
    data: GridData
    runs: tuple
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(classifier="cnn:MnistCNN"))
    optimizer: OptimizerConfig = dataclasses.field(default_factory=lambda: OptimizerConfig(**PAPER_OPTIMIZER))
    epochs: int = 20
    seed: int = 0
    max_parallel_runs: int = 20
    eval_batch: int = 1000
    score_train_rows: bool = True
    description: str = ""
    quick: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check(isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name)
        for name in ("epochs", "max_parallel_runs", "eval_batch"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an int >= 1", v)
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", "an int >= 0", self.seed)
        _check(len(self.runs) > 0, "runs", "at least one run (runs or grid)", self.runs)
        names = [r.name for r in self.runs]
        dup = sorted({n for n in names if names.count(n) > 1})
        _check(not dup, "runs", "unique run names", dup)
        _check(self.model.classifier != "mlp", "model.classifier", "'cnn:<name>', 'linear' or 'text_head'",
               self.model.classifier)
        _check((self.model.classifier == "text_head") == (self.data.is_text and self.data.features is None),
               "model.classifier", "'text_head' exactly for text sets without data.features", self.model.classifier)

    def with_seed(self, seed: int) -> "GridConfig":
        """The same grid at another seed, named ``<name>_seed<seed>``."""
        return dataclasses.replace(self, seed=seed, name=f"{self.name}_seed{seed}")

    def keep_runs(self, names) -> "GridConfig":
        """Only the runs named (in the config's order); an unknown name is an error."""
        unknown = sorted(set(names) - {r.name for r in self.runs})
        _check(not unknown, "runs", f"names of runs of {self.name!r}", unknown)
        return dataclasses.replace(self, runs=tuple(r for r in self.runs if r.name in set(names)))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("quick")
        return out


def _known(cls, values: Any, where: str) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"field {where!r}: expected an object, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"field {where!r}: unknown field(s) {unknown}; known: {sorted(names)}")
    return values


def _merge(base: dict, over: dict) -> dict:
    """Deep merge of JSON objects (``over`` wins; nested objects merge, everything else is replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def expand_grid(grid: dict) -> list[dict]:
    """``{"name": template, "noise_rate": [..], "loss": {"smoothing_p": [..], ...}}`` -> run dicts.

    List-valued fields (top level or inside ``loss``) are crossed, the first listed outermost; the run name is
    ``name.format(**values)`` over the crossed fields' leaf names, or ``<loss name>_<field><value>_...``.
    """
    grid = dict(grid)
    template = grid.pop("name", None)
    loss = dict(grid.pop("loss", {}))
    axes = [(("loss", k), v) for k, v in loss.items() if isinstance(v, list)]
    axes += [((k,), v) for k, v in grid.items() if isinstance(v, list)]
    runs = []
    for values in itertools.product(*(v for _, v in axes)):
        run = {k: v for k, v in grid.items() if not isinstance(v, list)}
        run["loss"] = {k: v for k, v in loss.items() if not isinstance(v, list)}
        leaf = {}
        for (path, _), value in zip(axes, values):
            (run["loss"] if path[0] == "loss" else run)[path[-1]] = value
            leaf[path[-1]] = value
        default = "_".join([str(run["loss"].get("name", "run"))] + [f"{k}{v}" for k, v in leaf.items()])
        run["name"] = template.format(**leaf) if template else default
        runs.append(run)
    return runs


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the ``nth`` occurrence of ``needle`` in ``text`` (1 when absent)."""
    starts = [m.start() for m in re.finditer(re.escape(needle), text)]
    return text.count("\n", 0, starts[nth]) + 1 if len(starts) > nth else 1


def _build_runs(raw: dict, text: str, path: pathlib.Path) -> tuple[GridRun, ...]:
    defaults = raw.pop("loss_defaults", {})
    run_dicts = list(raw.pop("runs", []))
    grids = raw.pop("grid", [])
    for g in [grids] if isinstance(grids, dict) else grids:
        run_dicts += expand_grid(g)
    runs = []
    for i, r in enumerate(run_dicts):
        where = f"runs[{i}] ({r.get('name')!r})" if isinstance(r, dict) else f"runs[{i}]"
        try:
            r = dict(_known(GridRun, r, where))
            r["loss"] = _merge(defaults, r.get("loss", {}))
            runs.append(GridRun(**r))
        except (ConfigError, TypeError) as e:
            line = _line_of(text, f'"{r.get("name")}"') if isinstance(r, dict) else 1
            raise ConfigError(f"{path}:{line}: {where}: {e}") from None
    return tuple(runs)


def grid_from_dict(raw: dict, *, path: str | pathlib.Path = "<dict>", text: str = "") -> GridConfig:
    """A validated :class:`GridConfig` from a JSON-like dict (``quick`` not applied)."""
    raw = json.loads(json.dumps(raw))
    path = pathlib.Path(path)
    try:
        _known(GridConfig, {k: v for k, v in raw.items() if k not in ("grid", "loss_defaults")}, "<top level>")
        runs = _build_runs(raw, text, path)
        sections = {"data": GridData(**_known(GridData, raw.pop("data", {}), "data")),
                    "model": ModelConfig(**_known(ModelConfig, _merge({"classifier": "cnn:MnistCNN"},
                                                                      raw.pop("model", {})), "model")),
                    "optimizer": OptimizerConfig(**_known(OptimizerConfig, _merge(PAPER_OPTIMIZER,
                                                                                  raw.pop("optimizer", {})),
                                                          "optimizer"))}
        return GridConfig(runs=runs, **sections, **raw)
    except ConfigError as e:
        if str(e).startswith(str(path)):
            raise
        field = re.search(r"field '([\w.\[\]<> ]+)'", str(e))
        key = field.group(1).split(".")[-1] if field else ""
        line = _line_of(text, '"' + key + '"') if key else 1
        raise ConfigError(f"{path}:{line}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{path}:1: {e}") from None


def load_grid_config(path: str | pathlib.Path, *, quick: bool = False) -> GridConfig:
    """Reads, (for ``quick``) merges the ``quick`` block, and validates a grid config file.

    Raises:
      ConfigError: one line naming the file, the line and the field.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text()
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    keep = None
    if quick:
        over = dict(raw.get("quick", {}))
        keep = over.pop("runs", None)
        raw = _merge(raw, over)
    cfg = grid_from_dict(raw, path=path, text=text)
    if keep is not None:
        try:
            cfg = cfg.keep_runs(keep)
        except ConfigError as e:
            line = _line_of(text, '"quick"')
            raise ConfigError(f"{path}:{line}: quick.{e}") from None
    return cfg
