"""Fail-safe ``gecko-data``: transport faults, fail-fast, input protection, exit codes, redaction, bad files.

The LLM server is ``data_gen.fake.FakeOpenAIServer`` behind ``fault_server.FaultServer`` (raw sockets, 127.0.0.1),
which truncates bodies, closes or resets connections, sends garbage status lines, 5xx, 429 and 4xx. Retry backoff is
made short through options (``--backoff-base``), never by sleeping in the tests.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_gen import (CachedLLM, FakeOpenAIServer, FRetConfig, FRetPipeline, OpenAICompatLLM, hashed_bow_embed,
                      load_corpus)
from data_gen import cli as gd_cli
from data_gen import errors, files, jsonl
from data_gen.errors import redact
from data_gen.llm import FatalLLMError, PermanentLLMError
from fault_server import ALL_MODES, FaultServer, closed_port

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data_gen" / "assets" / "scifact_demo.jsonl"
SECRET = "sk-test-9c1d2e3f4a5b-DO-NOT-LEAK"


def _run(args: list[str], *, key: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENAI_API_KEY=key)
    return subprocess.run([sys.executable, "-m", "data_gen.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def _openai(url: str, *more: str) -> list[str]:
    return ["--llm", "openai", "--base-url", url, "--model", "fake-llm-v1", "--no-progress", "--backoff-base", "0.01",
            *more]


def _fret(out: Path, url: str, *more: str, passages: int = 12) -> list[str]:
    return ["fret", "--out", str(out), "--passages", str(passages), "--neighbours", "5", "--embedder", "hash",
            *_openai(url, *more)]


def _fair(out: Path, url: str, *more: str) -> list[str]:
    return ["augment-fair", "--out", str(out), "--limit", "40", *_openai(url, *more)]


def _records(path: Path) -> dict:
    recs = [json.loads(line) for line in open(path)]
    by_id = {r["id"]: r for r in recs}
    assert len(by_id) == len(recs), f"{path}: an id appears twice"
    return by_id


def _error_lines(stderr: str) -> list[str]:
    """stderr without the INFO/WARNING log lines (timestamped) of a run."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not (" INFO " in ln[:60] or " WARNING " in ln[:60])]


def _strict_json(text: str):
    def no_nan(c):
        raise ValueError(f"not strict JSON: {c}")
    return json.loads(text, parse_constant=no_nan)


def _strays(folder: Path) -> list[Path]:
    """Temporary files left behind (ours are named ``.<name>.<pid>.<hex>.tmp``; any ``*.tmp*`` counts)."""
    return [p for p in folder.rglob("*") if p.is_file() and ".tmp" in p.name]


def jsonl_corpus(n: int) -> list:
    return list(load_corpus(DEMO).values())[:n]


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer(slots=16) as srv:
        yield srv


# ---- transport faults: every record exactly once, equal to the fault-free run ---------------------------------

