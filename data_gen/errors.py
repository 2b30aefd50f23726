"""Error types, exit codes and secret redaction shared by the data_gen pipelines and the ``gecko-data`` CLI.

Every error the CLI expects is a :class:`DataGenError` whose message is one line naming the file (and line) or the
server at fault, and whose ``exit_code`` is one of the codes in :data:`EXIT_CODES_HELP` (printed by ``--help``).
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Iterable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_PARTIAL = 3
EXIT_SERVER = 4
EXIT_STORAGE = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0  every requested record was produced
  1  unexpected error (a traceback: please report it)
  2  bad input or usage (an option, an input file, an output path that is a folder, unwritable or an input);
     nothing was sent to the LLM
  3  finished with N failed records: see <out>.failures.jsonl (a re-run retries the LLM failures)
  4  the LLM server refused the requests (HTTP 400/401/403/404) or was unreachable; finished records are kept
  5  local storage: disk full, an unwritable file, a corrupt LLM cache (delete it to rebuild)
  130 interrupted; a re-run resumes"""


class DataGenError(Exception):
    """An expected failure: ``str(e)`` is one line for the user, ``exit_code`` what the CLI returns."""

    exit_code = EXIT_INTERNAL


class InputError(DataGenError, ValueError):
    """A bad option or input file; the message names ``file:line`` and the field when there is one."""

    exit_code = EXIT_INPUT


class OutputPathError(InputError):
    """An output path that cannot be used (a folder, not writable, the same file as an input): found before any
    LLM call."""


class StorageError(DataGenError):
    """A local file that could not be written or read back (disk full, permissions, a corrupt cache)."""

    exit_code = EXIT_STORAGE


class CacheError(StorageError):
    """The sqlite LLM cache is damaged; the message says how to rebuild it."""


def describe_os_error(e: OSError) -> str:
    """A short reason for an ``OSError``, with advice for a full disk."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full (ENOSPC): free some space, then re-run (finished records are kept and resume)"
    name = errno.errorcode.get(e.errno or 0)
    reason = e.strerror or str(e) or type(e).__name__
    note = low_space_note(e.filename) if e.filename and e.errno in (None, errno.EIO) else ""  # may be a full disk
    return (f"{reason} ({name})" if name else reason) + note


def low_space_note(path: str | os.PathLike, *, below: int = 1 << 20) -> str:
    """``"; only N KiB free on that disk (full?)"`` when the disk holding ``path`` has less than ``below`` bytes
    free, else ``""``: for errors that do not say ENOSPC themselves (sqlite's "disk I/O error", short writes)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    return f"; only {free // 1024} KiB free on that disk (full?)" if free < below else ""


REDACTED = "[REDACTED]"
_SECRET_PATTERNS = [
    # Authorization: Bearer xyz / "authorization": "Basic xyz"
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bbasic\s+)[A-Za-z0-9+/=]{8,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?)"
                r"(?!bearer\b|basic\b)[^\s\"',;}]+"), r"\1" + REDACTED),
    # key=... in URLs and form bodies; "api_key": "..." in JSON
    (re.compile(r"(?i)([?&;](?:key|api_key|apikey|api-key|access_token|token|secret)=)[^&\s\"'#]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)([\"'](?:api_key|apikey|api-key|access_token|secret|password)[\"']\s*:\s*[\"'])[^\"']+"),
     r"\1" + REDACTED),
    # user:password@host in URLs
    (re.compile(r"(?i)(\bhttps?://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with secrets replaced by ``[REDACTED]``: every given secret value (8 characters or more, so a short
    value does not blank out ordinary words), bearer/basic credentials, ``Authorization``/``api-key`` headers,
    ``key=``/``token=`` query parameters, ``"api_key": "..."`` JSON fields and passwords in URLs."""
    if not text:
        return text
    for s in secrets:
        if s and len(s) >= 8:
            text = text.replace(s, REDACTED)
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace (newlines included) collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
