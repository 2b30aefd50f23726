"""Readers for the labelled text sets (mirror-layout folders found by :mod:`gecko_jax.datasets`; formats: the mirror's
README.md).

Every reader returns a :class:`LabeledText` with fixed train/test splits and a fingerprint (sha256 of the file bytes
plus the split rule) used as the embedding-cache key. Sets that ship without a split get a **fixed, documented**
one: a per-class shuffle with ``numpy.random.default_rng(0)``, the first ``test_fraction`` of each class as test
(MR: 20 % -> 2,132 test sentences; AG News test file: 25 % -> 1,900 test rows, the rest is the train pool).
A malformed row (or a non-UTF-8 byte) raises :class:`~gecko_jax.errors.InputError` (a ``ValueError``) naming the
file and line and what was expected.

Licences: SST-2 / MR research use; AG News academic use; Banking77 CC BY 4.0. Say so wherever results are shown.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import pathlib

import numpy as np

from gecko_jax.datasets import DataRoot
from gecko_jax.errors import InputError
from gecko_jax.fileio import decode_utf8, read_text


@dataclasses.dataclass
class LabeledText:
    """A labelled text set with a train pool and a test split.

    Attributes:
      name: dataset name.
      train_texts / test_texts: lists of str.
      train_labels / test_labels: int arrays ``[n]`` indexing ``label_names``.
      label_names: class names.
      fingerprint: sha256 of the file bytes and the split rule.
    """

    name: str
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    label_names: list[str]
    fingerprint: str


def data_root(root=None) -> DataRoot:
    """A :class:`gecko_jax.datasets.DataRoot`: ``data_root(root) / "banking77"`` resolves that dataset's folder by
    the order of :mod:`gecko_jax.datasets` (``root`` if given, else ``$GECKO_JAX_DATA``, the cache, a download)."""
    if root is not None and not isinstance(root, DataRoot) and not pathlib.Path(root).is_dir():
        raise FileNotFoundError(f"data folder not found: {root} (pass data_root= or set GECKO_JAX_DATA)")
    return DataRoot(root)


def fixed_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: per class, shuffle with ``default_rng(seed)``; the first fraction is test.

    Returns:
      ``(train_idx, test_idx)``, each sorted.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * len(idx)))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def _read_csv_text_label(path: pathlib.Path, h) -> tuple[list[str], list[str]]:
    raw = path.read_bytes()
    h.update(raw)
    rows = list(csv.reader(io.StringIO(decode_utf8(raw, path))))
    if not rows or [c.strip() for c in rows[0]] != ["text", "category"]:
        raise InputError(f"{path}:1: expected header 'text,category', got {rows[0] if rows else 'an empty file'}")
    texts, cats = [], []
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{path}: row {lineno}: expected 2 non-empty fields (text, category), got {row!r}")
        texts.append(row[0])
        cats.append(row[1].strip())
    return texts, cats


def load_banking77(root=None) -> LabeledText:
    """Banking77 intents: train 10,003 / test 3,080, 77 classes (``banking77/{train,test}.csv``)."""
    d = data_root(root) / "banking77"
    h = hashlib.sha256(b"banking77")
    tr_x, tr_c = _read_csv_text_label(d / "train.csv", h)
    te_x, te_c = _read_csv_text_label(d / "test.csv", h)
    names = sorted(set(tr_c))
    unknown = sorted(set(te_c) - set(names))
    if unknown:
        raise InputError(f"{d / 'test.csv'}: categories not in train.csv: {unknown[:5]}")
    pos = {n: i for i, n in enumerate(names)}
    return LabeledText("banking77", tr_x, np.array([pos[c] for c in tr_c]), te_x, np.array([pos[c] for c in te_c]),
                       names, h.hexdigest())


def _read_sst(path: pathlib.Path, h) -> tuple[list[str], np.ndarray]:
    raw = path.read_bytes()
    h.update(raw)
    texts, labels = [], []
    for lineno, line in enumerate(decode_utf8(raw, path).splitlines(), 1):
        if not line.strip():
            continue
        sent, sep, lab = line.rpartition("\t")
        if not sep or lab.strip() not in ("0", "1") or not sent.strip():
            raise InputError(f"{path}:{lineno}: expected 'sentence<TAB>0|1', got {line[:80]!r}")
        texts.append(sent.strip())
        labels.append(int(lab))
    return texts, np.asarray(labels)


def load_sst2(root=None) -> LabeledText:
    """SST-2 (SentEval files): train pool 67,349, test 1,821; 0 = negative, 1 = positive."""
    d = data_root(root) / "sst2_senteval"
    h = hashlib.sha256(b"sst2")
    tr_x, tr_y = _read_sst(d / "sentiment-train", h)
    te_x, te_y = _read_sst(d / "sentiment-test", h)
    return LabeledText("sst2", tr_x, tr_y, te_x, te_y, ["negative", "positive"], h.hexdigest())


def load_mr(root=None, *, test_fraction: float = 0.2) -> LabeledText:
    """MR polarity (latin-1, one sentence per line) with the fixed split of the module docstring."""
    d = data_root(root) / "mr"
    h = hashlib.sha256(f"mr|{test_fraction}|seed0".encode())
    texts, labels = [], []
    for lab, fname in ((0, "rt-polarity.neg"), (1, "rt-polarity.pos")):
        raw = (d / fname).read_bytes()
        h.update(raw)
        for line in raw.decode("latin-1").splitlines():
            if line.strip():
                texts.append(line.strip())
                labels.append(lab)
    labels = np.asarray(labels)
    tr, te = fixed_split(labels, test_fraction)
    return LabeledText("mr", [texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te],
                       ["negative", "positive"], h.hexdigest())


def load_ag_news(root=None, *, test_fraction: float = 0.25) -> LabeledText:
    """AG News test file (7,600 rows) split into a train pool and a test set as in the module docstring.

    Text is ``title + " " + description``; the file's backslash line-break markers become spaces.
    """
    d = data_root(root) / "ag_news"
    path = d / "test.csv"
    raw = path.read_bytes()
    h = hashlib.sha256(f"ag_news|{test_fraction}|seed0".encode())
    h.update(raw)
    names = [n.strip() for n in read_text(d / "classes.txt").splitlines() if n.strip()]
    texts, labels = [], []
    for lineno, row in enumerate(csv.reader(io.StringIO(decode_utf8(raw, path))), 1):
        if len(row) != 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= len(names):
            raise InputError(f"{path}: row {lineno}: expected label(1-{len(names)}),title,description; got {row[:1]!r}")
        texts.append(" ".join(f"{row[1]} {row[2]}".replace("\\", " ").split()))
        labels.append(int(row[0]) - 1)
    labels = np.asarray(labels)
    tr, te = fixed_split(labels, test_fraction)
    return LabeledText("ag_news", [texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te],
                       names, h.hexdigest())


CLASSIFICATION_LOADERS = {"banking77": load_banking77, "sst2": load_sst2, "mr": load_mr, "ag_news": load_ag_news}
