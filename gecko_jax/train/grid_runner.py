"""Running grids of classifier runs from config files: the experiments' command line, resumable result files, plots
and README tables.

An experiment folder holds ``configs/*.json`` (:mod:`gecko_jax.train.grid_config`), a thin ``run.py`` that calls
:func:`cli` with its own ``analyse`` (summary + plots from one result), ``check_quick`` and ``tables`` (Markdown
from the committed results), and the results. Resume has two levels: ``results/<name>.json`` holds a finished grid
and is reused only when its stored config equals the one asked for (a changed config retrains), and a grid in
progress resumes from its per-epoch state in ``--workdir``.

    python experiments/gamblers/run.py --quick                       # CI budget -> results_quick/
    python experiments/gamblers/run.py --config X.json --seeds 0-4   # X_seed0.json ... X_seed4.json
    python experiments/gamblers/run.py --report                      # README tables from results/*.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
from typing import Callable, Sequence

from gecko_jax import fileio
from gecko_jax.errors import exit_code
from gecko_jax.train.grid import machine_info, train_grid
from gecko_jax.train.grid_config import GridConfig, load_grid_config


def _round(x, digits: int = 6):
    if isinstance(x, float):
        return x if not math.isfinite(x) else float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return x


def save_json(obj, path: str | pathlib.Path, *, digits: int | None = None) -> None:
    """Writes JSON atomically (temp file + rename); ``digits`` rounds floats to that many significant digits."""
    fileio.write_json(path, _round(obj, digits) if digits else obj, indent=1, default=float)


def save_png(fig, path: str | pathlib.Path, *, dpi: int = 100) -> None:
    """Saves a matplotlib figure as a PNG with a 256-colour palette (line plots and heat maps look the same; files
    stay small enough to commit), atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    with fileio.atomic_write(path, "wb") as f:
        img.save(f, format="PNG", optimize=True)


def run_config(cfg: GridConfig, out_dir: str | pathlib.Path, *, rules=(), workdir=None, log=print) -> dict:
    """``out_dir/<name>.json`` for ``cfg``: reused when it holds this exact config, else trained (resuming from
    ``workdir``) and written atomically. Returns the result dict."""
    path = pathlib.Path(out_dir) / f"{cfg.name}.json"
    want = json.loads(json.dumps(cfg.to_dict(), default=float))
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("config") == want and old.get("rules") == [repr(r) for r in rules]:
            log(f"[{cfg.name}] up to date: {path}")
            return old
    result = train_grid(cfg, rules=rules, workdir=workdir, log=log).to_dict()
    result["config"] = want
    result["rules"] = [repr(r) for r in rules]
    save_json(result, path, digits=6)
    return json.loads(path.read_text())  # the rounded copy, as a later reuse would read it


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0-4"`` / ``"0,2,3"`` -> seeds (None: the config's own seed, output name unchanged)."""
    if text is None:
        return None
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="CI budget: the configs' `quick` blocks; -> results_quick/")
    ap.add_argument("--config", action="append", help="config file(s); default: every configs/*.json")
    ap.add_argument("--out", default=None, help="output folder (default: results/ or results_quick/)")
    ap.add_argument("--seeds", default=None, help="e.g. 0-4 or 0,2: one grid per seed, named <config>_seed<N>")
    ap.add_argument("--runs", default=None, help="comma-separated run names to keep (default: all)")
    ap.add_argument("--workdir", default=None, help="per-epoch states for resuming interrupted grids")
    ap.add_argument("--analyse-only", action="store_true", help="summaries/plots from the saved result files")
    ap.add_argument("--report", action="store_true", help="rewrite the README tables from the saved results")
    ap.add_argument("--compare", default=None, help="folder of earlier result files of the same names: write "
                    "results/<config>_before_after.json comparing them with these runs")
    return ap


