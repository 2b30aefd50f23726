"""Faults and bad input in training: damaged checkpoints, metrics after a resume, config types, exit codes."""
from __future__ import annotations

import json
import pathlib
import shutil
import sys

import jax
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402
from gecko_jax.cli import main  # noqa: E402
from gecko_jax.errors import RestoreError  # noqa: E402
from gecko_jax.train.metrics import read_records, rewind_metrics  # noqa: E402

CKPT = {"every_steps": 2, "keep": 3, "export": False}


def _config(data, steps):
    return train.from_dict(th.contrastive_raw(data, steps=steps, checkpoint=CKPT))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An 8-step run stopped after 6 (checkpoints 2, 4, 6) to damage, and an uninterrupted 8-step run."""
    root = tmp_path_factory.mktemp("faults")
    data = th.write_pairs(root / "pairs.jsonl", 40)
    with th.fast_settings():
        train.train_and_evaluate(_config(data, 8), root / "six", stop_after=6)
        straight = train.train_and_evaluate(_config(data, 8), root / "straight")
    params = [np.asarray(x) for x in jax.tree.leaves(straight.state.params)]
    return data, root / "six", root / "straight", params


def _data_files(workdir: pathlib.Path, step: int) -> list[pathlib.Path]:
    files = [p for p in (workdir / "checkpoints" / str(step)).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no array data files in checkpoint {step}"
    return sorted(files, key=lambda p: p.stat().st_size)


def _damage(path: pathlib.Path, how: str) -> None:
    if how == "truncate":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_resume_falls_back_past_a_damaged_checkpoint(runs, tmp_path, capfd, how):
    data, six, straight, want = runs
    wd = tmp_path / "run"
    shutil.copytree(six, wd)
    _damage(_data_files(wd, 6)[-1], how)  # the largest data file of the newest checkpoint
    capfd.readouterr()

    res = train.train_and_evaluate(_config(data, 8), wd)
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"gecko-jax: skipped damaged checkpoint step 6 in {wd / 'checkpoints'} (")
    assert err[0].endswith(f"moved it to {wd / 'checkpoints_damaged' / '6'}")
    assert res.origin == "workdir" and res.steps_run == 4 and int(res.state.step) == 8
    # the fallback is an exact resume from step 4: the same params as the uninterrupted run
    for a, b in zip(jax.tree.leaves(res.state.params), want):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-6, rtol=0)
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [4, 6, 8]
    steps = [m["step"] for m in th.read_metrics(wd) if "loss" in m]
    assert steps == [m["step"] for m in th.read_metrics(straight) if "loss" in m] == list(range(1, 9))


def test_no_checkpoint_restores_exit_4_and_nothing_moved(runs, tmp_path, capfd):
    data, six, _, _ = runs
    wd = tmp_path / "run"
    shutil.copytree(six, wd)
    for step in (2, 4, 6):
        _damage(_data_files(wd, step)[-1], "truncate")
    before = sorted(p.relative_to(wd) for p in wd.rglob("*"))
    with pytest.raises(RestoreError, match=f"no checkpoint in {wd / 'checkpoints'} restores"):
        train.train_and_evaluate(_config(data, 8), wd)
    capfd.readouterr()

    cfg = th.write_config(tmp_path / "c.json", th.contrastive_raw(data, steps=8, checkpoint=CKPT))
    assert main(["train", "--config", str(cfg), "--workdir", str(wd)]) == 4
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(err) and len(err) == 4, err  # one line per damaged step, one verdict
    assert [line.split(" does not restore")[0] for line in err[:3]] == [
        f"gecko-jax: checkpoint step {s} in {wd / 'checkpoints'}" for s in (6, 4, 2)]
    assert err[3] == (f"gecko-jax train: error: no checkpoint in {wd / 'checkpoints'} restores (tried steps 6, 4, 2); "
                      "move that folder away to train from the start, or put back an intact copy")
    assert sorted(p.relative_to(wd) for p in wd.rglob("*") if "tb" not in p.parts) == \
        [p for p in before if "tb" not in p.parts]


def test_rewind_metrics_drops_later_steps_and_a_torn_line(tmp_path):
    f = tmp_path / "metrics.jsonl"
    recs = [{"step": 0, "negatives_per_query": 3.0}] + [{"step": s, "loss": 1.0 / s} for s in range(1, 7)]
    recs.insert(5, {"step": 4, "eval_x": 0.5})
    f.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 7, "lo')
    assert rewind_metrics(f, 4) == 3
    assert [(r["step"], sorted(r)) for r in map(json.loads, f.read_text().splitlines())][-2:] == \
        [(4, ["loss", "step"]), (4, ["eval_x", "step"])]
    assert rewind_metrics(f, 4, keep_evals_at_step=False) == 1  # a finished run rerun: its final eval is redone
    assert [r["step"] for r in map(json.loads, f.read_text().splitlines())] == [0, 1, 2, 3, 4]
    assert rewind_metrics(tmp_path / "none.jsonl", 3) == 0


def test_resumed_run_marks_a_tensorboard_restart(runs, tmp_path):
    data, six, _, _ = runs
    wd = tmp_path / "run"
    shutil.copytree(six, wd)
    before = set((wd / "tb").iterdir())
    train.train_and_evaluate(_config(data, 7), wd)
    (new,) = set((wd / "tb").iterdir()) - before
    records = read_records(new)
    # Event{step: 7, session_log: {status: START}}: TensorBoard drops older events at steps >= 7
    start = [r for r in records if r.endswith(b"\x3a\x02\x08\x01")]
    assert len(start) == 1 and b"\x10\x07" in start[0]


@pytest.mark.parametrize("override, field, got", [
    ('data.batch_size="32"', "data.batch_size", "'32' (str)"),
    ("data.batch_size=3.5", "data.batch_size", "3.5 (float)"),
    ("steps=true", "steps", "True (bool)"),
    ('data.buckets=[16,"x"]', "data.buckets[1]", "'x' (str)"),
    ('optimizer.learning_rate="fast"', "optimizer.learning_rate", "'fast' (str)"),
    ("checkpoint.keep=null", "checkpoint.keep", "None (NoneType)"),
])
def test_config_field_of_the_wrong_type_exit_3(tmp_path, capsys, override, field, got):
    cfg = th.write_config(tmp_path / "c.json", th.contrastive_raw(tmp_path / "none.jsonl"))
    assert main(["train", "--config", str(cfg), "--workdir", str(tmp_path / "w"), "--set", override]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"gecko-jax train: error: {cfg}: config field '{field}': expected "), err
    assert err.endswith(f"got {got}")
    assert not (tmp_path / "w").exists()


def test_bad_bytes_in_config_and_data(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b'{"trainer": "contrastive",\n "description": "caf\xe9"}\n')
    assert main(["train", "--config", str(cfg), "--workdir", str(tmp_path / "w")]) == 3
    assert capsys.readouterr().err.strip() == (f"gecko-jax train: error: {cfg}:2: not valid UTF-8 (byte 0xe9 at byte "
                                               "column 21); save the file as UTF-8")
    data = th.write_pairs(tmp_path / "pairs.jsonl", 12)
    lines = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(b"".join(lines[:4]) + lines[4].replace(b"note", b"n\xf6te", 1) + b"".join(lines[5:]))
    cfg = th.write_config(tmp_path / "c2.json", th.contrastive_raw(data))
    assert main(["train", "--config", str(cfg), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"gecko-jax train: error: {data}:5: not valid UTF-8 (byte 0xf6"), err
    assert not (tmp_path / "w").exists()  # bad data fails before anything is written


def test_workdir_that_is_a_file_exit_5(tmp_path, capsys):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 12)
    cfg = th.write_config(tmp_path / "c.json", th.contrastive_raw(data))
    (tmp_path / "w").write_text("not a folder")
    assert main(["train", "--config", str(cfg), "--workdir", str(tmp_path / "w")]) == 5
    assert capsys.readouterr().err.strip() == (f"gecko-jax train: error: cannot write {tmp_path / 'w' / 'config.json'}"
                                               ": a file is in the way of a folder on the path")


def test_disk_full_during_training_exit_5_then_rerun(tmp_path):
    """A real failed checkpoint write (the file size limit RLIMIT_FSIZE fails write() with EFBIG, as a full disk does
    with ENOSPC) in orbax's background thread: one stderr line and exit 5; the rerun starts clean (no repeated
    metrics steps, orbax's unfinished temporary folder replaced)."""
    import os
    import subprocess

    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    cfg = th.write_config(tmp_path / "c.json", th.contrastive_raw(data, steps=6, checkpoint=CKPT))
    wd = tmp_path / "w"
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
            "from gecko_jax.cli import main\n"
            f"sys.exit(main(['train', '--config', {str(cfg)!r}, '--workdir', {str(wd)!r}]))\n")
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2]), "JAX_PLATFORMS": "cpu",
           **th.subprocess_env()}
    # The shared XLA compilation cache would also hit the file size limit whenever its entries are not written yet
    # (a cold cache on a fresh machine), and JAX warns about each one; this test is about checkpoint writes.
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 5 and len(err) == 1, proc.stderr[-3000:]
    assert err[0] == (f"gecko-jax train: error: cannot write checkpoints in {wd / 'checkpoints'}: file too large "
                      "(a file size limit is set)")
    assert not [p for p in (wd / "checkpoints").iterdir() if p.name.isdigit()]  # nothing half-committed

    res = train.train_and_evaluate(train.from_dict(th.contrastive_raw(data, steps=6, checkpoint=CKPT)), wd)
    assert res.origin == "random" and int(res.state.step) == 6
    assert [m["step"] for m in th.read_metrics(wd)] == list(range(7))
