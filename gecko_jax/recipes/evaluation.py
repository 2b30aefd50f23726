"""Stages 3 and 5 of the quickstart: ``run_suite`` on a model, its results kept in the stage store and reused when
the model, data, tasks and widths are the same."""
from __future__ import annotations

import pathlib
from typing import Sequence

from gecko_jax.eval import model_fingerprint, run_suite
from gecko_jax.recipes.store import StageStore


def evaluate(embedder, out_dir: pathlib.Path, *, tasks: Sequence[str], dims, prompts, data_root) -> dict:
    """``run_suite`` once per (model, prompt mode), in a :class:`StageStore` folder beside ``out_dir``
    (``<out_dir>-<key>``) keyed by the model's fingerprint, the data, tasks, widths, prompts and token cap."""
    store = StageStore(pathlib.Path(out_dir).parent)
    key = {"tasks": sorted(tasks), "dims": [str(d) for d in dims], "task_prompts": prompts,
           "data": str(data_root), "max_length": embedder.max_length, "model": model_fingerprint(embedder)}
    res = store.done(pathlib.Path(out_dir).name, key)
    if res is not None:
        return res
    res = run_suite(embedder, "small", dims=list(dims), tasks=list(tasks), task_prompts=prompts, out_dir=None,
                    data_dir=data_root, verbose=True)
    return store.finish(pathlib.Path(out_dir).name, key, res)
