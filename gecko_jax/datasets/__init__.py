"""Datasets by name: the one place in gecko_jax that finds, downloads and checks data files.

Resolution order for a dataset (``path("scifact")``, ``gecko_jax.eval.readers.load("scifact")``, and every reader):

1. an explicit folder (``data_dir=`` / ``--data-dir``) in the mirror layout: ``<data_dir>/<folder>``; nothing else
   is tried when one is given;
2. the local mirror ``$GECKO_JAX_DATA/<folder>`` (the layout of ``../shared/data``: how the development machines and
   CI run without a network);
3. the cache ``$GECKO_JAX_CACHE/datasets/<name>`` (default ``~/.cache/gecko_jax/datasets/<name>``) of an earlier
   download;
4. a download from the dataset's canonical public source into that cache: resumable (``.part`` files continue with
   an HTTP range request), verified (size, sha256 and MD5 where published, else the digest recorded at the first
   download), atomic (a folder appears complete or not at all) and with a progress bar. Hub sources go through
   ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_HOME``, pinned revision).

Offline mode (``GECKO_JAX_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) stops at step 3 with an error that names what to fetch
and where to put it. Environment variables, one per meaning: ``GECKO_JAX_DATA`` (read-only raw-data mirror),
``GECKO_JAX_CACHE`` (everything gecko_jax writes for reuse: downloads, prepared tfds sets, embedding caches).

Reading a dataset is the readers' business, a layer up (``gecko_jax.eval.readers.load(name)``); this package only
finds files, so every reader can import it.

Example::

    from gecko_jax import datasets
    datasets.path("scifact")            # a folder with corpus.jsonl, queries.jsonl, qrels/
    datasets.where("stsb")              # Resolution(kind="mirror", path=...) without downloading
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

from gecko_jax.datasets import _fetch
from gecko_jax.datasets._manifest import MANIFEST, ChecksumError, cache_complete
from gecko_jax.datasets._registry import DATASETS, FOLDERS, Dataset, Remote, Source

__all__ = ["DATASETS", "Dataset", "Source", "Remote", "DataRoot", "Resolution", "DatasetNotAvailable",
           "ChecksumError", "MANIFEST", "cache_root", "mirror_root", "is_offline", "lookup", "where", "path", "fetch",
           "RESOLUTION_ORDER"]

RESOLUTION_ORDER = ("explicit --data-dir / data_dir=", "$GECKO_JAX_DATA mirror", "$GECKO_JAX_CACHE/datasets cache",
                    "download from the canonical source")
class DatasetNotAvailable(FileNotFoundError):
    """A dataset is in none of the places tried and cannot be downloaded now; the message says what to do."""


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    """``GECKO_JAX_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value (read at each call)."""
    return _truthy("GECKO_JAX_OFFLINE") or _truthy("HF_HUB_OFFLINE")


def cache_root() -> pathlib.Path:
    """``$GECKO_JAX_CACHE`` or ``~/.cache/gecko_jax``: downloads (``datasets/``), tfds (``tfds/``), ``eval/``, ..."""
    env = os.environ.get("GECKO_JAX_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "gecko_jax"


def mirror_root() -> pathlib.Path | None:
    """``$GECKO_JAX_DATA`` (a read-only folder in the mirror layout), or ``None`` when unset."""
    env = os.environ.get("GECKO_JAX_DATA")
    return pathlib.Path(env) if env else None


def lookup(name: str) -> Dataset:
    """The registry entry for a dataset name (``"sst2"``) or its mirror folder name (``"sst2_senteval"``)."""
    key = FOLDERS.get(name, name)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


@dataclasses.dataclass(frozen=True)
class Resolution:
    """Where a dataset resolves now: ``kind`` is explicit | mirror | cache | missing; ``path`` the folder (for
    ``missing``: the cache folder a download would fill)."""

    name: str
    kind: str
    path: pathlib.Path


def _cache_folder(ds: Dataset) -> pathlib.Path:
    return cache_root() / "datasets" / ds.name


def where(name: str, data_dir=None) -> Resolution:
    """Resolve ``name`` through steps 1-3 of the module docstring without downloading anything."""
    ds = lookup(name)
    if data_dir is not None:
        return Resolution(ds.name, "explicit", pathlib.Path(data_dir) / ds.folder)
    mirror = mirror_root()
    if mirror is not None and (mirror / ds.folder).is_dir():
        return Resolution(ds.name, "mirror", mirror / ds.folder)
    cached = _cache_folder(ds)
    if cache_complete(cached):
        return Resolution(ds.name, "cache", cached)
    return Resolution(ds.name, "missing", cached)


def _not_available(ds: Dataset, data_dir, why: str) -> DatasetNotAvailable:
    src = ds.source()
    origin = (f"{src.repo_id}@{src.revision} on the Hub" if src.kind == "hub" else
              ", ".join(r.url for r in src.files[:2]) + (" ..." if len(src.files) > 2 else ""))
    need = ", ".join(ds.files[:4]) + (" ..." if len(ds.files) > 4 else "")
    if data_dir is not None:
        return DatasetNotAvailable(
            f"{ds.name}: {pathlib.Path(data_dir) / ds.folder / ds.files[0]} not found (--data-dir / data_dir= was "
            f"given, so nothing else is tried); expected a folder {ds.folder}/ holding {need}. Drop --data-dir to "
            f"use $GECKO_JAX_DATA, the cache or a download.")
    mirror = mirror_root()
    tried = (f"$GECKO_JAX_DATA/{ds.folder} ({mirror / ds.folder})" if mirror else "$GECKO_JAX_DATA (unset)")
    return DatasetNotAvailable(
        f"{ds.name}: not found in {tried} nor in the cache ({_cache_folder(ds)}), and {why}. On a machine with a "
        f"network run `gecko-jax datasets fetch {ds.name}` (downloads {origin}) and copy {_cache_folder(ds)}, or put "
        f"the files ({need}) in a folder {ds.folder}/ under $GECKO_JAX_DATA.")


def path(name: str, data_dir=None, *, download: bool = True, progress: bool = True) -> pathlib.Path:
    """The folder of dataset ``name`` (mirror layout), downloading it when it is nowhere else.

    Args:
      name: a dataset name or its mirror folder name (see :data:`DATASETS`).
      data_dir: an explicit folder in the mirror layout; when given, only ``<data_dir>/<folder>`` is used.
      download: allow step 4 of the module docstring (also off in offline mode).
      progress: show download progress bars.

    Raises:
      DatasetNotAvailable: not found and not downloadable now (the message says what to fetch and where to put it).
      ChecksumError: a download did not verify.
    """
    res = where(name, data_dir)
    ds = lookup(name)
    if res.kind == "explicit":
        if not res.path.is_dir():
            raise _not_available(ds, data_dir, "")
        return res.path
    if res.kind in ("mirror", "cache"):
        return res.path
    if is_offline():
        flag = "GECKO_JAX_OFFLINE" if _truthy("GECKO_JAX_OFFLINE") else "HF_HUB_OFFLINE"
        raise _not_available(ds, None, f"offline mode is on ({flag}=1)")
    if not download:
        raise _not_available(ds, None, "downloading was not allowed (download=False)")
    return fetch(ds.name, progress=progress)


def fetch(name: str, *, source: str | None = None, force: bool = False, progress: bool = True) -> pathlib.Path:
    """Download and prepare ``name`` into the cache (a no-op when a complete copy is there); returns the folder.

    Args:
      name: dataset name.
      source: a source id of the dataset (default: its first, the canonical one).
      force: download again even when the cache is complete.
      progress: show progress bars.
    """
    ds = lookup(name)
    folder = _cache_folder(ds)
    if not force and cache_complete(folder):
        return folder
    if is_offline():
        raise _not_available(ds, None, "offline mode is on")
    return _fetch.fetch_into(ds, ds.source(source), folder, force=force, progress=progress)


class DataRoot:
    """A data root whose ``/`` resolves dataset folders by the order above: ``DataRoot() / "scifact"`` is
    ``path("scifact")``, ``DataRoot(d) / "scifact"`` is ``path("scifact", d)``.

    It stands where code used to hold one data folder (``root / "stsb" / "sts-test.csv"``), so each dataset can
    come from its own place. A name that is not a known dataset folder resolves under the explicit folder or the
    mirror only.
    """

    def __init__(self, data_dir=None):
        if isinstance(data_dir, DataRoot):
            data_dir = data_dir.data_dir
        self.data_dir = None if data_dir is None else pathlib.Path(data_dir)

    def __truediv__(self, folder: str) -> pathlib.Path:
        folder = str(folder)
        if folder in FOLDERS or folder in DATASETS:
            return path(folder, self.data_dir)
        base = self.data_dir or mirror_root()
        if base is None:
            raise DatasetNotAvailable(f"{folder!r} is not a known dataset ({', '.join(sorted(DATASETS))}) and no "
                                      "data folder is set (pass --data-dir / data_dir= or set GECKO_JAX_DATA)")
        return base / folder

    def __str__(self) -> str:
        if self.data_dir is not None:
            return str(self.data_dir)
        return f"$GECKO_JAX_DATA={mirror_root()}, cache {cache_root() / 'datasets'}"

    def __repr__(self) -> str:
        return f"DataRoot({str(self.data_dir) if self.data_dir else ''})"

    def __eq__(self, other) -> bool:
        return isinstance(other, DataRoot) and other.data_dir == self.data_dir

    def __hash__(self) -> int:
        return hash(self.data_dir)
