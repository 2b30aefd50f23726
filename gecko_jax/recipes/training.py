"""Stage 4 of the quickstart: the Gecko recipe (:mod:`gecko_jax.recipes.gecko`) on the run's FRet records, or the
``--fret-only`` fine-tuning on them alone; :func:`finetune` returns a :class:`Finetuned` (the model in memory and
on disk)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import time
from importlib import resources
from typing import Any, Mapping

from gecko_jax import train
from gecko_jax.embedder import Embedder
from gecko_jax.recipes.gecko import DEFAULT_RECIPE, load_recipe, run_recipe
from gecko_jax.recipes.data import data_dir_of
from gecko_jax.recipes.options import (CONFIG_RESOURCE, QUICKSTART_PREFINETUNE_STEPS, QUICKSTART_STEPS,
                                       QuickstartOptions)
from gecko_jax.recipes.runlog import log
from gecko_jax.recipes.store import StageStore

_RECIPE_KEYS = ("run_dir", "export_dir", "steps", "prefinetune_steps", "batch_size", "alpha", "sources", "config_sha",
                "last_metrics", "seconds")
_FRET_ONLY_KEYS = ("run_dir", "export_dir", "steps", "batch_size", "origin", "steps_run", "last_metrics", "seconds")


@dataclasses.dataclass(frozen=True)
class Finetuned:
    """The fine-tuned model: ``embedder`` in memory (what the evaluation uses) and ``export_dir`` on disk (an
    Embedder / sentence-transformers folder for the user).

    Attributes:
      run_dir: the training stage's folder. steps / batch_size: its budget. last_metrics: its last logged metrics.
      seconds: wall time of the stage. The recipe's: prefinetune_steps, alpha (the WiSE-FT weight exported),
      sources (name -> records), config_sha. ``--fret-only``'s: origin, steps_run (``alpha`` None).
    """

    embedder: Any = dataclasses.field(repr=False, compare=False)
    export_dir: pathlib.Path
    run_dir: pathlib.Path
    steps: int
    batch_size: int
    last_metrics: Mapping[str, float]
    seconds: float
    prefinetune_steps: int = 0
    alpha: float | None = None
    sources: Mapping[str, int] = dataclasses.field(default_factory=dict)
    config_sha: str | None = None
    origin: str | None = None
    steps_run: int | None = None

    def to_dict(self) -> dict:
        """The JSON form in the quickstart's results (``"train"``)."""
        keys = _FRET_ONLY_KEYS if self.alpha is None else _RECIPE_KEYS
        return {k: str(getattr(self, k)) if k.endswith("_dir") else getattr(self, k) for k in keys}


def finetune(opts: QuickstartOptions, workdir: pathlib.Path, fret, data_root: pathlib.Path, *,
             max_length: int) -> Finetuned:
    """Stage 4 on the :class:`~gecko_jax.recipes.fret_stage.FRetOutput` ``fret``: the recipe, or ``--fret-only``;
    the model keeps the base model's token cap ``max_length``."""
    if opts.fret_only:
        log("4/5 fine-tuning on FRet alone (--fret-only)")
        return run_training(opts, workdir, fret.path, fret.records, max_length=max_length)
    log("4/5 the Gecko recipe: pre-finetuning, then the unified mixture")
    return run_recipe_stage(opts, workdir, fret.path, data_root, max_length=max_length)


def _with_max_length(embedder, max_length: int | None):
    if max_length is None or embedder.max_length == max_length:
        return embedder
    return Embedder.from_params(embedder.config, embedder.params, embedder.tokenizer, max_length=max_length)


