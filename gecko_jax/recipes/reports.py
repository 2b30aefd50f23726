"""The quickstart's before/after table and its Markdown and JSON reports."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

from gecko_jax.eval import TASKS
from gecko_jax.fileio import write_text


def score(res, task: str, label: str) -> float | None:
    """The main score of ``task`` at ``label`` in an :class:`~gecko_jax.recipes.evaluation.EvalResult` (or its
    ``run_suite`` dict), None where it was not measured."""
    if hasattr(res, "score"):
        return res.score(task, label)
    r = res.get("tasks", {}).get(task, {}).get(label)
    return None if r is None else float(r["main_score"])


def build_table(columns: dict, tasks: Sequence[str], dims_labels: Sequence[str], headline: str) -> str:
    """Markdown: one row per (task, dims), one column per model/prompt mode, plus headline minus base."""
    names = list(columns)
    head = "| task | dims | metric | " + " | ".join(names) + f" | Δ ({headline} − base) |"
    rows = [head, "|" + "---|" * (4 + len(names))]
    for task in tasks:
        for lab in dims_labels:
            vals = [score(columns[n], task, lab) for n in names]
            base, best = vals[0], score(columns[headline], task, lab)
            delta = f"{best - base:+.2f}" if base is not None and best is not None else "-"
            cells = " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
            rows.append(f"| {task} | {lab} | {TASKS[task].metric} | {cells} | {delta} |")
    return "\n".join(rows)


def training_line(tr: dict, fret_only: bool) -> str:
    """One sentence on what stage 4 trained."""
    if fret_only:
        return f"FRet only: {tr['steps']} steps, batch {tr['batch_size']} (Gecko loss, Matryoshka 384/256/128)."
    return (f"Gecko recipe: pre-finetuning {tr['prefinetune_steps']} steps, mixture fine-tuning "
            f"{tr['steps']} steps at batch {tr['batch_size']} over {len(tr['sources'])} source files "
            f"({', '.join(f'{k} {v}' for k, v in tr['sources'].items())} records), "
            f"interpolation alpha {tr['alpha']:g}.")


def quickstart_markdown(out: dict, fret_only: bool) -> str:
    """``quickstart_results.md``: what ran, the headline column, the wall time, and the table."""
    fret, total, stage_seconds = out["fret"], out["seconds"], out["stage_seconds"]
    md = ["# gecko-jax quickstart results", "",
          f"FRet: {fret['records']} records from {fret['seeds']} SciFact corpus passages ({fret['llm']}, "
          f"{fret['neighbours']} neighbours in a pool of {fret['pool']}); positive != seed: "
          f"{100 * fret['positive_differs_from_seed']:.1f}%; parse success {fret['parse_success_rate']:.2f}.",
          f"Training: {training_line(out['train'], fret_only)}",
          f"Headline column: **{out['headline']}** (the format the model was trained in; chosen before evaluation).",
          f"Wall time {total:.0f} s (" + ", ".join(f"{k} {v:.0f}" for k, v in stage_seconds.items())
          + f") on {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}.", "",
          out["table_md"], ""]
    return "\n".join(md)


def write_reports(out: dict, md: str, folders) -> None:
    """``quickstart_results.json`` and ``.md`` into each folder (the workdir and the exported model's)."""
    for folder in folders:
        write_text(pathlib.Path(folder) / "quickstart_results.json", json.dumps(out, indent=1, default=str) + "\n")
        write_text(pathlib.Path(folder) / "quickstart_results.md", md)