@pytest.mark.parametrize("command", ["fret", "augment-fair"])
def test_thirty_percent_faults_every_record_once_and_equal(upstream, tmp_path, command):
    make = _fret if command == "fret" else _fair
    with FaultServer(upstream.port) as clean:
        ref = _run(make(tmp_path / "ref" / "o.jsonl", clean.base_url, "--concurrency", "4"))
    assert ref.returncode in (0, 3), ref.stderr[-2000:]
    with FaultServer(upstream.port, failure_rate=0.3, seed=7, max_consecutive=3) as fs:
        p = _run(make(tmp_path / "run" / "o.jsonl", fs.base_url, "--concurrency", "4", "--max-attempts", "5"))
        faults, attempts = sum(fs.faults.values()), fs.attempts
        modes = dict(fs.faults)
    assert p.returncode == ref.returncode, p.stderr[-3000:]
    assert set(modes) == set(ALL_MODES), modes  # every kind of fault was served...
    assert 0.2 < faults / attempts < 0.4, (faults, attempts)
    assert "Traceback" not in p.stderr
    got, want = _records(tmp_path / "run" / "o.jsonl"), _records(tmp_path / "ref" / "o.jsonl")
    assert got == want and len(got) > 0  # ...and left no trace: same records, each once
    summary = _strict_json(p.stdout)
    assert summary["usage"]["retries"] == faults and summary["usage"]["failures"] == 0
    # the append-only stage files / resume log hold each id once (a retry never appends twice)
    stage = (list((tmp_path / "run" / "o.jsonl.work").glob("*.jsonl")) if command == "fret"
             else [tmp_path / "run" / "o.jsonl.log.jsonl"])
    assert stage
    for f in stage:
        _records(f)
    assert not _strays(tmp_path / "run")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_each_transport_fault_is_retried(upstream, mode, caplog):
    caplog.set_level(logging.WARNING, logger="data_gen")
    with FaultServer(upstream.port, failure_rate=1.0, modes=(mode,), max_consecutive=2) as fs:
        llm = OpenAICompatLLM(fs.base_url, "fake-llm-v1", api_key_env=None, max_attempts=3, backoff_base=0.001)
        assert llm.generate("Sentence: The man waved.\nFemale:") == " The woman waved."
        assert fs.attempts == 3 and fs.faults[mode] == 2 and llm.usage.retries == 2
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == 2


# ---- fail fast: permanent HTTP errors and an unreachable server ------------------------------------------------

def test_401_stops_the_run_after_one_request(tmp_path):
    with FaultServer(None, failure_rate=1.0, modes=("401",), max_consecutive=10**9) as fs:
        p = _run(_fret(tmp_path / "o.jsonl", fs.base_url, "--concurrency", "8", passages=30), key=SECRET)
        attempts = fs.attempts
    assert p.returncode == errors.EXIT_SERVER, p.stderr
    assert 1 <= attempts <= 2
    err = _error_lines(p.stderr)
    assert len(err) == 1, p.stderr
    assert err[0].startswith("gecko-data: error: LLM server http://127.0.0.1:") and "HTTP 401" in err[0]
    assert "OPENAI_API_KEY" in err[0] and "Traceback" not in p.stderr
    assert SECRET not in p.stderr + p.stdout
    assert not (tmp_path / "o.jsonl").exists()
    for f in tmp_path.rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f


@pytest.mark.parametrize("status", ["400", "403", "404"])
def test_permanent_statuses_are_fatal_and_not_retried(status, tmp_path):
    corpus = {p.id: p for p in jsonl_corpus(8)}
    with FaultServer(None, failure_rate=1.0, modes=(status,), max_consecutive=10**9) as fs:
        llm = OpenAICompatLLM(fs.base_url, "m", api_key_env=None, max_attempts=5)
        pipe = FRetPipeline(CachedLLM(llm, None), hashed_bow_embed, corpus, workdir=tmp_path / "w",
                            config=FRetConfig(neighbours=2, concurrency=4, progress=False))
        with pytest.raises(FatalLLMError, match=f"HTTP {status}"):
            pipe.run(list(corpus), tmp_path / "o.jsonl")
        assert fs.attempts == 1


def test_context_length_400_fails_only_that_record():
    import io
    import urllib.error
    llm = OpenAICompatLLM("http://127.0.0.1:9/v1", "m", api_key_env=None)
    body = b'{"error": {"message": "This model\'s maximum context length is 2048 tokens"}}'
    e = urllib.error.HTTPError("u", 400, "Bad Request", {}, io.BytesIO(body))
    err = llm._http_error(e, "/completions")
    assert type(err) is PermanentLLMError and "this prompt only" in str(err)


