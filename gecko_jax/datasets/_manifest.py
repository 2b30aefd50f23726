"""The manifest a finished dataset download leaves in its cache folder, and the error a bad download raises."""
from __future__ import annotations

import json
import pathlib

MANIFEST = ".gecko_dataset.json"


class ChecksumError(ValueError):
    """A downloaded file does not match its expected size or digest; the message names the URL and both values."""


def cache_complete(folder: pathlib.Path) -> bool:
    """The folder holds every file its manifest lists (a download finished there)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return False
    return all((folder / f).is_file() for f in files)
