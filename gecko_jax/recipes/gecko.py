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

    from gecko_jax.recipes.gecko import RecipeConfig, run_recipe
    cfg = RecipeConfig.load("gecko_jax/configs/gecko_recipe_minilm.json")
    result = run_recipe(cfg, "runs/recipe")        # result.embedder: the model in memory; result.export_dir: on disk

The config and its loader live in :mod:`gecko_jax.recipes.gecko_config`, stage 0 in
:mod:`gecko_jax.recipes.gecko_sources`; stages 1-3 resume through a :class:`~gecko_jax.recipes.store.StageStore`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any

from gecko_jax.errors import ConfigError
from gecko_jax.fileio import write_text
from gecko_jax.recipes.gecko_config import (CLASSIFICATION_SETS, DEFAULT_RECIPE, REPO, RecipeConfig, SourceSpec,
                                            StageBudget, budget_recipe, load_recipe, recipe_from_dict)
from gecko_jax.recipes.gecko_sources import BuiltSource, LazyBase, build_sources, file_sha, log
from gecko_jax.recipes.store import StageStore

__all__ = ["CLASSIFICATION_SETS", "DEFAULT_RECIPE", "REPO", "BuiltSource", "RecipeConfig", "RecipeResult",
           "SourceSpec", "StageBudget", "StageResult", "budget_recipe", "build_sources", "interpolate",
           "interpolated_embedder", "load_recipe", "recipe_from_dict", "run_recipe", "run_stage"]
LEGACY_DONE = "stage_done.json"  # a stage's done marker before the StageStore (still read, never written)


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
    """Train one stage in the :class:`StageStore` folder ``workdir/<name>-<key digest>``, resuming whatever is there;
    a finished stage (its ``done.json``, or the ``stage_done.json`` of a run from before the store) is reused."""
    from gecko_jax import train

    store = StageStore(pathlib.Path(workdir))
    run_dir = store.folder(name, key)
    done = store.done(name, key, log=log)
    if done is None and (run_dir / LEGACY_DONE).is_file():
        log(f"{name}: reusing the finished run in {run_dir}")
        done = json.loads((run_dir / LEGACY_DONE).read_text())
    if done is not None:
        return StageResult(**done)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, progress=progress)
    sources = ", ".join(f"{d.name} {d.weight:.3g}" for d in config.data.datasets)
    log(f"{name}: {config.steps} steps, batch {config.data.batch_size}, lr {config.optimizer.learning_rate:g}, "
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
    store.finish(name, key, dataclasses.asdict(out))
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
    embedder: Any = dataclasses.field(default=None, repr=False, compare=False)  # the exported model, in memory


def _select(cfg: RecipeConfig, stage2: StageResult, base: LazyBase, workdir: pathlib.Path, root) -> tuple[float, dict]:
    """Stage 3: the alpha to export (dev selection when there are several)."""
    from gecko_jax import Embedder
    from gecko_jax.eval import dev as dev_eval

    if len(cfg.interpolate) == 1:
        return cfg.interpolate[0], {}
    store, key = StageStore(workdir), [stage2.run_dir, cfg.interpolate, dataclasses.asdict(cfg.dev)]
    d = store.done("select", key, log=log)
    legacy = store.folder("select", key).with_suffix(".json")  # a run from before the store: select-<digest>.json
    if d is None and legacy.is_file():
        d = json.loads(legacy.read_text())
    if d is not None:
        return float(d["alpha"]), d["dev"]
    tuned = Embedder.from_pretrained(stage2.export_dir, max_length=base.embedder.max_length)
    log("dev selection: base model (raw text, how it was trained)")
    ref = dev_eval.evaluate_dev(base.embedder, task_prompts=None, root=root, cfg=cfg.dev, cache=base.cache)
    cands = {}
    for a in cfg.interpolate:
        emb = interpolated_embedder(base.embedder, tuned, a)
        cands[str(a)] = dev_eval.evaluate_dev(emb, task_prompts="gecko", root=root, cfg=cfg.dev, cache=base.cache)
        log(f"dev alpha={a:g}: " + ", ".join(f"{k} {v:.2f} ({v - ref[k]:+.2f})" for k, v in cands[str(a)].items()))
    best, gains = dev_eval.select(cands, ref)
    dev = {"base": ref, "candidates": cands, "gains": gains, "rule": "max over alphas of the min dev gain"}
    store.finish("select", key, {"alpha": float(best), "dev": dev})
    return float(best), dev


def run_recipe(cfg: RecipeConfig, workdir, *, progress: bool = True, cache_dir="default",
               export_dir=None, stages_dir=None, reference: bool = True) -> RecipeResult:
    """Run (or resume) the whole recipe in ``workdir``; the chosen model goes to ``export_dir`` (default
    ``workdir/export``), loadable by ``Embedder.from_pretrained`` and sentence-transformers.

    ``stages_dir``: where the training stages run (default ``workdir``). Stage folders are named by a digest of
    their config and data, so recipes that share a stage (e.g. the same pre-finetuning under several mixtures)
    share its run when they share this folder. ``reference``: take the base model's mined hard negatives from
    :mod:`gecko_jax.recipes.reference` where their content key matches (False: always mine them here)."""
    from gecko_jax import Embedder
    from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir
    from gecko_jax.eval.datasets import data_root

    t0 = time.perf_counter()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stages_dir = pathlib.Path(stages_dir) if stages_dir is not None else workdir
    root = data_root(cfg.data_dir)
    base = LazyBase(cfg.model, EmbeddingCache(default_cache_dir() if cache_dir == "default" else cache_dir),
                    reference=reference)
    batch = cfg.stage_config("finetune").data.batch_size
    stages, steps, init = {}, {}, None
    if cfg.prefinetune_sources:
        pft_batch = cfg.stage_config("prefinetune").data.batch_size
        built1 = build_sources(cfg, cfg.prefinetune_sources, workdir, root=root, base=base, batch_size=pft_batch)
        c1 = cfg.stage_config("prefinetune", [b.dataset() for b in built1])
        key1 = {"config": _stage_dict(c1), "data": {b.name: file_sha(b.path) for b in built1}}
        s1 = run_stage("stage1", c1, stages_dir, key1, progress=progress)
        stages["prefinetune"], steps["prefinetune"], init = dataclasses.asdict(s1), s1.steps, s1.checkpoint_dir
    built2 = build_sources(cfg, cfg.sources, workdir, root=root, base=base, batch_size=batch)
    c2 = cfg.stage_config("finetune", [b.dataset() for b in built2], init_checkpoint=init)
    key2 = {"config": _stage_dict(c2), "data": {b.name: file_sha(b.path) for b in built2},
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
                       stages=stages, dev=dev, seconds=time.perf_counter() - t0, embedder=final)
    info = dict({k: v for k, v in dataclasses.asdict(res).items() if k != "embedder"}, config=cfg.to_dict())
    for folder in (workdir, export):
        write_text(folder / "recipe_result.json", json.dumps(info, indent=1, default=str))
    log(f"done: alpha {alpha:g}, model in {export} ({res.seconds:.0f} s)")
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