def test_unreachable_server_trips_the_breaker(tmp_path):
    corpus = {p.id: p for p in jsonl_corpus(30)}
    llm = OpenAICompatLLM(f"http://127.0.0.1:{closed_port()}/v1", "m", api_key_env=None, backoff_base=0.001,
                          max_connection_failures=3)
    pipe = FRetPipeline(CachedLLM(llm, None), hashed_bow_embed, corpus, workdir=tmp_path / "w",
                        config=FRetConfig(neighbours=2, concurrency=8, progress=False))
    with pytest.raises(FatalLLMError, match="unreachable after 3 consecutive connection failures"):
        pipe.run(list(corpus), tmp_path / "o.jsonl")
    assert llm.usage.requests == 3  # not 6 attempts x 30 passages


def test_unreachable_server_cli(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    p = _run(_fret(tmp_path / "o.jsonl", url, "--concurrency", "8", passages=30))
    assert p.returncode == errors.EXIT_SERVER, p.stderr
    err = _error_lines(p.stderr)
    assert len(err) == 1 and f"LLM server {url} is unreachable after 4 consecutive" in err[0], p.stderr
    assert p.stderr.count("retrying in") == 3  # the attempts before the breaker tripped, logged


# ---- outputs: checked before any LLM call, inputs never overwritten ---------------------------------------------

def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "dotted"])
def test_output_equal_to_the_input_is_refused(upstream, tmp_path, alias):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(DEMO.read_bytes()[:20000].rsplit(b"\n", 1)[0] + b"\n")
    out = {"same": corpus, "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl",
           "dotted": tmp_path / "sub" / ".." / "c.jsonl"}[alias]
    (tmp_path / "sub").mkdir()
    if alias == "symlink":
        out.symlink_to(corpus)
    elif alias == "hardlink":
        os.link(corpus, out)
    before = _snapshot(tmp_path)
    with FaultServer(upstream.port) as fs:
        p = _run(["fret", "--corpus", str(corpus), "--out", str(out), "--embedder", "hash", "--no-progress",
                  *_openai(fs.base_url)[:6]])
        assert fs.attempts == 0
    assert p.returncode == errors.EXIT_INPUT
    assert _error_lines(p.stderr) == [f"gecko-data: error: --out {out}: is the same file as the input --corpus "
                                      f"{corpus}; choose another output path (the input is left untouched)"]
    assert _snapshot(tmp_path) == before  # touched nothing


def test_fair_output_equal_to_input_and_cache_equal_to_input(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"id": "a", "text": "The man waved."}\n')
    before = _snapshot(tmp_path)
    p = _run(["augment-fair", "--input", str(src), "--out", str(src), "--method", "rules"])
    assert p.returncode == errors.EXIT_INPUT and "is the same file as the input --input" in p.stderr
    p = _run(["augment-fair", "--input", str(src), "--out", str(tmp_path / "o.jsonl"), "--llm", "fake",
              "--cache", str(src)])
    assert p.returncode == errors.EXIT_INPUT and f"--cache {src}: is the same file as the input" in p.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["directory", "parent_is_file", "fifo"])
def test_bad_out_fails_before_any_llm_call(upstream, tmp_path, case):
    (tmp_path / "afile").write_text("x")
    # Never a real device such as /dev/null here: code with the bug under test would replace it with a file.
    os.mkfifo(tmp_path / "fifo")
    out = {"directory": tmp_path, "parent_is_file": tmp_path / "afile" / "o.jsonl", "fifo": tmp_path / "fifo"}[case]
    before = _snapshot(tmp_path)
    with FaultServer(upstream.port) as fs:
        p = _run(_fret(out, fs.base_url, "--workdir", str(tmp_path / "w")))
        assert fs.attempts == 0  # nothing paid for
    assert p.returncode == errors.EXIT_INPUT, p.stderr
    want = {"directory": "is a folder", "parent_is_file": "is not a folder", "fifo": "not a regular file"}[case]
    err = _error_lines(p.stderr)
    assert len(err) == 1 and err[0].startswith(f"gecko-data: error: --out {out}") and want in err[0], p.stderr
    assert _snapshot(tmp_path) == before and not _strays(tmp_path)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("old\n")

    def records():
        yield {"id": "a"}
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        jsonl.write_jsonl_atomic(out, records())
    assert out.read_text() == "old\n" and not _strays(tmp_path)
    assert jsonl.write_jsonl_atomic(out, [{"id": "b"}]) == 1 and out.read_text() == '{"id": "b"}\n'
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # like open(): not mkstemp's 0600


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


