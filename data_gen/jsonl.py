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


def iter_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = True,
               required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Like :func:`read_jsonl`, yielding ``(line number, record)`` so callers can name ``file:line``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise JsonlError(f"{path}: cannot read ({describe_os_error(e)})") from None
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    n = len(lines)
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        is_tail = i == n and not last_complete
        try:
            rec = json.loads(decode_line(raw, path, i))
        except (json.JSONDecodeError, JsonlError) as e:
            if is_tail and tolerate_torn_tail:
                log.warning("%s:%d: ignoring a torn last line (%d bytes) left by an interrupted write", path, i, len(raw))
                return
            if isinstance(e, JsonlError):
                raise
            raise JsonlError(f"{path}:{i}: expected one JSON object per line, got invalid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise JsonlError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
        for field in required:
            if field not in rec:
                raise JsonlError(f"{path}:{i}: missing required field {field!r} (has: {sorted(rec)})")
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
