"""Corpora of any size: JSONL passages in one file or many shards, read as a stream and looked up by id from disk.

A corpus is ``{"_id" or "id", "text", "title" (optional)}`` per line (the BEIR layout), UTF-8, in one file, a
folder of ``*.jsonl`` files or a glob (``shards/part-*.jsonl``); shards are read in sorted path order, which
defines the corpus order (retrieval breaks score ties by it, output follows it).

:class:`CorpusStore` validates the corpus in one streaming pass and keeps, per passage, only where its line is
(file, byte offset), its line number, its id and a 128-bit id hash for lookups: ~52 bytes plus the id, so a
10M-passage corpus costs ~0.7 GB instead of its text. Passages are read back with ``pread`` when a prompt needs them.
"""
from __future__ import annotations

import glob as _glob
import json
import os
import threading
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .jsonl import JsonlError, find_key, iter_jsonl_at, key_hash, read_line_at, record_id, record_text


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""


def corpus_files(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files of a corpus: a file, a folder (its ``*.jsonl``), a glob pattern or a list of files; sorted.

    Raises:
      InputError: nothing matches, or a listed file does not exist.
    """
    if isinstance(spec, (list, tuple)):
        files = [Path(p) for p in spec]
        for f in files:
            if not f.is_file():
                raise InputError(f"corpus: file not found: {f}")
        return files
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise InputError(f"corpus: folder {p} has no *.jsonl files")
        return files
    if any(ch in str(spec) for ch in "*?["):
        files = [Path(f) for f in sorted(_glob.glob(str(spec))) if Path(f).is_file()]
        if not files:
            raise InputError(f"corpus: no file matches {spec}")
        return files
    raise InputError(f"corpus: file not found: {p}")


def parse_passage(rec: dict, where: str) -> Passage:
    """One corpus line as a :class:`Passage`; errors name ``where`` (``file:line``) and the field."""
    pid = record_id(rec, where, "_id", "id")
    text = record_text(rec, f"{where} (id {pid})", "text")
    title = record_text(rec, f"{where} (id {pid})", "title", optional=True)
    return Passage(id=pid, text=text, title=title)


def iter_corpus(files: Sequence[Path]) -> Iterator[tuple[int, int, int, Passage]]:
    """Stream ``(file index, line number, byte offset, passage)`` over the files in order, validating every line.

    Raises:
      JsonlError (an InputError): naming ``file:line`` and the field (not UTF-8, not JSON, a missing, empty or
      mistyped field).
    """
    for fi, path in enumerate(files):
        for lineno, at, rec in iter_jsonl_at(path, tolerate_torn_tail=False):
            yield fi, lineno, at, parse_passage(rec, f"{path}:{lineno}")


class CorpusStore(Mapping):
    """A read-only ``{id: Passage}`` over JSONL shards, holding offsets, not text (see the module docstring).

    Args:
      spec: a file, folder, glob or list of files (see :func:`corpus_files`).

    Raises:
      InputError: a missing file; JsonlError naming ``file:line`` for a bad line or a duplicate id; an empty corpus.
    """

    def __init__(self, spec: str | os.PathLike | Sequence[str | os.PathLike]):
        self.files = corpus_files(spec)
        fidx, line, off = array("i"), array("q"), array("q")
        k1, k2, id_off = array("Q"), array("Q"), array("q", [0])
        blob = bytearray()
        for fi, lineno, at, p in iter_corpus(self.files):
            fidx.append(fi)
            line.append(lineno)
            off.append(at)
            b = p.id.encode("utf-8")
            blob += b
            id_off.append(len(blob))
            a, c = key_hash(p.id)
            k1.append(a)
            k2.append(c)
        n = len(fidx)
        if n == 0:
            raise JsonlError(f"{self.files[0] if len(self.files) == 1 else ', '.join(map(str, self.files))}: "
                             f"the corpus is empty")
        self._file = np.frombuffer(fidx, np.int32).copy()
        self._line = np.frombuffer(line, np.int64).copy()
        self._off = np.frombuffer(off, np.int64).copy()
        self._id_off = np.frombuffer(id_off, np.int64).copy()
        self._ids = bytes(blob)
        del blob
        ka, kb = np.frombuffer(k1, np.uint64), np.frombuffer(k2, np.uint64)
        self._order = np.lexsort((kb, ka))
        self._k1, self._k2 = ka[self._order].copy(), kb[self._order].copy()
        dup = np.flatnonzero((self._k1[1:] == self._k1[:-1]) & (self._k2[1:] == self._k2[:-1]))
        if len(dup):
            a, b = sorted((int(self._order[dup[0]]), int(self._order[dup[0] + 1])))
            raise JsonlError(f"{self.where(b)}: duplicate id {self.id_at(b)!r} (first at {self.where(a)})")
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()  # prompts are built in worker threads

    # -- Mapping --
    def __len__(self) -> int:
        return len(self._off)

    def __iter__(self) -> Iterator[str]:
        for j in range(len(self)):
            yield self.id_at(j)

    def __contains__(self, pid) -> bool:
        return isinstance(pid, str) and self.position(pid) >= 0

    def __getitem__(self, pid: str) -> Passage:
        j = self.position(pid)
        if j < 0:
            raise KeyError(pid)
        return self.passage_at(j)

    # -- positions --
    def id_at(self, j: int) -> str:
        return self._ids[self._id_off[j]:self._id_off[j + 1]].decode("utf-8")

    def position(self, pid: str) -> int:
        """The corpus position of ``pid``, or -1."""
        i = find_key(self._k1, self._k2, pid)
        return -1 if i < 0 else int(self._order[i])

    def where(self, j: int) -> str:
        return f"{self.files[self._file[j]]}:{self._line[j]}"

    def passage_at(self, j: int) -> Passage:
        fi = int(self._file[j])
        fd = self._fds.get(fi)
        if fd is None:
            with self._lock:
                fd = self._fds.get(fi)
                if fd is None:
                    fd = self._fds[fi] = os.open(self.files[fi], os.O_RDONLY)
        raw = read_line_at(fd, int(self._off[j]), self.files[fi])
        return parse_passage(json.loads(raw.decode("utf-8").lstrip("\ufeff")), self.where(j))

    def passages(self) -> Iterator[Passage]:
        """Every passage in corpus order, streamed from the files."""
        for _, _, _, p in iter_corpus(self.files):
            yield p

    def close(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)
        if hasattr(self, "_fds"):
            self._fds.clear()

    def __del__(self):
        self.close()


def open_corpus(spec) -> CorpusStore:
    """A :class:`CorpusStore` over ``spec`` (a file, folder, glob or list of files)."""
    return CorpusStore(spec)
