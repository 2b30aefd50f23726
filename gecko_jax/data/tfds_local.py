"""Image and text classification splits through tensorflow-datasets, without TensorFlow.

Two sources give the same output structure:

* ``source="tfds"``: the upstream tfds datasets (``mnist``, ``cifar10``, ``glue/sst2``) through
  ``tfds.data_source(name, split=..., data_dir=...)``: random access over array_record files. This needs the dataset
  prepared in the array_record format (``tfds build mnist --file_format=array_record``, or ``download=True`` on a
  machine with the network). Note that the upstream MNIST/CIFAR-10 builders encode images with ``tf.image``, so
  *preparing* them needs TensorFlow once; reading them does not.
* ``source="local"`` (default): small tfds builders (:mod:`gecko_jax.data.tfds_builders`) over the raw files that
  :mod:`gecko_jax.datasets` finds (``$GECKO_JAX_DATA/{mnist,cifar10_jpg,sst2_senteval,mr}``, the cache, or a verified
  download: MNIST's IDX files and CIFAR-10's binary batches with tensorflow-datasets' own checksums), prepared once
  into a cache directory with ``download_and_prepare(file_format="array_record")`` and read back with
  ``builder.as_data_source()``. The upstream MNIST/CIFAR-10 builders cannot be prepared without TensorFlow.

Verified with tensorflow-datasets 4.9.10, no TensorFlow installed: a ``GeneratorBasedBuilder`` prepares to
array_record and reads back through ``as_data_source()`` as long as images reach ``tfds.features.Image`` as PIL
images or encoded bytes (an ``np.ndarray`` would go through ``tf.image.encode_png``); the builders also override
``code_path`` (tfds's default needs the ``importlib_resources`` backport, which tfds only installs below Python 3.9).
So no hand-written ``ArrayRecordWriter`` code is needed. Preparation: MNIST ~6 s, CIFAR-10 ~10 s, SST-2 ~4 s (1 core).

Decoding 60k PNG/JPEG records with PIL takes seconds, so the decoded arrays of each split are also cached as ``.npz``
beside the tfds files (``cache_arrays=True``); the array_record copy stays the source of truth.

Example::

    from gecko_jax.data import tfds_local
    train = tfds_local.load_split("mnist", "train")            # {"image": uint8[60000,28,28,1], "label": int32[60000]}
    noisy = tfds_local.load_noisy_split("mnist", noise_type="symmetric", noise_rate=0.5, seed=0, subset=10_000)
    noisy["label"], noisy["clean_label"], noisy["corrupted"]
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import numpy as np

from gecko_jax.fileio import file_lock

__all__ = ["DATASETS", "NUM_CLASSES", "TFDS_NAMES", "SPLITS", "default_data_dir", "default_source_root", "prepare",
           "load_split", "load_noisy_split", "select_subset"]

DATASETS = ("mnist", "cifar10", "sst2", "mr")
NUM_CLASSES = {"mnist": 10, "cifar10": 10, "sst2": 2, "mr": 2}
# Upstream tfds names; MR has no upstream tfds dataset.
TFDS_NAMES = {"mnist": "mnist", "cifar10": "cifar10", "sst2": "glue/sst2"}
SPLITS = {"mnist": ("train", "test"), "cifar10": ("train", "test"), "sst2": ("train", "validation", "test"),
          "mr": ("train", "test")}
_LOCAL_FOLDERS = {"mnist": "mnist", "cifar10": "cifar10_jpg", "sst2": "sst2_senteval", "mr": "mr"}
_TEXT = {"sst2", "mr"}


def default_data_dir() -> pathlib.Path:
    """``$GECKO_JAX_CACHE/tfds`` (default ``~/.cache/gecko_jax/tfds``): where prepared datasets and array caches live."""
    from gecko_jax.datasets import cache_root

    return cache_root() / "tfds"


def default_source_root():
    """The raw files' root: a :class:`gecko_jax.datasets.DataRoot` (``$GECKO_JAX_DATA``, the cache, a download)."""
    from gecko_jax.datasets import DataRoot

    return DataRoot()


def _check_name_split(name: str, split: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"name={name!r}: unknown dataset, expected one of {DATASETS}")
    if not isinstance(split, str):
        raise TypeError(f"split={split!r}: expected a tfds split string such as 'train' or 'train[:1000]'")
    base = re.split(r"[\[+]", split, maxsplit=1)[0].strip()
    if base not in SPLITS[name]:
        raise ValueError(f"split={split!r}: {name} has splits {SPLITS[name]}")


