"""The whole Gecko recipe as one config: mixture sources -> stage 1 pre-finetuning -> stage 2 mixture fine-tuning
-> weight interpolation picked on dev data -> one exported model (PAPERS.md 1.2-1.4, issue 15).

Stages (each resumable; re-running the same config in the same workdir reuses every finished stage):

0. **sources** (:func:`build_sources`): every :class:`SourceSpec` becomes a JSONL file of unified records
   (``gecko_jax.data.mixture``) under ``workdir/data/``: FRet, NLI, classification as retrieval, STS pairs, human
   retrieval pairs (hard negatives mined with the base model, ``mine_negatives``), title -> body pairs for stage 1.
   Dev rows (``gecko_jax.eval.dev``) are removed here, so training never sees them.
1. **pre-finetuning** (optional): the ``prefinetune`` train config on the ``prefinetune_sources`` (Gecko eq. 2:
   in-batch negatives only).
2. **fine-tuning**: the ``finetune`` train config on the mixture, one source per batch with the sources' weights
   (``gecko_jax.data.batching.BatchStream``), starting from stage 1's checkpoint (``checkpoint.init_checkpoint``:
   params only, fresh optimizer, step 0) or from the pretrained model.
3. **interpolation** (WiSE-FT): ``theta = theta_base + alpha (theta_finetuned - theta_base)`` for each ``alpha`` in
   ``interpolate``; with more than one, the alpha whose smallest dev gain over the base model is largest wins
   (``gecko_jax.eval.dev.select``: dev data only, never a test set). The winner is written to ``workdir/export``.

Example::

    from gecko_jax.recipe import load_recipe, run_recipe
    cfg = load_recipe("gecko_jax/configs/gecko_recipe_minilm.json")
    result = run_recipe(cfg, "runs/recipe")        # result.export_dir: an Embedder / sentence-transformers folder
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import time
from typing import Any, Sequence

from gecko_jax.data import mixture as mx
from gecko_jax.errors import ConfigError
from gecko_jax.eval.dev import DevConfig
from gecko_jax.fileio import write_text

REPO = pathlib.Path(__file__).resolve().parents[1]
# package data (pyproject: gecko_jax/configs/*.json), so an installed wheel has it too
DEFAULT_RECIPE = pathlib.Path(__file__).resolve().parent / "configs" / "gecko_recipe_minilm.json"
_PLACEHOLDER = "<mixture>"


def _log(msg: str) -> None:
    print(f"[recipe {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _file_sha(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


# ---- config -------------------------------------------------------------------------------------------------------

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

    def stage_config(self, stage: str, datasets: list, init_checkpoint: str | None = None):
        """The validated ``TrainConfig`` of ``stage`` with these datasets."""
        from gecko_jax import train

        raw = copy.deepcopy(getattr(self, stage))
        raw["seed"] = self.seed
        raw.setdefault("model", {})["pretrained"] = self.model
        data = raw.setdefault("data", {})
        data["seed"] = self.seed
        data["datasets"] = datasets
        raw.setdefault("checkpoint", {})["init_checkpoint"] = init_checkpoint
        return train.from_dict(raw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha(self) -> str:
        """Digest of everything that changes the trained model (``data_dir`` and progress bars do not)."""
        d = self.to_dict()
        d.pop("data_dir", None)
        d.pop("description", None)
        for stage in ("prefinetune", "finetune"):
            if d.get(stage):
                d[stage] = {k: v for k, v in d[stage].items() if k not in ("progress", "description")}
        return _digest(d)


def _fields(cls, values, where: str) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"recipe field {where!r}: expected an object, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"recipe field {where!r}: unknown field(s) {unknown}; known: {sorted(names)}")
    return values


def recipe_from_dict(raw: dict) -> RecipeConfig:
    return RecipeConfig(**_fields(RecipeConfig, raw, "<top level>"))


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
    """``cfg`` with a smaller (or larger) training budget: stage-2 / stage-1 steps (warm-up capped at a tenth of the
    steps, checkpoints at least every half of them) and the WiSE-FT alphas tried on dev data."""
    def stage(raw: dict | None, n: int | None) -> dict | None:
        if raw is None or n is None:
            return raw
        raw = json.loads(json.dumps(raw))
        raw["steps"] = n
        opt, ckpt = raw.setdefault("optimizer", {}), raw.setdefault("checkpoint", {})
        opt["warmup_steps"] = min(int(opt.get("warmup_steps", 0)), max(1, n // 10))
        ckpt["every_steps"] = min(int(ckpt.get("every_steps", n)), max(1, n // 2))
        return raw

    return dataclasses.replace(cfg, finetune=stage(cfg.finetune, steps),
                               prefinetune=stage(cfg.prefinetune, prefinetune_steps),
                               interpolate=tuple(interpolate) if interpolate else cfg.interpolate)


# ---- stage 0: sources -----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BuiltSource:
    """A source as a training file: ``name``, ``path``, ``weight``, ``hard_negatives`` (0 or 1), ``records``,
    ``stats`` (what the converter dropped)."""

    name: str
    path: str
    weight: float
    hard_negatives: int
    records: int
    stats: dict

    def dataset(self) -> dict:
        return {"path": self.path, "weight": self.weight, "name": self.name, "hard_negatives": self.hard_negatives}


class _Base:
    """The base model and its corpus embeddings, loaded once and only if a stage needs them."""

    def __init__(self, model: str, cache):
        self.model, self.cache, self._emb = model, cache, None

    @property
    def embedder(self):
        if self._emb is None:
            from gecko_jax import Embedder

            self._emb = Embedder.from_pretrained(self.model)
        return self._emb


def _beir_folder(spec: SourceSpec, root: pathlib.Path) -> pathlib.Path:
    p = pathlib.Path(spec.path or spec.dataset)
    return p if p.is_absolute() or p.exists() else root / p


def _records(spec: SourceSpec, cfg: RecipeConfig, root: pathlib.Path, base: _Base, stats) -> list[dict]:
    """The converter call of one source (training rows only: dev rows are removed here)."""
    from gecko_jax.eval import dev as dev_eval

    if spec.kind == "fret":
        from gecko_jax.data.jsonl import iter_jsonl

        rows = [obj for _, obj in iter_jsonl(spec.path)]
        recs = mx.fret_records(rows, source=spec.name)
        if spec.task:
            recs = [dict(r, task=spec.task) for r in recs]
        return recs
    if spec.kind == "nli":
        rows = mx.read_snli_senteval(pathlib.Path(spec.path) if spec.path else root / spec.dataset)
        return mx.nli_records(rows, source=spec.name, task=spec.task or mx.NLI_TASK, stats=stats)
    if spec.kind == "classification":
        from gecko_jax.eval.datasets import CLASSIFICATION_LOADERS

        if spec.path:  # any labelled set a user has: JSONL {text, label}
            texts, names = mx.read_labelled_texts(spec.path)
        else:
            data = CLASSIFICATION_LOADERS[spec.dataset](root)  # the training split / pool only
            texts, labels = data.train_texts, list(data.train_labels)
            if spec.dataset == "banking77":  # its dev rows select models: never train on them
                keep, _ = dev_eval.banking77_split(labels, cfg.dev.banking77_per_label)
                texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
            names = [data.label_names[y] for y in labels]
        return mx.classification_records(texts, names, source=spec.name, task=spec.task or mx.CLASSIFICATION_TASK,
                                         seed=cfg.seed, append_id=spec.append_id, limit=spec.limit, stats=stats)
    if spec.kind == "sts":
        from gecko_jax.eval.sts import read_stsb

        path = pathlib.Path(spec.path) if spec.path else root / "stsb" / (spec.dataset or "sts-train.csv")
        if path.name in ("sts-test.csv", "sts-dev.csv"):
            raise ConfigError(f"source {spec.name!r}: {path.name} is an evaluation / selection split; train on "
                              "sts-train.csv")
        s1, s2, scores, _ = read_stsb(path)
        return mx.sts_records(s1, s2, scores, source=spec.name, task=spec.task or mx.STS_TASK,
                              min_score=spec.min_score, stats=stats)
    folder = _beir_folder(spec, root)
    if spec.kind == "title_body":
        corpus = mx.read_beir_corpus(folder / "corpus.jsonl")
        return mx.title_body_records(corpus, source=spec.name, task=spec.task or mx.TITLE_BODY_TASK,
                                     max_chars=cfg.max_chars, limit=spec.limit, stats=stats)
    return _retrieval(spec, cfg, folder, base, stats)


def _retrieval(spec: SourceSpec, cfg: RecipeConfig, folder: pathlib.Path, base: _Base, stats) -> list[dict]:
    from gecko_jax.eval import dev as dev_eval
    from gecko_jax.eval.beir import load_beir

    if spec.split == "test":
        raise ConfigError(f"source {spec.name!r}: split 'test' is the evaluation split; train on 'train'")
    data = load_beir(folder, split=spec.split)
    qrels = data.qrels
    if folder.name == "scifact" and spec.split == "train":  # hold out the dev queries
        keep, _ = dev_eval.scifact_train_queries(qrels, cfg.dev.scifact_fraction)
        qrels = {q: qrels[q] for q in keep}
    negatives = None
    if spec.mine_negatives:
        from gecko_jax.eval.retrieval import encode_corpus

        emb = base.embedder
        _log(f"{spec.name}: mining hard negatives with {base.model} (raw text; corpus embeddings cached)")
        doc_emb = encode_corpus(emb, data, task=None, cache=base.cache)
        qids = list(qrels)
        q_emb = emb.encode([data.queries[q] for q in qids], kind="query")
        negatives = mx.mine_negatives(q_emb, doc_emb, qids, list(data.corpus), qrels, seed=cfg.seed)
    return mx.retrieval_records(data.queries, data.corpus, qrels, source=spec.name, task=spec.task,
                                negatives=negatives, max_chars=cfg.max_chars, stats=stats)


def build_sources(cfg: RecipeConfig, specs: Sequence[SourceSpec], workdir, *, root=None, base: _Base | None = None,
                  batch_size: int = 32) -> list[BuiltSource]:
    """Stage 0: one training file per source (FRet with ``task_balance="uniform"``: one per task group).

    A file whose source spec, seed, dev split and input files are unchanged is reused (``data/<name>.json`` holds
    its key); otherwise it is rebuilt and replaced atomically.
    """
    from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir
    from gecko_jax.eval.datasets import data_root

    root = data_root(root if root is not None else cfg.data_dir)
    base = base or _Base(cfg.model, EmbeddingCache(default_cache_dir()))
    out_dir = pathlib.Path(workdir) / "data"
    built = []
    for spec in specs:
        key = {"spec": dataclasses.asdict(spec), "seed": cfg.seed, "dev": dataclasses.asdict(cfg.dev),
               "max_chars": cfg.max_chars, "batch_size": batch_size, "model": cfg.model, "v": 1}
        if spec.kind == "fret":
            if not spec.path or not pathlib.Path(spec.path).is_file():
                raise ConfigError(
                    f"recipe source {spec.name!r} field 'path': no such file {spec.path!r} (relative paths are read "
                    f"from the repository root or the working directory; outside a clone pass --fret FILE, e.g. "
                    f"the quickstart's runs/quickstart/fret/fret.jsonl)")
            key["fret_sha"] = _file_sha(spec.path)
        meta_path = out_dir / f"{spec.name}.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key and all(pathlib.Path(b["path"]).is_file() for b in meta["built"]):
                built += [BuiltSource(**b) for b in meta["built"]]
                continue
        stats = mx.ConversionStats(spec.name)
        recs = _records(spec, cfg, root, base, stats)
        if not recs:
            raise ConfigError(f"source {spec.name!r}: no training records ({stats.dropped})")
        groups = {spec.name: recs}
        if spec.kind == "fret" and spec.task_balance == "uniform":
            by_task = mx.group_by_task(recs, min_size=batch_size)
            groups = {f"{spec.name}.{k}": g for k, g in enumerate(by_task.values())}
        mine = []
        for name, rows in groups.items():
            h = 1 if all("negative" in r for r in rows) else 0
            path = mx.write_records(rows, out_dir / f"{name}.jsonl")
            mine.append(BuiltSource(name, str(path), spec.weight / len(groups), h, len(rows),
                                    {"dropped": stats.dropped, "tasks": sorted({r["task"] for r in rows})[:5]}))
        write_text(meta_path, json.dumps({"key": key, "built": [dataclasses.asdict(b) for b in mine]}, indent=1))
        _log(f"source {spec.name}: {sum(b.records for b in mine)} records in {len(mine)} file(s)"
             + (f", dropped {stats.dropped}" if stats.dropped else ""))
        built += mine
    return built


# ---- stages 1-2: training -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StageResult:
    """A finished training stage: its folder, the checkpoint folder the next stage starts from, the export."""

    name: str
    run_dir: str
    checkpoint_dir: str
    export_dir: str | None
    steps: int
    origin: str
    seconds: float
    last_metrics: dict
    cpu_seconds: float = 0.0  # process CPU time of the stage (all threads): the load-independent cost


def run_stage(name: str, config, workdir, key: dict, *, progress: bool = True) -> StageResult:
    """Train one stage in ``workdir/<name>-<key digest>``, resuming whatever is there; a finished stage is reused."""
    from gecko_jax import train

    run_dir = pathlib.Path(workdir) / f"{name}-{_digest(key)}"
    done = run_dir / "stage_done.json"
    if done.is_file():
        _log(f"{name}: reusing the finished run in {run_dir}")
        return StageResult(**json.loads(done.read_text()))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "stage_key.json", json.dumps(key, indent=1, sort_keys=True, default=str))
    config = dataclasses.replace(config, progress=progress)
    sources = ", ".join(f"{d.name} {d.weight:.3g}" for d in config.data.datasets)
    _log(f"{name}: {config.steps} steps, batch {config.data.batch_size}, lr {config.optimizer.learning_rate:g}, "
         f"sources [{sources}] -> {run_dir}")
    t0, c0 = time.perf_counter(), time.process_time()
    result = train.train_and_evaluate(config, run_dir)
    if int(result.state.step) < config.steps:
        raise RuntimeError(f"{name}: the run in {run_dir} stopped at step {int(result.state.step)} of "
                           f"{config.steps} (preempted={result.preempted}); run the same command again to resume")
    out = StageResult(name=name, run_dir=str(run_dir), checkpoint_dir=str(run_dir / "checkpoints"),
                      export_dir=result.export_dir, steps=config.steps, origin=result.origin,
                      seconds=time.perf_counter() - t0,
                      last_metrics={k: float(v) for k, v in result.last_metrics.items()},
                      cpu_seconds=time.process_time() - c0)
    write_text(done, json.dumps(dataclasses.asdict(out), indent=1))
    return out


# ---- stage 3: interpolation and dev selection ------------------------------------------------------------------------

def interpolate(base_params, tuned_params, alpha: float):
    """WiSE-FT: ``base + alpha * (tuned - base)`` leaf by leaf (alpha 1: the tuned weights, 0: the base)."""
    import jax
    import numpy as np

    return jax.tree.map(lambda b, t: np.asarray(b, np.float32) + np.float32(alpha) * (
        np.asarray(t, np.float32) - np.asarray(b, np.float32)), base_params, tuned_params)


def interpolated_embedder(base, tuned, alpha: float):
    """An :class:`~gecko_jax.Embedder` with interpolated weights, the tuned model's tokenizer and token cap."""
    from gecko_jax import Embedder

    if alpha == 1.0:
        return tuned
    return Embedder.from_params(tuned.config, interpolate(base.params, tuned.params, alpha), tuned.tokenizer,
                                max_length=tuned.max_length)


