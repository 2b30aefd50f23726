"""Gecko recipe experiments (issue 15): the human-data ablation and mixture-weight sensitivity, 3 seeds per cell.

Every run is :func:`gecko_jax.recipes.gecko.run_recipe` on a variant of the shipped recipe
(``gecko_jax/configs/gecko_recipe_minilm.json``, made with ``dataclasses.replace``), then one evaluation of the
exported model with its Gecko prompts (``gecko_jax.eval.run_suite``: the full suite + SEAT at 384/256/128/64 dims)
and on the dev sets (``gecko_jax.eval.dev``). Cells:

==============  ============================================================================================
``a1_retr``     retrieval data only: FRet + SciFact train qrels (the FRet set alone is 45 records: 300 steps
                of it would be ~200 epochs, so the ablation starts from the retrieval part of the mixture)
``a2_nli``      + SNLI (symmetric format)
``a3_cls``      + classification as retrieval (Banking77, SST-2, MR train)
``full``        + STS-B train = the shipped recipe
``w_uniform``   ``full`` with every source weight 1
``w_size``      ``full`` with weights proportional to the number of records (natural sampling)
==============  ============================================================================================

All cells share the pre-finetuning stage of their seed (``stages_dir``: stage folders are keyed by content).
Compute: on the shared 2-core box a SciFact test evaluation (5,183 abstracts at 256 tokens) is most of a cell's
evaluation, so only ``full`` is evaluated on SciFact *test* by default; every cell gets the SciFact *dev* score
(train-qrels slice, 1.2k-abstract sub-corpus) and every other test task. ``--scifact-test-all`` adds SciFact test
for every cell.
Outputs in ``--out``: ``runs/<cell>_s<seed>/`` (recipe workdirs, ``export/`` = the model), ``stages/``,
``cells/<cell>_s<seed>.json`` (one evaluation each; a re-run skips finished ones), ``base.json`` (the base model,
raw text and with prompts), and with ``--report``: ``results/mixture.json`` (the issue's shape), ``mixture.md``.

Example::

    python experiments/gecko/mixture.py --out runs/gecko_mixture --cells full --seeds 0 1 2
    python experiments/gecko/mixture.py --out runs/gecko_mixture --report --results-dir experiments/gecko/results
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import time
from typing import Sequence

from gecko_jax.fileio import fill_block, write_text
from gecko_jax.recipes.gecko import DEFAULT_RECIPE, RecipeConfig, load_recipe, run_recipe

TEST_TASKS = ("scifact", "stsb", "banking77", "sst2", "mr", "ag_news", "banking77_clustering",
              "ag_news_clustering", "seat_gender")
DIMS = (None, 256, 128, 64)
MAIN = ("scifact", "stsb", "banking77")
ABLATION = ("a1_retr", "a2_nli", "a3_cls", "full")
WEIGHTS = ("w_uniform", "w_size")
ORDER = ("full", "a1_retr", "a2_nli", "a3_cls", "w_uniform", "w_size")
_SOURCES = {"a1_retr": ("fret", "scifact"), "a2_nli": ("fret", "scifact", "nli"),
            "a3_cls": ("fret", "scifact", "nli", "banking77", "sst2", "mr")}


def log(msg: str) -> None:
    print(f"[mixture {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cell_recipe(cell: str, seed: int, base: RecipeConfig, records: dict | None = None) -> RecipeConfig:
    """The recipe of ``cell`` at ``seed`` (module docstring). ``records``: source name -> record count (``w_size``)."""
    cfg = dataclasses.replace(base, seed=seed)
    if cell == "full":
        return cfg
    if cell in _SOURCES:
        keep = _SOURCES[cell]
        return dataclasses.replace(cfg, sources=[s for s in cfg.sources if s.name in keep])
    if cell == "w_uniform":
        return dataclasses.replace(cfg, sources=[dataclasses.replace(s, weight=1.0) for s in cfg.sources])
    if cell == "w_size":
        if not records:
            raise ValueError("w_size needs the record counts of the full recipe (run 'full' first)")
        return dataclasses.replace(cfg, sources=[dataclasses.replace(s, weight=float(records[s.name]))
                                                 for s in cfg.sources])
    raise ValueError(f"unknown cell {cell!r}; known: {', '.join(ORDER)}")


def _dims_key(label: str) -> str:
    return str(label).split()[0]


def evaluate_model(embedder, prompts, data_dir=None, tasks=TEST_TASKS) -> dict:
    """``{"metrics": {task: score at full width}, "metrics_by_dims": {dims: {task: score}}, "seconds"}``."""
    from gecko_jax.eval import run_suite

    res = run_suite(embedder, "full", dims=list(DIMS), tasks=list(tasks), task_prompts=prompts, data_dir=data_dir,
                    verbose=True)
    by_dims: dict = {}
    for task, per in res["tasks"].items():
        for label, r in per.items():
            by_dims.setdefault(_dims_key(label), {})[task] = float(r["main_score"])
    full = str(embedder.dim)
    return {"metrics": by_dims[full], "metrics_by_dims": {k: v for k, v in by_dims.items() if k != full},
            "seconds": res["seconds"]}


def merge_evals(prev: dict | None, new: dict) -> dict:
    """``new`` (an :func:`evaluate_model` result) with ``prev``'s tasks kept where ``new`` lacks them."""
    if not prev:
        return new
    by_dims = {k: {**v, **new["metrics_by_dims"].get(k, {})} for k, v in prev["metrics_by_dims"].items()}
    by_dims.update({k: v for k, v in new["metrics_by_dims"].items() if k not in by_dims})
    return {"metrics": {**prev["metrics"], **new["metrics"]}, "metrics_by_dims": by_dims,
            "seconds": _num(prev.get("seconds")) + _num(new.get("seconds"))}


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) else 0.0  # a cell file's "seconds" is a dict of its stages