def configs_from_args(args, config_dir: pathlib.Path) -> list[GridConfig]:
    paths = [pathlib.Path(c) for c in args.config] if args.config else sorted(config_dir.glob("*.json"))
    out = []
    for path in paths:
        cfg = load_grid_config(path, quick=args.quick)
        if args.runs:
            cfg = cfg.keep_runs(args.runs.split(","))
        seeds = parse_seeds(args.seeds)
        out += [cfg] if seeds is None else [cfg.with_seed(s) for s in seeds]
    return out


def load_result(results_dir: str | pathlib.Path, name: str) -> dict | None:
    """``results_dir/<name>.json`` (None when absent)."""
    path = pathlib.Path(results_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def seed_results(results_dir: str | pathlib.Path, name: str) -> list[dict]:
    """Every ``<name>_seed<N>.json`` in ``results_dir``, by seed."""
    paths = pathlib.Path(results_dir).glob(f"{name}_seed*.json")
    found = [(int(m.group(1)), p) for p in paths if (m := re.fullmatch(rf"{re.escape(name)}_seed(\d+)\.json", p.name))]
    return [json.loads(p.read_text()) for _, p in sorted(found)]


def mean_sd(values, digits: int = 3) -> str:
    """``"0.812 ± 0.012 (n=5)"``: mean and sample standard deviation of the non-None values."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (n=1)"
    mean, sd = sum(v) / len(v), (sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n={len(v)})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; floats are printed with 3 decimals, None as an en dash."""
    def cell(x):
        return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


COMPARED = ("train_loss", "test_acc", "test_loss", "loss_auc", "abstain_auc")


def compare_results(before: dict, after: dict) -> dict:
    """Per run: whether the per-epoch histories (``COMPARED``) of two result files are equal at the 6 significant
    digits result files keep, their largest absolute difference, and the headline figures of both (final / best test
    accuracy, L* stop epoch, loss AUC there)."""
    before, after = _round(before, 6), _round(after, 6)
    out = {}
    after_runs = {r["name"]: r for r in after["runs"]}
    for b in before["runs"]:
        a = after_runs.get(b["name"])
        if a is None:
            out[b["name"]] = {"missing_after": True}
            continue
        diffs = [abs(x - y) for k in COMPARED for x, y in zip(b.get(k) or [], a.get(k) or [])]
        lengths_equal = all(len(b.get(k) or []) == len(a.get(k) or []) for k in COMPARED)
        figures = ("final_test_acc", "best_test_acc", "best_epoch", "stop_epoch", "loss_auc_stop")
        out[b["name"]] = {"identical": lengths_equal and max(diffs, default=0.0) == 0.0,
                          "max_abs_diff": max(diffs, default=0.0),
                          "before": {k: b.get(k) for k in figures}, "after": {k: a.get(k) for k in figures}}
    return out


def before_after_table(data: dict) -> str:
    """Markdown of a ``--compare`` file: per seed and run, the headline figures before / after and whether every
    per-epoch history is equal."""
    def pair(b, a):
        same = "=" if b == a else "≠"
        fmt = (lambda x: "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x))
        return f"{fmt(b)} {same} {fmt(a)}"

    rows = []
    for name, runs in data["results"].items():
        seed = re.search(r"_seed(\d+)$", name)
        for run, c in runs.items():
            if c.get("missing_after"):
                rows.append([seed.group(1) if seed else name, run, "missing after", "", "", "", ""])
                continue
            b, a = c["before"], c["after"]
            rows.append([seed.group(1) if seed else name, run] + [pair(b[k], a[k]) for k in
                         ("final_test_acc", "best_test_acc", "stop_epoch", "loss_auc_stop")] +
                        ["yes" if c["identical"] else f"no (max diff {c['max_abs_diff']:.2g})"])
    return markdown_table(["seed", "run", "final acc before / after", "best acc", "L* stop epoch",
                           "loss AUC at stop", "all per-epoch histories equal"], rows)


def machine_line(results: Sequence[dict]) -> str:
    """One line naming the CPU, the load average at the start and the wall time of result files."""
    ms = [r["machine"] for r in results if r.get("machine")]
    if not ms:
        return "Machine: not recorded in these result files (runs before the grid trainer; see the text).\n"
    loads = [m["load_avg"][0] for m in ms]
    walls = [r["wall_s"] for r in results if r.get("machine")]
    return (f"Machine: {ms[0]['cpu']}, {ms[0]['cores']} cores, JAX {ms[0]['jax_backend']}; load average "
            f"{min(loads):.1f}-{max(loads):.1f} at the start; wall {min(walls):.0f}-{max(walls):.0f} s per file "
            f"({len(ms)} file(s)).\n")


def update_readme(readme: str | pathlib.Path, tables: dict[str, str]) -> list[str]:
    """Replaces each block ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->`` of ``readme`` with
    ``tables[NAME]``; returns the names it did not find. Written atomically."""
    readme = pathlib.Path(readme)
    text = readme.read_text()
    missing = []
    for name, body in tables.items():
        pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
        if not pattern.search(text):
            missing.append(name)
            continue
        text = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
    fileio.write_text(readme, text)
    return missing


def cli(argv: Sequence[str] | None, *, here: pathlib.Path, analyse: Callable, check_quick: Callable,
        tables: Callable | None = None, rules=()) -> int:
    """The experiments' entry point: train (or reuse) every selected grid, write ``<name>.json``, run
    ``analyse(results, out_dir) -> summary`` (plots) and write ``<name>_summary.json``; with ``--quick`` call
    ``check_quick(summary)`` (raises on a failed check); with ``--report`` rewrite ``here/README.md``'s tables from
    ``tables(results_dir) -> {name: markdown}``. ``rules``: early-stopping callbacks, or a function of the config
    returning them.

    A user error (a bad config, a missing input, an unwritable output) is one line on stderr and the exit code of
    ``gecko_jax.errors`` (3 config, 2 input, 5 output); ``GECKO_JAX_TRACEBACK=1`` keeps the traceback. A failed
    ``--quick`` check stays an ``AssertionError``."""
    args = parser(f"Run the {here.name} experiment").parse_args(argv)
    try:
        return _cli(args, here=here, analyse=analyse, check_quick=check_quick, tables=tables, rules=rules)
    except Exception as e:  # noqa: BLE001 (user errors become one line; everything else keeps its traceback)
        code = exit_code(e)
        if code is None or os.environ.get("GECKO_JAX_TRACEBACK"):
            raise
        print(f"{here.name}/run.py: error: {(str(e).strip() or type(e).__name__).splitlines()[0]}", file=sys.stderr)
        return code


def _cli(args, *, here: pathlib.Path, analyse: Callable, check_quick: Callable, tables: Callable | None,
         rules) -> int:
    rules_of = rules if callable(rules) else (lambda cfg: tuple(rules))
    compared = {}
    out_dir = pathlib.Path(args.out) if args.out else here / ("results_quick" if args.quick else "results")
    if args.report:
        missing = update_readme(here / "README.md", tables(out_dir))
        print(f"README tables rewritten from {out_dir}" + (f"; no block for {missing}" if missing else ""))
        return 1 if missing else 0
    for cfg in configs_from_args(args, here / "configs"):
        if args.analyse_only:
            results = json.loads((out_dir / f"{cfg.name}.json").read_text())
        else:
            results = run_config(cfg, out_dir, rules=rules_of(cfg), workdir=args.workdir)
        if args.compare:
            before = json.loads((pathlib.Path(args.compare) / f"{cfg.name}.json").read_text())
            compared.setdefault(re.sub(r"_seed\d+$", "", cfg.name), {})[cfg.name] = compare_results(before, results)
        summary = analyse(results, out_dir)
        save_json(summary, out_dir / f"{cfg.name}_summary.json")
        print(json.dumps(_round(summary, 4), indent=1, default=float))
        if args.quick:
            check_quick(summary)
            print(f"[{cfg.name}] quick checks passed")
    for name, per_seed in compared.items():
        save_json({"before": str(args.compare), "quick": args.quick, "machine": machine_info(), "results": per_seed},
                  here / "results" / f"{name}{'_quick' if args.quick else ''}_before_after.json", digits=6)
    return 0
