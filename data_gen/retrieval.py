"""Nearest-neighbour retrieval for FRet step 2a: exact blocked top-k in numpy behind a small ``Retriever`` protocol,
and the sharded document vectors every retriever is built from.

``embed_fn(texts: list[str]) -> np.ndarray [n, d]`` is injected (the CLI wires ``gecko_jax.Embedder``); vectors are
L2-normalised here, so the score is cosine similarity. Approximate indexes (FAISS HNSW/IVF, ScaNN) live in
:mod:`data_gen.ann` and implement the same protocol; exact search is the reference and the small-corpus default.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from .files import atomic_file
from .vectors import exact_topk, l2_normalize  # noqa: F401  (re-exported)

EmbedFn = Callable[[Sequence[str]], np.ndarray]


@runtime_checkable
class Retriever(Protocol):
    """What step 2 needs from a nearest-neighbour index over the corpus (rows in corpus order).

    ``search(query_vecs [q, d], k) -> (indices [q, k] int64, scores [q, k] float32)``, best first, cosine scores
    (an index may return -1 for a missing neighbour); ``doc_vector(j)`` the normalised vector of row ``j`` (the
    seed's score when it was not retrieved); ``size`` the number of rows; ``name`` the provenance string.
    """

    name: str

    @property
    def size(self) -> int: ...

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def doc_vector(self, j: int) -> np.ndarray: ...


class ExactRetriever:
    """Exact cosine retrieval over a fixed document matrix (normalised once, unless ``normalized``)."""

    name = "exact"

    def __init__(self, doc_vecs: np.ndarray, *, block_size: int = 8192, normalized: bool = False):
        self.docs = np.asarray(doc_vecs, np.float32) if normalized else l2_normalize(doc_vecs)
        self.block_size = block_size

    @property
    def size(self) -> int:
        return self.docs.shape[0]

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, idx = exact_topk(l2_normalize(query_vecs), self.docs, k, block_size=self.block_size)
        return idx, scores

    def doc_vector(self, j: int) -> np.ndarray:
        return self.docs[j]


class VectorShards:
    """Document vectors on disk, L2-normalised float32 in corpus order: ``part-00000.npy``, ... (``shard_rows`` rows
    each) and ``meta.json`` (``{"rows", "dim", "shards"}``), written last: the set is complete only with it.

    Every shard is written atomically, so an interrupted :meth:`build` resumes at the first missing shard. The
    folder name carries the content key (embedder + every text), so other texts or another embedder never reuse
    it. Retrievers are built from the shards one at a time (an ANN index never needs them all in memory).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @property
    def meta_path(self) -> Path:
        return self.folder / "meta.json"

    def complete(self) -> bool:
        return self.meta_path.exists()

    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text())

    def paths(self) -> list[Path]:
        m = self.meta()
        return [self.folder / f"part-{i:05d}.npy" for i in range(m["shards"])]

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths():
            yield np.load(p, mmap_mode="r")

    def load(self) -> np.ndarray:
        """All vectors as one in-memory array ``[rows, dim]`` (what exact search scans)."""
        m = self.meta()
        out = np.empty((m["rows"], m["dim"]), np.float32)
        at = 0
        for v in self:
            out[at:at + len(v)] = v
            at += len(v)
        return out

    def build(self, texts: Iterable[str], embed_fn: EmbedFn, *, batch_size: int = 128, shard_rows: int = 65536,
              progress: Callable[[int], None] | None = None) -> "VectorShards":
        """Embed ``texts`` (in corpus order) into shards; full shards left by an interrupted build are kept and
        their texts skipped. Batches are cut at the same rows as an uninterrupted build."""
        if self.complete():
            return self
        if shard_rows < 1 or shard_rows % batch_size:
            raise ValueError(f"shard_rows ({shard_rows}) must be a positive multiple of batch_size ({batch_size})")
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = 0
        while (self.folder / f"part-{shard:05d}.npy").exists() and \
                _npy_rows(self.folder / f"part-{shard:05d}.npy") == shard_rows:
            shard += 1
        skip = shard * shard_rows
        rows, dim, buf, batch = 0, None, [], []
        if shard:
            dim = int(np.load(self.folder / "part-00000.npy", mmap_mode="r").shape[1])

        def embed(chunk):
            v = np.asarray(embed_fn(chunk), dtype=np.float32)
            if v.ndim != 2 or v.shape[0] != len(chunk):
                raise ValueError(f"embed_fn: expected an array [n={len(chunk)}, d], got shape {v.shape}")
            return l2_normalize(v)

        def flush():
            nonlocal shard
            save_npy_atomic(self.folder / f"part-{shard:05d}.npy", np.concatenate(buf, axis=0))
            shard += 1
            buf.clear()

        for t in texts:
            rows += 1
            if rows <= skip:
                continue
            batch.append(t)
            if len(batch) == batch_size or rows % shard_rows == 0:
                v = embed(batch)
                buf.append(v)
                dim, batch = v.shape[1], []
                if progress:
                    progress(rows)
                if rows % shard_rows == 0:
                    flush()
        if batch:
            v = embed(batch)
            buf.append(v)
            dim = v.shape[1]
            if progress:
                progress(rows)
        if buf:
            flush()
        if rows == 0:
            raise ValueError("VectorShards.build: no texts")
        with atomic_file(self.meta_path) as f:
            f.write(json.dumps({"rows": rows, "dim": int(dim), "shards": shard}))
        return self


def _npy_rows(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])


class _PlainWriter:
    def __init__(self, f):
        self.write = f.write


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through :func:`~data_gen.files.atomic_file` (a full disk leaves no partial file)."""
    with atomic_file(path, binary=True) as f:
        # Through a plain write(): given a real file numpy calls fwrite, whose short write on a full disk raises an
        # OSError without errno ("N requested and M written").
        np.save(_PlainWriter(f), np.ascontiguousarray(array))


def doc_texts_key(embedder_name: str, texts: Iterable[str]) -> str:
    """sha256 over the embedder name and every document text (streamed): the vectors' content key."""
    h = hashlib.sha256(json.dumps(embedder_name).encode())
    n = 0
    for t in texts:
        h.update(b"\x1e")
        h.update(t.encode("utf-8"))
        n += 1
    h.update(str(n).encode())
    return h.hexdigest()


_WORD = re.compile(r"[a-z0-9]+")


def hashed_bow_embed(texts: Sequence[str], dims: int = 512) -> np.ndarray:
    """A dependency-free, deterministic bag-of-words embedder (signed feature hashing of lower-cased words).

    Only for tests, demos and boxes without an encoder: it matches words, not meaning.
    """
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for r, t in enumerate(texts):
        for w in _WORD.findall(t.lower()):
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            out[r, h % dims] += 1.0 if (h >> 63) & 1 else -1.0
    return l2_normalize(out)
