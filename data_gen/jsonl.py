"""Crash-safe JSONL: one record per line, appended atomically, read back tolerating a torn last line.

A record is written as one ``os.write`` of a complete line on a file opened with ``O_APPEND`` and then ``fsync``-ed,
so a ``kill -9`` can at worst leave the *last* line incomplete. Readers drop that torn tail (and the appender
truncates it before writing) so a resumed run never glues a new record onto half of an old one. A malformed line
anywhere *else* is corruption, not a crash artefact, and raises an error naming the file and line.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlError(ValueError):
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


def read_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = True, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yield the records of a JSONL file.

    Args:
      path: the file.
      tolerate_torn_tail: skip (with a warning) a last line that has no trailing newline and does not parse, the
        signature of a writer killed mid-``write``. Any other bad line raises.
      required: field names every record must have.

    Returns:
      an iterator of dicts.

    Raises:
      JsonlError: naming ``path:line`` and the problem.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    n = len(lines)
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        is_tail = i == n and not last_complete
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if is_tail and tolerate_torn_tail:
                log.warning("%s:%d: ignoring a torn last line (%d bytes) left by an interrupted write", path, i, len(raw))
                return
            raise JsonlError(f"{path}:{i}: expected one JSON object per line, got invalid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise JsonlError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
        for field in required:
            if field not in rec:
                raise JsonlError(f"{path}:{i}: missing required field {field!r} (has: {sorted(rec)})")
        yield rec


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            cut = _torn_tail_offset(self.path)
            if cut is not None:
                log.warning("%s: truncating a torn last line at byte %d before appending", self.path, cut)
                os.truncate(self.path, cut)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync = fsync
        self._lock = threading.Lock()
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            view = memoryview(line)
            # os.write on a regular file writes everything in one call in practice; loop for the pathological case.
            while view:
                k = os.write(self._fd, view)
                view = view[k:]
            if self._fsync:
                os.fsync(self._fd)
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
    """Write a whole file atomically (temp file + ``os.replace``); returns the number of records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n
