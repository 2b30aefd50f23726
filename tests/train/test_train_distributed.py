"""Multi-process training: N CPU processes on 127.0.0.1 joined by ``jax.distributed`` (gloo collectives), each
reading and tokenising only its rows, equal the one-process run, also across a SIGKILL and a resume.

The in-process tests simulate the processes' input (each one's rows, the width agreement) exactly; the subprocess
tests run real processes through the CLI, with a hard timeout and one retry when the failure is the XLA:CPU
collective deadlock (DESIGN.md), like ``run_multidevice``.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

HERE = pathlib.Path(__file__).parent
import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles, root_conftest  # noqa: E402,F401  (fixtures)

from gecko_jax import train  # noqa: E402
from gecko_jax.train.distributed import local_batch, token_widths  # noqa: E402

REPO = HERE.parents[1]


# ------------------------------------------------------------------------------------------ simulated processes
class _Replay:
    """A stream that hands each simulated process the rows it read before."""

    def __init__(self, raw):
        self.raw = raw

    def batch(self, b, *, process_index, process_count):
        return self.raw[process_index]


def _simulated(stream, b: int, processes: int, pad_id: int = 0) -> tuple[list[dict], list[dict]]:
    """Every process's batch ``b`` as ``local_batch`` gives it (the all-gather answered from all of them), and the
    rows each read before the agreement."""
    raw = [stream.batch(b, process_index=p, process_count=processes) for p in range(processes)]
    table = np.stack([token_widths(r) for r in raw])
    parts = [local_batch(_Replay(raw), b, pad_id=pad_id, gather=lambda mine: table, process_index=p,
                         process_count=processes) for p in range(processes)]
    return parts, raw


def _concat(parts: list[dict]) -> dict:
    return {k: _concat([p[k] for p in parts]) if isinstance(parts[0][k], dict) else np.concatenate([p[k] for p in parts])
            for k in parts[0]}


def _counting(task) -> list[int]:
    """Texts per tokenizer call, for every source of ``task``."""
    counts = []
    for src in task.stream.pairs.sources:
        inner = src.tokenize

        def tokenize(texts, inner=inner):
            counts.append(len(texts))
            return inner(texts)

        src.tokenize = tokenize
    return counts


@pytest.mark.parametrize("processes", [2, 4])
def test_process_batches_assemble_the_one_process_batch(tmp_path, processes):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 48, negatives=2)
    # one long query: the process holding it needs the wider bucket, the others agree to it
    lines = data.read_text().splitlines()
    rec = json.loads(lines[7])
    rec["query"] = "a long question " + " ".join(f"w{i}" for i in range(30))
    lines[7] = json.dumps(rec)
    data.write_text("\n".join(lines) + "\n")
    config = train.from_dict(th.contrastive_raw(data, data={"batch_size": 8, "hard_negatives": 2}))
    task = train.build_task(config)
    counts = _counting(task)
    disagreed = 0
    for b in range(6):
        want = task.stream.batch(b)
        del counts[:]
        parts, raw = _simulated(task.stream, b, processes, task.tokenizer.pad_token_id)
        # each process tokenised only its own rows: queries, positives, 2 negatives each
        assert sorted(counts) == sorted([8 // processes] * 2 * processes + [8 // processes * 2] * processes)
        widths = {r["query"]["input_ids"].shape[1] for r in raw}
        disagreed += len(widths) > 1
        got = _concat(parts)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, w)  # the very arrays one process builds
    assert disagreed, "no batch had processes with different buckets: the agreement was not exercised"


def _texts_of(packed: dict) -> dict[int, tuple]:
    """segment -> (token ids, positions) of every text in a packed batch."""
    out = {}
    seg, ids, pos = packed["segment_ids"], packed["input_ids"], packed["position_ids"]
    for s in np.unique(seg):
        where = seg == s
        out[int(s)] = (tuple(ids[where].tolist()), tuple(pos[where].tolist()))
    return out


def test_packed_process_batches_hold_the_same_texts_in_the_same_order(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 48, negatives=2)
    config = train.from_dict(th.contrastive_raw(data, data={"batch_size": 8, "hard_negatives": 2,
                                                             "pack_length": 32}))
    task = train.build_task(config)
    rows_differ = 0
    for b in range(4):
        want = task.stream.batch(b)["packed"]
        n = len(want["lengths"])
        parts, raw = _simulated(task.stream, b, 2, task.tokenizer.pad_token_id)
        rows_differ += len({r["packed"]["input_ids"].shape[0] for r in raw}) > 1
        assert len({p["packed"]["input_ids"].shape for p in parts}) == 1  # all processes agree on the row count
        got = _concat(parts)["packed"]
        assert len(got["lengths"]) == n == 8 * 4
        texts, ref = _texts_of(got), _texts_of(want)
        padding = texts.pop(n, None), ref.pop(n, None)
        assert texts == ref  # text t of the global order has the same tokens (positions restart per text)
        assert padding[0] is not None and set(padding[0][0]) == {task.tokenizer.pad_token_id}
        assert got["packed_ids"][got["segment_ids"] == n].max() == 0
    del rows_differ  # (with this corpus the two processes usually need the same number of rows)


# ------------------------------------------------------------------------------------------ real processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(th.subprocess_env())
    if devices > 1:
        # JAX writes its compilation cache from process 0 only, so process 0 would load its steps from the cache
        # while the others compile; with 4 processes x 2 devices that skew hung the first step (XLA:CPU collectives
        # over gloo) in 4 tries out of 4 on the 2-core machine; every process compiles instead.
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


class Deadlock(Exception):
    """A process hung or reported a collective rendezvous timeout (the known XLA:CPU issue, DESIGN.md)."""


def _start(argvs: list[list[str]], logs: pathlib.Path, tag: str, devices: int) -> list[subprocess.Popen]:
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, argv in enumerate(argvs):
        out = open(logs / f"{tag}.{i}.out", "w")
        err = open(logs / f"{tag}.{i}.err", "w")
        procs.append(subprocess.Popen(argv, env=_env(devices), cwd=str(REPO), stdout=out, stderr=err, text=True))
    return procs


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=60)


def _read(logs: pathlib.Path, tag: str, i: int) -> str:
    return (logs / f"{tag}.{i}.err").read_text(errors="replace") + (logs / f"{tag}.{i}.out").read_text(errors="replace")


def _wait(procs, logs, tag, markers, until=None, timeout=300.0) -> None:
    """Until ``until()`` holds (then return with the processes running) or all exit 0; a failure raises Deadlock
    when it is the known rendezvous timeout (or a hang), else fails the test with the logs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if until is not None and until():
            return
        codes = [p.poll() for p in procs]
        if until is None and all(c == 0 for c in codes):
            return
        if any(c not in (None, 0) for c in codes):
            _stop(procs)
            text = "\n".join(_read(logs, tag, i)[-3000:] for i in range(len(procs)))
            if any(m in text for m in markers):
                raise Deadlock(text[-600:])
            pytest.fail(f"{tag}: a process failed (exit codes {codes}):\n{text}")
        time.sleep(0.3)
    _stop(procs)
    raise Deadlock(f"{tag}: no result after {timeout}s")


