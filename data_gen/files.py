"""Output paths checked before any LLM call is paid for, and files written atomically.

:func:`check_outputs` refuses an output that is a folder (or another non-regular file), lies in a folder that cannot
be written, is the same file as an input (also through links), or is named twice. :func:`atomic_file` writes a
temporary file in the destination's folder, ``fsync``-s it, renames it over the destination and removes it on any
failure, so a reader sees the old file or the new one, never half of one, and no temporary file is left behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import IO, Iterable, Iterator, Tuple

from .errors import OutputPathError, StorageError, describe_os_error, low_space_note


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _existing_ancestor(p: Path) -> Path:
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    return anc


def _check_folder_writable(folder: Path, label: str) -> None:
    """Create and delete a probe file in ``folder`` (``os.access`` says yes to root even on a read-only mount)."""
    anc = _existing_ancestor(folder)
    if not anc.is_dir():
        raise OutputPathError(f"{label}: {anc} is not a folder")
    probe = anc / f".gecko-data-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise OutputPathError(f"{label}: cannot create files in {anc} ({describe_os_error(e)})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


Labelled = Iterable[Tuple[str, "str | os.PathLike | None"]]


def check_outputs(files: Labelled, *, folders: Labelled = (), inputs: Labelled = ()) -> None:
    """Check output paths before any work: raise :class:`~data_gen.errors.OutputPathError` naming the path.

    Args:
      files: ``(label, path)`` pairs, e.g. ``("--out", "fret.jsonl")``: output files. One may exist (it will be
        replaced or appended to) but must be a regular file, not one of ``inputs`` nor another output, and its folder
        (or the nearest existing ancestor) must be writable. None paths are skipped, here and below.
      folders: ``(label, path)`` pairs of output folders (created when missing): an existing one must be a folder.
      inputs: ``(label, path)`` pairs of files that are read; never the same as an output.
    """
    ins = [(k, Path(v)) for k, v in inputs if v is not None]
    seen: list[tuple[str, Path]] = []
    for label, folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise OutputPathError(f"{label} {folder}: exists and is not a folder")
        for ilabel, ip in ins:
            if _same_file(folder, ip):
                raise OutputPathError(f"{label} {folder}: is the input {ilabel} {ip}")
        _check_folder_writable(folder, f"{label} {folder}")
    for label, f in files:
        if f is None:
            continue
        f = Path(f)
        where = f"{label} {f}"
        if f.is_dir():
            raise OutputPathError(f"{where}: is a folder; expected a file path such as {f / 'out.jsonl'}")
        if f.exists() and not f.is_file():
            raise OutputPathError(f"{where}: exists and is not a regular file (a device, pipe or socket)")
        for ilabel, ip in ins:
            if _same_file(f, ip):
                raise OutputPathError(f"{where}: is the same file as the input {ilabel} {ip}; choose another output "
                                      f"path (the input is left untouched)")
        for olabel, op in seen:
            if _same_file(f, op):
                raise OutputPathError(f"{where}: is also {olabel}; give each output its own path")
        seen.append((label, f))
        _check_folder_writable(f.parent, where)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. some network file systems), hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: "str | os.PathLike", *, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it is ``fsync``-ed and renamed to ``path``.

    On any exception the temporary file is removed and the old ``path`` (if any) is left as it was. ``OSError``-s
    become :class:`~data_gen.errors.StorageError` naming ``path`` (e.g. disk full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, like open()
    except OSError as e:
        raise StorageError(f"{path}: cannot write ({describe_os_error(e)})") from None
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            note = low_space_note(path) if e.errno in (None, errno.EIO) else ""  # a short write, an I/O error
            raise StorageError(f"{path}: cannot write ({describe_os_error(e)}{note})") from None
        raise
    _fsync_folder(path.parent)

