"""gecko_jax.recipes.store.StageStore: content-keyed stage folders with an atomic done marker."""
from __future__ import annotations

import dataclasses
import json
import types
from typing import Any

import pytest

from gecko_jax.recipes.store import DONE, StageStore


def test_store_keys_folders_by_content_and_reuses_only_finished_stages(tmp_path):
    store = StageStore(tmp_path)
    key = {"config": {"steps": 3}, "data": "abc"}
    folder = store.folder("train", key)
    assert folder.parent == tmp_path and folder.name.startswith("train-")
    assert store.folder("train", {"data": "abc", "config": {"steps": 3}}) == folder  # key order does not matter
    assert store.folder("train", {"config": {"steps": 4}, "data": "abc"}) != folder
    assert store.done("train", key) is None  # nothing finished yet
    folder.mkdir()
    (folder / "partial.bin").write_bytes(b"x")
    assert store.done("train", key) is None  # a folder without its marker is unfinished
    assert store.finish("train", key, {"loss": 0.5}) == {"loss": 0.5}
    assert store.done("train", key) == {"loss": 0.5}
    marker = folder / DONE
    saved = json.loads(marker.read_text())
    marker.write_text(json.dumps({**saved, "key": {"other": 1}}))
    assert store.done("train", key) is None  # a marker for another key is not trusted


def _stage_result(run_dir) -> dict:
    return {"name": "stage2", "run_dir": str(run_dir), "checkpoint_dir": str(run_dir / "checkpoints"),
            "export_dir": None, "steps": 3, "origin": "pretrained", "seconds": 1.0, "last_metrics": {"loss": 0.5}}


def test_recipe_stage_found_in_the_store_is_not_trained_again(tmp_path, monkeypatch):
    from gecko_jax import train
    from gecko_jax.recipes import gecko

    def refuse(*a, **k):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(train, "train_and_evaluate", refuse)
    store, key = StageStore(tmp_path), {"config": {"steps": 3}, "data": {"nli": "abc"}, "init": None}
    store.finish("stage2", key, _stage_result(store.folder("stage2", key)))
    got = gecko.run_stage("stage2", object(), tmp_path, key)
    assert got == gecko.StageResult(**_stage_result(store.folder("stage2", key)))
    # a finished stage from before the store (``stage_done.json`` in the same content-keyed folder) is found too
    old_key = dict(key, data={"nli": "def"})
    legacy = store.folder("stage2", old_key)
    legacy.mkdir()
    (legacy / gecko.LEGACY_DONE).write_text(json.dumps(_stage_result(legacy)))
    assert gecko.run_stage("stage2", object(), tmp_path, old_key).run_dir == str(legacy)
    with pytest.raises(AssertionError, match="trained again"):  # an unfinished one trains
        gecko.run_stage("stage2", _Config(), tmp_path, dict(key, data={"nli": "new"}))


@dataclasses.dataclass
class _Config:
    """Just enough of a TrainConfig for run_stage's log line."""

    data: Any = dataclasses.field(default_factory=lambda: types.SimpleNamespace(datasets=[], batch_size=8))
    optimizer: Any = dataclasses.field(default_factory=lambda: types.SimpleNamespace(learning_rate=1e-5))
    steps: int = 3
    progress: bool = True


def test_recipe_stage_folders_keep_their_pre_store_names(tmp_path):
    # The recipe's stage folders were ``<name>-<sha256(sorted JSON)[:12]>``: the store's are the same, so runs made
    # before the store are still found.
    import hashlib

    key = {"config": {"steps": 3, "lr": 2e-5}, "data": {"a": "0123"}, "init": "stage1-abc"}
    old = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert StageStore(tmp_path).folder("stage1", key) == tmp_path / f"stage1-{old}"
