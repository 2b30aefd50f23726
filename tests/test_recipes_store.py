"""gecko_jax.recipes.store.StageStore: content-keyed stage folders with an atomic done marker."""
from __future__ import annotations

import json

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
