"""Arrays for a grid of classifier runs: inputs once, one noisy label vector per noise rate, a noisy validation
split and the clean test split.

Inputs are a pytree of arrays with the row axis first: images (``uint8[N, H, W, C]``), frozen sentence embeddings
(``float32[N, D]``, cached on disk) or tokens (``{"input_ids", "attention_mask", "token_type_ids"}: int32[N, L]``
padded to ``data.max_length``) for a text set fine-tuned end to end.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import time
from typing import Any

import jax
import numpy as np

from gecko_jax import fileio
from gecko_jax.data import tfds_local
from gecko_jax.train.grid_config import GridConfig

# Noisy validation rows are drawn with this seed: the same rows at every grid seed (as the training subset).
_VAL_SPLIT_SEED = 20


@dataclasses.dataclass
class GridArrays:
    """Everything a grid trains and evaluates on (host numpy arrays).

    Attributes:
      train_inputs: pytree, rows first. clean_label: ``int32[N]``.
      noisy_label / corrupted: per noise rate, ``int32[N]`` observed labels / ``bool[N]`` label != clean.
      val_inputs, val_clean, val_noisy: the held-out noisy validation rows (None without a split).
      test_inputs, test_label: the clean test rows.
      num_classes: ``m``.
    """

    train_inputs: Any
    clean_label: np.ndarray
    noisy_label: dict
    corrupted: dict
    test_inputs: Any
    test_label: np.ndarray
    num_classes: int
    val_inputs: Any = None
    val_clean: np.ndarray | None = None
    val_noisy: dict | None = None

    @property
    def num_train(self) -> int:
        return int(self.clean_label.shape[0])


def take(tree: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of every array of a pytree."""
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def features_cache_dir() -> pathlib.Path:
    """``$GECKO_JAX_CACHE/features`` (default ``~/.cache/gecko_jax/features``): cached sentence embeddings."""
    from gecko_jax.datasets import cache_root

    return cache_root() / "features"


def text_features(texts: list[str], name: str, split: str, encoder: str, *, log=print) -> np.ndarray:
    """``float32[N, D]``: frozen ``encoder`` embeddings of ``texts`` (a split's sentences, in row order), cached as
    ``<cache>/<name>_<split>_<encoder>_<sha>.npy``, ``sha`` hashing the sentences (a changed split gets a new file)."""
    sha = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    path = features_cache_dir() / f"{name}_{split}_{pathlib.Path(encoder).name}_{sha}.npy"
    if path.exists():
        return np.load(path)
    from gecko_jax import Embedder

    t0 = time.perf_counter()
    feats = np.asarray(Embedder.from_pretrained(encoder).encode(list(texts), show_progress=False), np.float32)
    log(f"[features] {name}/{split}: {feats.shape} in {time.perf_counter() - t0:.1f}s -> {path}")
    fileio.save_npy(path, feats)
    return feats


def _text_inputs(cfg: GridConfig, texts: list[str], split: str, log) -> Any:
    if cfg.data.features is not None:
        return text_features(texts, cfg.data.dataset, split, cfg.data.features, log=log)
    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.embedder import resolve_model_path

    source = cfg.model.tokenizer or cfg.model.pretrained
    tok = Tokenizer.from_pretrained(resolve_model_path(source), max_length=cfg.data.max_length)
    return tok.pad(tok.encode(texts, max_length=cfg.data.max_length), cfg.data.max_length)


def _val_split(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), both sorted; no validation rows for ``fraction == 0``."""
    if fraction == 0:
        return np.arange(n), np.arange(0)
    order = np.random.default_rng(_VAL_SPLIT_SEED).permutation(n)
    m = int(round(fraction * n))
    return np.sort(order[m:]), np.sort(order[:m])


def load_grid_data(cfg: GridConfig, *, log=print, **load_kwargs) -> GridArrays:
    """Loads the training subset with one noisy label vector per distinct noise rate of the runs (noise seeded by
    ``cfg.seed``, rows by seed 0), splits off the noisy validation rows, and loads the clean test subset."""
    d = cfg.data
    rates = sorted({float(r.noise_rate) for r in cfg.runs})
    noisy = {n: tfds_local.load_noisy_split(d.dataset, "train", noise_type=d.noise_type,
                                            noise_rate=0.0 if d.noise_type == "none" else n, seed=cfg.seed,
                                            subset=d.subset, **load_kwargs) for n in rates}
    first = noisy[rates[0]]
    test = tfds_local.load_split(d.dataset, "test", **load_kwargs)
    t_idx = tfds_local.select_subset(len(test["label"]), d.test_subset, seed=cfg.seed)
    if d.is_text:
        inputs = _text_inputs(cfg, list(first["text"]), "train", log)
        test_inputs = _text_inputs(cfg, [test["text"][i] for i in t_idx], "test", log)
    else:
        inputs, test_inputs = first["image"], test["image"][t_idx]
    tr, va = _val_split(len(first["clean_label"]), d.val_fraction)
    out = GridArrays(train_inputs=take(inputs, tr), clean_label=first["clean_label"][tr],
                     noisy_label={n: v["label"][tr] for n, v in noisy.items()},
                     corrupted={n: v["corrupted"][tr] for n, v in noisy.items()},
                     test_inputs=test_inputs, test_label=test["label"][t_idx],
                     num_classes=tfds_local.NUM_CLASSES[d.dataset])
    if len(va):
        out.val_inputs, out.val_clean = take(inputs, va), first["clean_label"][va]
        out.val_noisy = {n: v["label"][va] for n, v in noisy.items()}
    return out
