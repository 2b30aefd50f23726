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
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60.0, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)", (key, blob))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
