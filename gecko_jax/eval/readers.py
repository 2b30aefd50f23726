"""Read a dataset by name with gecko_jax's reader for it: ``load("scifact")``, ``load("stsb", "train")``.

    from gecko_jax.eval.readers import load
    beir = load("scifact")     # BeirData of the test split

Finding the files (mirror, cache, download) is :mod:`gecko_jax.datasets`'s; the readers live beside their evaluators.
"""
from __future__ import annotations

import csv

from gecko_jax import datasets
from gecko_jax.data import tfds_local
from gecko_jax.eval.beir import load_beir
from gecko_jax.eval.datasets import CLASSIFICATION_LOADERS
from gecko_jax.eval.fairness import load_seat
from gecko_jax.eval.sts import read_stsb


def load(name: str, split: str | None = None, *, data_dir=None):
    """Read a dataset with its reader (resolving and downloading as :func:`gecko_jax.datasets.path` does).

    Returns, by dataset: scifact -> ``BeirData`` of ``split`` (default "test"); stsb -> ``(s1, s2, scores, sha)`` of
    ``split`` (default "test"); banking77 / sst2 / mr / ag_news -> ``LabeledText``; mnist / cifar10 -> the
    ``tfds_local.load_split`` dict of ``split`` (default "train"); seat -> {test name: test dict}; crows_pairs -> list
    of row dicts; snli -> ``{"premise", "hypothesis", "label"}`` lists of ``split`` (default "dev").
    """
    ds = datasets.lookup(name)
    if ds.name == "scifact":
        return load_beir(datasets.path(ds.name, data_dir), split=split or "test")
    if ds.name == "stsb":
        return read_stsb(datasets.path(ds.name, data_dir) / f"sts-{split or 'test'}.csv")
    if ds.name in ("banking77", "sst2", "mr", "ag_news"):
        return CLASSIFICATION_LOADERS[ds.name](datasets.DataRoot(data_dir))
    if ds.name in ("mnist", "cifar10"):
        return tfds_local.load_split(ds.name, split or "train", source_root=data_dir)
    folder = datasets.path(ds.name, data_dir)
    if ds.name == "seat":
        return {p.stem: load_seat(p) for p in sorted(folder.glob("*.jsonl"))}
    if ds.name == "crows_pairs":
        with open(folder / "crows_pairs_anonymized.csv", encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if ds.name == "snli":
        part = split or "dev"
        cols = {}
        for key, stem in (("premise", "s1"), ("hypothesis", "s2"), ("label", "labels")):
            cols[key] = [line.strip() for line in (folder / f"{stem}.{part}").read_text(encoding="utf-8").splitlines()]
        if not len(cols["premise"]) == len(cols["hypothesis"]) == len(cols["label"]):
            raise ValueError(f"{folder}: s1.{part}, s2.{part} and labels.{part} have different line counts")
        return cols
    raise ValueError(f"load: no reader for {ds.name!r}")  # pragma: no cover - every registry entry is handled
