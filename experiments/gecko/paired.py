"""Which of the recipe's losses against the base model are beyond evaluation noise? (issue 15)

The few-shot classification protocol (MTEB: 8 examples per label, 10 draws) and k-means clustering are noisy
measurements; ``results/mixture.json`` keeps only their means. This script re-evaluates the base model
(all-MiniLM-L6-v2, raw text) and every exported cell model in ``<out>/runs/<cell>_s<seed>/export`` (with the
"classification" task string the cells were evaluated with) on the classification and clustering sets, keeps every
repeat (``result["runs"]``), and compares cell against base with :func:`gecko_jax.eval.difference`:

* classification: the 10 few-shot draws are the same for both models, so the per-draw differences, averaged over the
  cell's seeds, give a paired t interval;
* clustering: k-means runs (seeds ``0..k-1``, ``--cluster-runs``) do not pair; Welch's interval over all runs of the
  cell's seeds against the base model's runs.

It also lists the per-seed mean differences (the training-seed spread). Embeddings are cached
(:class:`gecko_jax.eval.EmbeddingCache`), so a re-run only refits. Outputs: ``paired.json`` and ``paired.md`` in
``--results-dir``; a run over some ``--cells`` adds them to a ``paired.json`` already there (same protocol: its
base-model repeats are reused).

Example::

    python experiments/gecko/paired.py --out runs/gecko_mixture --results-dir experiments/gecko/results
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import time

import numpy as np

from gecko_jax.fileio import write_text

CLASSIFICATION = ("banking77", "sst2", "mr", "ag_news")
CLUSTERING = ("banking77_clustering", "ag_news_clustering")
TASK_STRING = "classification"  # what results/mixture.json's cells used for both families (gecko_jax.eval.suites)
BASE_MODEL = "all-MiniLM-L6-v2"


def log(msg: str) -> None:
    print(f"[paired {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_models(out: pathlib.Path, cells=None) -> dict[str, dict[int, pathlib.Path]]:
    """``{cell: {seed: export folder}}`` for every ``<out>/runs/<cell>_s<seed>/export`` with a model in it."""
    found: dict[str, dict[int, pathlib.Path]] = {}
    for d in sorted((out / "runs").glob("*_s*/export")):
        m = re.fullmatch(r"(.+)_s(\d+)", d.parent.name)
        if m and (d / "config.json").is_file() and (cells is None or m.group(1) in cells):
            found.setdefault(m.group(1), {})[int(m.group(2))] = d
    return found


def repeats(embedder, task: str | None, cluster_runs: int, data_dir=None) -> dict[str, list[float]]:
    """``{task name: every repeat's score}`` at the model's full width."""
    from gecko_jax.eval import EmbeddingCache, default_cache_dir, evaluate_classification, evaluate_clustering
    from gecko_jax.eval.datasets import data_root

    root, cache = data_root(data_dir), EmbeddingCache(default_cache_dir())
    out = {n: evaluate_classification(embedder, n, task=task, cache=cache, data_root=root)["runs"]
           for n in CLASSIFICATION}
    for n in CLUSTERING:
        out[n] = evaluate_clustering(embedder, n.removesuffix("_clustering"), task=task, n_runs=cluster_runs,
                                     cache=cache, data_root=root)["runs"]
    return out


def compare(base: dict[str, list[float]], seeds: dict[int, dict[str, list[float]]]) -> dict[str, dict]:
    """Per task: the cell-vs-base interval (module docstring) and the per-seed mean differences."""
    from gecko_jax.eval import difference

    res = {}
    for name in (*CLASSIFICATION, *CLUSTERING):
        per_seed = {s: float(np.mean(r[name]) - np.mean(base[name])) for s, r in sorted(seeds.items())}
        if name in CLASSIFICATION:
            cell = np.mean([r[name] for r in seeds.values()], axis=0)  # per draw, averaged over seeds
            d = difference(base[name], cell, paired=True)
        else:
            d = difference(base[name], [x for r in seeds.values() for x in r[name]], paired=False)
        sd = statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None
        res[name] = {**d.as_dict(), "per_seed": per_seed, "seed_sd": sd}
    return res


def markdown(results: dict) -> str:
    names = (*CLASSIFICATION, *CLUSTERING)
    lines = ["Cell minus base (all-MiniLM-L6-v2, raw text), 384 dims: mean difference [95 % interval] over the "
             "evaluation's repeats (classification: 10 paired few-shot draws; clustering: "
             f"{results['cluster_runs']} k-means seeds per model, Welch); **bold**: the interval excludes 0. "
             "n = training seeds.", "",
             "| cell | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for cell, r in results["cells"].items():
        cells = []
        for n in names:
            d = r["tasks"][n]
            txt = f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
            cells.append(f"**{txt}**" if d["significant"] else txt)
        lines.append(f"| {cell} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    base = results["base"]
    lines += ["", "Base scores (mean of the repeats): " + ", ".join(f"{n} {np.mean(base[n]):.2f}" for n in names)]
    return "\n".join(lines) + "\n"


def previous(path: pathlib.Path, cluster_runs: int) -> dict | None:
    """A saved ``paired.json`` made with the same protocol: its base repeats and the cells this run does not redo
    are kept (a run over some cells adds to the file instead of replacing it)."""
    if not path.is_file():
        return None
    prev = json.loads(path.read_text())
    if prev.get("cluster_runs") != cluster_runs or prev.get("task_string") != TASK_STRING:
        return None
    for cell in prev["cells"].values():  # JSON turned the seed keys into strings
        cell["repeats"] = {int(s): r for s, r in cell["repeats"].items()}
    return prev


def _order(cell: str) -> tuple:
    known = ("full", "a1_retr", "a2_nli", "a3_cls", "w_uniform", "w_size")
    return (known.index(cell) if cell in known else len(known), cell)


def run(out: pathlib.Path, results_dir: pathlib.Path, cells=None, cluster_runs: int = 10, data_dir=None) -> dict:
    from gecko_jax import Embedder

    models = find_models(out, cells)
    if not models:
        raise SystemExit(f"no exported cell models under {out / 'runs'} (expected <cell>_s<seed>/export)")
    results = previous(results_dir / "paired.json", cluster_runs)
    if results is None:
        log(f"base model {BASE_MODEL}, raw text")
        base = repeats(Embedder.from_pretrained(BASE_MODEL), None, cluster_runs, data_dir)
        results = {"base": base, "cluster_runs": cluster_runs, "task_string": TASK_STRING, "cells": {}}
    base = results["base"]
    for cell, by_seed in models.items():
        seeds = {}
        for seed, path in sorted(by_seed.items()):
            log(f"{cell} seed {seed}: {path}")
            seeds[seed] = repeats(Embedder.from_pretrained(path), TASK_STRING, cluster_runs, data_dir)
        results["cells"][cell] = {"seeds": sorted(seeds), "repeats": seeds, "tasks": compare(base, seeds)}
    results["cells"] = {c: results["cells"][c] for c in sorted(results["cells"], key=_order)}
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text(results_dir / "paired.json", json.dumps(results, indent=1))
    md = markdown(results)
    write_text(results_dir / "paired.md", md)
    print(md)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gecko_mixture", help="mixture.py's output folder (its runs/*/export)")
    p.add_argument("--results-dir", default="experiments/gecko/results", help="where paired.json / paired.md go")
    p.add_argument("--cells", nargs="+", default=None, help="only these cells (default: every exported one)")
    p.add_argument("--cluster-runs", type=int, default=10, help="k-means seeds per model (default 10)")
    p.add_argument("--data-dir", default=None, help="data folder in the mirror layout (default: gecko_jax.datasets)")
    a = p.parse_args(argv)
    run(pathlib.Path(a.out), pathlib.Path(a.results_dir), a.cells, a.cluster_runs, a.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
