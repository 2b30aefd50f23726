"""The quickstart job: FRet -> base evaluation -> the Gecko recipe -> evaluation of the fine-tuned model, each stage
resumable (see :mod:`gecko_jax.quickstart` for the stages)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import time

from gecko_jax.embedder import Embedder
from gecko_jax.recipes.data import make_tiny_data, resolve_data_dir
from gecko_jax.recipes.evaluation import EvalResult, evaluate, reference_key
from gecko_jax.recipes.fret_stage import FRetOutput, fret
from gecko_jax import eta, runtime
from gecko_jax.recipes.store import StageStore
from gecko_jax.recipes.options import (BASE_MODEL, QUICKSTART_PREFINETUNE_STEPS, QUICKSTART_STEPS, QuickstartOptions,
                                       resolve_options)
from gecko_jax.recipes.reports import build_table, quickstart_markdown, write_reports
from gecko_jax.recipes.runlog import log
from gecko_jax.recipes.training import Finetuned, finetune


def run_quickstart(workdir: str | os.PathLike = "runs/quickstart", **kwargs) -> dict:
    """Run the quickstart in ``workdir`` (resuming whatever it holds) and return the results.

    The stages hand typed values on: :func:`fret` -> :class:`FRetOutput`, :func:`finetune` -> :class:`Finetuned`
    (the model in memory, also exported), :func:`evaluate` -> :class:`EvalResult`; they become the JSON below only
    at the end.

    Args:
      workdir: output folder: ``fret/`` (FRet stage files, LLM cache, ``fret.jsonl``), ``recipe/`` (the recipe's
        sources, stages and ``export/`` = the fine-tuned model; ``train-<key>/`` with ``fret_only``), ``eval/``,
        ``quickstart_results.json`` + ``.md``.
      **kwargs: fields of :class:`QuickstartOptions`.

    Returns:
      ``{"options", "fret", "train", "eval", "table_md", "headline", "stage_seconds", "seconds", "model_dir"}``.
    """
    t_start = time.perf_counter()
    opts = resolve_options(**kwargs)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_root = resolve_data_dir(opts.data_dir)
    base = Embedder.from_pretrained(BASE_MODEL)
    box = {"machine": runtime.machine_line()}
    if not opts.tiny:
        box.update(peak_gflops=runtime.matmul_peak_gflops(seconds=0.5), llm_tokens_per_s=_llm_rate(opts))
        log(estimate_line(opts, workdir, base, data_root, peak=box["peak_gflops"], llm_rate=box["llm_tokens_per_s"]))
    stages = _Stages(box.get("peak_gflops"))
    log(f"1-2/5 FRet data generation  (workdir {workdir})")
    with stages("fret"):
        records = _fret(opts, workdir, data_root, base)
    s = records.summary
    log(f"FRet: {s.records}/{s.seeds} records, parse success {s.parse_success_rate:.2f}, "
        f"positive != seed for {100 * s.positive_differs_from_seed:.1f}% (paper: ~15%), "
        f"{stages.seconds['fret']:.0f} s")

    log("3/5 evaluation of the base model (raw text)")
    eval_root = make_tiny_data(data_root, workdir / "tiny_data") if opts.tiny else data_root
    with stages("eval_base"):
        columns = {"base (raw text)": evaluate(base, workdir / "eval" / "base-none", tasks=list(opts.eval_tasks),
                                               dims=opts.dims, prompts=None, data_root=eval_root,
                                               reference=not opts.recompute_base)}

    with stages("train"):
        tuned = finetune(opts, workdir, records, data_root, max_length=base.max_length)

    log("5/5 evaluation of the fine-tuned model")
    with stages("eval_tuned"):
        columns.update(_evaluate_tuned(opts, tuned, eval_root))
    return _finish(opts, workdir, records, tuned, columns, stages, time.perf_counter() - t_start, box)


class _Stages:
    """Wall seconds and useful model FLOPs (:func:`gecko_jax.runtime.flops_counted`) of each stage, with one log
    line per stage that computed something: its achieved rate and share of the measured ``peak``."""

    def __init__(self, peak: float | None):
        self.peak, self.seconds, self.flops = peak, {}, {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        before, t0 = runtime.flops_counted(), time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0
        self.flops[name] = runtime.flops_counted(since=before)
        total = sum(self.flops[name].values())
        if total >= 5e10:  # FRet's few query embeddings beside its LLM calls say nothing about the encoder's rate
            rate = total / 1e9 / max(self.seconds[name], 1e-9)
            share = f", {100 * rate / self.peak:.0f}% of the measured peak" if self.peak else ""
            kinds = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in sorted(self.flops[name].items()))
            log(f"{name}: {self.seconds[name]:.0f} s, {kinds} TFLOP useful ({rate:.0f} GFLOP/s over the stage's "
                f"wall time{share})")


def estimate_line(opts: QuickstartOptions, workdir: pathlib.Path, base=None, data_root=None, *,
                  peak: float | None = None, llm_rate: float | None = None) -> str:
    """The up-front time estimate (:mod:`gecko_jax.eta`) from a half-second measurement of this box's matmul peak
    and, with the embedded LLM, a ~1 s measurement of its prompt rate (or the ``peak`` and ``llm_rate`` given).
    The base evaluation counts unless it is finished in ``workdir`` or ``base`` (the base :class:`Embedder`)
    matches a shipped reference result."""
    if peak is None:
        peak, llm_rate = runtime.matmul_peak_gflops(seconds=0.5), _llm_rate(opts)
    pft = 0 if opts.fret_only else (opts.prefinetune_steps if opts.prefinetune_steps is not None
                                    else QUICKSTART_PREFINETUNE_STEPS)
    est = eta.estimate_quickstart(peak, passages=opts.passages, neighbours=opts.neighbours, prefinetune_steps=pft,
                                  steps=opts.steps if opts.steps is not None else QUICKSTART_STEPS,
                                  eval_base=not (StageStore(workdir / "eval").any_done("base-none")
                                                 or _base_reference(opts, base, data_root)),
                                  eval_tuned=len(opts.eval_prompts), llm_rate=llm_rate,
                                  embed_pool=not _pool_reference(opts, base, data_root))
    return eta.describe(est, peak, llm_rate)


def _base_reference(opts: QuickstartOptions, base, data_root) -> bool:
    """Whether the base evaluation will come from :mod:`gecko_jax.recipes.reference` (same key as :func:`evaluate`
    computes)."""
    return _shipped(opts, base, data_root, lambda: reference_key(base, tasks=list(opts.eval_tasks), dims=opts.dims,
                                                                 prompts=None, data_root=data_root))


def _pool_reference(opts: QuickstartOptions, base, data_root) -> bool:
    """Whether FRet's retrieval-pool vectors will come from the shipped reference (:func:`shipped_doc_fn`)."""
    from gecko_jax.recipes.fret_stage import fret_inputs, pool_passages, pool_vectors_key

    def key():
        corpus, pool_ids, _ = fret_inputs(opts, data_root)
        return pool_vectors_key(base, pool_passages(opts, corpus, pool_ids))[1]

    return _shipped(opts, base, data_root, key)


