"""Bad input to the eval readers and `gecko-jax eval`: one line naming file:line, exit codes, atomic results."""
from __future__ import annotations

import json
import shutil

import pytest

from gecko_jax.cli import main
from gecko_jax.errors import InputError
from gecko_jax.eval import beir, datasets, fairness, sts

BAD = b"caf\xe9"  # latin-1, not UTF-8


def _with_bad_line(src, dst, line_index: int):
    lines = src.read_bytes().splitlines(keepends=True)
    lines[line_index] = lines[line_index].rstrip(b"\r\n") + b" " + BAD + b"\n"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"".join(lines[:line_index + 5]))
    return dst


def test_every_reader_names_the_line_of_a_bad_byte(shared_data, tmp_path):
    cases = []
    stsb = _with_bad_line(shared_data / "stsb" / "sts-test.csv", tmp_path / "stsb.csv", 2)
    cases.append((lambda: sts.read_stsb(stsb), stsb, 3))
    sst = _with_bad_line(shared_data / "sst2_senteval" / "sentiment-test", tmp_path / "sst", 1)
    cases.append((lambda: datasets._read_sst(sst, __import__("hashlib").sha256()), sst, 2))
    bank = _with_bad_line(shared_data / "banking77" / "test.csv", tmp_path / "bank.csv", 3)
    cases.append((lambda: datasets._read_csv_text_label(bank, __import__("hashlib").sha256()), bank, 4))
    sci = tmp_path / "scifact"
    shutil.copytree(shared_data / "scifact", sci)
    qrels = _with_bad_line(shared_data / "scifact" / "qrels" / "test.tsv", sci / "qrels" / "test.tsv", 4)
    cases.append((lambda: beir.read_qrels(qrels), qrels, 5))
    tuples = tmp_path / "tuples.jsonl"
    tuples.write_bytes(b'{"id": 1, "neutral": "they", "groups": {"male": "he", "female": "she"}}\n'
                       b'{"id": 2, "neutral": "' + BAD + b'", "groups": {"male": "he", "female": "she"}}\n')
    cases.append((lambda: fairness.read_tuples(tuples), tuples, 2))
    seat = tmp_path / "seat.jsonl"
    seat.write_bytes(b'{"targ1": {"examples": ["a"]},\n "targ2": {"examples": ["' + BAD + b'"]}}')
    cases.append((lambda: fairness.load_seat(seat), seat, 2))
    for read, path, line in cases:
        with pytest.raises(InputError) as e:
            read()
        assert str(e.value).startswith(f"{path}:{line}: not valid UTF-8 (byte 0xe9 at byte column "), str(e.value)


def test_corpus_with_a_bad_byte_via_the_cli(tiny_model_dir, shared_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "scifact", data / "scifact")
    corpus = data / "scifact" / "corpus.jsonl"
    lines = corpus.read_bytes().splitlines(keepends=True)
    corpus.write_bytes(b"".join(lines[:6]) + lines[6].replace(b'"text": "', b'"text": "' + BAD, 1)
                       + b"".join(lines[7:40]))
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model_dir), "--tasks", "scifact", "--data-dir", str(data),
                 "--cache-dir", "none", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"gecko-jax eval: error: {corpus}:7: not valid UTF-8 (byte 0xe9"), err
    assert not (out / "results.json").exists()


def test_bad_arguments_fail_before_the_model_loads(shared_data, tmp_path, capsys):
    no_model = str(tmp_path / "no_model")  # never reached: each case fails on its own argument first
    (tmp_path / "file").write_text("x")
    cases = [
        (["--tasks", "scifact", "nosuchtask"], 2, "gecko-jax eval: error: --tasks: unknown task(s) ['nosuchtask']"),
        (["--data-dir", str(tmp_path / "nodata")], 2, f"gecko-jax eval: error: data folder not found: "
                                                      f"{tmp_path / 'nodata'}"),
        (["--out", str(tmp_path / "file"), "--data-dir", str(shared_data)], 5,
         f"gecko-jax eval: error: cannot write {tmp_path / 'file' / 'results.json'}: a file is in the way"),
    ]
    for extra, code, start in cases:
        assert main(["eval", "--model", no_model, "--cache-dir", "none", *extra]) == code, extra
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(start), (extra, err)


def test_results_written_atomically(tmp_path):
    from gecko_jax.eval.suites import write_results

    out = {"suite": "small", "model": {"repr": "m"}, "task_prompts": None, "seconds": 1.0, "date": "d",
           "table": "| t |", "licence_note": "n"}
    write_results(out, tmp_path / "r")
    assert json.loads((tmp_path / "r" / "results.json").read_text())["suite"] == "small"
    assert (tmp_path / "r" / "results.md").read_text().startswith("# gecko-jax eval")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["results.json", "results.md"]
