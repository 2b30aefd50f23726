"""Safe file I/O for every file gecko_jax writes or reads as text.

Writes are atomic: the bytes go to a temporary file in the target's own folder (so the final rename never crosses a
file system), are ``fsync``-ed, and ``os.replace`` puts them in place; on any failure the temporary file is removed
and the previous file at the path, if any, is untouched. A folder (a model export) is written the same way: into a
temporary sibling folder, then swapped in. Write failures the user can act on (disk full, quota, permission denied,
read-only file system, a folder in the way) become :class:`~gecko_jax.errors.OutputError` with one line naming the
path.

Text inputs are strict UTF-8: a bad byte raises :class:`~gecko_jax.errors.InputError` (or the caller's error type)
naming ``file:line`` and the byte, instead of a ``UnicodeDecodeError`` traceback.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Iterator

from gecko_jax.errors import InputError, OutputError

# errno -> the short reason an OutputError gives; other errnos raised while writing stay as they are (bugs).
_WRITE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file size limit is set)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "a folder is in the way",
    errno.ENOTDIR: "a file is in the way of a folder on the path",
    errno.EEXIST: "a file is in the way of a folder on the path",
    errno.EIO: "input/output error",
    errno.ENAMETOOLONG: "file name too long",
}

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def output_error(path, error: OSError) -> OutputError | OSError:
    """``error`` as a one-line :class:`OutputError` naming ``path``, when it is one the user can act on.

    An ``OSError`` without an errno is a short write some library reported itself (numpy's ``tofile``: "N requested
    and M written"); that is a full disk or a size limit too.
    """
    if isinstance(error, OutputError) or (error.errno is not None and error.errno not in _WRITE_REASONS):
        return error
    reason = _WRITE_REASONS[error.errno] if error.errno is not None else f"short write ({error}): is the disk full?"
    out = OutputError(f"cannot write {path}: {reason}")
    out.errno, out.filename = error.errno, str(path)
    return out


def errno_in_message(text: str) -> int | None:
    """The OS error number a library wrote into a message (tensorstore: ``[os_error_code='28']``; Python:
    ``[Errno 28]``), or None."""
    m = re.search(r"os_error_code='?(\d+)|\[Errno (\d+)\]", text)
    return int(m.group(1) or m.group(2)) if m else None


def write_failure(path, error: BaseException) -> OutputError | None:
    """An error some library raised while writing ``path`` as a one-line :class:`OutputError`, when its message
    carries an OS error the user can act on (disk full, permission denied, ...); else None."""
    err = errno_in_message(str(error))
    if err not in _WRITE_REASONS:
        return None
    out = OutputError(f"cannot write {path}: {_WRITE_REASONS[err]}")
    out.errno, out.filename = err, str(path)
    return out


def _fsync_dir(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not POSIX (no directory handles): the rename is still atomic, just not yet durable
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_parent(path: pathlib.Path) -> None:
    if path.is_dir():
        raise output_error(path, OSError(errno.EISDIR, "is a directory"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None


def _temp_beside(path: pathlib.Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (made if needed): ``(fd, name)``."""
    _make_parent(path)
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise output_error(path, e) from None


def check_writable(path) -> pathlib.Path:
    """Fail early (before any expensive work) when ``path`` cannot be written: its folder cannot be made or
    written to, or a folder is in the way. Creates the parent folders; writes nothing at ``path``."""
    path = pathlib.Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    os.unlink(tmp)
    return path


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it replaces ``path`` atomically.

    Example:
      >>> with atomic_write("vecs.npy") as f:  # doctest: +SKIP
      ...     np.save(f, vecs)
    """
    path = pathlib.Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise output_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def write_bytes(path, data: bytes) -> pathlib.Path:
    """Write ``data`` atomically; a remote path (``gs://...``, see :func:`is_remote`) is one object upload, which
    object stores publish whole or not at all."""
    if is_remote(path):
        target = as_path(path)
        try:
            target.write_bytes(data)
        except OSError as e:
            raise output_error(target, e) from None
        return target
    with atomic_write(path, "wb") as f:
        f.write(data)
    return pathlib.Path(path)


# ------------------------------------------------------------------------------------------------ remote paths
def is_remote(path) -> bool:
    """A URI (``gs://bucket/run``, ``s3://...``) rather than a local path: read and written through
    ``etils.epath``, as orbax does for checkpoints."""
    text = path if isinstance(path, str) else os.fspath(path)
    return "://" in text and not text.startswith("file://")


def as_path(path):
    """``etils.epath.Path`` for a URI (``pathlib.Path`` would fold ``gs://`` into ``gs:/``), else ``pathlib.Path``.

    Both have the same methods (``/``, ``exists``, ``read_bytes``, ``mkdir``, ``rename`` ...)."""
    if is_remote(path):
        from etils import epath

        return epath.Path(path if isinstance(path, str) else os.fspath(path))
    return pathlib.Path(path)


class RewrittenLog:
    """Append-only log (``metrics.jsonl``, event files) on a remote path: object stores cannot append, so every
    ``flush`` uploads the whole text again (small files, written every ``log_every`` steps). Reopening carries on
    after what the object already holds."""

    def __init__(self, path, mode: str = "a"):
        self.path = as_path(path)
        self.binary = "b" in mode
        self._data = bytearray(self.path.read_bytes() if self.path.exists() else b"")
        self._dirty = False

    def write(self, data) -> None:
        self._data += data if self.binary else data.encode("utf-8")
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            write_bytes(self.path, bytes(self._data))
            self._dirty = False

    def close(self) -> None:
        self.flush()


def open_log(path, mode: str = "a"):
    """An append-mode file: a plain local file, or a :class:`RewrittenLog` for a remote path."""
    if is_remote(path):
        return RewrittenLog(path, mode)
    return open(path, mode, encoding=None if "b" in mode else "utf-8")


def write_text(path, text: str) -> pathlib.Path:
    """Write ``text`` as UTF-8, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def fill_block(path, begin: str, end: str, body: str) -> pathlib.Path:
    """Replace the text between the marker lines ``begin`` and ``end`` of the file at ``path`` with ``body``
    (a generated table in a README), atomically. Raises ValueError naming the file when a marker is missing."""
    path = pathlib.Path(path)
    text = path.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path}: no '{begin}' ... '{end}' block to fill")
    head, rest = text.split(begin, 1)
    return write_text(path, head + begin + "\n" + body.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])


def write_json(path, obj: Any, *, indent: int | None = 2, **dumps_kwargs) -> pathlib.Path:
    """``json.dumps(obj)`` plus a final newline, atomically."""
    return write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n")


def save_npy(path, array) -> pathlib.Path:
    """``numpy.save`` atomically (a failed write leaves the previous file at ``path`` intact)."""
    import numpy as np

    with atomic_write(path, "wb") as f:
        # Through a plain .write() (numpy then writes in chunks), not numpy's tofile() on the raw file: a failed
        # write then keeps its errno (ENOSPC, EFBIG) instead of numpy's "N requested and M written".
        np.save(_Writer(f), array)
    return pathlib.Path(path)


class _Writer:
    def __init__(self, f):
        self.write = f.write


# ------------------------------------------------------------------------------------------------ folders
_RENAME_EXCHANGE = 2


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: pathlib.Path, new: pathlib.Path) -> None:
    """Entries of the old folder the new one does not write (a README, other weights) are kept, as an in-place
    overwrite would have kept them."""
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or target.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        else:
            _link_or_copy(str(entry), str(target))


def _fsync_tree(root: pathlib.Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(pathlib.Path(folder))


@contextlib.contextmanager
def file_lock(path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created with its folders) for the ``with`` block; on platforms
    without ``fcntl`` (not POSIX) no lock is taken."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(path) -> Iterator[pathlib.Path]:
    """Yield an empty temporary folder next to ``path``; on a clean exit it becomes ``path`` in one step.

    An existing folder at ``path`` is replaced, keeping its entries the new contents do not overwrite. A crash or
    error leaves the previous folder (or nothing) at ``path``, never a half-written one; the temporary folder is
    removed on failure.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise output_error(path, OSError(errno.ENOTDIR, "not a directory"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise output_error(path, e) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.is_dir():
            _carry_over(path, tmp)
            _fsync_tree(tmp)
            if _exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
            else:  # two renames: a crash between them leaves the previous folder in a ``.old`` sibling
                old = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
                os.rename(path, old / path.name)
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(old / path.name, path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        else:
            _fsync_tree(tmp)
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise output_error(path, e) from None
        raise


# ------------------------------------------------------------------------------------------------ reading
def decode_utf8(raw: bytes, path, *, error: type[Exception] = InputError, first_line: int = 1) -> str:
    """``raw.decode("utf-8")``; a bad byte raises ``error("file:line: not valid UTF-8 ...")``.

    ``first_line`` is the line number of ``raw``'s first line (for a line read on its own).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte column {column}); "
                    "save the file as UTF-8") from None


def read_bytes(path, *, error: type[Exception] = InputError) -> bytes:
    """The file's bytes; a missing or unreadable file raises ``error`` naming it."""
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None


def read_text(path, *, error: type[Exception] = InputError) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped); errors name ``file:line``."""
    text = decode_utf8(read_bytes(path, error=error), path, error=error)
    return text[1:] if text.startswith("\ufeff") else text


def iter_lines(path, *, error: type[Exception] = InputError) -> Iterator[tuple[int, str]]:
    """``(line number, line without its newline)`` for each line of a UTF-8 file, streamed."""
    try:
        handle = open(path, "rb")
    except OSError as e:
        raise error(f"{path}: cannot open ({e.strerror or e})") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, path, error=error, first_line=lineno).rstrip("\r\n")
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line
