"""FRet as an Apache Beam pipeline: the same stages and records as :class:`~data_gen.fret.FRetPipeline`, on any Beam
runner (DirectRunner here, in-process or ``direct_running_mode=multi_processing``; Dataflow, Flink or Spark by
pipeline options). Needs ``pip install 'gecko-jax[scale]'``; imported only by ``gecko-data fret --engine beam``.

Graph (every per-record step is a function of :mod:`data_gen.stages` / :mod:`data_gen.scoring`, shared with the
local engine, so one seed gives the same record whichever engine ran it)::

    JSONL shards ─ReadShard─► docs (order = file index, line) ──────────────┬───────────────┐
        │ Top.Smallest(n) of seed_hash → threshold (side input)             │               │
        ▼                                                                   ▼               │
    seeds ─Batch─► Generate (LLM, cache, retries, rate limits per worker) ─► dead letter   EmbedShard (embedder
        │ ok                                                                              │  built in setup)
        ▼                                                                   shard files ─► BuildIndex (exact
    Search (query embedder in setup; index loaded once per worker: side input) ◄──────────── vectors or ANN, saved)
        ▼
    CoGroupByKey(candidate id ↔ passage) → per seed ─Batch─► Score (QL/RC routes of the plan) ─► dead letter
        ▼ ok                                  └► CalibrationCounts ─CombineGlobally─► calibrate (side input)
    final_record ─► blocks of 10,000 lines by corpus order ─► part files ─► merged into --out by the driver

Failures never vanish: generation and scoring failures go to the dead-letter output, written as
``<out>.failures.jsonl`` in the same format as the local engine's. The LLM cache is the same content-addressed
sqlite file (opened by every worker), so a re-run after a kill asks the LLM nothing it had answered.

Outputs are written in corpus order (blocks keyed by file and line), so ``--out`` is byte-identical to the local
engine's for the same inputs (tested on the bundled demo with the fake LLM and exact search).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from .corpus import CorpusStore, Passage, corpus_files, parse_passage
from .files import atomic_file
from .formatting import format_document, format_query
from .jsonl import JsonlError, decode_line
from .retrieval import VectorShards, l2_normalize, save_npy_atomic
from .runner import parallel_map
from .scoring import ScoreAssembler, ScoringPlan
from .specs import EmbedderSpec, LLMSpec
from .stages import (CalibrationCounts, FRetConfig, calibrate, final_record, generate_failure, generate_one,
                     later_failure, neighbour_record, seed_cosine, seed_hash)

log = logging.getLogger(__name__)

LINE_BITS = 40  # order key = file index << 40 | line number: corpus order as one int64
BLOCK_LINES = 10_000  # output lines per part file (one GroupByKey group: bounded memory per worker)


def order_key(file_index: int, lineno: int) -> int:
    return (file_index << LINE_BITS) | lineno


@dataclass
class BeamFRetJob:
    """Everything a run needs, picklable (workers receive it with the DoFns).

    Attributes:
      files: corpus shards in corpus order (local paths or any Beam filesystem URL).
      workdir: where vectors, the index and the part files go (a path every worker can read and write).
      n_seeds: seed passages to sample (None: all).
      llm: the worker's LLM recipe (with the shared cache path).
      embedder: the worker's embedder recipe.
      plan: the scoring plan (probed once by the driver).
      config: :class:`~data_gen.stages.FRetConfig`.
      model, backend: the LLM's names, for the records' provenance.
    """

    files: list[str]
    workdir: str
    n_seeds: int | None
    llm: LLMSpec
    embedder: EmbedderSpec
    plan: ScoringPlan
    config: FRetConfig = field(default_factory=FRetConfig)
    model: str = ""
    backend: str = ""


# ---- file helpers: local paths atomically, other filesystems through Beam ----------------------------------------

def _is_remote(path: str) -> bool:
    return "://" in str(path)


def _join(folder: str, name: str) -> str:
    return FileSystems.join(folder, name) if _is_remote(folder) else str(Path(folder) / name)


def _write_text(path: str, lines: Iterable[str]) -> None:
    if _is_remote(path):
        with FileSystems.create(path) as f:
            for line in lines:
                f.write(line.encode("utf-8"))
        return
    with atomic_file(path) as f:
        for line in lines:
            f.write(line)


def _write_npz(path: str, **arrays) -> None:
    if _is_remote(path):
        with FileSystems.create(path) as f:
            np.savez(f, **arrays)
        return
    with atomic_file(path, binary=True) as f:
        np.savez(f, **arrays)


def _local_copy(folder: str) -> str:
    """A local folder with ``folder``'s files (itself when it is local): FAISS and numpy read local files."""
    if not _is_remote(folder):
        return folder
    dest = tempfile.mkdtemp(prefix="fret-index-")
    for m in FileSystems.match([_join(folder, "*")])[0].metadata_list:
        with FileSystems.open(m.path) as src, open(Path(dest) / Path(m.path).name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return dest


class _Usage:
    """Reports a worker's LLM usage to Beam metrics (summed over workers by the runner)."""

    def __init__(self, llm):
        self.llm, self.last = llm, llm.usage.as_dict()
        self.counters = {k: Metrics.counter("llm", k) for k in self.last}

    def flush(self) -> None:
        now = self.llm.usage.as_dict()
        for k, v in now.items():
            if v != self.last[k]:
                self.counters[k].inc(v - self.last[k])
        self.last = now


# ---- DoFns ------------------------------------------------------------------------------------------------------

class ReadShard(beam.DoFn):
    """One corpus file -> ``(order, id, title, text)`` per line, validated as the local engine does (file:line)."""

    def process(self, item: tuple[int, str]) -> Iterator[tuple[int, str, str, str]]:
        fi, path = item
        with FileSystems.open(path) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                text = decode_line(raw.rstrip(b"\n"), Path(path), lineno)
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as e:
                    raise JsonlError(f"{where}: expected one JSON object per line, got invalid JSON ({e})") from None
                if not isinstance(rec, dict):
                    raise JsonlError(f"{where}: expected a JSON object, got {type(rec).__name__}")
                p = parse_passage(rec, where)
                yield order_key(fi, lineno), p.id, p.title, p.text


class _WithLLM(beam.DoFn):
    """A DoFn whose worker builds its own LLM client once (``setup``): its cache connection, retries, rate limits
    and circuit breaker are per worker process."""

    def __init__(self, job: BeamFRetJob):
        self.job = job

    def setup(self):
        self.llm = self.job.llm.build()
        self.usage = _Usage(self.llm)


class Generate(_WithLLM):
    """Stage 1 for a batch of seeds, ``concurrency`` LLM calls in flight; failures to the ``dead`` output."""

    def process(self, batch: Sequence[tuple]):
        cfg = self.job.config
        results: dict[str, dict] = {}
        route = self.job.plan.generate
        parallel_map(lambda d: generate_one(self.llm, d[1], d[2], d[3], cfg, route), batch,
                     concurrency=cfg.concurrency, on_result=lambda d, rec: results.__setitem__(d[1], rec),
                     progress=False)
        self.usage.flush()
        for d in batch:
            rec = results[d[1]]
            Metrics.counter("fret", "generated").inc()
            if rec["ok"]:
                yield d[0], rec
            else:
                Metrics.counter("fret", "generate_failed").inc()
                Metrics.counter("fret", f"generate_failed_{rec['error_kind']}").inc()
                yield beam.pvalue.TaggedOutput("dead", (d[0], generate_failure(d[1], rec)))


class EmbedShard(beam.DoFn):
    """Embeds a batch of passages and writes it as one shard file ``(orders, ids, vectors)``; yields its path."""

    def __init__(self, job: BeamFRetJob, folder: str):
        self.job, self.folder = job, folder

    def setup(self):
        self.embed_fn, _ = self.job.embedder.build()

    def process(self, batch: Sequence[tuple]):
        cfg = self.job.config
        texts = [format_document(d[3], d[2]) for d in batch]
        bs = cfg.embed_batch_size
        vecs = np.concatenate([l2_normalize(np.asarray(self.embed_fn(texts[i:i + bs]), np.float32))
                               for i in range(0, len(texts), bs)])
        orders = np.asarray([d[0] for d in batch], np.int64)
        path = _join(self.folder, f"shard-{int(orders.min()):020d}-{len(batch)}.npz")
        _write_npz(path, orders=orders, ids=np.asarray([d[1] for d in batch]), vectors=vecs)
        yield path


def build_index(paths: list[str], job: BeamFRetJob, folder: str) -> dict:
    """Merges the shard files into :class:`~data_gen.retrieval.VectorShards` in corpus order (plus the ids and order
    keys) and builds the retriever's index once; every search worker then loads it."""
    local = folder if not _is_remote(folder) else tempfile.mkdtemp(prefix="fret-index-")
    parts = []
    for p in sorted(paths):
        with FileSystems.open(p) as f:
            z = np.load(f)
            parts.append((z["orders"], z["ids"], z["vectors"]))
    orders = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    vecs = np.concatenate([p[2] for p in parts])
    del parts
    perm = np.argsort(orders, kind="stable")
    orders, ids, vecs = orders[perm], ids[perm], vecs[perm]
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        raise JsonlError(f"corpus: duplicate id {str(uniq[counts > 1][0])!r} ({len(ids) - len(uniq)} duplicates "
                         f"across the shards)")
    vdir = Path(local) / "vectors"
    vdir.mkdir(parents=True, exist_ok=True)
    rows = 65536
    for i in range(0, len(vecs), rows):
        save_npy_atomic(vdir / f"part-{i // rows:05d}.npy", vecs[i:i + rows])
    with atomic_file(vdir / "meta.json") as f:
        f.write(json.dumps({"rows": int(len(vecs)), "dim": int(vecs.shape[1]),
                            "shards": (len(vecs) + rows - 1) // rows}))
    save_npy_atomic(Path(local) / "orders.npy", orders)
    with atomic_file(Path(local) / "ids.json") as f:
        json.dump(ids.tolist(), f, ensure_ascii=False)
    del vecs
    from .ann import open_retriever
    r = open_retriever(VectorShards(vdir), job.config.retriever, ann_threshold=job.config.ann_threshold)
    name = r.name
    del r
    if _is_remote(folder):
        for f in Path(local).rglob("*"):
            if f.is_file():
                with open(f, "rb") as src, FileSystems.create(_join(folder, str(f.relative_to(local)))) as dst:
                    shutil.copyfileobj(src, dst)
    return {"folder": folder, "retriever": name, "rows": int(len(ids))}


class Search(beam.DoFn):
    """Stage 2 for a batch of queries: the query embedder is built once per worker (``setup``), the index loaded
    once per worker (first batch) from the folder :func:`build_index` wrote."""

    def __init__(self, job: BeamFRetJob):
        self.job = job

    def setup(self):
        doc_fn, query_fn = self.job.embedder.build()
        self.embed_fn = query_fn or doc_fn
        self._loaded = None

    def _load(self, info: dict):
        if self._loaded is None or self._loaded[0] != info["folder"]:
            local = _local_copy(info["folder"])
            from .ann import open_retriever
            r = open_retriever(VectorShards(Path(local) / "vectors"), self.job.config.retriever,
                               ann_threshold=self.job.config.ann_threshold)
            ids = json.loads((Path(local) / "ids.json").read_text())
            orders = np.load(Path(local) / "orders.npy")
            self._loaded = (info["folder"], r, ids, orders)
        return self._loaded[1:]

    def process(self, batch: Sequence[tuple], info: dict):
        cfg = self.job.config
        retriever, ids, orders = self._load(info)
        texts = [format_query(q["query"], q["task"]) for _, q in batch]
        qv = np.concatenate([np.asarray(self.embed_fn(texts[i:i + cfg.embed_batch_size]), np.float32)
                             for i in range(0, len(texts), cfg.embed_batch_size)])
        n = min(cfg.neighbours, len(ids))
        idx, sc = retriever.search(qv, n)
        for (order, q), qvec, ii, ss in zip(batch, l2_normalize(qv), idx, sc):
            seed_pos = int(np.searchsorted(orders, order))
            yield order, neighbour_record(q, ii, ss, ids.__getitem__, seed_pos,
                                          lambda: seed_cosine(retriever.doc_vector(seed_pos), qvec),
                                          include_seed=cfg.include_seed, embedder=self.job.embedder.name,
                                          retriever=retriever.name)


class Score(_WithLLM):
    """Stage 3 for a batch of seeds (each with its candidates' passages), ``concurrency`` calls in flight."""

    def process(self, batch: Sequence[tuple]):
        asm = ScoreAssembler(self.llm, self.job.plan, self.job.config.max_passage_chars)
        out: dict[str, dict] = {}
        items = [it for _, nb, passages in batch for it in asm.start(nb, passages)]

        def on_result(item, res):
            rec = asm.add(item, res)
            if rec is not None:
                out[rec["id"]] = rec
        parallel_map(asm.call, items, concurrency=self.job.config.concurrency, on_result=on_result, progress=False)
        self.usage.flush()
        for order, nb, passages in batch:
            rec = out[nb["id"]]
            if rec["ok"]:
                yield order, rec, passages
            else:
                Metrics.counter("fret", "score_failed").inc()
                yield beam.pvalue.TaggedOutput("dead", (order, later_failure(nb["id"], "score", rec)))


class CalibrationCombine(beam.CombineFn):
    """Sums :class:`~data_gen.stages.CalibrationCounts` (integer counts: any merge order gives the same result)."""

    def create_accumulator(self):
        return CalibrationCounts()

    def add_input(self, acc, item):
        sid, cands = item
        return acc.add(sid, cands)

    def merge_accumulators(self, accs):
        out = CalibrationCounts()
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


class WriteBlock(beam.DoFn):
    """One block of ``(order, record)``: sorted by corpus order and written as one part file."""

    def __init__(self, folder: str):
        self.folder = folder

    def process(self, kv):
        (fi, blk), items = kv
        items = sorted(items, key=lambda x: x[0])
        path = _join(self.folder, f"part-{fi:05d}-{blk:08d}.jsonl")
        _write_text(path, (json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for _, r in items))
        yield path, len(items)


def _blocked(pc, label: str, folder: str):
    return (pc
            | f"{label}: block" >> beam.Map(lambda x: ((x[0] >> LINE_BITS, (x[0] & ((1 << LINE_BITS) - 1))
                                                        // BLOCK_LINES), x))
            | f"{label}: group" >> beam.GroupByKey()
            | f"{label}: write" >> beam.ParDo(WriteBlock(folder)))


def _assemble(kv):
    sid, g = kv
    if not g["nb"]:
        return []
    order, nb = g["nb"][0]
    passages = {cid: Passage(id=cid, title=t, text=x) for cid, t, x in g["p"]}
    return [(order, nb, passages)]


def _final(item, fusion: dict, job: BeamFRetJob):
    order, s, passages = item
    rec = final_record(s["id"], s, passages, config=job.config, fusion=fusion, model=job.model,
                       backend=job.backend, embedder=job.embedder.name, retriever=s.get("retriever") or "")
    Metrics.counter("fret", "records").inc()
    if not rec["positive_is_seed"]:
        Metrics.counter("fret", "positive_differs").inc()
    return order, rec


def build_pipeline(p: beam.Pipeline, job: BeamFRetJob) -> None:
    """Adds the FRet graph to ``p``; outputs go to ``<workdir>/records`` and ``<workdir>/failures`` part files."""
    cfg = job.config
    vec_folder = _join(job.workdir, "vector-shards")
    index_folder = _join(job.workdir, "index")
    docs = (p
            | "corpus files" >> beam.Create(list(enumerate(job.files)))
            | "read shards" >> beam.ParDo(ReadShard())
            | "spread" >> beam.Reshuffle())

    gen = (_seed_docs(docs, job)
           | "gen batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=max(8, 4 * cfg.concurrency))
           | "1 generate" >> beam.ParDo(Generate(job)).with_outputs("dead", main="ok"))

    shard_paths = (docs
                   | "embed batches" >> beam.BatchElements(min_batch_size=cfg.embed_batch_size,
                                                           max_batch_size=64 * cfg.embed_batch_size)
                   | "embed corpus" >> beam.ParDo(EmbedShard(job, vec_folder)))
    index = (shard_paths
             | "all shards" >> beam.combiners.ToList()
             | "build index" >> beam.Map(build_index, job=job, folder=index_folder))

    neigh = (gen.ok
             | "query batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=1024)
             | "2 search" >> beam.ParDo(Search(job), info=beam.pvalue.AsSingleton(index)))

    scored = (_with_candidate_passages(docs, neigh)
              | "score batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=max(2, cfg.concurrency))
              | "3 score" >> beam.ParDo(Score(job)).with_outputs("dead", main="ok"))

    fusion = (scored.ok
              | "calibration input" >> beam.Map(lambda x: (x[1]["id"], x[1]["candidates"]))
              | "calibration counts" >> beam.CombineGlobally(CalibrationCombine())
              | "calibrate" >> beam.Map(lambda c: calibrate(c, fusion=cfg.fusion,
                                                            min_records=cfg.calibration_min_records,
                                                            alpha=cfg.calibration_alpha)))
    records = scored.ok | "4-5 select" >> beam.Map(_final, fusion=beam.pvalue.AsSingleton(fusion), job=job)
    dead = (gen.dead, scored.dead) | "dead letter" >> beam.Flatten()
    _blocked(records, "records", _join(job.workdir, "records"))
    _blocked(dead, "failures", _join(job.workdir, "failures"))


def _seed_docs(docs, job: BeamFRetJob):
    """The seed passages: the n with the smallest seed_hash (as sample_seed_ids does locally), or all."""
    if job.n_seeds is None:
        return docs
    keyed = docs | "seed keys" >> beam.Map(lambda d: ((seed_hash(job.config.seed, d[1]), d[1]), d))
    threshold = (keyed
                 | "keys" >> beam.Keys()
                 | "n smallest" >> beam.combiners.Top.Smallest(job.n_seeds)
                 | "threshold" >> beam.Map(lambda smallest: smallest[-1] if smallest else None))
    return (keyed
            | "is seed" >> beam.Filter(lambda kd, t: t is not None and kd[0] <= tuple(t),
                                       t=beam.pvalue.AsSingleton(threshold))
            | "seed docs" >> beam.Values())


def _with_candidate_passages(docs, neigh):
    """Each seed's neighbours joined with its candidates' passages (``_assemble``), ready to score."""
    wanted = neigh | "candidate ids" >> beam.FlatMap(lambda on: [(c["id"], on[1]["id"]) for c in on[1]["candidates"]])
    texts = docs | "passages by id" >> beam.Map(lambda d: (d[1], (d[2], d[3])))
    cand_passages = (
        {"p": texts, "w": wanted}
        | "join passages" >> beam.CoGroupByKey()
        | "to seeds" >> beam.FlatMap(lambda kv: [(sid, (kv[0],) + tuple(kv[1]["p"][0])) for sid in kv[1]["w"]]
                                     if kv[1]["w"] else []))
    return ({"nb": neigh | "nb by id" >> beam.Map(lambda on: (on[1]["id"], on)), "p": cand_passages}
            | "group seeds" >> beam.CoGroupByKey()
            | "assemble" >> beam.FlatMap(_assemble))


def merge_parts(folder: str, out: Path) -> int:
    """Concatenates ``folder/part-*.jsonl`` in name (= corpus) order into ``out``, atomically; returns lines."""
    pattern = _join(folder, "part-*.jsonl")
    try:
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - no part file at all: an empty output
        paths = []
    n = 0
    with atomic_file(out, binary=True) as dst:
        for path in paths:
            with FileSystems.open(path) as src:
                for line in src:
                    dst.write(line)
                    n += 1
    return n


def _clear(folder: str) -> None:
    if _is_remote(folder):
        try:
            FileSystems.delete([folder])
        except Exception:  # noqa: BLE001 - nothing to delete
            pass
    else:
        shutil.rmtree(folder, ignore_errors=True)


def run_beam(job: BeamFRetJob, out: Path, failures: Path, beam_args: Sequence[str] = ()) -> dict:
    """Runs the pipeline and merges its part files into ``out`` and ``failures``; returns the summary
    (the same fields as the local engine's, plus ``engine`` and the runner's options)."""
    for sub in ("records", "failures", "vector-shards", "index"):
        _clear(_join(job.workdir, sub))  # part files of an earlier (maybe killed) run must not be merged
    opts = PipelineOptions(list(beam_args))
    t0 = time.perf_counter()
    p = beam.Pipeline(options=opts)
    build_pipeline(p, job)
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    n = merge_parts(_join(job.workdir, "records"), out)
    nf = merge_parts(_join(job.workdir, "failures"), failures)
    counters: dict[str, int] = {}
    for r in result.metrics().query()["counters"]:  # one result per step: sum them
        name = f"{r.key.metric.namespace}.{r.key.metric.name}"
        counters[name] = counters.get(name, 0) + int((r.committed if r.committed is not None else r.attempted) or 0)
    usage = {k.split(".", 1)[1]: int(v or 0) for k, v in counters.items() if k.startswith("llm.")}
    for k in ("requests", "prompt_tokens", "completion_tokens", "cache_hits", "retries", "failures"):
        usage.setdefault(k, 0)
    generated = int(counters.get("fret.generated") or 0)
    parse_failed = int(counters.get("fret.generate_failed_parse") or 0)
    fusion, retriever = {}, ""
    if n:
        with open(out, encoding="utf-8") as f:
            first = json.loads(f.readline())
        fusion, retriever = first.get("fusion") or {}, first.get("retriever") or ""
    return {"seeds": n + nf, "records": n, "failures": nf,
            "parse_success_rate": (generated - parse_failed) / generated if generated else float("nan"),
            "positive_differs_from_seed": int(counters.get("fret.positive_differs") or 0) / n if n
            else float("nan"),
            "usage": usage, "seconds": seconds, "scoring": job.plan.provenance(), "fusion": fusion,
            "retriever": retriever, "engine": "beam", "beam_options": list(beam_args)}


def job_files(spec: str) -> list[str]:
    """Corpus shard paths, sorted: local via :func:`~data_gen.corpus.corpus_files`, else a Beam filesystem glob."""
    if _is_remote(spec):
        paths = sorted(m.path for m in FileSystems.match([spec])[0].metadata_list)
        if not paths:
            from .errors import InputError
            raise InputError(f"corpus: no file matches {spec}")
        return paths
    return [str(p) for p in corpus_files(spec)]


def validate_local_corpus(files: Sequence[str]) -> int:
    """The local engine's checks (file:line of a bad field, duplicate ids), run by the driver before any LLM call;
    returns the number of passages."""
    return len(CorpusStore(list(files)))
