"""The stage store of the recipes: one folder per (stage, content key), finished when its done marker exists.

A stage's key is everything its output depends on (JSON-able: config, input digests, model fingerprint); its folder
is ``root/<stage>-<digest of the key>``, so a changed input gets a new folder and never reads a stale one. The marker
``done.json`` holds the key and the stage's summary and is written atomically, last: a folder without it is an
unfinished stage, which the stage itself resumes (a trainer from its checkpoints) or redoes.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

from gecko_jax.fileio import write_text
from gecko_jax.recipes.runlog import digest, log

DONE = "done.json"


@dataclasses.dataclass(frozen=True)
class StageStore:
    """Content-keyed stage folders under ``root``."""

    root: pathlib.Path

    def folder(self, stage: str, key: Any) -> pathlib.Path:
        """``root/<stage>-<12 hex digits of the key>``."""
        return pathlib.Path(self.root) / f"{stage}-{digest(key)}"

    def done(self, stage: str, key: Any, *, log: Callable[[str], None] = log) -> dict | None:
        """The summary of a finished stage with this key, else None (``log``: where the reuse is reported)."""
        marker = self.folder(stage, key) / DONE
        if not marker.is_file():
            return None
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("key") != json.loads(json.dumps(key, default=str)):
            return None  # a digest collision or a hand-edited folder: redo rather than trust it
        log(f"{stage}: reusing the finished stage in {marker.parent}")
        return saved["summary"]

    def any_done(self, stage: str) -> bool:
        """Whether some key of ``stage`` has finished here (e.g. for a time estimate made before the key is known)."""
        return any(pathlib.Path(self.root).glob(f"{stage}-*/{DONE}"))

    def finish(self, stage: str, key: Any, summary: dict) -> dict:
        """Write the done marker (atomically, after everything else of the stage) and return ``summary``."""
        marker = self.folder(stage, key) / DONE
        write_text(marker, json.dumps({"key": key, "summary": summary}, indent=1, default=str) + "\n")
        return summary