@dataclasses.dataclass
class RecipeResult:
    """What :func:`run_recipe` returns (and writes to ``workdir/recipe_result.json``)."""

    export_dir: str
    alpha: float
    config_sha: str
    sources: dict  # name -> records
    steps: dict  # stage -> steps
    stages: dict  # stage -> StageResult as dict
    dev: dict  # {"base": {...}, "candidates": {alpha: {...}}, "gains": {...}} (empty without selection)
    seconds: float


def _select(cfg: RecipeConfig, stage2: StageResult, base: _Base, workdir: pathlib.Path, root) -> tuple[float, dict]:
    """Stage 3: the alpha to export (dev selection when there are several)."""
    from gecko_jax import Embedder
    from gecko_jax.eval import dev as dev_eval

    if len(cfg.interpolate) == 1:
        return cfg.interpolate[0], {}
    saved = workdir / f"select-{_digest([stage2.run_dir, cfg.interpolate, dataclasses.asdict(cfg.dev)])}.json"
    if saved.is_file():
        d = json.loads(saved.read_text())
        return float(d["alpha"]), d["dev"]
    tuned = Embedder.from_pretrained(stage2.export_dir, max_length=base.embedder.max_length)
    _log("dev selection: base model (raw text, how it was trained)")
    ref = dev_eval.evaluate_dev(base.embedder, task_prompts=None, root=root, cfg=cfg.dev, cache=base.cache)
    cands = {}
    for a in cfg.interpolate:
        emb = interpolated_embedder(base.embedder, tuned, a)
        cands[str(a)] = dev_eval.evaluate_dev(emb, task_prompts="gecko", root=root, cfg=cfg.dev, cache=base.cache)
        _log(f"dev alpha={a:g}: " + ", ".join(f"{k} {v:.2f} ({v - ref[k]:+.2f})" for k, v in cands[str(a)].items()))
    best, gains = dev_eval.select(cands, ref)
    dev = {"base": ref, "candidates": cands, "gains": gains, "rule": "max over alphas of the min dev gain"}
    write_text(saved, json.dumps({"alpha": float(best), "dev": dev}, indent=1))
    return float(best), dev