def _local_builder(name: str, data_dir, source_root):
    from gecko_jax.data import tfds_builders

    from gecko_jax import datasets

    source_dir = datasets.path(name, source_root)
    builder = tfds_builders.BUILDERS[name]
    if name == "cifar10" and (source_dir / tfds_builders.CIFAR10_BINARY).is_file():
        builder = tfds_builders.GeckoCifar10Binary  # a download: the original batches, not the JPEG mirror copy
    return builder(source_dir=source_dir, data_dir=str(data_dir), file_format="array_record")


def prepare(name: str, *, data_dir=None, source_root=None):
    """Prepares the local copy of ``name`` as array_record (once; later calls only open it) and returns the builder.

    Args:
      name: one of :data:`DATASETS`.
      data_dir: tfds data directory; default :func:`default_data_dir`.
      source_root: folder holding ``mnist/``, ``cifar10_jpg/``, ``sst2_senteval/``, ``mr/`` (the mirror layout);
        default: each found by :mod:`gecko_jax.datasets`.

    Returns:
      The prepared ``tfds.core.DatasetBuilder``; ``builder.as_data_source()`` gives random access to each split.
    """
    import tensorflow_datasets as tfds

    if name not in DATASETS:
        raise ValueError(f"name={name!r}: unknown dataset, expected one of {DATASETS}")
    data_dir = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Two processes preparing the same dataset race on tfds's final rename (seen with two experiments started at
    # once: FileExistsError); an exclusive lock per dataset makes the second one wait and then just open it.
    with file_lock(data_dir / f".gecko_{name}.lock"):
        builder = _local_builder(name, data_dir, source_root)
        builder.download_and_prepare(file_format="array_record",
                                     download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def _records_to_arrays(records, *, text: bool) -> dict[str, Any]:
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    if text:
        sentences = [r["sentence"] for r in records]
        return {"text": [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in sentences], "label": labels}
    if not records:
        raise ValueError("split is empty")
    return {"image": np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records]), "label": labels}


def _read_source(src, *, text: bool) -> dict[str, Any]:
    n = len(src)
    records = []
    # Chunked reads: one __getitems__ call per chunk lets array_record batch its reads.
    for start in range(0, n, 8192):
        records.extend(src.__getitems__(list(range(start, min(n, start + 8192)))))
    return _records_to_arrays(records, text=text)


def _cache_path(data_dir: pathlib.Path, key: str, version: str, split: str) -> pathlib.Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split)
    return data_dir / "gecko_arrays" / key.replace("/", "__") / version / f"{safe}.npz"


def _load_cache(path: pathlib.Path, *, text: bool):
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        if text:
            return {"text": [str(s) for s in z["text"]], "label": z["label"].astype(np.int32)}
        return {"image": z["image"], "label": z["label"].astype(np.int32)}


