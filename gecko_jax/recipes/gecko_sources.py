"""Stage 0 of the Gecko recipe: every :class:`~gecko_jax.recipes.gecko_config.SourceSpec` becomes a JSONL file of
unified records (:mod:`gecko_jax.data.mixture`) under ``workdir/data/``, training rows only (dev rows are removed
here), hard negatives mined with the base model where a retrieval source asks for them."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
from typing import Sequence

from gecko_jax.data import mixture as mx
from gecko_jax.errors import ConfigError
from gecko_jax.fileio import write_text
from gecko_jax.recipes.gecko_config import RecipeConfig, SourceSpec


def log(msg: str) -> None:
    print(f"[recipe {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def file_sha(path) -> str:
    """16 hex digits of the sha256 of a file's bytes (files enter stage keys by content)."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


@dataclasses.dataclass
class BuiltSource:
    """A source as a training file: ``name``, ``path``, ``weight``, ``hard_negatives`` (0 or 1), ``records``,
    ``stats`` (what the converter dropped)."""

    name: str
    path: str
    weight: float
    hard_negatives: int
    records: int
    stats: dict

    def dataset(self) -> dict:
        return {"path": self.path, "weight": self.weight, "name": self.name, "hard_negatives": self.hard_negatives}


class LazyBase:
    """The base model and its corpus embeddings, loaded once and only if a stage needs them."""

    def __init__(self, model: str, cache, *, reference: bool = True):
        # reference: take mined negatives from gecko_jax.recipes.reference where its content key matches
        self.model, self.cache, self.reference, self._emb = model, cache, reference, None

    @property
    def embedder(self):
        if self._emb is None:
            from gecko_jax import Embedder

            self._emb = Embedder.from_pretrained(self.model)
        return self._emb


def _beir_folder(spec: SourceSpec, root: pathlib.Path) -> pathlib.Path:
    p = pathlib.Path(spec.path or spec.dataset)
    return p if p.is_absolute() or p.exists() else root / p


def _records(spec: SourceSpec, cfg: RecipeConfig, root: pathlib.Path, base: LazyBase, stats) -> list[dict]:
    """The converter call of one source (training rows only: dev rows are removed here)."""
    from gecko_jax.eval import dev as dev_eval

    if spec.kind == "fret":
        from gecko_jax.data.jsonl import iter_jsonl

        rows = [obj for _, obj in iter_jsonl(spec.path)]
        recs = mx.fret_records(rows, source=spec.name)
        if spec.task:
            recs = [dict(r, task=spec.task) for r in recs]
        return recs
    if spec.kind == "nli":
        rows = mx.read_snli_senteval(pathlib.Path(spec.path) if spec.path else root / spec.dataset)
        return mx.nli_records(rows, source=spec.name, task=spec.task or mx.NLI_TASK, stats=stats)
    if spec.kind == "classification":
        from gecko_jax.eval.datasets import CLASSIFICATION_LOADERS

        if spec.path:  # any labelled set a user has: JSONL {text, label}
            texts, names = mx.read_labelled_texts(spec.path)
        else:
            data = CLASSIFICATION_LOADERS[spec.dataset](root)  # the training split / pool only
            texts, labels = data.train_texts, list(data.train_labels)
            if spec.dataset == "banking77":  # its dev rows select models: never train on them
                keep, _ = dev_eval.banking77_split(labels, cfg.dev.banking77_per_label)
                texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
            names = [data.label_names[y] for y in labels]
        return mx.classification_records(texts, names, source=spec.name, task=spec.task or mx.CLASSIFICATION_TASK,
                                         seed=cfg.seed, append_id=spec.append_id, limit=spec.limit, stats=stats)
    if spec.kind == "sts":
        from gecko_jax.eval.sts import read_stsb

        path = pathlib.Path(spec.path) if spec.path else root / "stsb" / (spec.dataset or "sts-train.csv")
        if path.name in ("sts-test.csv", "sts-dev.csv"):
            raise ConfigError(f"source {spec.name!r}: {path.name} is an evaluation / selection split; train on "
                              "sts-train.csv")
        s1, s2, scores, _ = read_stsb(path)
        return mx.sts_records(s1, s2, scores, source=spec.name, task=spec.task or mx.STS_TASK,
                              min_score=spec.min_score, stats=stats)
    folder = _beir_folder(spec, root)
    if spec.kind == "title_body":
        corpus = mx.read_beir_corpus(folder / "corpus.jsonl")
        return mx.title_body_records(corpus, source=spec.name, task=spec.task or mx.TITLE_BODY_TASK,
                                     max_chars=cfg.max_chars, limit=spec.limit, stats=stats)
    return _retrieval(spec, cfg, folder, base, stats)


# The miner's settings (mx.mine_negatives): part of the reference key of the negatives.
MINING = {"skip": 3, "depth": 30, "k": 1}


def _retrieval(spec: SourceSpec, cfg: RecipeConfig, folder: pathlib.Path, base: LazyBase, stats) -> list[dict]:
    data, qrels = _train_split(spec, cfg, folder)
    negatives = _negatives(spec, cfg, folder, data, qrels, base) if spec.mine_negatives else None
    return mx.retrieval_records(data.queries, data.corpus, qrels, source=spec.name, task=spec.task,
                                negatives=negatives, max_chars=cfg.max_chars, stats=stats)