PHASE1 = r"""
import json, pathlib, sys, time
pid = int(sys.argv[1])
from gecko_jax.train.distributed import initialize
initialize("127.0.0.1:{port}", {n}, pid)
import jax
from tests.train import train_helpers as th
from gecko_jax import train
config = train.load_config({cfg!r})
task = train.build_task(config)
counts = []
for src in task.stream.pairs.sources:
    def tokenize(texts, inner=src.tokenize):
        counts.append(len(texts))
        return inner(texts)
    src.tokenize = tokenize

def hang_at_five(params):  # the parent SIGKILLs every process here: checkpoint 3 saved, step 4 logged after it
    leaves = jax.tree.leaves(params)
    pathlib.Path({marker!r} + str(pid)).write_text(json.dumps({{
        "texts_per_call": counts, "devices": jax.device_count(), "processes": jax.process_count(),
        "split_over_processes": sum(not x.is_fully_addressable and not x.is_fully_replicated for x in leaves)}}))
    time.sleep(600)
    return {{}}

train.train_and_evaluate(config, {workdir!r}, task=task, eval_fn=hang_at_five)
raise SystemExit("not killed")
"""


def _committed(workdir: pathlib.Path, step: int) -> bool:
    d = workdir / "checkpoints" / str(step)
    return d.is_dir() and (d / "_CHECKPOINT_METADATA").exists()


