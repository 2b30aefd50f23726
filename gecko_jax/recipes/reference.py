"""Reference results of the base model, kept by content and shipped with the package (issue 21).

Three of the quickstart's costs depend only on bytes every fresh clone already has: the base model's evaluation
(the "before" column: a SciFact corpus encode, 5,183 abstracts at <= 256 tokens, plus STS-B and Banking77), the
SciFact hard negatives the recipe mines with the base model (the same corpus encode), and the base model's vectors
of FRet's retrieval pool (2,000 passages). They are computed once and stored in
``gecko_jax/assets/reference/<kind>-<digest>.json`` as ``{"key", "summary", "made"}`` (vectors: the array in a
``.npy`` file beside it, its sha256 in the summary). A file is used only when its key equals the key computed now
from

* the model's weight fingerprint (:func:`gecko_jax.eval.model_fingerprint`: sha256 over every parameter and the
  config) and its token cap,
* the sha256 of every file of each dataset involved (:func:`folder_digest`), and
* everything else the result depends on (tasks, widths, prompt mode; split, training query ids, seed and mining
  depth for the negatives; for vectors, the sha256 of every text in order and how they were encoded).

Any other model, data or setting misses and is computed as before; ``--recompute-base`` (``reference=False``)
always computes. Which host made a file is recorded in ``made`` (results agree across CPUs to float rounding).

Files are written by ``python -m gecko_jax.recipes.make_reference --data-dir DIR`` (the maintainers' command; it
runs the base evaluation and the mining and writes both files atomically).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

from gecko_jax.fileio import write_text
from gecko_jax.recipes.runlog import digest, log

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1] / "assets" / "reference"
# The data folders each evaluation task reads (mirror layout); a task not listed here has no reference.
TASK_FOLDERS = {"scifact": "scifact", "stsb": "stsb", "banking77": "banking77"}


@functools.lru_cache(maxsize=64)
def _digest_files(root: str, stamp: tuple) -> str:
    """sha256 over ``stamp``'s files (``(path, size, mtime)``, sorted): each name relative to ``root``, then bytes."""
    h = hashlib.sha256()
    for name, _, _ in stamp:
        f = pathlib.Path(name)
        h.update(str(f.relative_to(root) if f != pathlib.Path(root) else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def folder_digest(path: str | os.PathLike) -> str:
    """sha256 over the relative names and bytes of every file under ``path`` (or of the file ``path``).

    Memoised per process by the files' sizes and modification times, so repeated keys cost one read of the data.

    Raises:
      FileNotFoundError: ``path`` does not exist.
    """
    p = pathlib.Path(path).resolve()
    if not p.exists():
        raise FileNotFoundError(f"reference: no data at {path}")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return _digest_files(str(p), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def eval_key(fingerprint: str | None, *, tasks: Sequence[str], dims, prompts, max_length: int, data_root
             ) -> dict | None:
    """The key of a model's evaluation (``run_suite`` on ``tasks``), or None when one cannot be made by content
    (an unfingerprinted model, a task without a known data folder, data that cannot be resolved)."""
    if not fingerprint or any(t not in TASK_FOLDERS for t in tasks):
        return None
    try:
        data = {t: folder_digest(data_root / TASK_FOLDERS[t]) for t in sorted(tasks)}
    except (OSError, ValueError, LookupError):
        return None
    return {"kind": "eval", "model": fingerprint, "max_length": int(max_length), "tasks": sorted(tasks),
            "dims": [str(d) for d in dims], "task_prompts": prompts, "data": data}


def negatives_key(fingerprint: str | None, *, folder, split: str, query_ids: Sequence[str], seed: int,
                  max_length: int, mining: Mapping[str, Any]) -> dict | None:
    """The key of hard negatives mined with a model over the BEIR ``folder`` for ``query_ids`` (``mining``: the
    miner's settings: skip, depth, k), or None without a fingerprint or readable data."""
    if not fingerprint:
        return None
    try:
        data = folder_digest(folder)
    except (OSError, ValueError):
        return None
    qids = hashlib.sha256("\n".join(query_ids).encode()).hexdigest()
    return {"kind": "negatives", "model": fingerprint, "max_length": int(max_length), "data": data, "split": split,
            "query_ids": qids, "seed": int(seed), "mining": dict(mining)}


def vectors_key(fingerprint: str | None, *, texts: Sequence[str], max_length: int, encode: Mapping[str, Any]
                ) -> dict | None:
    """The key of a model's vectors of ``texts`` (in order), encoded as ``encode`` says (e.g. ``{"kind":
    "document", "task": None}``), or None without a fingerprint."""
    if not fingerprint:
        return None
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return {"kind": "vectors", "model": fingerprint, "max_length": int(max_length), "texts": h.hexdigest(),
            "rows": len(texts), "encode": dict(encode)}


def lookup_vectors(key: Mapping | None, *, directory=None):
    """The stored ``float32[rows, d]`` array for ``key``, or None (no key or file, another key inside, an array
    whose bytes or shape differ from what its summary says)."""
    import io

    import numpy as np

    saved = _saved(key, directory)
    if saved is None:
        return None
    summary = saved["summary"]
    path = path_of(key, directory).with_suffix(".npy")
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(raw).hexdigest() != summary.get("sha256"):
        return None
    array = np.load(io.BytesIO(raw), allow_pickle=False)  # the bytes just checked, not a second read
    if array.dtype != np.float32 or array.shape[0] != key["rows"] or list(array.shape) != summary.get("shape"):
        return None
    _announce(path_of(key, directory), saved)
    return array


def store_vectors(key: Mapping, array, *, directory=None) -> pathlib.Path:
    """Write ``array`` (``float32[rows, d]``) as ``<kind>-<digest>.npy`` and its key file (atomically, the array
    first) and return the key file."""
    import io

    import numpy as np

    from gecko_jax.fileio import write_bytes

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != key["rows"]:
        raise ValueError(f"vectors: expected [{key['rows']}, d], got {array.shape}")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    raw = buf.getvalue()
    write_bytes(path_of(key, directory).with_suffix(".npy"), raw)
    return store(key, {"shape": list(array.shape), "sha256": hashlib.sha256(raw).hexdigest()}, directory=directory)


def path_of(key: Mapping, directory=None) -> pathlib.Path:
    """The file that holds (or would hold) ``key`` in ``directory`` (default :data:`REFERENCE_DIR`)."""
    return pathlib.Path(REFERENCE_DIR if directory is None else directory) / f"{key['kind']}-{digest(key)}.json"


def _saved(key: Mapping | None, directory) -> dict | None:
    """The stored record (``{"key", "made", "summary"}``) for ``key``, or None (no key, no file, another key)."""
    if key is None:
        return None
    path = path_of(key, directory)
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if saved.get("key") == json.loads(json.dumps(key, default=str)) else None


def lookup(key: Mapping | None, *, directory=None) -> dict | None:
    """The stored summary for ``key``, or None (no key, no file, or a file whose stored key differs); logs which
    file is used."""
    saved = _saved(key, directory)
    if saved is None:
        return None
    _announce(path_of(key, directory), saved)
    return saved["summary"]


def _announce(path: pathlib.Path, saved: Mapping) -> None:
    made = saved.get("made", {})
    log(f"reference: using {path.name} (same model weights, data bytes and settings; made {made.get('date', '?')} "
        f"on {made.get('machine', '?')}); --recompute-base to compute it here")


def store(key: Mapping, summary: Any, *, directory=None) -> pathlib.Path:
    """Write ``summary`` under ``key`` (atomically) and return the file."""
    from gecko_jax import runtime

    made = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": runtime.machine_line()}
    path = path_of(key, directory)
    write_text(path, json.dumps({"key": key, "made": made, "summary": summary}, indent=1, sort_keys=True,
                                default=str) + "\n")
    return path
