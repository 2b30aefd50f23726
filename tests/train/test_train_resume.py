"""Exact resume after a real SIGKILL between checkpoints (metrics.jsonl rewound: no step twice), clean stop + resume
after SIGTERM (through the CLI), one compile per bucket."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402

HERE = pathlib.Path(__file__).parent
REPO = HERE.parents[1]

KILL_SCRIPT = r"""
import pathlib, sys, time
import jax
from tests.train import train_helpers as th
from gecko_jax import train

config = train.from_dict(th.contrastive_raw(pathlib.Path({data!r}), steps=10, eval_every=5,
                                            checkpoint={{"every_steps": 3, "keep": 2, "export": False}}))

def hang_at_five(params):
    pathlib.Path({marker!r}).write_text("5")
    time.sleep(600)  # the parent SIGKILLs us here: checkpoint 3 saved, steps 4 (and 5) logged after it
    return {{}}

train.train_and_evaluate(config, {workdir!r}, eval_fn=hang_at_five)
raise SystemExit("not killed")
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(th.subprocess_env())
    return env


def _wait_for(predicate, proc, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"subprocess exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _committed(workdir: pathlib.Path, step: int) -> bool:
    d = workdir / "checkpoints" / str(step)
    return d.is_dir() and (d / "_CHECKPOINT_METADATA").exists()


def test_sigkill_then_resume_equals_straight_run(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    marker = tmp_path / "at_step_5"
    code = KILL_SCRIPT.format(here=str(HERE), data=str(data), marker=str(marker), workdir=str(killed))
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), cwd=str(REPO), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: marker.exists() and _committed(killed, 3), proc, 400, "step 3's checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    logged = max(th.losses_by_step(killed))
    assert logged >= 4  # steps after the newest checkpoint (3) were logged before the kill

    config = train.from_dict(th.contrastive_raw(data, steps=10, checkpoint={"every_steps": 3, "keep": 2,
                                                                            "export": False}))
    resumed = train.train_and_evaluate(config, killed)
    assert resumed.origin == "workdir" and resumed.steps_run == 7
    assert int(resumed.state.step) == 10 and int(resumed.state.data_position) == 10
    ref = train.train_and_evaluate(config, straight)
    assert ref.origin == "random" and ref.steps_run == 10
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(ref.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
    # metrics.jsonl was rewound to the checkpoint: every step once, in order, as in the uninterrupted run
    steps = [m["step"] for m in th.read_metrics(killed) if "loss" in m]
    assert steps == [m["step"] for m in th.read_metrics(straight) if "loss" in m] == list(range(1, 11))
    # the data order continued: steps 4..10 saw the same batches (same losses) as the uninterrupted run
    got, want = th.losses_by_step(killed), th.losses_by_step(straight)
    for s in range(1, 11):
        assert abs(got[s] - want[s]) <= 1e-6, (s, got[s], want[s])
    assert len(set(round(v, 6) for v in want.values())) > 5  # different batches give different losses
    # keep-N: only the newest 2 checkpoints remain
    assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit()) == [9, 10]


def test_sigterm_saves_and_cli_resumes(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    raw = th.contrastive_raw(data, steps=100000, checkpoint={"every_steps": 1000, "keep": 2, "export": True})
    cfg = th.write_config(tmp_path / "config.json", raw)
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "gecko_jax.cli", "train", "--config", str(cfg), "--workdir", str(workdir)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=str(REPO), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: max(th.losses_by_step(workdir), default=0) >= 2, proc, 400, "two logged steps")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM: saved checkpoint" in out
    saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and saved[0] >= 2  # saved at the step it stopped, not at a multiple of every_steps
    n = saved[0]

    from gecko_jax.cli import main

    rc = main(["train", "--config", str(cfg), "--workdir", str(workdir), "--set", f"steps={n + 2}"])
    assert rc == 0
    steps = th.losses_by_step(workdir)
    assert max(steps) == n + 2 and n + 1 in steps
    assert (workdir / "export" / "model.safetensors").exists()  # final encoder exported as an Embedder folder
    emb = __import__("gecko_jax").Embedder.from_pretrained(workdir / "export")
    assert emb.encode(["hello"]).shape == (1, 32)


def test_two_steps_on_different_data_compile_once(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    config = train.from_dict(th.contrastive_raw(data))
    task = train.build_task(config)
    mesh = train.make_mesh(1)
    state = train.create_state(config, mesh, task)
    step = train.make_step(task.step_loss(), config, mesh)
    shapes = lambda b: jax.tree.map(np.shape, b)  # noqa: E731
    batches = [task.stream.batch(i) for i in range(12)]
    same = [b for b in batches if shapes(b) == shapes(batches[0])]
    other = [b for b in batches if shapes(b) != shapes(batches[0])]
    assert len(same) >= 2 and other, "the tiny corpus should give two buckets"
    b0, b1 = same[:2]
    assert not np.array_equal(b0["query"]["input_ids"], b1["query"]["input_ids"])
    state, m0 = step(state, train.global_batch(b0, mesh))
    state, m1 = step(state, train.global_batch(b1, mesh))
    assert float(m0["loss"]) != float(m1["loss"])
    assert step.trace_count == 1
    state, _ = step(state, train.global_batch(other[0], mesh))  # a new bucket: exactly one more compile
    assert step.trace_count == 2
