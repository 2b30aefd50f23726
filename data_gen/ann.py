"""Approximate nearest-neighbour indexes behind :class:`~data_gen.retrieval.Retriever`: FAISS (HNSW, IVF-Flat) and
ScaNN, built from :class:`~data_gen.retrieval.VectorShards` one shard at a time, saved once and reused.

``faiss-cpu`` (the ``[scale]`` extra) and ``scann`` are imported only when such an index is asked for. Exact search
(:class:`~data_gen.retrieval.ExactRetriever`) stays the reference: ``bench/fret_scale.py`` measures every index's
recall@N against it (see BENCHMARKS.md, which is also why ``auto`` picks FAISS HNSW above ``ann_threshold``).

Index files are content-addressed: ``index-<vectors key>-<kind and parameters>.<ext>`` beside the vectors, written
atomically, so a re-run (or every Beam worker) loads the index instead of building it again.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .retrieval import ExactRetriever, Retriever, VectorShards, l2_normalize

log = logging.getLogger(__name__)

KINDS = ("exact", "faiss-hnsw", "faiss-ivf", "scann")


@dataclass(frozen=True)
class AnnParams:
    """Index parameters (the defaults are the ones measured in BENCHMARKS.md).

    Attributes:
      hnsw_m: HNSW graph degree. hnsw_ef_construction / hnsw_ef_search: beam widths at build / query time
        (``ef_search`` is raised to ``k`` when smaller). 1024 gave recall@20 0.994 at 17 ms a query on 100k
        hashed bag-of-words vectors (128: 0.854 at 2 ms): a FRet record costs 1 + 2N LLM calls, so recall wins.
      ivf_nlist: IVF cells (0: ``4 * sqrt(rows)``); ivf_nprobe: cells visited per query.
      scann_leaves (0: ``sqrt(rows)``), scann_leaves_to_search, scann_reorder: ScaNN tree + AH + exact re-ranking.
      threads: CPU threads for FAISS (0: its default, all cores).
    """

    hnsw_m: int = 32
    hnsw_ef_construction: int = 128
    hnsw_ef_search: int = 1024
    ivf_nlist: int = 0
    ivf_nprobe: int = 32
    scann_leaves: int = 0
    scann_leaves_to_search: int = 100
    scann_reorder: int = 200
    threads: int = 0

    def tag(self, kind: str) -> str:
        if kind == "faiss-hnsw":
            return f"hnsw{self.hnsw_m}-efc{self.hnsw_ef_construction}"
        if kind == "faiss-ivf":
            return f"ivf{self.ivf_nlist or 'auto'}"
        if kind == "scann":
            return f"scann{self.scann_leaves or 'auto'}"
        return kind


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("an ANN index needs faiss-cpu: pip install 'gecko-jax[scale]' (or --retriever exact)") \
            from None
    return faiss


class FaissRetriever:
    """A FAISS index (inner product over L2-normalised vectors = cosine) in corpus row order."""

    def __init__(self, index, kind: str, params: AnnParams):
        self.index, self.kind, self.params = index, kind, params
        faiss = _faiss()
        if params.threads:
            faiss.omp_set_num_threads(params.threads)
        if kind == "faiss-ivf":
            self.index.nprobe = params.ivf_nprobe
            self.index.make_direct_map()  # doc_vector() reconstructs rows by id
        self.name = f"{kind}:{params.tag(kind)}" + (f"-nprobe{params.ivf_nprobe}" if kind == "faiss-ivf" else
                                                    f"-ef{params.hnsw_ef_search}" if kind == "faiss-hnsw" else "")

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, shards: VectorShards, kind: str, params: AnnParams) -> "FaissRetriever":
        faiss = _faiss()
        if params.threads:
            faiss.omp_set_num_threads(params.threads)
        meta = shards.meta()
        d, n = meta["dim"], meta["rows"]
        if kind == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params.hnsw_ef_construction
        elif kind == "faiss-ivf":
            nlist = params.ivf_nlist or max(1, int(4 * math.sqrt(n)))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(_training_sample(shards, max(nlist * 64, 10_000)))
        else:
            raise ValueError(f"kind: expected faiss-hnsw or faiss-ivf, got {kind!r}")
        for v in shards:  # one shard in memory at a time
            index.add(np.ascontiguousarray(v, dtype=np.float32))
        return cls(index, kind, params)

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(l2_normalize(query_vecs), dtype=np.float32)
        k = min(k, self.size)
        if self.kind == "faiss-hnsw":
            self.index.hnsw.efSearch = max(self.params.hnsw_ef_search, k)
        scores, idx = self.index.search(q, k)
        return idx.astype(np.int64), scores.astype(np.float32)

    def doc_vector(self, j: int) -> np.ndarray:
        return self.index.reconstruct(int(j))

    def save(self, path: Path) -> None:
        _atomic_path_write(path, lambda tmp: _faiss().write_index(self.index, str(tmp)))

    @classmethod
    def load(cls, path: Path, kind: str, params: AnnParams) -> "FaissRetriever":
        return cls(_faiss().read_index(str(path)), kind, params)


class ScannRetriever:
    """A ScaNN searcher (tree partitioning + asymmetric hashing + exact re-ranking), dot product on normalised
    vectors. ScaNN builds from the whole matrix, so the vectors are loaded once (kept for ``doc_vector``)."""

    def __init__(self, searcher, docs: np.ndarray, params: AnnParams):
        self.searcher, self.docs, self.params = searcher, docs, params
        self.name = f"scann:{params.tag('scann')}-search{params.scann_leaves_to_search}-reorder{params.scann_reorder}"

    @property
    def size(self) -> int:
        return self.docs.shape[0]

    @staticmethod
    def _scann():
        try:
            from scann.scann_ops.py import scann_ops_pybind
        except ImportError:
            raise InputError("--retriever scann needs the scann package: pip install scann") from None
        return scann_ops_pybind

    @classmethod
    def build(cls, shards: VectorShards, params: AnnParams) -> "ScannRetriever":
        ops = cls._scann()
        docs = shards.load()
        n = docs.shape[0]
        leaves = params.scann_leaves or max(1, int(math.sqrt(n)))
        searcher = (ops.builder(docs, 10, "dot_product")
                    .tree(num_leaves=leaves, num_leaves_to_search=min(100, leaves),
                          training_sample_size=min(n, 250_000))
                    .score_ah(2, anisotropic_quantization_threshold=0.2)
                    .reorder(params.scann_reorder).build())
        return cls(searcher, docs, params)

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(l2_normalize(query_vecs), dtype=np.float32)
        k = min(k, self.size)
        idx, scores = self.searcher.search_batched(q, final_num_neighbors=k,
                                                   pre_reorder_num_neighbors=max(k, self.params.scann_reorder),
                                                   leaves_to_search=self.params.scann_leaves_to_search)
        return np.asarray(idx, np.int64), np.asarray(scores, np.float32)

    def doc_vector(self, j: int) -> np.ndarray:
        return self.docs[j]

    def save(self, path: Path) -> None:
        def write(tmp: Path):
            tmp.mkdir()
            self.searcher.serialize(str(tmp), relative_path=True)  # the folder is renamed into place
        _atomic_path_write(path, write)

    @classmethod
    def load(cls, path: Path, shards: VectorShards, params: AnnParams) -> "ScannRetriever":
        return cls(cls._scann().load_searcher(str(path)), shards.load(), params)


def _training_sample(shards: VectorShards, size: int) -> np.ndarray:
    """Up to ``size`` rows spread evenly over all shards (IVF centroids must see the whole corpus)."""
    n = shards.meta()["rows"]
    step = max(1, n // size)
    parts, at = [], 0
    for v in shards:
        first = (-at) % step
        parts.append(np.asarray(v[first::step], np.float32))
        at += len(v)
    return np.ascontiguousarray(np.concatenate(parts)[:size])


def _atomic_path_write(path: Path, write) -> None:
    """Write a file or folder through a temporary sibling and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / "x"
    try:
        write(tmp)
        if path.exists() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp.parent)


