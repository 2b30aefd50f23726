"""Content-addressed cache of LLM calls (sqlite), keyed by sha256 of backend, model, operation, prompt and parameters.

Only successful results are stored; a transport failure or an output that failed validation is never written, so a
re-run asks again instead of replaying a failure. API keys are never part of a key or a value.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .errors import CacheError, StorageError, describe_os_error, low_space_note

# sqlite primary result codes (sqlite3.h); Python >= 3.11 exposes them as ``sqlite_errorcode`` on errors.
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26


def cache_key(*, backend: str, model: str, op: str, prompt: Any, params: dict[str, Any]) -> str:
    """sha256 over a canonical JSON encoding (sorted keys, no whitespace variance) of the call's identity."""
    blob = json.dumps({"backend": backend, "model": model, "op": op, "prompt": prompt, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SqliteCache:
    """A thread-safe key -> JSON value store in one sqlite file (WAL mode, committed per put: survives kill -9).

    Args:
      path: the database file; ``":memory:"`` for a throwaway cache.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60.0, isolation_level=None)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except (sqlite3.Error, OSError) as e:
            raise self._error(e, "opening it") from None

    def _error(self, e: Exception, doing: str) -> StorageError:
        """One-line error naming the file: damaged (and how to rebuild), disk full, or anything else."""
        if isinstance(e, OSError):
            return StorageError(f"{self.path}: LLM cache: cannot use it ({describe_os_error(e)})")
        code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
        msg = str(e)
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in msg or "not a database" in msg \
                or isinstance(e, json.JSONDecodeError):
            return CacheError(f"{self.path}: the LLM cache is damaged ({msg}) while {doing}; delete it (with any "
                              f"{os.path.basename(self.path)}-wal/-shm files beside it) to rebuild it: the calls it "
                              f"held are asked again, finished records are kept")
        if code == _SQLITE_FULL or "disk is full" in msg:
            return StorageError(f"{self.path}: LLM cache: disk full (ENOSPC): free some space, then re-run "
                                f"(finished records are kept and resume)")
        return StorageError(f"{self.path}: LLM cache error while {doing} ({msg}{low_space_note(self.path)})")

    def get(self, key: str) -> Any | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
                if row is None:
                    self.misses += 1
                    return None
                self.hits += 1
            return json.loads(row[0])
        except (sqlite3.Error, json.JSONDecodeError) as e:
            raise self._error(e, "reading it") from None

    def put(self, key: str, value: Any) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)", (key, blob))
        except sqlite3.Error as e:
            raise self._error(e, "writing it") from None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
