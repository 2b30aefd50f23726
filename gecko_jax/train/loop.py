"""The training loop shared by every trainer: resume, step, log, evaluate, checkpoint, stop cleanly.

``train_and_evaluate(config, workdir)`` is the whole program; the CLI only parses arguments and calls it.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import signal
import time
from typing import Any, Callable

import jax
import numpy as np

from gecko_jax import runtime
from gecko_jax.fileio import as_path, is_remote, write_bytes, write_json
from gecko_jax.train.checkpoint import Checkpointer, restore_params
from gecko_jax.train.config import TrainConfig
from gecko_jax.train.metrics import MetricsWriter, rewind_metrics
from gecko_jax.train.distributed import local_batch, to_host
from gecko_jax.train.state import TrainState, batch_devices, create_state, global_batch, make_step, mesh_from_config


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; training stopped and the newest checkpoint is the last good one."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState  # final state (on device)
    steps_run: int  # steps taken by this call
    origin: str  # where the starting state came from: "workdir", "init_checkpoint", "pretrained", "random"
    preempted: bool = False  # stopped early by SIGTERM (a checkpoint was written)
    last_metrics: dict = dataclasses.field(default_factory=dict)
    eval_metrics: dict = dataclasses.field(default_factory=dict)
    export_dir: str | None = None
    compilations: int = 0


def initial_state(config: TrainConfig, mesh, task, ckpt: Checkpointer) -> tuple[TrainState, str]:
    """The starting state. The resume order, first match wins:

    1. the workdir's latest checkpoint: a preempted or killed run continues exactly (params, optimizer, step,
       RNG, data position);
    2. an explicit init checkpoint (``checkpoint.init_checkpoint``): its params, with a fresh optimizer at step 0
       and data position 0 (e.g. fine-tuning from a pre-finetuned run);
    3. the pretrained encoder (``model.pretrained``);
    4. random initialisation.
    """
    if ckpt.latest_step() is not None:
        return ckpt.restore(create_state(config, mesh, task)), "workdir"
    if config.checkpoint.init_checkpoint:
        template = create_state(config, mesh, task)
        params = restore_params(config.checkpoint.init_checkpoint, template.params)
        return create_state(config, mesh, task, params=params), "init_checkpoint"
    pretrained = getattr(task, "pretrained", None)
    if pretrained is not None:
        return create_state(config, mesh, task, params=pretrained), "pretrained"
    return create_state(config, mesh, task), "random"


class _Preemption:
    """SIGTERM sets a flag; the loop saves a checkpoint after the current step and returns."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, preemption then kills the run (last checkpoint kept)
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _fetch(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path, *, task=None, mesh=None,
                       eval_fn: Callable[[Any], dict] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train ``config.steps`` steps in ``workdir``, resuming whatever is there.

    Args:
      config: validated run config.
      workdir: output folder: ``checkpoints/``, ``metrics.jsonl``, ``tb/``, ``config.json``, ``export/``; a local
        path or a URI such as ``gs://bucket/run`` (through ``etils.epath``, as orbax reads and writes it).
      task: a trainer task (built from config when None; tests inject tiny models here).
      mesh: device mesh (``data x fsdp x model`` from ``config.num_devices`` and ``config.sharding`` when None).
      eval_fn: extra eval hook ``params -> dict of floats``, run every ``config.eval_every`` steps and at the end.
      stop_after: stop after this many steps of this call (tests; the checkpoint at that step is forced).

    Returns:
      A :class:`TrainResult`.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (nothing is saved after the last finite step).
    """
    workdir = as_path(workdir)
    mesh = mesh if mesh is not None else mesh_from_config(config)
    config.check_devices(batch_devices(mesh), jax.process_count())
    if task is None:
        from gecko_jax.train.tasks import build_task

        task = build_task(config)  # reads and validates all data before anything is written
    lead = jax.process_index() == 0
    if lead:
        write_json(workdir / "config.json", config.to_dict())  # atomic; also fails early on an unwritable workdir
    ckpt = Checkpointer(workdir / "checkpoints", every_steps=config.checkpoint.every_steps,
                        keep=config.checkpoint.keep)
    state, origin = initial_state(config, mesh, task, ckpt)
    step_fn = make_step(task.step_loss(), config, mesh)
    start, pos = int(state.step), int(state.data_position)
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    # Records after the restored step were logged by a run that died; those steps are about to be taken again (all
    # of them when no checkpoint was restored). A finished run rerun evaluates again, so its final eval goes too.
    finished = start >= config.steps
    if lead:
        rewind_metrics(workdir / "metrics.jsonl", start, keep_evals_at_step=0 < start < config.steps)
    writer = MetricsWriter(workdir, enabled=lead, restart_step=start if finished or start == 0 else start + 1)
    result = TrainResult(state=state, steps_run=0, origin=origin)
    try:
        if start == 0:
            n_neg = task.negatives_per_query()
            if n_neg is not None:
                writer.write(0, {"negatives_per_query": n_neg})
                if lead:
                    print(f"[train] negatives per query: {n_neg} (batch {config.data.batch_size})", flush=True)
        state, result = _run(config, task, mesh, ckpt, writer, state, step_fn, start, end, pos, result, eval_fn)
    finally:
        ckpt.close()
        writer.close()
    if not result.preempted and int(state.step) >= config.steps:
        result.eval_metrics = _evaluate(task, state, eval_fn)
        if result.eval_metrics:
            writer = MetricsWriter(workdir, enabled=lead)
            writer.write(int(state.step), result.eval_metrics)
            writer.close()
        if config.checkpoint.export and hasattr(task, "export"):
            params = to_host(state.params)  # all processes: sharded parameters are gathered
            if lead:
                result.export_dir = _export(task, params, workdir / "export")
    result.compilations = step_fn.trace_count
    return result


def _export(task, params, target) -> str | None:
    """``task.export`` into ``target``; a remote target gets a local export uploaded file by file (each object
    whole; ``config.json`` last, so a reader that sees it sees the weights)."""
    if not is_remote(target):
        return task.export(params, target)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gecko_export_") as tmp:
        local = task.export(params, pathlib.Path(tmp) / "export")
        if local is None:
            return None
        files = sorted((p for p in pathlib.Path(local).rglob("*") if p.is_file()),
                       key=lambda p: (p.name == "config.json", str(p)))
        for f in files:
            write_bytes(target / str(f.relative_to(local)), f.read_bytes())
    return str(target)


def _evaluate(task, state, eval_fn) -> dict:
    out = {}
    if hasattr(task, "evaluate"):
        out.update(task.evaluate(state.params))
    if eval_fn is not None:
        out.update(eval_fn(state.params))
    return out


class _PerSource:
    """Mean loss and batch count of each mixture source since the last record (``loss/<source>``,
    ``batches/<source>``); empty for single-source runs."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, source: str | None, values: dict) -> None:
        if source is not None:
            self.sums[source] = self.sums.get(source, 0.0) + values["loss"]
            self.counts[source] = self.counts.get(source, 0) + 1

    def flush(self) -> dict:
        out = {f"loss/{k}": self.sums[k] / self.counts[k] for k in sorted(self.sums)}
        out.update({f"batches/{k}": float(self.counts[k]) for k in sorted(self.counts)})
        self.sums, self.counts = {}, {}
        return out


def _stop_non_finite(ckpt, loss, step: int):
    """Raise :class:`NonFiniteLossError` naming the last good checkpoint (after the pending saves finished)."""
    ckpt.wait()
    last = ckpt.latest_step()
    where = f"step {last} in {ckpt.directory}" if last is not None else "none (no checkpoint was written)"
    raise NonFiniteLossError(
        f"loss is {loss} at step {step}: training stopped. Nothing after step {step - 1} was "
        f"saved; the last good checkpoint is {where}. Lower optimizer.learning_rate, check the data "
        "around this step, or set optimizer.clip_norm.")


def _run(config, task, mesh, ckpt, writer, state, step_fn, start, end, pos, result, eval_fn):
    from tqdm.auto import tqdm

    lead = jax.process_index() == 0
    pad_id = getattr(getattr(task, "tokenizer", None), "pad_token_id", 0)
    pbar = tqdm(total=config.steps, initial=start, disable=not (config.progress and lead), desc="train",
                dynamic_ncols=True)
    pending = None  # (step, metrics, source) of the last step, checked one step late so the device queue stays full
    t0, last_logged = time.perf_counter(), start
    per_source = _PerSource()  # mixture runs: loss per source over each logging interval

    def check(item):
        nonlocal t0, last_logged
        step, metrics, source = item
        values = _fetch(metrics)
        if not math.isfinite(values["loss"]):
            _stop_non_finite(ckpt, values["loss"], step)
        result.last_metrics = values
        per_source.add(source, values)
        if step % config.log_every == 0 or step == end:
            values = {**values, **per_source.flush()}
            now = time.perf_counter()
            steps_per_sec = (step - last_logged) / (now - t0) if now > t0 else 0.0
            values["steps_per_sec"] = steps_per_sec  # includes compile time in the first interval
            values["examples_per_sec"] = steps_per_sec * config.data.batch_size
            writer.write(step, values)
            pbar.set_postfix(loss=f"{values['loss']:.4f}", ex_s=f"{values['examples_per_sec']:.1f}")
            t0, last_logged = now, step

    # On CPU the "device" is the host's own cores: a step dispatched while the previous one runs gains nothing, but
    # XLA:CPU allocates its temp buffer at dispatch, so two steps' temps (4.4 GB each for a packed 10k-token MiniLM
    # step) would be alive at once and the heap would double (issue 21: max RSS 14.0 -> 5.4 GB, system time 22 -> 5 s
    # for 12 steps). So the next batch is prepared while the step runs, and dispatched when it has finished.
    serial = all(d.platform == "cpu" for d in mesh.devices.flat)
    step_flops = getattr(task, "step_flops", None)
    with _Preemption() as preemption:
        for s in range(start, end):
            source = task.stream.source_name(pos) if hasattr(task.stream, "source_name") else None
            local = local_batch(task.stream, pos, pad_id=pad_id)  # this process's rows, widths agreed
            if step_flops is not None and (flops := step_flops(local)):
                runtime.count_flops("train", flops)  # the process's tally (gecko_jax.runtime.flops_counted)
            if serial:
                jax.block_until_ready(state)
            state, metrics = step_fn(state, global_batch(local, mesh))
            pos += 1
            if pending is not None:
                check(pending)
            pending = (s + 1, metrics, source)
            pbar.update(1)
            stop = preemption.requested
            if (s + 1) % config.checkpoint.every_steps == 0 or s + 1 == end or stop:
                check(pending)  # never checkpoint a state that followed a non-finite loss
                pending = None
                ckpt.save(s + 1, state, force=True)
            if config.eval_every and (s + 1) % config.eval_every == 0 and s + 1 < config.steps:
                ev = _evaluate(task, state, eval_fn)
                if ev:
                    writer.write(s + 1, ev)
            result.steps_run += 1
            if stop:
                result.preempted = True
                if lead:
                    print(f"[train] SIGTERM: saved checkpoint at step {s + 1} in {ckpt.directory}; rerun to resume",
                          flush=True)
                break
        if pending is not None:
            check(pending)
    pbar.close()
    result.state = state
    return state, result