def run_recipe(cfg: RecipeConfig, workdir, *, progress: bool = True, cache_dir="default",
               export_dir=None, stages_dir=None) -> RecipeResult:
    """Run (or resume) the whole recipe in ``workdir``; the chosen model goes to ``export_dir`` (default
    ``workdir/export``), loadable by ``Embedder.from_pretrained`` and sentence-transformers.

    ``stages_dir``: where the training stages run (default ``workdir``). Stage folders are named by a digest of
    their config and data, so recipes that share a stage (e.g. the same pre-finetuning under several mixtures)
    share its run when they share this folder."""
    from gecko_jax import Embedder
    from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir
    from gecko_jax.eval.datasets import data_root

    t0 = time.perf_counter()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stages_dir = pathlib.Path(stages_dir) if stages_dir is not None else workdir
    root = data_root(cfg.data_dir)
    base = _Base(cfg.model, EmbeddingCache(default_cache_dir() if cache_dir == "default" else cache_dir))
    batch = int(cfg.finetune.get("data", {}).get("batch_size", 32))
    stages, steps, init = {}, {}, None
    if cfg.prefinetune_sources:
        pft_batch = int(cfg.prefinetune.get("data", {}).get("batch_size", 32))
        built1 = build_sources(cfg, cfg.prefinetune_sources, workdir, root=root, base=base, batch_size=pft_batch)
        c1 = cfg.stage_config("prefinetune", [b.dataset() for b in built1])
        key1 = {"config": _stage_dict(c1), "data": {b.name: _file_sha(b.path) for b in built1}}
        s1 = run_stage("stage1", c1, stages_dir, key1, progress=progress)
        stages["prefinetune"], steps["prefinetune"], init = dataclasses.asdict(s1), s1.steps, s1.checkpoint_dir
    built2 = build_sources(cfg, cfg.sources, workdir, root=root, base=base, batch_size=batch)
    c2 = cfg.stage_config("finetune", [b.dataset() for b in built2], init_checkpoint=init)
    key2 = {"config": _stage_dict(c2), "data": {b.name: _file_sha(b.path) for b in built2},
            "init": pathlib.Path(init).parent.name if init else None}
    s2 = run_stage("stage2", c2, stages_dir, key2, progress=progress)
    stages["finetune"], steps["finetune"] = dataclasses.asdict(s2), s2.steps
    if s2.export_dir is None:
        raise ConfigError("recipe field 'finetune.checkpoint.export' must be true (the recipe exports a model)")
    alpha, dev = _select(cfg, s2, base, workdir, root)
    export = pathlib.Path(export_dir) if export_dir is not None else workdir / "export"
    tuned = Embedder.from_pretrained(s2.export_dir)
    final = interpolated_embedder(Embedder.from_pretrained(cfg.model), tuned, alpha) if alpha != 1.0 else tuned
    _save_atomic(final, export)
    sources = {}
    for b in built2 + (built1 if cfg.prefinetune_sources else []):
        sources[b.name] = b.records
    res = RecipeResult(export_dir=str(export), alpha=alpha, config_sha=cfg.sha(), sources=sources, steps=steps,
                       stages=stages, dev=dev, seconds=time.perf_counter() - t0)
    info = dict(dataclasses.asdict(res), config=cfg.to_dict())
    for folder in (workdir, export):
        write_text(folder / "recipe_result.json", json.dumps(info, indent=1, default=str))
    _log(f"done: alpha {alpha:g}, model in {export} ({res.seconds:.0f} s)")
    return res


def _stage_dict(config) -> dict:
    """A stage's key: its config without progress bars, description and file locations (files enter the key by
    content, so the same stage run from another workdir is recognised)."""
    d = config.to_dict()
    d.pop("progress", None)
    d.pop("description", None)
    for ds in d["data"]["datasets"]:
        ds.pop("path", None)
    if d["checkpoint"].get("init_checkpoint"):
        d["checkpoint"]["init_checkpoint"] = pathlib.Path(d["checkpoint"]["init_checkpoint"]).parent.name
    return d


def _save_atomic(embedder, folder: pathlib.Path) -> None:
    """Write the model to a sibling temp folder, then swap it in (a crash leaves the old folder or none)."""
    import shutil

    folder = pathlib.Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    embedder.save_pretrained(tmp)
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
