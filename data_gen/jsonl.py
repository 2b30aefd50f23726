"""Crash-safe JSONL: one record per line, appended atomically, read back tolerating a torn last line.

A record is written as one ``os.write`` of a complete line on a file opened with ``O_APPEND`` and then ``fsync``-ed,
so a ``kill -9`` can at worst leave the *last* line incomplete. Readers drop that torn tail (and the appender
truncates it before writing) so a resumed run never glues a new record onto half of an old one. A malformed line
anywhere *else* is corruption, not a crash artefact, and raises an error naming the file and line.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError, StorageError, describe_os_error
from .files import atomic_file

log = logging.getLogger(__name__)


class JsonlError(InputError):
    """A JSONL file that cannot be read: names the file, line and what was expected."""


def _torn_tail_offset(path: Path) -> int | None:
    """Byte offset where an incomplete last line starts, or None when the file ends with a newline (or is empty)."""
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        # Walk back in chunks to the previous newline; lines are small, a few KiB at most.
        pos, chunk = size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
        return 0


def decode_line(raw: bytes, path: Path, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                         f"line); save the file as UTF-8") from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text  # a UTF-8 byte-order mark


def iter_jsonl_at(path: str | os.PathLike, *, tolerate_torn_tail: bool = True,
                  required: Iterable[str] = ()) -> Iterator[tuple[int, int, dict]]:
    """Like :func:`iter_jsonl`, yielding ``(line number, byte offset of the line, record)``. Streams the file: memory
    is one line, whatever the file's size."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise JsonlError(f"{path}: cannot read ({describe_os_error(e)})") from None
    with f:
        offset = 0
        for i, raw in enumerate(f, 1):
            at, offset = offset, offset + len(raw)
            is_tail = not raw.endswith(b"\n")
            if not raw.strip():
                continue
            try:
                rec = json.loads(decode_line(raw.rstrip(b"\n"), path, i))
            except (json.JSONDecodeError, JsonlError) as e:
                if is_tail and tolerate_torn_tail:
                    log.warning("%s:%d: ignoring a torn last line (%d bytes) left by an interrupted write", path, i,
                                len(raw))
                    return
                if isinstance(e, JsonlError):
                    raise
                raise JsonlError(f"{path}:{i}: expected one JSON object per line, got invalid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise JsonlError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
            for field in required:
                if field not in rec:
                    raise JsonlError(f"{path}:{i}: missing required field {field!r} (has: {sorted(rec)})")
            yield i, at, rec


def iter_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = True,
               required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Like :func:`read_jsonl`, yielding ``(line number, record)`` so callers can name ``file:line``."""
    for i, _, rec in iter_jsonl_at(path, tolerate_torn_tail=tolerate_torn_tail, required=required):
        yield i, rec


def read_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = True, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yield the records of a JSONL file (UTF-8, one JSON object per line; a leading byte-order mark is allowed).

    Args:
      path: the file.
      tolerate_torn_tail: skip (with a warning) a last line that has no trailing newline and does not parse, the
        signature of a writer killed mid-``write``. Any other bad line raises.
      required: field names every record must have.

    Returns:
      an iterator of dicts.

    Raises:
      JsonlError: naming ``path:line`` and the problem (not UTF-8, invalid JSON, not an object, a missing field).
    """
    for _, rec in iter_jsonl(path, tolerate_torn_tail=tolerate_torn_tail, required=required):
        yield rec


def record_id(rec: dict, where: str, *keys: str) -> str:
    """The first of ``keys`` present in ``rec`` as a string; it must be a non-empty string or an integer."""
    for k in keys:
        if k in rec and rec[k] is not None:
            v = rec[k]
            if isinstance(v, bool) or not isinstance(v, (str, int)) or str(v) == "":
                raise JsonlError(f"{where}: field {k!r} must be a non-empty string or an integer, got {v!r:.60}")
            return str(v)
    raise JsonlError(f"{where}: expected an id field ({' or '.join(repr(k) for k in keys)}), got keys {sorted(rec)}")


def record_text(rec: dict, where: str, key: str, *, optional: bool = False) -> str:
    """``rec[key]`` as a string: non-empty, or for an ``optional`` field missing/null (-> "")."""
    v = rec.get(key)
    if optional and v is None:
        return ""
    if key not in rec:
        raise JsonlError(f"{where}: missing field {key!r} (expected a non-empty string)")
    if not isinstance(v, str):
        raise JsonlError(f"{where}: field {key!r} must be a {'' if optional else 'non-empty '}string, got "
                         f"{type(v).__name__} {v!r:.40}")
    if not optional and not v.strip():
        raise JsonlError(f"{where}: field {key!r} is empty (expected a non-empty string)")
    return v


def load_by_id(path: str | os.PathLike, *, key: str = "id") -> dict[str, dict]:
    """Records of a JSONL file keyed by ``key``; a later line for the same id replaces an earlier one.

    Returns an empty dict when the file does not exist (nothing done yet).
    """
    path = Path(path)
    if not path.exists():
        return {}
    out: dict[str, dict] = {}
    for rec in read_jsonl(path, required=(key,)):
        out[str(rec[key])] = rec
    return out


class JsonlAppender:
    """Thread-safe appender: each ``append`` is one ``os.write`` of a full line, then ``fsync``.

    Opening truncates a torn last line left by a killed writer so the next record starts on a fresh line.

    Args:
      path: the output file (parent folders are created).
      fsync: ``fsync`` after each record (durable against power loss, not just process death); costs ~ms per record.

    Example:
      >>> with JsonlAppender("out.jsonl") as w:  # doctest: +SKIP
      ...     w.append({"id": "a", "x": 1})
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True):
        self.path = Path(path)
        self._fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                cut = _torn_tail_offset(self.path)
                if cut is not None:
                    log.warning("%s: truncating a torn last line at byte %d before appending", self.path, cut)
                    os.truncate(self.path, cut)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"{self.path}: cannot open for appending ({describe_os_error(e)})") from None
        self._fsync = fsync
        self._lock = threading.Lock()
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            view = memoryview(line)
            try:
                # os.write on a regular file writes everything in one call in practice; loop for the pathological case.
                while view:
                    k = os.write(self._fd, view)
                    view = view[k:]
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as e:  # a partial line is a torn tail: the next run drops it
                raise StorageError(f"{self.path}: cannot append a record ({describe_os_error(e)})") from None
            self.written += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write a whole file atomically (temporary file beside it, ``fsync``, rename; removed on failure); returns the
    number of records. Raises :class:`~data_gen.errors.StorageError` naming ``path`` (e.g. disk full)."""
    n = 0
    with atomic_file(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def key_hash(text: str) -> tuple[int, int]:
    """A 128-bit hash of an id as two unsigned 64-bit halves (collisions are negligible at any corpus size)."""
    d = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def find_key(k1: np.ndarray, k2: np.ndarray, text: str) -> int:
    """The row of ``key_hash(text)`` in key arrays sorted by ``(k1, k2)``, or -1."""
    a, b = key_hash(text)
    lo = int(np.searchsorted(k1, np.uint64(a), "left"))
    hi = int(np.searchsorted(k1, np.uint64(a), "right"))
    if lo == hi:
        return -1
    j = lo + int(np.searchsorted(k2[lo:hi], np.uint64(b), "left"))
    return j if j < hi and int(k2[j]) == b else -1


def text_fingerprint(*parts: str) -> int:
    """A 64-bit fingerprint of some strings (what a later stage must match to reuse a record)."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest(), "little")


def read_line_at(fd: int, offset: int, path: Path) -> bytes:
    """The line starting at byte ``offset`` of an open file (without its newline)."""
    chunks, pos = [], offset
    while True:
        buf = os.pread(fd, 1 << 16, pos)
        if not buf:
            break
        nl = buf.find(b"\n")
        if nl >= 0:
            chunks.append(buf[:nl])
            break
        chunks.append(buf)
        pos += len(buf)
    if not chunks:
        raise JsonlError(f"{path}: no line at byte {offset} (the file changed while it was read)")
    return b"".join(chunks)


class JsonlIndex:
    """The latest line per id of a JSONL stage file, indexed without holding the records: per id a 128-bit key, the
    line's byte offset, a 64-bit fingerprint and a small flags integer, ~33 bytes a record in numpy arrays.

    ``get(id)`` reads the record back from disk (``pread``); ``fingerprint(id)`` and ``flags(id)`` answer "is this
    record still valid for that input" without reading it. A later line for the same id replaces an earlier one,
    as in :func:`load_by_id`; a torn last line is ignored.

    Args:
      path: the JSONL file (missing: an empty index).
      fingerprints: ``{name: record -> int}`` (64-bit values) stored per id.
      flags: ``record -> int`` (0..255) stored per id; default 0.
    """

    def __init__(self, path: str | os.PathLike, *, fingerprints: dict[str, Callable[[dict], int]] | None = None,
                 flags: Callable[[dict], int] | None = None, key: str = "id"):
        self.path = Path(path)
        self.key = key
        fingerprints = fingerprints or {}
        k1, k2, offs, fl = array("Q"), array("Q"), array("q"), array("B")
        fps = {name: array("Q") for name in fingerprints}
        if self.path.exists():
            for _, at, rec in iter_jsonl_at(self.path, required=(key,)):
                a, b = key_hash(str(rec[key]))
                k1.append(a)
                k2.append(b)
                offs.append(at)
                for name, fn in fingerprints.items():
                    fps[name].append(fn(rec))
                fl.append(flags(rec) if flags else 0)
        k1n, k2n = np.frombuffer(k1, np.uint64), np.frombuffer(k2, np.uint64)
        order = np.lexsort((np.arange(len(k1n)), k2n, k1n))  # by key, then line order: the last of a run wins
        k1n, k2n = k1n[order], k2n[order]
        last = np.ones(len(order), bool)
        if len(order) > 1:
            last[:-1] = (k1n[1:] != k1n[:-1]) | (k2n[1:] != k2n[:-1])
        keep = order[last]
        self._k1, self._k2 = k1n[last].copy(), k2n[last].copy()
        self._off = np.frombuffer(offs, np.int64)[keep].copy()
        self._fp = {name: np.frombuffer(a, np.uint64)[keep].copy() for name, a in fps.items()}
        self._fl = np.frombuffer(fl, np.uint8)[keep].copy()
        self._fd = -1

    def __len__(self) -> int:
        return len(self._off)

    def _find(self, pid: str) -> int:
        return find_key(self._k1, self._k2, pid)

    def __contains__(self, pid: str) -> bool:
        return self._find(pid) >= 0

    def fingerprint(self, pid: str, name: str) -> int | None:
        j = self._find(pid)
        return None if j < 0 else int(self._fp[name][j])

    def flags(self, pid: str) -> int | None:
        j = self._find(pid)
        return None if j < 0 else int(self._fl[j])

    def _read(self, offset: int) -> dict:
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as e:
                raise JsonlError(f"{self.path}: cannot read ({describe_os_error(e)})") from None
        return json.loads(read_line_at(self._fd, int(offset), self.path))

    def get(self, pid: str) -> dict | None:
        j = self._find(pid)
        return None if j < 0 else self._read(self._off[j])

    def records(self) -> Iterator[dict]:
        """The latest record of every id, in file order."""
        for off in np.sort(self._off):
            yield self._read(off)

    def offsets(self) -> np.ndarray:
        """The byte offsets of the latest records, in file order (read one back with :meth:`read_at`)."""
        return np.sort(self._off)

    def read_at(self, offset: int) -> dict:
        return self._read(offset)

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()
