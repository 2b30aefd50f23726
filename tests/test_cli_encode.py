"""`gecko-jax encode`: txt/jsonl in, .npy out, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

import gecko_jax
from gecko_jax import Embedder, cli

ASSET = gecko_jax.__file__.rsplit("/", 1)[0] + "/assets/sentences.txt"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    """A tiny random model saved in the sentence-transformers layout (tests/conftest.py)."""
    return tiny_model_dir


def test_encode_txt_matches_the_api(model_dir, tmp_path):
    out = tmp_path / "vecs.npy"
    assert cli.main(["encode", "--model", str(model_dir), "--input", ASSET, "--output", str(out),
                     "--dims", "16", "--task", "clustering"]) == 0
    texts = open(ASSET, encoding="utf-8").read().splitlines()
    vecs = np.load(out)
    assert vecs.shape == (len(texts), 16) and vecs.dtype == np.float32 and len(texts) >= 50
    want = Embedder.from_pretrained(model_dir).encode(texts, dims=16, task="clustering")
    np.testing.assert_allclose(vecs, want, atol=1e-6)


def test_encode_jsonl_documents_with_titles(model_dir, tmp_path):
    src = tmp_path / "docs.jsonl"
    rows = [{"id": 1, "body": "Vaccines train the immune system.", "title": "Vaccines"},
            {"id": 2, "body": "Rain is expected tomorrow.", "title": None}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    out = tmp_path / "sub" / "docs.npy"
    assert cli.main(["encode", "--model", str(model_dir), "--input", str(src), "--output", str(out),
                     "--field", "body", "--title-field", "title", "--kind", "document", "--task", "search result"]) == 0
    want = Embedder.from_pretrained(model_dir).encode(
        [r["body"] for r in rows], titles=[r["title"] for r in rows], kind="document", task="search result")
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": "ok",\n', r"bad\.jsonl:2: not valid JSON"),
    ('{"text": "ok"}\n\n{"body": "x"}\n', r"bad\.jsonl:3: missing field 'text' \(fields: body\)"),
    ('{"text": 5}\n', r"bad\.jsonl:1: field 'text' is int; expected a string"),
    ('["text"]\n', r"bad\.jsonl:1: expected a JSON object, got list"),
])
def test_bad_jsonl_names_file_and_line(model_dir, tmp_path, capsys, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    assert cli.main(["encode", "--model", str(model_dir), "--input", str(src), "--output",
                     str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "gecko-jax encode: error:" in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "o.npy").exists()


def test_other_bad_arguments(model_dir, tmp_path, capsys):
    cases = [
        (["--model", str(model_dir), "--input", str(tmp_path / "none.txt")], "input file .* does not exist"),
        (["--model", str(tmp_path / "nomodel"), "--input", ASSET], "model folder .* does not exist"),
        (["--model", str(model_dir), "--input", str(model_dir / "config.json")], "expected .txt or .jsonl"),
        (["--model", str(model_dir), "--input", ASSET, "--dims", "999"], r"dims must be an int in \[1, 32\]"),
    ]
    import re

    for extra, message in cases:
        assert cli.main(["encode", *extra, "--output", str(tmp_path / "o.npy")]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err), (extra, err)


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--input", "--output", "--task", "--kind", "--dims", "--batch-size", "--field"):
        assert flag in out
    assert "gecko-jax encode --model all-MiniLM-L6-v2" in out  # the examples epilog


# ---- faults and bad input: exit codes, one stderr line, outputs never half-written ------------------------------
def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name, content", [("bad.txt", b"first\nsecond \xe9t\xe9\n"),
                                           ("bad.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')])
def test_non_utf8_input_names_file_and_line(model_dir, tmp_path, capsys, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    assert cli.main(["encode", "--model", str(model_dir), "--input", str(src), "--output",
                     str(tmp_path / "o.npy")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"gecko-jax encode: error: {src}:2: not valid UTF-8 (byte 0xe9"), line
    assert not (tmp_path / "o.npy").exists()


def test_unwritable_output_fails_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "out.npy").mkdir()
    # the model does not exist either: exit 5 (not 2) shows the output was checked first
    assert cli.main(["encode", "--model", str(tmp_path / "no_model"), "--input", ASSET, "--output",
                     str(tmp_path / "out.npy")]) == 5
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"gecko-jax encode: error: cannot write {tmp_path / 'out.npy'}: a folder is in the way"


def test_disk_full_keeps_the_previous_output(model_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os

    from gecko_jax import fileio

    out = tmp_path / "vecs.npy"
    args = ["encode", "--model", str(model_dir), "--input", ASSET, "--output", str(out), "--no-progress"]
    assert cli.main(args) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    assert cli.main([*args, "--dims", "8"]) == 5
    assert _one_error_line(capsys.readouterr().err) == \
        f"gecko-jax encode: error: cannot write {out}: no space left on device"
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["vecs.npy"]


def test_real_short_write_keeps_the_previous_output(model_dir, tmp_path):
    """The real CLI in a subprocess whose file size limit (RLIMIT_FSIZE) makes the .npy write fail part-way, as a
    full disk does: exit 5, one stderr line, and the previous output byte for byte."""
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(gecko_jax.__file__).resolve().parents[1]
    out = tmp_path / "vecs.npy"
    np.save(out, np.ones((2, 2), np.float32))
    before = out.read_bytes()
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
            "from gecko_jax.cli import main\n"
            f"sys.exit(main(['encode', '--model', {str(model_dir)!r}, '--input', {ASSET!r}, '--output', "
            f"{str(out)!r}, '--no-progress']))\n")
    env = {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert _one_error_line(proc.stderr) == f"gecko-jax encode: error: cannot write {out}: file too large " \
                                           "(a file size limit is set)"
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["vecs.npy"]


def test_help_lists_exit_codes(capsys):
    for command, codes in (("encode", ("0 ", "2 ", "5 ")), ("train", ("1 ", "3 ", "4 ", "143")),
                           ("eval", ("2 ", "5 "))):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "exit codes:" in out and all(f"  {c}" in out for c in codes), (command, out)