def choose_kind(kind: str, rows: int, ann_threshold: int) -> str:
    """``auto``: exact search up to ``ann_threshold`` rows, FAISS HNSW above (the measured choice)."""
    if kind == "auto":
        return "exact" if rows <= ann_threshold else "faiss-hnsw"
    if kind not in KINDS:
        raise InputError(f"--retriever: expected auto or one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def index_path(shards: VectorShards, kind: str, params: AnnParams) -> Path:
    ext = {"faiss-hnsw": "faiss", "faiss-ivf": "faiss", "scann": "scann"}[kind]
    return shards.folder.parent / f"index-{shards.folder.name}-{params.tag(kind)}.{ext}"


def open_retriever(shards: VectorShards, kind: str = "auto", *, params: AnnParams | None = None,
                   ann_threshold: int = 200_000) -> Retriever:
    """A retriever over complete ``shards``: exact (vectors in memory) or an ANN index loaded from its file, built
    and saved first when missing. Memory: the vectors (exact, ScaNN) or the index (FAISS), never both copies of
    the corpus text."""
    params = params or AnnParams()
    meta = shards.meta()
    kind = choose_kind(kind, meta["rows"], ann_threshold)
    if kind == "exact":
        return ExactRetriever(shards.load(), normalized=True)
    path = index_path(shards, kind, params)
    if kind == "scann":
        if path.exists():
            return ScannRetriever.load(path, shards, params)
        r = ScannRetriever.build(shards, params)
    else:
        if path.exists():
            r = FaissRetriever.load(path, kind, params)
            if r.size == meta["rows"]:
                return r
            log.warning("%s: index has %d rows, vectors %d: rebuilding", path, r.size, meta["rows"])
        r = FaissRetriever.build(shards, kind, params)
    r.save(path)
    log.info("retrieval: built %s over %d vectors, saved to %s", r.name, meta["rows"], path)
    return r