def _shipped(opts: QuickstartOptions, base, data_root, make_key) -> bool:
    """Whether a shipped reference file holds ``make_key()`` (never with ``--recompute-base`` or ``--tiny``, nor
    when the key cannot be made: unreadable data)."""
    from gecko_jax.recipes import reference

    if base is None or data_root is None or opts.recompute_base or opts.tiny:
        return False
    try:
        key = make_key()
    except (OSError, ValueError):
        return False
    return key is not None and reference.path_of(key).is_file()


def _llm_rate(opts: QuickstartOptions) -> float | None:
    """The embedded LLM's prompt rate (tokens/s), or None for an HTTP LLM or when llama.cpp cannot load (the FRet
    stage then says why; the estimate falls back to the matmul peak)."""
    if opts.llm != "local":
        return None
    try:
        from data_gen.llm import llama_cpp_prompt_rate

        return llama_cpp_prompt_rate(opts.model_path, n_threads=opts.threads)
    except (ImportError, OSError, ValueError, RuntimeError):
        return None


def _fret(opts: QuickstartOptions, workdir: pathlib.Path, data_root, base) -> FRetOutput:
    records = fret(opts, workdir, data_root, base)
    if records.records < 2:
        raise RuntimeError(f"FRet produced {records.records} usable records of {records.summary.seeds} seeds "
                           f"(need >= 2); see {records.path}.failures.jsonl")
    return records


def _evaluate_tuned(opts: QuickstartOptions, tuned: Finetuned, eval_root) -> dict[str, EvalResult]:
    """One column per prompt mode of the fine-tuned model (in memory; results kept beside its export)."""
    columns = {}
    for mode in opts.eval_prompts:
        name = "fine-tuned (Gecko prompts)" if mode == "gecko" else "fine-tuned (raw text)"
        columns[name] = evaluate(tuned.embedder, tuned.export_dir.parent / "eval" / f"tuned-{mode}",
                                 tasks=list(opts.eval_tasks), dims=opts.dims,
                                 prompts="gecko" if mode == "gecko" else None, data_root=eval_root)
    return columns


def _finish(opts: QuickstartOptions, workdir: pathlib.Path, records: FRetOutput, tuned: Finetuned,
            columns: dict[str, EvalResult], stages: "_Stages", total: float, box: dict) -> dict:
    """The results dict (the typed stage outputs as JSON), the table and the reports (in the workdir and beside
    the exported model)."""
    headline = "fine-tuned (Gecko prompts)" if "gecko" in opts.eval_prompts else "fine-tuned (raw text)"
    dims_labels = list(next(iter(columns.values())).dims)
    out = {
        "options": dataclasses.asdict(opts), "fret": records.to_dict(), "train": tuned.to_dict(),
        "headline": headline, "eval": {name: res.to_dict() for name, res in columns.items()},
        "table_md": build_table(columns, list(opts.eval_tasks), dims_labels, headline),
        "stage_seconds": stages.seconds, "seconds": total, "model_dir": str(tuned.export_dir),
        "stage_flops": stages.flops, "box": box,
        "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    md = quickstart_markdown(out, opts.fret_only)
    write_reports(out, md, (workdir, tuned.export_dir))
    print(md, flush=True)
    log(f"done in {total:.0f} s; model: {tuned.export_dir}; results: {workdir / 'quickstart_results.md'}")
    return out
