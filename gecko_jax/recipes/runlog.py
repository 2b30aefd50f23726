"""The quickstart's log line and the short content digest its stages are keyed by."""
from __future__ import annotations

import hashlib
import json
import time


def log(msg: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def digest(obj) -> str:
    """12 hex digits of the sha256 of ``obj`` as sorted JSON: the key of a stage's folder."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