def _kill_and_resume(tmp: pathlib.Path, raw: dict, processes: int, devices: int, markers) -> dict:
    """Phase 1: ``processes`` processes train to step 5 (checkpoint at 3) and are SIGKILLed. Phase 2: the same
    number of processes resume through ``gecko-jax train --distributed`` to the end."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = th.write_config(tmp / "config.json", raw)
    workdir, logs, marker = tmp / "run", tmp / "logs", str(tmp / "at_step_5.")
    code = PHASE1.format(here=str(HERE), port=_free_port(), n=processes, cfg=str(cfg), marker=marker,
                         workdir=str(workdir))
    procs = _start([[sys.executable, "-c", code, str(i)] for i in range(processes)], logs, "phase1", devices)
    done = [pathlib.Path(marker + str(i)) for i in range(processes)]
    t0 = time.time()
    try:
        _wait(procs, logs, "phase1", markers, until=lambda: all(m.exists() for m in done) and _committed(workdir, 3))
    finally:
        _stop(procs)
    phase1_s = time.time() - t0
    info = [json.loads(m.read_text()) for m in done]
    logged = max(th.losses_by_step(workdir))
    port = _free_port()
    argvs = [[sys.executable, "-m", "gecko_jax.cli", "train", "--config", str(cfg), "--workdir", str(workdir),
              "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
              "--process-id", str(i)] for i in range(processes)]
    t0 = time.time()
    procs = _start(argvs, logs, "phase2", devices)
    try:
        _wait(procs, logs, "phase2", markers)
    finally:
        _stop(procs)
    return {"info": info, "logged_before_kill": logged, "workdir": workdir, "phase1_s": phase1_s,
            "phase2_s": time.time() - t0, "out": _read(logs, "phase2", 0)}


def _scenario(tmp_path, root_conftest, raw, processes, devices):
    markers = root_conftest._RENDEZVOUS_MARKERS
    for attempt in range(2):
        try:
            return _kill_and_resume(tmp_path / f"try{attempt}", raw, processes, devices, markers)
        except Deadlock as e:
            if attempt == 0:
                root_conftest.MULTIDEVICE_RETRIES["count"] += 1
                sys.stderr.write(f"[multiprocess] retrying after suspected collective deadlock: {e}\n")
    pytest.skip("XLA:CPU collective deadlock twice in a row (known 2-core issue, DESIGN.md); not a code failure")


def _raw(path, **over) -> dict:
    """6 steps, checkpoints every 3; one length bucket, so each phase compiles one train step (in these
    multi-process runs only process 0 finds its compiles in the persistent cache)."""
    data_over = {"buckets": [32], **over.pop("data", {})}
    return th.contrastive_raw(path, steps=STEPS, eval_every=5, data=data_over,
                              checkpoint={"every_steps": 3, "keep": 2, "export": True}, **over)


STEPS = 6


# Packed rows: each process packs its own texts, so the rows differ from one process's packing and so would the
# dropout masks drawn over them; with dropout off the step is the same computation (texts embed as if alone).
VARIANTS = {
    "plain": {},
    "packed": {"data": {"pack_length": 32}, "model": {"dropout": 0.0}},
    "grad_cache": {"grad_cache_chunk": 4},
}


def _check_equal_to_one_process(tmp_path, raw, r, processes, devices):
    data_rows = raw["data"]["batch_size"]
    # phase 1 really ran in `processes` processes, each tokenising only its rows (query, positive, negative calls)
    for info in r["info"]:
        assert info["processes"] == processes and info["devices"] == processes * devices
        calls = info["texts_per_call"]
        assert calls and max(calls) <= 3 * data_rows // processes, calls
        assert bool(info["split_over_processes"]) == ("sharding" in raw), info  # fsdp groups span processes
    assert r["logged_before_kill"] >= 4  # a step after checkpoint 3 was logged by the killed run
    assert f"[train] done: step {STEPS} from workdir" in r["out"]
    config = train.from_dict({k: v for k, v in raw.items() if k != "sharding"})
    straight = train.train_and_evaluate(config, tmp_path / "straight")  # one process, one device, replicated
    task = train.build_task(config)
    template = train.create_state(config, train.make_mesh(1), task)
    got = train.restore_params(r["workdir"] / "checkpoints", template.params, step=STEPS)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(straight.state.params)))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(template.params)))
    print(f"[multiprocess] {processes} processes x {devices} devices: max |param diff| vs 1 process {diff:.2e} "
          f"(moved {moved:.2e}); phase 1 {r['phase1_s']:.0f}s, phase 2 {r['phase2_s']:.0f}s")
    assert diff <= 1e-5 and moved > 1e-4
    # every step once in metrics.jsonl after the rewind, with the one-process losses
    mine, ref = th.losses_by_step(r["workdir"]), th.losses_by_step(tmp_path / "straight")
    assert [m["step"] for m in th.read_metrics(r["workdir"]) if "loss" in m] == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):
        assert abs(mine[s] - ref[s]) <= 1e-5 * max(1.0, abs(ref[s])), (s, mine[s], ref[s])
    # the export (parameters gathered on every process, written by process 0) holds the same encoder
    from gecko_jax import Embedder

    emb = Embedder.from_pretrained(r["workdir"] / "export")
    assert emb.encode(["hello"]).shape == (1, 32)


@pytest.mark.multidevice
@pytest.mark.parametrize("variant", [
    "plain",
    pytest.param("packed", marks=pytest.mark.slow),
    pytest.param("grad_cache", marks=pytest.mark.slow),
])
def test_two_processes_killed_and_resumed_equal_one_process(tmp_path, root_conftest, variant):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    raw = _raw(data, **VARIANTS[variant])
    r = _scenario(tmp_path, root_conftest, raw, processes=2, devices=1)
    _check_equal_to_one_process(tmp_path, raw, r, 2, 1)


@pytest.mark.multidevice
@pytest.mark.slow
def test_four_processes_of_two_devices_killed_and_resumed_equal_one_process(tmp_path, root_conftest):
    """4 processes x 2 local devices (8 in all), hard and same-tower negatives across all of them, packed rows, and
    parameters + Adam moments split over fsdp=4 (each fsdp group spans two processes: each process saves and
    restores only its shards, and the export gathers them)."""
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    raw = _raw(data, data={"batch_size": 16, "pack_length": 32}, model={"dropout": 0.0},
               sharding={"fsdp": 4, "min_shard_size": 0})
    r = _scenario(tmp_path, root_conftest, raw, processes=4, devices=2)
    _check_equal_to_one_process(tmp_path, raw, r, 4, 2)


def test_cli_rejects_coordinator_without_distributed(tmp_path, capsys):
    from gecko_jax.cli import main

    cfg = th.write_config(tmp_path / "c.json", th.contrastive_raw(th.write_pairs(tmp_path / "p.jsonl", 8)))
    rc = main(["train", "--config", str(cfg), "--workdir", str(tmp_path / "w"), "--num-processes", "2"])
    assert rc == 2 and "need --distributed" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