def _train_split(spec: SourceSpec, cfg: RecipeConfig, folder: pathlib.Path):
    """The BEIR data of a retrieval source and its training qrels (SciFact's dev queries held out)."""
    from gecko_jax.eval import dev as dev_eval
    from gecko_jax.eval.beir import load_beir

    if spec.split == "test":
        raise ConfigError(f"source {spec.name!r}: split 'test' is the evaluation split; train on 'train'")
    data = load_beir(folder, split=spec.split)
    qrels = data.qrels
    if folder.name == "scifact" and spec.split == "train":  # hold out the dev queries
        keep, _ = dev_eval.scifact_train_queries(qrels, cfg.dev.scifact_fraction)
        qrels = {q: qrels[q] for q in keep}
    return data, qrels


def _negatives(spec: SourceSpec, cfg: RecipeConfig, folder: pathlib.Path, data, qrels, base: LazyBase, *,
               record=None) -> dict[str, list[str]]:
    """Hard negatives mined with the base model (raw text; corpus embeddings cached), or the shipped reference
    ones when their content key matches (:mod:`gecko_jax.recipes.reference`); ``record``: a folder to store the
    mined ones in as a reference (computed, never looked up)."""
    from gecko_jax.eval.cache import model_fingerprint
    from gecko_jax.eval.retrieval import encode_corpus
    from gecko_jax.recipes import reference

    emb = base.embedder
    qids = list(qrels)
    key = reference.negatives_key(model_fingerprint(emb), folder=folder, split=spec.split, query_ids=qids,
                                  seed=cfg.seed, max_length=emb.max_length, mining=MINING)
    if base.reference and record is None:
        shipped = reference.lookup(key)
        if shipped is not None:
            return shipped
    log(f"{spec.name}: mining hard negatives with {base.model} (raw text; corpus embeddings cached)")
    doc_emb = encode_corpus(emb, data, task=None, cache=base.cache)
    q_emb = emb.encode([data.queries[q] for q in qids], kind="query")
    negatives = mx.mine_negatives(q_emb, doc_emb, qids, list(data.corpus), qrels, seed=cfg.seed, **MINING)
    if record is not None and key is not None:
        reference.store(key, negatives, directory=record)
    return negatives


def mined_negatives(spec: SourceSpec, cfg: RecipeConfig, root, base: LazyBase, *, record=None
                    ) -> dict[str, list[str]]:
    """The hard negatives of the retrieval source ``spec`` (data under ``root``), as its training file gets them."""
    folder = _beir_folder(spec, root)
    data, qrels = _train_split(spec, cfg, folder)
    return _negatives(spec, cfg, folder, data, qrels, base, record=record)


def build_sources(cfg: RecipeConfig, specs: Sequence[SourceSpec], workdir, *, root=None, base: LazyBase | None = None,
                  batch_size: int = 32) -> list[BuiltSource]:
    """Stage 0: one training file per source (FRet with ``task_balance="uniform"``: one per task group).

    A file whose source spec, seed, dev split and input files are unchanged is reused (``data/<name>.json`` holds
    its key); otherwise it is rebuilt and replaced atomically.
    """
    from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir
    from gecko_jax.eval.datasets import data_root

    root = data_root(root if root is not None else cfg.data_dir)
    base = base or LazyBase(cfg.model, EmbeddingCache(default_cache_dir()))
    out_dir = pathlib.Path(workdir) / "data"
    built = []
    for spec in specs:
        key = {"spec": dataclasses.asdict(spec), "seed": cfg.seed, "dev": dataclasses.asdict(cfg.dev),
               "max_chars": cfg.max_chars, "batch_size": batch_size, "model": cfg.model, "v": 1}
        if spec.kind == "fret":
            if not spec.path or not pathlib.Path(spec.path).is_file():
                raise ConfigError(
                    f"recipe source {spec.name!r} field 'path': no such file {spec.path!r} (relative paths are read "
                    f"from the repository root or the working directory; outside a clone pass --fret FILE, e.g. "
                    f"the quickstart's runs/quickstart/fret/fret.jsonl)")
            key["fret_sha"] = file_sha(spec.path)
        meta_path = out_dir / f"{spec.name}.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key and all(pathlib.Path(b["path"]).is_file() for b in meta["built"]):
                built += [BuiltSource(**b) for b in meta["built"]]
                continue
        stats = mx.ConversionStats(spec.name)
        recs = _records(spec, cfg, root, base, stats)
        if not recs:
            raise ConfigError(f"source {spec.name!r}: no training records ({stats.dropped})")
        groups = {spec.name: recs}
        if spec.kind == "fret" and spec.task_balance == "uniform":
            by_task = mx.group_by_task(recs, min_size=batch_size)
            groups = {f"{spec.name}.{k}": g for k, g in enumerate(by_task.values())}
        mine = []
        for name, rows in groups.items():
            h = 1 if all("negative" in r for r in rows) else 0
            path = mx.write_records(rows, out_dir / f"{name}.jsonl")
            mine.append(BuiltSource(name, str(path), spec.weight / len(groups), h, len(rows),
                                    {"dropped": stats.dropped, "tasks": sorted({r["task"] for r in rows})[:5]}))
        write_text(meta_path, json.dumps({"key": key, "built": [dataclasses.asdict(b) for b in mine]}, indent=1))
        log(f"source {spec.name}: {sum(b.records for b in mine)} records in {len(mine)} file(s)"
             + (f", dropped {stats.dropped}" if stats.dropped else ""))
        built += mine
    return built
