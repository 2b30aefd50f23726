"""Stages 3 and 5 of the quickstart: ``run_suite`` on a model in memory, its results kept in the stage store and
reused when the model, data, tasks and widths are the same; :func:`evaluate` returns an :class:`EvalResult`."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Mapping, Sequence

from gecko_jax.eval import model_fingerprint, run_suite
from gecko_jax.recipes.store import StageStore


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """One model's scores.

    Attributes:
      tasks: ``{task: {dims label: result}}`` as :func:`gecko_jax.eval.run_suite` gives them (``main_score`` and
      the task's metrics). dims: the width labels in order (``"384 (full)"``, ``"128"``). task_prompts: ``"gecko"``
      or None (raw text). suite: the whole ``run_suite`` result (model fingerprint, cache, timings) for the JSON.
    """

    tasks: Mapping[str, Mapping[str, Mapping]]
    dims: tuple
    task_prompts: str | None
    suite: Mapping = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_suite(cls, res: Mapping) -> "EvalResult":
        return cls(tasks=res["tasks"], dims=tuple(res["dims"]), task_prompts=res["task_prompts"], suite=res)

    def score(self, task: str, label: str) -> float | None:
        """The main score of ``task`` at width ``label``, None where it was not measured."""
        r = self.tasks.get(task, {}).get(label)
        return None if r is None else float(r["main_score"])

    def to_dict(self) -> dict:
        """The JSON form in the quickstart's results: ``{"tasks", "task_prompts", "dims"}``."""
        return {"tasks": self.tasks, "task_prompts": self.task_prompts, "dims": list(self.dims)}


def evaluate(embedder, out_dir: pathlib.Path, *, tasks: Sequence[str], dims, prompts, data_root,
             reference: bool = True, record=None) -> EvalResult:
    """``run_suite`` once per (model, prompt mode), in a :class:`StageStore` folder beside ``out_dir``
    (``<out_dir>-<key>``) keyed by the model's fingerprint, the data, tasks, widths, prompts and token cap.

    ``reference``: take the result from :mod:`gecko_jax.recipes.reference` when a shipped file has the same
    content key (same weights, data bytes and settings: the base model's). ``record``: a folder to store the
    computed result in as a reference (the result is then always computed)."""
    from gecko_jax.recipes import reference as refs

    store = StageStore(pathlib.Path(out_dir).parent)
    fingerprint = model_fingerprint(embedder)
    key = {"tasks": sorted(tasks), "dims": [str(d) for d in dims], "task_prompts": prompts,
           "data": str(data_root), "max_length": embedder.max_length, "model": fingerprint}
    res = store.done(pathlib.Path(out_dir).name, key)
    if res is None:
        ref_key = None
        if reference or record is not None:
            ref_key = reference_key(embedder, tasks=tasks, dims=dims, prompts=prompts, data_root=data_root,
                                    fingerprint=fingerprint)
        res = refs.lookup(ref_key) if reference and record is None else None
        if res is not None:
            res = dict(res, reference=refs.path_of(ref_key).name)
        else:
            res = run_suite(embedder, "small", dims=list(dims), tasks=list(tasks), task_prompts=prompts,
                            out_dir=None, data_dir=data_root, verbose=True)
            if record is not None and ref_key is not None:
                refs.store(ref_key, {k: v for k, v in res.items() if k != "cache"}, directory=record)  # a local path
        res = store.finish(pathlib.Path(out_dir).name, key, res)
    return EvalResult.from_suite(res)


def reference_key(embedder, *, tasks: Sequence[str], dims, prompts, data_root, fingerprint: str | None = None):
    """The :mod:`gecko_jax.recipes.reference` key of this evaluation (None where none can be made by content)."""
    from gecko_jax.recipes import reference as refs

    return refs.eval_key(fingerprint or model_fingerprint(embedder), tasks=tasks, dims=dims, prompts=prompts,
                         max_length=embedder.max_length, data_root=data_root)