def _write_json(path: pathlib.Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, default=str))


def run_base(out: pathlib.Path, data_dir=None, tasks: Sequence[str] = TEST_TASKS, *, raw_only: bool = False) -> dict:
    """The base model, raw text (how it was trained: the bar) and with Gecko prompts, plus its dev scores.

    ``raw_only``: only the raw-text test scores (a short budget; the cells' dev selection records the base model's
    raw-text dev scores anyway). A saved ``base.json`` is reused when it covers ``tasks`` (and the prompted runs
    unless ``raw_only``)."""
    path = out / "base.json"
    prev = json.loads(path.read_text()) if path.is_file() else None
    if prev is not None and set(tasks) <= set(prev["raw"]["metrics"]) and (raw_only or "prompts" in prev):
        return prev
    from gecko_jax import Embedder
    from gecko_jax.eval import dev

    emb = Embedder.from_pretrained(load_recipe(DEFAULT_RECIPE).model)
    if prev is not None and raw_only:  # a saved raw-only base gains the missing tasks
        res = dict(prev, raw=merge_evals(prev["raw"], evaluate_model(
            emb, None, data_dir, [t for t in tasks if t not in prev["raw"]["metrics"]])))
        res["host"] = host()
        _write_json(path, res)
        return res
    res = {"raw": evaluate_model(emb, None, data_dir, tasks)}
    if not raw_only:
        res.update(prompts=evaluate_model(emb, "gecko", data_dir, tasks),
                   dev_raw=dev.evaluate_dev(emb, task_prompts=None, root=data_dir),
                   dev_prompts=dev.evaluate_dev(emb, task_prompts="gecko", root=data_dir))
    res["host"] = host()
    _write_json(path, res)
    return res


def host() -> dict:
    """The CPU and its load when a number was measured (timings and speed depend on both)."""
    import os
    import platform

    model = platform.processor()
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "loadavg": [round(x, 1) for x in os.getloadavg()]}


def cell_tasks(cell: str, scifact_test_all: bool = False, tasks: Sequence[str] = TEST_TASKS) -> tuple:
    """Test tasks of a cell (module docstring: SciFact test for ``full`` only unless asked)."""
    if cell == "full" or scifact_test_all:
        return tuple(tasks)
    return tuple(t for t in tasks if t != "scifact")


def full_records(out: pathlib.Path, seed: int, base_cfg: RecipeConfig) -> dict | None:
    """Record count per source of the ``full`` cell at ``seed`` (``w_size``'s weights): from its recipe workdir, or
    from its cell file when the workdir is gone; None if it has not run."""
    for path in (out / "runs" / f"full_s{seed}" / "recipe_result.json", out / "cells" / f"full_s{seed}.json"):
        if path.is_file():
            sources = json.loads(path.read_text())["sources"]
            return {s.name: sum(v for k, v in sources.items() if k == s.name or k.startswith(s.name + "."))
                    for s in base_cfg.sources}
    return None


