"""gecko_jax.fileio: atomic writes (file and folder), write failures as one line, strict UTF-8 reads."""
from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gecko_jax import fileio
from gecko_jax.errors import EXIT_CODES, InputError, OutputError, exit_code

REPO = pathlib.Path(__file__).resolve().parents[1]


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    fileio.write_json(target, {"x": 1})
    fileio.write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'
    plain = tmp_path / "plain"
    plain.write_text("")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)  # the mode open() would give
    assert _leftovers(target.parent) == []


def test_failure_inside_the_block_keeps_the_previous_file(tmp_path):
    target = tmp_path / "vecs.npy"
    fileio.save_npy(target, np.arange(4.0))
    with pytest.raises(RuntimeError, match="boom"):
        with fileio.atomic_write(target) as f:
            f.write(b"half a file")
            raise RuntimeError("boom")
    np.testing.assert_array_equal(np.load(target), np.arange(4.0))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("err, reason", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EACCES, "permission denied"),
                                         (errno.EDQUOT, "disk quota exceeded")])
def test_write_errors_become_one_line_naming_the_path(tmp_path, monkeypatch, err, reason):
    target = tmp_path / "out.npy"
    fileio.save_npy(target, np.ones(3))

    def failing_fsync(fd):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    with pytest.raises(OutputError) as e:
        fileio.save_npy(target, np.zeros(1000))
    assert str(e.value) == f"cannot write {target}: {reason}"
    assert e.value.errno == err and exit_code(e.value) == 5 and "\n" not in str(e.value)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(target), np.ones(3))
    assert _leftovers(tmp_path) == []


def test_a_folder_or_file_in_the_way(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match=r"cannot write .*/d: a folder is in the way"):
        fileio.write_text(tmp_path / "d", "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*/f/x\.npy: a file is in the way"):
        fileio.check_writable(tmp_path / "f" / "x.npy")
    fileio.check_writable(tmp_path / "new" / "x.npy")  # makes the folder, writes nothing at the path
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_folder_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            fileio.check_writable(ro / "x.npy")
    finally:
        ro.chmod(0o700)


def test_a_real_failed_write_keeps_the_previous_file(tmp_path):
    """A real short write (the file size limit, RLIMIT_FSIZE, fails write() with EFBIG as a full disk fails it with
    ENOSPC): the previous file stays whole and no temporary file is left."""
    target = tmp_path / "big.npy"
    fileio.save_npy(target, np.ones(8, np.float32))
    code = f"""
import resource, signal, numpy as np
from gecko_jax import fileio
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
fileio.save_npy({str(target)!r}, np.ones(100000, np.float32))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0
    assert f"OutputError: cannot write {target}: file too large" in proc.stderr
    np.testing.assert_array_equal(np.load(target), np.ones(8, np.float32))
    assert _leftovers(tmp_path) == []


def test_atomic_dir_swaps_in_whole_folders(tmp_path):
    out = tmp_path / "model"
    with fileio.atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w").write_text("1")
    (out / "README.md").write_text("user notes")  # not written by the export: kept, as an in-place overwrite would
    with fileio.atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("2")
    assert (out / "config.json").read_text() == "2" and (out / "README.md").read_text() == "user notes"
    assert (out / "sub" / "w").read_text() == "1"
    with pytest.raises(RuntimeError):
        with fileio.atomic_dir(out) as tmp:
            (tmp / "config.json").write_text("3")
            raise RuntimeError("crash mid-export")
    assert (out / "config.json").read_text() == "2"
    assert _leftovers(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="a file is in the way"):
        with fileio.atomic_dir(tmp_path / "file"):
            pass


def test_atomic_dir_without_rename_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)  # the two-rename path (non-Linux)
    out = tmp_path / "m"
    for v in ("1", "2"):
        with fileio.atomic_dir(out) as tmp:
            (tmp / "v").write_text(v)
    assert (out / "v").read_text() == "2" and _leftovers(tmp_path) == []


def test_decode_names_file_line_and_byte(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("ok\nnaïve\nab\xffc\n".encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    with pytest.raises(InputError) as e:
        fileio.read_text(p)
    assert str(e.value) == f"{p}:3: not valid UTF-8 (byte 0xff at byte column 3); save the file as UTF-8"
    lines = []
    with pytest.raises(InputError, match=r"t\.txt:3: not valid UTF-8"):
        for lineno, line in fileio.iter_lines(p):
            lines.append((lineno, line))
    assert lines == [(1, "ok"), (2, "naïve")]
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfa\r\nb\n")
    assert list(fileio.iter_lines(bom)) == [(1, "a"), (2, "b")] and fileio.read_text(bom) == "a\r\nb\n"
    with pytest.raises(InputError, match=r"missing\.txt: cannot open"):
        list(fileio.iter_lines(tmp_path / "missing.txt"))


def test_exit_codes_are_distinct_and_documented():
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 143}
    assert exit_code(RuntimeError("a bug")) is None  # bugs keep their traceback


def test_os_errors_inside_library_messages():
    ts = 'Failed to write 3730295 bytes to file 6: File too large [os_error_code=\'27\']'
    assert fileio.errno_in_message(ts) == errno.EFBIG
    assert fileio.errno_in_message("[Errno 28] No space left on device: 'x'") == errno.ENOSPC
    assert fileio.errno_in_message("shape mismatch") is None
    out = fileio.write_failure("ckpt", ValueError("OUT_OF_RANGE: ... [os_error_code=28]"))
    assert isinstance(out, OutputError) and str(out) == "cannot write ckpt: no space left on device"
    assert fileio.write_failure("ckpt", ValueError("[os_error_code=2]")) is None  # not a write failure
