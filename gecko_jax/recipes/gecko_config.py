"""The Gecko recipe as a dataclass: :class:`RecipeConfig` (the mixture's :class:`SourceSpec` list, the two training
stages' train configs, the WiSE-FT alphas, the dev split), built in Python or read from a JSON file
(:meth:`RecipeConfig.load` / :func:`load_recipe`, errors naming the file and the field).

Variants are method calls, never edits of the stage configs: :meth:`RecipeConfig.with_training` (another step budget,
batch, learning rate, WiSE-FT alphas), :meth:`RecipeConfig.tiny` (the pulse-test budget),
:meth:`RecipeConfig.with_fret` (the run's FRet file), all through :meth:`RecipeConfig.with_budget` and one
:class:`StageBudget` per stage; typed values are read back with :meth:`RecipeConfig.stage_config`. The stages that run
the recipe are in :mod:`gecko_jax.recipes.gecko`."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pathlib
import re
from typing import Sequence

from gecko_jax.data import mixture as mx
from gecko_jax.errors import ConfigError
from gecko_jax.eval.dev import DevConfig
from gecko_jax.recipes.runlog import digest

REPO = pathlib.Path(__file__).resolve().parents[2]
# package data (pyproject: gecko_jax/configs/*.json), so an installed wheel has it too
DEFAULT_RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "gecko_recipe_minilm.json"
_PLACEHOLDER = "<mixture>"

CLASSIFICATION_SETS = ("banking77", "sst2", "mr", "ag_news")


@dataclasses.dataclass
class SourceSpec:
    """One source of the mixture (JSON: an object in ``sources`` / ``prefinetune_sources``).

    Attributes:
      name: unique name; file ``data/<name>.jsonl`` and the ``loss/<name>`` metric.
      kind: ``fret`` | ``nli`` | ``classification`` | ``sts`` | ``retrieval`` | ``title_body``.
      dataset: nli: a SentEval SNLI folder name under the data folder (``snli_senteval``); classification:
        ``banking77`` | ``sst2`` | ``mr`` | ``ag_news`` (training rows only; Banking77 minus its dev rows); sts: an
        STS-B file name (``sts-train.csv``); retrieval / title_body: a BEIR folder name (``scifact``) or path.
      path: fret: the FRet JSONL (``data_gen`` output); overrides ``dataset`` for the other kinds.
      weight: sampling weight of this source's batches (normalised over the stage's sources).
      task: task string (default: the kind's, ``gecko_jax.data.mixture``; retrieval: required).
      limit: keep at most this many records (seeded sample for classification; None: all).
      min_score: sts: lowest gold score (0-5) of a positive pair.
      append_id: classification: the paper's shared id string on x, x+, x-.
      task_balance: fret: ``none`` or ``uniform`` (one sub-source per task, the weight split equally: Gecko's
        uniform sampling over FRet tasks; tasks with fewer records than a batch are pooled).
      mine_negatives: retrieval: hard negatives mined with the base model (else in-batch negatives only).
      split: retrieval: qrels split (``train``; its dev queries are held out when the dataset is scifact).
    """

    name: str
    kind: str
    dataset: str | None = None
    path: str | None = None
    weight: float = 1.0
    task: str | None = None
    limit: int | None = None
    min_score: float = 4.0
    append_id: bool = True
    task_balance: str = "none"
    mine_negatives: bool = True
    split: str = "train"

    def __post_init__(self):
        where = f"source {self.name!r}"
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ConfigError(f"{where}: field 'name' must be letters, digits, '_', '.', '-', got {self.name!r}")
        if self.kind not in mx.SOURCE_KINDS:
            raise ConfigError(f"{where}: field 'kind' must be one of {list(mx.SOURCE_KINDS)}, got {self.kind!r}")
        if not self.weight > 0:
            raise ConfigError(f"{where}: field 'weight' must be positive, got {self.weight!r}")
        if self.task_balance not in ("none", "uniform"):
            raise ConfigError(f"{where}: field 'task_balance' must be 'none' or 'uniform', got {self.task_balance!r}")
        if self.kind == "fret" and not self.path:
            raise ConfigError(f"{where}: kind 'fret' needs field 'path' (a FRet JSONL file)")
        if self.kind == "classification" and self.dataset not in CLASSIFICATION_SETS and not self.path:
            raise ConfigError(f"{where}: field 'dataset' must be one of {list(CLASSIFICATION_SETS)}, "
                              f"got {self.dataset!r}")
        if self.kind == "retrieval" and not self.task:
            raise ConfigError(f"{where}: kind 'retrieval' needs field 'task' (e.g. 'fact checking')")
        if self.kind in ("nli", "sts", "retrieval", "title_body") and not (self.dataset or self.path):
            raise ConfigError(f"{where}: kind {self.kind!r} needs field 'dataset' or 'path'")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}: field 'limit' must be >= 1 or null, got {self.limit!r}")


@dataclasses.dataclass(frozen=True)
class StageBudget:
    """A training stage's budget, applied by :meth:`RecipeConfig.with_budget`; None leaves the stage's value.

    Attributes:
      steps: training steps. batch_size: global batch. learning_rate: peak rate. warmup_steps / every_steps: warm-up
      length / checkpoint cadence, set. warmup_cap / every_cap: upper bounds on them (applied after the set values).
    """

    steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    warmup_steps: int | None = None
    every_steps: int | None = None
    warmup_cap: int | None = None
    every_cap: int | None = None

    def apply(self, raw: dict) -> dict:
        """A copy of the stage's train-config overlay ``raw`` with this budget."""
        raw = copy.deepcopy(raw)
        for value, section, key in ((self.steps, None, "steps"), (self.batch_size, "data", "batch_size"),
                                    (self.learning_rate, "optimizer", "learning_rate"),
                                    (self.warmup_steps, "optimizer", "warmup_steps"),
                                    (self.every_steps, "checkpoint", "every_steps")):
            if value is not None:
                (raw if section is None else raw.setdefault(section, {}))[key] = value
        if self.warmup_cap is not None:
            opt = raw.setdefault("optimizer", {})
            opt["warmup_steps"] = min(int(opt.get("warmup_steps", 0)), self.warmup_cap)
        if self.every_cap is not None:
            ckpt = raw.setdefault("checkpoint", {})
            ckpt["every_steps"] = min(int(ckpt.get("every_steps", raw.get("steps", self.every_cap))), self.every_cap)
        return raw


@dataclasses.dataclass
class RecipeConfig:
    """The whole recipe (JSON: ``gecko_jax/configs/gecko_recipe_minilm.json``).

    Attributes:
      description: free text.
      model: the pretrained encoder (folder or known name).
      seed: model init / dropout / data order of both stages and the sources' random choices.
      max_chars: training cut of long passages (retrieval / title-body / FRet documents), at a word boundary.
      sources: the stage-2 mixture. prefinetune_sources: stage 1's sources (empty: no stage 1).
      prefinetune / finetune: ``gecko_jax.train.TrainConfig`` fields of each stage; ``model.pretrained``,
        ``seed``, ``data.seed``, ``data.datasets`` and ``checkpoint.init_checkpoint`` are set by the recipe.
      interpolate: WiSE-FT alphas (1.0 = the fine-tuned weights); several: picked on dev data.
      dev: which training rows are held out as dev data (``gecko_jax.eval.dev.DevConfig``).
      data_dir: a data folder in the mirror layout (None: each dataset from ``$GECKO_JAX_DATA``, the cache or a
        download; :mod:`gecko_jax.datasets`).
    """

    sources: list
    finetune: dict
    description: str = ""
    model: str = "all-MiniLM-L6-v2"
    seed: int = 0
    max_chars: int = 400
    prefinetune_sources: list = dataclasses.field(default_factory=list)
    prefinetune: dict | None = None
    interpolate: tuple = (1.0,)
    dev: DevConfig = dataclasses.field(default_factory=DevConfig)
    data_dir: str | None = None

    def __post_init__(self):
        self.sources = [s if isinstance(s, SourceSpec) else SourceSpec(**_fields(SourceSpec, s, "sources[]"))
                        for s in self.sources]
        self.prefinetune_sources = [s if isinstance(s, SourceSpec)
                                    else SourceSpec(**_fields(SourceSpec, s, "prefinetune_sources[]"))
                                    for s in self.prefinetune_sources]
        if isinstance(self.dev, dict):
            self.dev = DevConfig(**_fields(DevConfig, self.dev, "dev"))
        self.interpolate = tuple(float(a) for a in self.interpolate)
        if not self.sources:
            raise ConfigError("recipe field 'sources': at least one source")
        names = [s.name for s in self.sources + self.prefinetune_sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"recipe field 'sources': duplicate source names {dup}")
        if not self.interpolate or not all(0.0 <= a <= 1.5 for a in self.interpolate):
            raise ConfigError(f"recipe field 'interpolate': alphas in [0, 1.5], got {self.interpolate}")
        if self.prefinetune_sources and self.prefinetune is None:
            raise ConfigError("recipe field 'prefinetune': a train config is needed with prefinetune_sources")
        if self.max_chars < 1:
            raise ConfigError(f"recipe field 'max_chars': expected >= 1, got {self.max_chars}")
        for stage in ("prefinetune", "finetune"):  # every stage config parses and validates up front
            if getattr(self, stage) is not None and (stage == "finetune" or self.prefinetune_sources):
                try:
                    self.stage_config(stage, [{"path": _PLACEHOLDER}])
                except (ValueError, TypeError) as e:
                    raise ConfigError(f"recipe field {stage!r}: {e}") from None

    def stage_config(self, stage: str, datasets: list | None = None, init_checkpoint: str | None = None):
        """The validated ``TrainConfig`` of ``stage`` (``"prefinetune"`` | ``"finetune"``) with these datasets (None:
        a placeholder, to read the stage's steps, batch, optimizer, ...)."""
        from gecko_jax import train

        raw = copy.deepcopy(getattr(self, stage))
        raw["seed"] = self.seed
        raw.setdefault("model", {})["pretrained"] = self.model
        data = raw.setdefault("data", {})
        data["seed"] = self.seed
        data["datasets"] = [{"path": _PLACEHOLDER}] if datasets is None else datasets
        raw.setdefault("checkpoint", {})["init_checkpoint"] = init_checkpoint
        return train.from_dict(raw)

    def with_training(self, *, steps: int | None = None, prefinetune_steps: int | None = None,
                      batch_size: int | None = None, learning_rate: float | None = None,
                      interpolate: Sequence[float] | None = None, checkpoints: int = 2) -> "RecipeConfig":
        """This recipe on another training budget; None keeps the recipe's value.

        ``steps`` / ``prefinetune_steps``: stage 2 / stage 1 steps; a stage given steps gets its warm-up capped at a
        tenth of them and a checkpoint at least every ``steps // checkpoints`` steps. ``batch_size`` /
        ``learning_rate``: stage 2's global batch and peak rate. ``interpolate``: the WiSE-FT alphas tried on dev data.
        """
        def budget(n: int | None, **values) -> StageBudget:
            if n is None:
                return StageBudget(**values)
            return StageBudget(steps=n, warmup_cap=max(1, n // 10), every_cap=max(1, n // checkpoints), **values)

        cfg = self.with_budget(finetune=budget(steps, batch_size=batch_size, learning_rate=learning_rate),
                               prefinetune=budget(prefinetune_steps))
        return dataclasses.replace(cfg, interpolate=tuple(interpolate)) if interpolate else cfg

    def tiny(self, *, steps: int = 2, prefinetune_steps: int = 2, batch_size: int = 4,
             limit: int = 32) -> "RecipeConfig":
        """The pulse-test budget: both stages at ``steps`` / ``prefinetune_steps`` and ``batch_size``, warm-up one
        step, a checkpoint every 2 steps; classification / title-body sources and stage 1's sources cut to ``limit``
        records; no hard-negative mining."""
        def budget(n: int) -> StageBudget:
            return StageBudget(steps=n, batch_size=batch_size, warmup_steps=1, every_steps=min(2, n))

        sources = [dataclasses.replace(s, limit=limit if s.kind in ("classification", "title_body") else s.limit,
                                       mine_negatives=False) for s in self.sources]
        cfg = dataclasses.replace(self, sources=sources,
                                  prefinetune_sources=[dataclasses.replace(s, limit=limit)
                                                       for s in self.prefinetune_sources])
        return cfg.with_budget(finetune=budget(steps), prefinetune=budget(prefinetune_steps))

    def with_budget(self, *, finetune: "StageBudget | None" = None,
                    prefinetune: "StageBudget | None" = None) -> "RecipeConfig":
        """This recipe with each given :class:`StageBudget` applied to its stage (the one place that rewrites the
        stages' train configs; a recipe without stage 1 ignores ``prefinetune``)."""
        def apply(raw: dict | None, b: StageBudget | None) -> dict | None:
            return raw if raw is None or b is None else b.apply(raw)

        return dataclasses.replace(self, finetune=apply(self.finetune, finetune),
                                   prefinetune=apply(self.prefinetune, prefinetune))

    def with_fret(self, path) -> "RecipeConfig":
        """This recipe with every ``fret`` source reading the FRet JSONL ``path``."""
        return dataclasses.replace(self, sources=[dataclasses.replace(s, path=str(path)) if s.kind == "fret" else s
                                                  for s in self.sources])

    @classmethod
    def from_dict(cls, raw: dict) -> "RecipeConfig":
        """The recipe from a JSON-like object (unknown fields are a :class:`ConfigError` naming them)."""
        return cls(**_fields(cls, raw, "<top level>"))

    @classmethod
    def load(cls, path=None, **overrides) -> "RecipeConfig":
        """The recipe from a JSON file (default: the shipped one): :func:`load_recipe`."""
        return load_recipe(DEFAULT_RECIPE if path is None else path, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha(self) -> str:
        """Digest of everything that changes the trained model (``data_dir`` and progress bars do not). A source
        file that exists enters by its content, not its path, so the digest is the same in any checkout or install."""
        d = self.to_dict()
        d.pop("data_dir", None)
        d.pop("description", None)
        for key in ("sources", "prefinetune_sources"):
            d[key] = [dict(s, path=_content_id(s["path"])) if s.get("path") else s for s in d.get(key, [])]
        for stage in ("prefinetune", "finetune"):
            if d.get(stage):
                d[stage] = {k: v for k, v in d[stage].items() if k not in ("progress", "description")}
        return digest(d)


def _content_id(path: str) -> str:
    """``sha256:<hex>`` of the file at ``path``, or ``path`` itself when it is not a file (yet)."""
    p = pathlib.Path(path)
    if not p.is_file():
        return path
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _fields(cls, values, where: str) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"recipe field {where!r}: expected an object, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"recipe field {where!r}: unknown field(s) {unknown}; known: {sorted(names)}")
    return values


def recipe_from_dict(raw: dict) -> RecipeConfig:
    return RecipeConfig.from_dict(raw)


def load_recipe(path=DEFAULT_RECIPE, **overrides) -> RecipeConfig:
    """Read a recipe JSON file; ``overrides`` replace top-level fields. Relative FRet paths are taken from the
    repository root. Errors name the file."""
    path = pathlib.Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from None
    for key in ("sources", "prefinetune_sources"):
        for s in raw.get(key, []):
            if isinstance(s, dict) and s.get("path") and not pathlib.Path(s["path"]).is_absolute() \
                    and (REPO / s["path"]).exists():
                s["path"] = str(REPO / s["path"])
    raw.update(overrides)
    try:
        return recipe_from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def budget_recipe(cfg: RecipeConfig, *, steps: int | None = None, prefinetune_steps: int | None = None,
                  interpolate: Sequence[float] | None = None) -> RecipeConfig:
    """``cfg.with_training(steps=..., prefinetune_steps=..., interpolate=...)`` (:meth:`RecipeConfig.with_training`),
    kept for callers of the function."""
    return cfg.with_training(steps=steps, prefinetune_steps=prefinetune_steps, interpolate=interpolate)