def _save_cache(path: pathlib.Path, out: dict[str, Any], *, text: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"label": out["label"]}
    if text:
        arrays["text"] = np.asarray(out["text"], dtype=str)
    else:
        arrays["image"] = out["image"]
    # Write-then-rename (gecko_jax.fileio) so a concurrent or interrupted run never sees half a file.
    from gecko_jax.fileio import atomic_write

    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_split(name: str, split: str, *, data_dir=None, source: str = "local", source_root=None,
               cache_arrays: bool = True, download: bool = False) -> dict[str, Any]:
    """Loads one split of an image or text classification dataset as numpy arrays.

    Args:
      name: ``"mnist"``, ``"cifar10"``, ``"sst2"`` or ``"mr"`` (MR: local only, fixed seeded 90/10 split).
      split: a tfds split string: ``"train"``, ``"test"`` (``"validation"`` for sst2), slices such as
        ``"train[:1000]"`` too. Upstream ``glue/sst2``'s test labels are hidden (-1); the local SentEval copy has them.
      data_dir: tfds data directory (prepared datasets and array caches); default :func:`default_data_dir` for the
        local source, tfds's own default for ``source="tfds"``.
      source: ``"local"`` (builders over the raw files :mod:`gecko_jax.datasets` finds) or ``"tfds"`` (upstream
        ``tfds.data_source``).
      source_root: a folder of raw copies (mirror layout) for ``source="local"``; default: resolved per dataset.
      cache_arrays: reuse/write decoded arrays as ``.npz`` next to the tfds files.
      download: for ``source="tfds"``, let tfds download and prepare a missing dataset (needs the network).

    Returns:
      ``{"image": uint8[N, H, W, C], "label": int32[N]}`` for image sets, ``{"text": list[str] (N),
      "label": int32[N]}`` for text sets.
    """
    _check_name_split(name, split)
    text = name in _TEXT
    if source == "local":
        data_dir = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
        builder = prepare(name, data_dir=data_dir, source_root=source_root)
        cache = _cache_path(data_dir, builder.name, str(builder.version), split)
        if cache_arrays and (out := _load_cache(cache, text=text)) is not None:
            return out
        out = _read_source(builder.as_data_source(split=split), text=text)
    elif source == "tfds":
        if name not in TFDS_NAMES:
            raise ValueError(f"name={name!r}: no upstream tfds dataset; use source='local'")
        import tensorflow_datasets as tfds

        tfds_dir = pathlib.Path(data_dir) if data_dir is not None else None
        cache_dir = tfds_dir if tfds_dir is not None else default_data_dir()
        cache = _cache_path(cache_dir, "tfds_" + TFDS_NAMES[name], "latest", split)
        if cache_arrays and (out := _load_cache(cache, text=text)) is not None:
            return out
        src = tfds.data_source(TFDS_NAMES[name], split=split, data_dir=None if tfds_dir is None else str(tfds_dir),
                               download=download)
        out = _read_source(src, text=text)
    else:
        raise ValueError(f"source={source!r}: expected 'local' or 'tfds'")
    if cache_arrays:
        _save_cache(cache, out, text=text)
    return out


def select_subset(n: int, size: int | None, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``range(n)`` (all of it when ``size`` is None)."""
    if size is None:
        return np.arange(n)
    if not 0 < size <= n:
        raise ValueError(f"subset={size}: expected 1..{n}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def load_noisy_split(name: str, split: str = "train", *, noise_type: str, noise_rate: float, seed: int,
                     subset: int | None = None, subset_seed: int = 0, **load_kwargs) -> dict[str, Any]:
    """Loads a split and corrupts its labels with :mod:`gecko_jax.data.noise`, keeping the corrupted-row mask.

    The subset (if any) is drawn first with ``subset_seed`` so runs with different noise seeds share the same rows;
    labels are then corrupted through the transition matrix ``T`` (``T[i, j] = P(noisy=j | clean=i)``).

    Args:
      name, split: as in :func:`load_split`.
      noise_type: ``"symmetric"`` (``T_ii = 1-n``, ``T_ij = n/(K-1)``), ``"pairflip"`` (``i -> i+1 mod K`` with
        probability n) or ``"none"``.
      noise_rate: n in [0, 1).
      seed: seed of the label corruption.
      subset: keep a seeded random subset of this many rows (e.g. 10,000 MNIST rows, as the authors did).
      subset_seed: seed of that subset.
      **load_kwargs: ``data_dir``, ``source``, ... passed to :func:`load_split`.

    Returns:
      The :func:`load_split` dict with ``label`` replaced by the noisy labels, plus ``clean_label`` (int32[N]),
      ``corrupted`` (bool[N], ``label != clean_label``) and ``index`` (int64[N], rows of the full split).
    """
    if noise_type not in ("symmetric", "pairflip", "none"):
        raise ValueError(f"noise_type={noise_type!r}: expected 'symmetric', 'pairflip' or 'none'")
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"noise_rate={noise_rate}: expected 0 <= noise_rate < 1")
    data = load_split(name, split, **load_kwargs)
    idx = select_subset(len(data["label"]), subset, seed=subset_seed)
    out = {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in data.items()}
    clean = out["label"]
    k = NUM_CLASSES[name]
    if noise_type == "none" or noise_rate == 0.0:
        noisy, mask = clean.copy(), np.zeros(clean.shape, bool)
    else:
        from gecko_jax.data import noise

        make = noise.symmetric_transition if noise_type == "symmetric" else noise.pairflip_transition
        noisy, mask = noise.corrupt_labels(clean, make(k, noise_rate), seed=seed)
        noisy, mask = np.asarray(noisy, np.int32), np.asarray(mask, bool)
    out.update(label=noisy, clean_label=clean, corrupted=mask, index=idx.astype(np.int64))
    return out
