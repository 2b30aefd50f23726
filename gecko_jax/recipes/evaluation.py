"""Stages 3 and 5 of the quickstart: ``run_suite`` on a model, its results saved beside it and reused when the
model, data, tasks and widths are the same."""
from __future__ import annotations

import json
import pathlib
from typing import Sequence

from gecko_jax.eval import model_fingerprint, run_suite
from gecko_jax.fileio import write_text
from gecko_jax.recipes.runlog import log


def evaluate(embedder, out_dir: pathlib.Path, *, tasks: Sequence[str], dims, prompts, data_root) -> dict:
    """``run_suite`` once per (model, prompt mode); a saved ``results.json`` for the same tasks/dims is reused."""
    saved = out_dir / "results.json"
    want = {"tasks": sorted(tasks), "dims": [str(d) for d in dims], "task_prompts": prompts,
            "data": str(data_root), "max_length": embedder.max_length, "model": model_fingerprint(embedder)}
    if saved.is_file():
        res = json.loads(saved.read_text())
        if res.get("quickstart_key") == want:
            log(f"eval: reusing {saved}")
            return res
    res = run_suite(embedder, "small", dims=list(dims), tasks=list(tasks), task_prompts=prompts, out_dir=None,
                    data_dir=data_root, verbose=True)
    res["quickstart_key"] = want
    write_text(saved, json.dumps(res, indent=1, default=str))
    return res