def train_config(opts: QuickstartOptions, fret_path: pathlib.Path, n_records: int) -> dict:
    """The ``--fret-only`` training config (``gecko_jax/configs/quickstart_minilm.json`` with the run's data, steps
    and batch)."""
    raw = json.loads(resources.files("gecko_jax").joinpath(CONFIG_RESOURCE).read_text(encoding="utf-8"))
    batch = max(2, min(opts.batch_size or 16, n_records))
    steps = opts.steps if opts.steps is not None else max(1, math.ceil(opts.epochs * n_records / batch))
    raw["steps"] = steps
    raw["seed"] = opts.seed
    raw["log_every"] = max(1, min(raw.get("log_every", 5), steps))
    raw["progress"] = opts.progress
    raw["data"]["datasets"] = [{"path": str(fret_path), "weight": 1.0}]
    raw["data"]["batch_size"] = batch
    raw["data"]["seed"] = opts.seed
    raw["optimizer"]["learning_rate"] = opts.learning_rate or 2e-5
    raw["optimizer"]["warmup_steps"] = max(1, steps // 10)
    raw["checkpoint"]["every_steps"] = max(1, min(raw["checkpoint"]["every_steps"], steps))
    return raw


def run_training(opts: QuickstartOptions, workdir: pathlib.Path, fret_path: pathlib.Path, n_records: int, *,
                 max_length: int | None = None) -> Finetuned:
    """Stage 4 with ``fret_only``: fine-tune in a :class:`StageStore` folder keyed by the FRet file and the config, so
    a re-run reuses the finished run or resumes an interrupted one from its checkpoints. The model is the trainer's
    export, loaded once here."""
    raw = train_config(opts, fret_path, n_records)
    # progress bars do not change the run, so they are not part of its key
    key = [hashlib.sha256(fret_path.read_bytes()).hexdigest(), {k: v for k, v in raw.items() if k != "progress"}]
    store = StageStore(workdir)
    info = store.done("train", key)
    if info is not None and pathlib.Path(info["export_dir"]).is_dir():
        return _fret_only_result(info, max_length)
    run_dir = store.folder("train", key)
    config = train.from_dict(raw)
    log(f"train: {config.steps} steps, batch {config.data.batch_size}, {n_records} FRet records, "
        f"loss gecko (same-tower {config.loss.same_tower}, hard negatives {config.data.hard_negatives}, "
        f"Matryoshka {list(config.loss.matryoshka_dims)}) -> {run_dir}")
    t0 = time.perf_counter()
    result = train.train_and_evaluate(config, run_dir)
    if result.export_dir is None:
        raise RuntimeError(f"train: the run in {run_dir} stopped before step {config.steps} "
                           f"(preempted={result.preempted}); run the quickstart again to resume it")
    info = {"run_dir": str(run_dir), "export_dir": str(result.export_dir), "steps": config.steps,
            "batch_size": config.data.batch_size, "origin": result.origin, "steps_run": result.steps_run,
            "last_metrics": {k: float(v) for k, v in result.last_metrics.items()},
            "seconds": time.perf_counter() - t0}
    return _fret_only_result(store.finish("train", key, info), max_length)


def _fret_only_result(info: dict, max_length: int | None) -> Finetuned:
    emb = Embedder.from_pretrained(info["export_dir"], max_length=max_length)
    return Finetuned(embedder=emb, **{k: pathlib.Path(v) if k.endswith("_dir") else v for k, v in info.items()})


def recipe_config(opts: QuickstartOptions, fret_path: pathlib.Path, data_root: pathlib.Path):
    """The recipe (``--recipe`` or the shipped one) with this run's FRet records, seed, data folder and flags: the
    shipped recipe runs on the quickstart's budget (:data:`QUICKSTART_STEPS`, :data:`QUICKSTART_PREFINETUNE_STEPS`,
    a checkpoint at least at each stage's end) unless told otherwise; ``tiny``: :meth:`RecipeConfig.tiny`."""
    cfg = load_recipe(opts.recipe or DEFAULT_RECIPE, seed=opts.seed,
                      data_dir=data_dir_of(data_root)).with_fret(fret_path)
    if opts.tiny:
        cfg = cfg.tiny(steps=opts.steps or 2, prefinetune_steps=opts.prefinetune_steps or 2,
                       batch_size=opts.batch_size or 4)
        return cfg.with_training(learning_rate=opts.learning_rate)
    shipped = opts.recipe is None
    steps = opts.steps if opts.steps is not None or not shipped else QUICKSTART_STEPS
    pft_steps = (opts.prefinetune_steps if opts.prefinetune_steps is not None or not shipped
                 else QUICKSTART_PREFINETUNE_STEPS)
    return cfg.with_training(steps=steps, prefinetune_steps=pft_steps, batch_size=opts.batch_size,
                             learning_rate=opts.learning_rate, checkpoints=1)


def run_recipe_stage(opts: QuickstartOptions, workdir: pathlib.Path, fret_path: pathlib.Path,
                     data_root: pathlib.Path, *, max_length: int | None = None) -> Finetuned:
    """Stage 4: the Gecko recipe in ``workdir/recipe`` (its stages resume); the exported model is handed on in
    memory (:attr:`RecipeResult.embedder`), not read back from ``export/``."""
    cfg = recipe_config(opts, fret_path, data_root)
    t0 = time.perf_counter()
    res = run_recipe(cfg, workdir / "recipe", progress=opts.progress, reference=not opts.recompute_base)
    ft = res.stages["finetune"]
    return Finetuned(embedder=_with_max_length(res.embedder, max_length), run_dir=pathlib.Path(ft["run_dir"]),
                     export_dir=pathlib.Path(res.export_dir), steps=res.steps["finetune"],
                     prefinetune_steps=res.steps.get("prefinetune", 0),
                     batch_size=cfg.stage_config("finetune").data.batch_size, alpha=res.alpha,
                     sources=res.sources, config_sha=res.config_sha, last_metrics=ft["last_metrics"],
                     seconds=time.perf_counter() - t0)
