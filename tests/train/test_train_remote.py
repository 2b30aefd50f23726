"""``gs://`` workdirs: training writes config, metrics, events, checkpoints and the export into a bucket, resumes
from it exactly, and falls back past a damaged checkpoint there; served by a local fake GCS (``fake_gcs``)."""
from __future__ import annotations


import jax
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from fake_gcs import fake_gcs  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402
from gecko_jax.fileio import RewrittenLog, as_path, is_remote, write_text  # noqa: E402

CKPT = {"every_steps": 2, "keep": 3, "export": True}


def _config(data, steps):
    return train.from_dict(th.contrastive_raw(data, steps=steps, checkpoint=CKPT))


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_paths_and_logs_on_a_bucket(tmp_path):
    assert is_remote("gs://b/run") and is_remote(as_path("gs://b/run")) and not is_remote(tmp_path)
    assert str(as_path("gs://b/run") / "x") == "gs://b/run/x"  # pathlib would fold it to gs:/b/run/x
    with fake_gcs(tmp_path / "gcs") as root:
        write_text("gs://test-bucket/a/b.txt", "one")
        assert (root / "test-bucket/a/b.txt").read_text() == "one"
        log = RewrittenLog("gs://test-bucket/a/log.jsonl")
        log.write("x\n")
        log.flush()
        log.write("y\n")
        log.close()
        again = RewrittenLog("gs://test-bucket/a/log.jsonl")  # reopening carries on after what is there
        again.write("z\n")
        again.close()
        assert (root / "test-bucket/a/log.jsonl").read_text() == "x\ny\nz\n"
        assert not list((root / "test-bucket/a").glob(".*"))  # no temporary files: objects are written whole


def test_gs_workdir_trains_resumes_and_falls_back(tmp_path, capfd):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    straight = train.train_and_evaluate(_config(data, 6), tmp_path / "local")
    with fake_gcs(tmp_path / "gcs") as root:
        run = "gs://test-bucket/runs/r1"
        first = train.train_and_evaluate(_config(data, 6), run, stop_after=4)
        bucket = root / "test-bucket/runs/r1"
        assert first.steps_run == 4 and (bucket / "config.json").is_file()
        assert sorted(p.name for p in (bucket / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
        # damage the newest checkpoint in the bucket: the resume falls back to step 2 and sets 4 aside
        data_files = sorted((p for p in (bucket / "checkpoints/4").rglob("*") if p.is_file() and p.parent.name == "d"),
                            key=lambda p: p.stat().st_size)
        assert data_files, "no array data in checkpoint 4"
        data_files[-1].unlink()
        capfd.readouterr()
        resumed = train.train_and_evaluate(_config(data, 6), run)
        err = capfd.readouterr().err
        assert "skipped damaged checkpoint step 4 in gs://test-bucket/runs/r1/checkpoints" in err, err[-2000:]
        assert (bucket / "checkpoints_damaged/4").is_dir()
        assert resumed.origin == "workdir" and resumed.steps_run == 4 and int(resumed.state.step) == 6
        for a, b in zip(_params(resumed.state), _params(straight.state)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)  # exact resume, through the bucket
        steps = [m["step"] for m in th.read_metrics(bucket) if "loss" in m]
        assert steps == list(range(1, 7))  # metrics rewound in the bucket: every step once
        assert any(p.name.startswith("events.out.tfevents") for p in (bucket / "tb").iterdir())
        assert (bucket / "export" / "model.safetensors").is_file() and resumed.export_dir == f"{run}/export"
        assert not [p for p in bucket.rglob(".*.tmp")]  # nothing written the local way (temp file + rename)
    from gecko_jax import Embedder

    assert Embedder.from_pretrained(bucket / "export").encode(["hello"]).shape == (1, 32)


def test_local_workdir_still_writes_atomically(tmp_path, monkeypatch):
    """The local path keeps the temp-file + rename writes (a crash mid-write leaves the old file)."""
    import gecko_jax.fileio as fileio

    calls = []
    real = fileio.atomic_write

    def spy(path, *a, **kw):
        calls.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(fileio, "atomic_write", spy)
    write_text(tmp_path / "c.json", "{}")
    assert calls == [str(tmp_path / "c.json")]
    with pytest.raises(OSError):
        write_text(tmp_path / "c.json" / "x", "{}")  # a file in the way: nothing half-written
    assert (tmp_path / "c.json").read_text() == "{}"