class _FullDiskOs:
    """``os`` with writes that fail with ENOSPC (a module's ``os`` is replaced by this in-process)."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def write(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    @staticmethod
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text("previous\n")
    monkeypatch.setattr(jsonl, "os", _FullDiskOs())
    rc = gd_cli.main(["fret", "--out", str(out), "--passages", "2", "--neighbours", "2", "--llm", "fake",
                      "--embedder", "hash", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_STORAGE
    assert f"gecko-data: error: {out}.work/queries.jsonl: cannot append a record (disk full (ENOSPC)" in err, err
    monkeypatch.setattr(jsonl, "os", os)
    monkeypatch.setattr(files, "os", _FullDiskOs())  # now the final, atomic write fails
    rc = gd_cli.main(["fret", "--out", str(out), "--passages", "2", "--neighbours", "2", "--llm", "fake",
                      "--embedder", "hash", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_STORAGE and "disk full (ENOSPC)" in err, err
    assert out.read_text() == "previous\n" and not _strays(tmp_path)


# ---- exit codes and summaries ----------------------------------------------------------------------------------

def test_exit_codes_partial_then_complete(upstream, tmp_path):
    out = tmp_path / "o.jsonl"
    with FaultServer(upstream.port, failure_rate=0.3, modes=("500",), seed=3) as fs:
        p = _run(_fret(out, fs.base_url, "--max-attempts", "1", "--concurrency", "4"))
    assert p.returncode == errors.EXIT_PARTIAL, p.stderr
    fails = [json.loads(line) for line in open(f"{out}.failures.jsonl")]
    summary = _strict_json(p.stdout)
    assert fails and summary["failures"] == len(fails) and summary["records"] + len(fails) == 12
    assert _error_lines(p.stderr)[-1] == (f"gecko-data: finished with {len(fails)} failed record"
                                          f"{'s' * (len(fails) != 1)} of 12, see {out}.failures.jsonl")
    with FaultServer(upstream.port) as fs:  # the server recovered: a re-run retries the failed ids only
        p = _run(_fret(out, fs.base_url))
    assert p.returncode == errors.EXIT_OK and p.stderr.count("gecko-data:") == 0, p.stderr
    assert len(_records(out)) == 12 and (tmp_path / "o.jsonl.failures.jsonl").read_text() == ""


def test_zero_records_summary_is_strict_json(tmp_path):
    with FaultServer(None, failure_rate=1.0, modes=("500",), max_consecutive=10**9) as fs:
        p = _run(_fret(tmp_path / "o.jsonl", fs.base_url, "--max-attempts", "1", passages=3))
    assert p.returncode == errors.EXIT_PARTIAL
    s = _strict_json(p.stdout)
    assert s["records"] == 0 and s["failures"] == 3 and s["positive_differs_from_seed"] is None


def test_interrupt_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    from data_gen import fret

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(fret.FRetPipeline, "run", interrupted)
    rc = gd_cli.main(["fret", "--out", str(tmp_path / "o.jsonl"), "--llm", "fake", "--embedder", "hash"])
    assert rc == errors.EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("gecko-data: interrupted; re-run the same command "
                                                                 "to resume")


def test_help_documents_the_exit_codes():
    for sub in (["fret"], ["augment-fair"], []):
        p = _run([*sub, "--help"])
        assert p.returncode == 0
        for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130"):
            assert f"\n  {code} " in p.stdout or f"\n  {code}" in p.stdout, p.stdout
        assert "failures.jsonl" in p.stdout


# ---- secrets ----------------------------------------------------------------------------------------------------

def test_key_echoed_by_the_server_is_redacted_everywhere(tmp_path):
    with FaultServer(None, failure_rate=1.0, modes=("500",), max_consecutive=10**9) as fs:
        p = _run(_fret(tmp_path / "o.jsonl", fs.base_url, "--max-attempts", "2", passages=3), key=SECRET)
    assert p.returncode == errors.EXIT_PARTIAL, p.stderr
    assert "[REDACTED]" in (tmp_path / "o.jsonl.work" / "queries.jsonl").read_text()
    assert SECRET not in p.stdout + p.stderr
    for f in tmp_path.rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer {SECRET}", f'{{"authorization": "Bearer {SECRET}"}}', f"GET /v1?key={SECRET}&x=1",
    f'{{"api_key": "{SECRET}"}}', f"x-api-key: {SECRET}", f"https://user:{SECRET}@host/v1"])
def test_redact_patterns(text):
    out = redact(text)
    assert SECRET not in out and "[REDACTED]" in out
    assert redact(f"bad key {SECRET} here", [SECRET]) == "bad key [REDACTED] here"
    assert redact("the keyboard is fine", ["short"]) == "the keyboard is fine"


# ---- bad local files --------------------------------------------------------------------------------------------

def test_corrupt_cache_is_one_line_with_the_fix(upstream, tmp_path):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"this is not an sqlite database, just bytes" * 100)
    with FaultServer(upstream.port) as fs:
        p = _run(_fret(tmp_path / "o.jsonl", fs.base_url, "--cache", str(cache), passages=2))
        assert fs.attempts == 0
    assert p.returncode == errors.EXIT_STORAGE
    err = _error_lines(p.stderr)
    assert len(err) == 1 and err[0].startswith(f"gecko-data: error: {cache}: the LLM cache is damaged") and \
        "delete it" in err[0], p.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_non_utf8_input_names_file_and_line(tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        src.write_bytes(b'{"id": "a", "text": "The man waved."}\n\n{"id": "b", "text": "caf\xe9 man"}\n')
        cmd = ["fret", "--corpus", str(src), "--llm", "fake", "--embedder", "hash"]
    else:
        src.write_bytes(b"The man waved.\nThe woman sang.\nCaf\xe9 king.\n")
        cmd = ["augment-fair", "--input", str(src), "--method", "rules"]
    p = _run([*cmd, "--out", str(tmp_path / "o.jsonl")])
    assert p.returncode == errors.EXIT_INPUT
    column = src.read_bytes().split(b"\n")[2].index(b"\xe9") + 1
    assert _error_lines(p.stderr) == [f"gecko-data: error: {src}:3: not UTF-8 text (byte 0xe9 at byte {column} of "
                                      f"the line); save the file as UTF-8"]


@pytest.mark.parametrize("line,message", [
    ('{"_id": "b", "text": "t", "title": 5}', "(id b): field 'title' must be a string, got int 5"),
    ('{"_id": ["b"], "text": "t"}', "field '_id' must be a non-empty string or an integer, got ['b']"),
    ('{"_id": "b", "text": ""}', "(id b): field 'text' is empty"),
    ('{"_id": "b", "text": {"x": 1}}', "(id b): field 'text' must be a non-empty string, got dict"),
    ('["b", "t"]', "expected a JSON object, got list"),
    ('{"_id": "b", "text": "t"', "expected one JSON object per line, got invalid JSON"),
])
def test_bad_field_names_file_and_line(tmp_path, line, message):
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "a", "text": "The man waved."}\n' + line + "\n")
    p = _run(["fret", "--corpus", str(src), "--llm", "fake", "--embedder", "hash", "--out",
              str(tmp_path / "o.jsonl")])
    assert p.returncode == errors.EXIT_INPUT
    err = _error_lines(p.stderr)
    assert len(err) == 1 and err[0].startswith(f"gecko-data: error: {src}:2") and message in err[0], p.stderr