def run_cell(cell: str, seed: int, out: pathlib.Path, base_cfg: RecipeConfig, *, records=None,
             progress=False, scifact_test_all: bool = False, tasks: Sequence[str] = TEST_TASKS) -> dict:
    """Train (resuming) and evaluate one cell at one seed; writes ``cells/<cell>_s<seed>.json``."""
    from gecko_jax import Embedder
    from gecko_jax.eval import dev

    path = out / "cells" / f"{cell}_s{seed}.json"
    cfg = cell_recipe(cell, seed, base_cfg, records)
    tasks = cell_tasks(cell, scifact_test_all, tasks)
    prev = json.loads(path.read_text()) if path.is_file() else None
    if prev is not None and prev.get("config_sha") != cfg.sha():
        prev = None
    if prev is not None and set(tasks) <= set(prev["metrics"]):
        return prev
    t0 = time.perf_counter()
    res = run_recipe(cfg, out / "runs" / f"{cell}_s{seed}", progress=progress, stages_dir=out / "stages")
    t_train = time.perf_counter() - t0
    emb = Embedder.from_pretrained(res.export_dir)
    log(f"{cell} seed {seed}: evaluating {res.export_dir} with Gecko prompts")
    todo = [t for t in tasks if prev is None or t not in prev["metrics"]]  # a saved cell gains the missing tasks
    ev = merge_evals(prev, evaluate_model(emb, "gecko", base_cfg.data_dir, todo))
    # the exported model's dev scores: already measured by the dev selection when there was one
    dev_scores = (res.dev.get("candidates") or {}).get(str(res.alpha))
    if dev_scores is None:
        dev_scores = dev.evaluate_dev(emb, task_prompts="gecko", root=base_cfg.data_dir, cfg=cfg.dev)
    entry = {"cell": cell, "seed": seed, "prompts": True, "config_sha": res.config_sha, "sources": res.sources,
             "steps": res.steps.get("finetune"), "prefinetune_steps": res.steps.get("prefinetune", 0),
             "alpha": res.alpha, "weights": {s.name: s.weight for s in cfg.sources}, **ev, "dev": dev_scores,
             "dev_base": res.dev.get("base"), "dev_alphas": res.dev.get("candidates"), "host": host(),
             "export_dir": res.export_dir, "seconds": {"recipe": t_train, "eval": time.perf_counter() - t0 - t_train
                                                       + (prev or {}).get("seconds", {}).get("eval", 0.0)},
             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(path, entry)
    log(f"{cell} seed {seed}: " + ", ".join(f"{t} {ev['metrics'][t]:.2f}" for t in MAIN if t in ev["metrics"]))
    return entry


# ---- report ---------------------------------------------------------------------------------------------------------

def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(base: dict, cells: list[dict]) -> dict:
    """``results/mixture.json``: base scores, one entry per cell and seed, and per-cell mean +- sd."""
    by_cell: dict = {}
    for c in cells:
        by_cell.setdefault(c["cell"], []).append(c)
    summary = {}
    for name, runs in by_cell.items():
        tasks = [t for t in runs[0]["metrics"] if all(t in r["metrics"] for r in runs)]
        summary[name] = {"seeds": sorted(r["seed"] for r in runs),
                         "metrics": {t: dict(zip(("mean", "sd"), _mean_sd([r["metrics"][t] for r in runs])))
                                     for t in tasks},
                         "dev": {t: dict(zip(("mean", "sd"), _mean_sd([r["dev"][t] for r in runs])))
                                 for t in runs[0]["dev"]}}
    base_dev = base.get("dev_raw") or next((c["dev_base"] for c in cells if c.get("dev_base")), {})
    return {"base": base["raw"]["metrics"], "base_by_dims": base["raw"]["metrics_by_dims"],
            "base_prompts": base.get("prompts", {}).get("metrics", {}), "base_dev": base_dev,
            "base_dev_prompts": base.get("dev_prompts", {}), "cells": cells, "summary": summary,
            "note": "metrics at 384 dims with the Gecko prompts the models were trained with; base = all-MiniLM-L6-v2 "
                    "on raw text (how it was trained); seat_gender: mean |effect size|, lower is fairer. Data "
                    "licences: several sets are for non-commercial research use only."}


TASK_LABELS = {"scifact": "SciFact nDCG@10", "stsb": "STS-B", "banking77": "Banking77", "sst2": "SST-2",
               "mr": "MR", "ag_news": "AG News", "banking77_clustering": "B77 clust.",
               "ag_news_clustering": "AGN clust.", "seat_gender": "SEAT |d| (lower fairer)"}


def _mean_txt(m: dict, n_seeds: int) -> str:
    return f"{m['mean']:.2f}" if n_seeds == 1 else f"{m['mean']:.2f} ± {m['sd']:.2f}"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(results: dict) -> str:
    """Tables generated from ``results/mixture.json``: mean +- sd over seeds per cell (test, 384 dims), the same on
    dev, and the base model's rows."""
    tasks = [t for t in TASK_LABELS if t in results["base"]]
    head = "| cell | seeds | " + " | ".join(TASK_LABELS[t] for t in tasks) + " |"
    rows = [head, "|" + "---|" * (2 + len(tasks))]
    rows.append("| base, raw text | - | " + " | ".join(f"{results['base'][t]:.2f}" for t in tasks) + " |")
    if results["base_prompts"]:
        rows.append("| base, Gecko prompts | - | " + " | ".join(_fmt(results["base_prompts"].get(t)) for t in tasks)
                    + " |")
    for name in [c for c in ORDER if c in results["summary"]]:
        s = results["summary"][name]
        cells = []
        for t in tasks:
            if t not in s["metrics"]:
                cells.append("-")
                continue
            m = s["metrics"][t]
            better = (m["mean"] < results["base"][t]) if t == "seat_gender" else (m["mean"] > results["base"][t])
            txt = _mean_txt(m, len(s["seeds"]))
            cells.append(f"**{txt}**" if better else txt)
        rows.append(f"| {name} | {len(s['seeds'])} | " + " | ".join(cells) + " |")
    dev_tasks = list(results["base_dev"])
    drows = ["| cell | " + " | ".join(dev_tasks) + " |", "|" + "---|" * (1 + len(dev_tasks)),
             "| base, raw text | " + " | ".join(f"{results['base_dev'][t]:.2f}" for t in dev_tasks) + " |"]
    if results["base_dev_prompts"]:
        drows.append("| base, Gecko prompts | " + " | ".join(_fmt(results["base_dev_prompts"].get(t))
                                                            for t in dev_tasks) + " |")
    for name in [c for c in ORDER if c in results["summary"]]:
        d = results["summary"][name]["dev"]
        n = len(results["summary"][name]["seeds"])
        drows.append(f"| {name} | " + " | ".join(_mean_txt(d[t], n) for t in dev_tasks) + " |")
    return ("Test sets, 384 dims, mean ± sd over seeds (one seed: its score, no sd; bold: better than the base model "
            "on raw text)\n\n"
            + "\n".join(rows) + "\n\nDev sets (model selection data; carved from training splits)\n\n"
            + "\n".join(drows) + "\n")


def plot(results: dict, path: pathlib.Path) -> pathlib.Path | None:
    """Change against the base model (raw text) per test task, mean +- sd over seeds, one bar per cell (the ablation
    in order, then the weight variants); None without matplotlib or cells."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot skipped: matplotlib is not installed")
        return None
    names = [c for c in (*ABLATION, *WEIGHTS) if c in results["summary"]]
    tasks = [t for t in TASK_LABELS if t in results["base"] and t != "seat_gender"
             and any(t in results["summary"][c]["metrics"] for c in names)]
    if not names or not tasks:
        return None
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        s = results["summary"][name]
        xs = [i + (k - (len(names) - 1) / 2) * width for i, t in enumerate(tasks) if t in s["metrics"]]
        ys = [s["metrics"][t]["mean"] - results["base"][t] for t in tasks if t in s["metrics"]]
        err = [s["metrics"][t]["sd"] for t in tasks if t in s["metrics"]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=f"{name} ({len(s['seeds'])} seeds)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([TASK_LABELS[t] for t in tasks], fontsize=8)
    ax.set_ylabel("test score - base (raw text)")
    ax.set_title("Gecko recipe cells, 384 dims, with their prompts (mean ± sd over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)  # atomic: a reader sees the old plot or the new one
    return path


README_BEGIN = "<!-- mixture table: generated from results/mixture.json by `mixture.py --report` -->"
README_END = "<!-- end mixture table -->"


def put_table(readme: pathlib.Path, md: str) -> None:
    """Replace the text between :data:`README_BEGIN` and :data:`README_END` in ``readme`` with ``md``."""
    try:
        fill_block(readme, README_BEGIN, README_END, md)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def report(out: pathlib.Path, results_dir: pathlib.Path | None = None, readme: pathlib.Path | None = None) -> dict:
    base = json.loads((out / "base.json").read_text())
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    cells.sort(key=lambda c: (ORDER.index(c["cell"]) if c["cell"] in ORDER else 99, c["seed"]))
    results = summarize(base, cells)
    md = markdown(results)
    for folder in {out / "results", *( [results_dir] if results_dir else [])}:
        _write_json(pathlib.Path(folder) / "mixture.json", results)
        write_text(pathlib.Path(folder) / "mixture.md", md)
        plot(results, pathlib.Path(folder) / "mixture.png")
    if readme is not None:
        put_table(readme, md)
    print(md)
    return results


# ---- CLI -----------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gecko_mixture", help="output folder (a re-run resumes)")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="the full recipe the cells vary")
    p.add_argument("--cells", nargs="+", default=list(ORDER), help=f"cells (default: all: {' '.join(ORDER)})")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--seed-major", action="store_true", help="run every cell at a seed before the next seed "
                   "(default: every seed of a cell before the next cell)")
    p.add_argument("--data-dir", default=None, help="data folder in the mirror layout (default: each dataset from "
                   "$GECKO_JAX_DATA, the cache or a download; see `gecko-jax datasets --help`)")
    p.add_argument("--scifact-test-all", action="store_true", help="SciFact test for every cell (default: full)")
    p.add_argument("--tasks", nargs="+", default=list(TEST_TASKS), choices=TEST_TASKS,
                   help="test tasks (default: all; the base model is evaluated on the same ones)")
    p.add_argument("--steps", type=int, default=None, help="stage-2 (mixture) steps (default: the recipe's)")
    p.add_argument("--prefinetune-steps", type=int, default=None, help="stage-1 steps (default: the recipe's)")
    p.add_argument("--interpolate", nargs="+", type=float, default=None,
                   help="WiSE-FT alphas picked among on dev data (default: the recipe's)")
    p.add_argument("--base-raw-only", action="store_true", help="evaluate the base model on raw text only (its "
                   "bar), not also with prompts and on dev sets (a short budget)")
    p.add_argument("--readme", default=None, help="also put the table into this README's generated block "
                   "(e.g. experiments/gecko/README.md)")
    p.add_argument("--report", action="store_true", help="only write results/mixture.json + mixture.md")
    p.add_argument("--results-dir", default=None, help="also write the report here (e.g. experiments/gecko/results)")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.report:
        report(out, pathlib.Path(args.results_dir) if args.results_dir else None,
               pathlib.Path(args.readme) if args.readme else None)
        return 0
    unknown = [c for c in args.cells if c not in ORDER]
    if unknown:
        raise SystemExit(f"--cells: unknown {unknown}; known: {', '.join(ORDER)}")
    base_cfg = load_recipe(args.recipe, data_dir=args.data_dir).with_training(
        steps=args.steps, prefinetune_steps=args.prefinetune_steps, interpolate=args.interpolate)
    plan = [(c, s) for s in args.seeds for c in args.cells] if args.seed_major else \
        [(c, s) for c in args.cells for s in args.seeds]
    for cell, seed in plan:
        records = None
        if cell == "w_size":
            records = full_records(out, seed, base_cfg)
            if records is None:
                log(f"w_size seed {seed}: skipped until full seed {seed} has run (its record counts set the weights)")
                continue
        log(f"cell {cell} seed {seed}")
        run_cell(cell, seed, out, base_cfg, records=records, scifact_test_all=args.scifact_test_all, tasks=args.tasks)
    log("base model: raw text and Gecko prompts")  # after the cells: a short budget gets its model first
    run_base(out, args.data_dir, args.tasks, raw_only=args.base_raw_only)
    report(out, pathlib.Path(args.results_dir) if args.results_dir else None,
           pathlib.Path(args.readme) if args.readme else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
