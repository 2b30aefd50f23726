"""OpenAI-compatible HTTP backend against a local fault-injecting server (127.0.0.1 only)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from data_gen import (CachedLLM, FakeLLM, FakeOpenAIServer, FRetConfig, FRetPipeline, LLMError, OpenAICompatLLM,
                      PermanentLLMError, SqliteCache, choose_seeds, hashed_bow_embed, load_corpus)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(REPO / "data_gen" / "assets" / "scifact_demo.jsonl")


def _records(path):
    return [json.loads(l) for l in open(path)]


def _strip_backend(recs):
    return {r["id"]: {k: v for k, v in r.items() if k not in ("backend",)} for r in recs}


def test_fault_injection_every_record_exactly_once(corpus, tmp_path, caplog):
    seeds = choose_seeds(list(corpus), 12, seed=3)
    cfg = FRetConfig(neighbours=5, concurrency=8, progress=False)
    # Reference: the same fake model in-process, no HTTP, no faults.
    ref = FRetPipeline(CachedLLM(FakeLLM(), None), hashed_bow_embed, corpus, workdir=tmp_path / "ref", config=cfg)
    ref.run(seeds, tmp_path / "ref.jsonl")
    caplog.set_level(logging.WARNING, logger="data_gen")
    with FakeOpenAIServer(failure_rate=0.3, retry_after="0.2", timeout_sleep=1.6, seed=1) as srv:
        llm = OpenAICompatLLM(srv.base_url, "fake-llm-v1", api_key_env=None, timeout=0.8, max_attempts=5,
                              backoff_base=0.02, backoff_cap=0.2, seed=0)
        t0 = time.perf_counter()
        s = FRetPipeline(CachedLLM(llm, SqliteCache(tmp_path / "c.sqlite")), hashed_bow_embed, corpus,
                         workdir=tmp_path / "http", config=cfg).run(seeds, tmp_path / "http.jsonl")
        elapsed = time.perf_counter() - t0
        faults, attempts = sum(srv.faults.values()), srv.attempts
        modes = dict(srv.faults)
    recs = _records(tmp_path / "http.jsonl")
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted(seeds) and len(set(ids)) == len(ids)  # every record exactly once
    assert _strip_backend(recs) == _strip_backend(_records(tmp_path / "ref.jsonl"))  # faults leave no trace
    n_calls = len(seeds) * (1 + 2 * cfg.neighbours) + 1  # + the capability probe at the start
    assert 0.15 < faults / attempts < 0.45 and set(modes) == {"500", "429", "timeout", "garbage"}
    # Each injected fault cost one extra attempt and nothing else was repeated; a real client-side timeout on this
    # loaded 2-core box may add one (the server then answered a request nobody read: counted in attempts too).
    spurious = llm.usage.retries - faults
    assert 0 <= spurious <= 2 and attempts == n_calls + faults + spurious
    assert llm.usage.requests == n_calls + llm.usage.retries and llm.usage.failures == 0
    retry_logs = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retry_logs) == llm.usage.retries
    assert all("/5 failed" in r.getMessage() for r in retry_logs)  # bounded: attempt k/5 in every line
    # 429s waited at least Retry-After (0.2 s each; up to 8 in parallel)
    assert elapsed >= 0.2 * modes["429"] / cfg.concurrency
    # stage files: every id once (no duplicated lines from retries)
    for stage in ("queries", "neighbours", "scores"):
        lines = _records(tmp_path / "http" / f"{stage}.jsonl")
        assert len(lines) == len({r["id"] for r in lines}) == len(seeds)


def test_retries_are_bounded_then_recorded(corpus, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="data_gen")
    with FakeOpenAIServer(failure_rate=1.0, modes=("500",), max_consecutive_failures=10**9) as srv:
        llm = OpenAICompatLLM(srv.base_url, "m", api_key_env=None, max_attempts=3, backoff_base=0.01)
        with pytest.raises(LLMError, match="failed after 3 attempts"):
            llm.generate("hello", max_tokens=4)
        assert srv.attempts == 3 and llm.usage.retries == 2 and llm.usage.failures == 1
        seeds = list(corpus)[:2]
        cache = SqliteCache(tmp_path / "c.sqlite")
        s = FRetPipeline(CachedLLM(llm, cache), hashed_bow_embed, corpus, workdir=tmp_path / "w",
                         config=FRetConfig(neighbours=3, progress=False)).run(seeds, tmp_path / "o.jsonl")
        assert srv.attempts == 3 + 3 + 2 * 3  # the unanswered capability probe (3 attempts), then 2 seeds
    assert s.records == 0 and s.failures == 2 and len(cache) == 0  # failures are never cached
    fails = _records(tmp_path / "o.jsonl.failures.jsonl")
    assert {f["error_kind"] for f in fails} == {"llm"} and all("HTTP 500" in f["error"] for f in fails)
    assert any("failed after 3 attempts" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_client_errors_are_not_retried():
    with FakeOpenAIServer() as srv:
        llm = OpenAICompatLLM(srv.base_url.replace("/v1", "/nope"), "m", api_key_env=None, max_attempts=5)
        with pytest.raises(PermanentLLMError, match="HTTP 404"):
            llm.generate("x")
        assert srv.attempts == 1


def test_integer_retry_after_is_honoured():
    with FakeOpenAIServer(failure_rate=1.0, modes=("429",), retry_after="1", max_consecutive_failures=1) as srv:
        llm = OpenAICompatLLM(srv.base_url, "m", api_key_env=None, backoff_base=0.001)
        t0 = time.perf_counter()
        llm.generate("x", max_tokens=2)
        assert time.perf_counter() - t0 >= 1.0 and srv.attempts == 2


def test_chat_and_completion_match_in_process(corpus):
    fake = FakeLLM()
    msgs = [{"role": "user", "content": "Sentence: The man waved.\nFemale:"}]
    with FakeOpenAIServer() as srv:
        llm = OpenAICompatLLM(srv.base_url, "fake-llm-v1", api_key_env=None)
        assert llm.generate(msgs) == fake.generate(msgs) == " The woman waved."
        p = "Passage: vitamin d and bone density in older adults\nQuery:"
        assert llm.score(p, " vitamin d bones") == pytest.approx(fake.score(p, " vitamin d bones"), abs=1e-12)
        assert llm.usage.prompt_tokens > 0 and llm.usage.requests == 2


def test_api_key_from_env_is_sent_but_never_logged_or_cached(tmp_path, monkeypatch, caplog, corpus):
    secret = "sk-test-4f7d1e0c9b8a-DO-NOT-LEAK"
    monkeypatch.setenv("GECKO_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(failure_rate=0.5, modes=("500",), seed=2) as srv:
        llm = OpenAICompatLLM(srv.base_url, "fake-llm-v1", api_key_env="GECKO_TEST_KEY", backoff_base=0.01)
        assert secret not in repr(llm)
        FRetPipeline(CachedLLM(llm, SqliteCache(tmp_path / "c.sqlite")), hashed_bow_embed, corpus,
                     workdir=tmp_path / "w", config=FRetConfig(neighbours=2, progress=False)).run(
            list(corpus)[:2], tmp_path / "o.jsonl")
        assert srv.auth_headers and all(h == "Bearer " + secret for h in srv.auth_headers)
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_a_request_cut_off_mid_body_is_not_an_attempt():
    # A client killed while sending leaves a short body; the fake server must not count or answer it (the kill -9
    # resume test adds up attempts; a cut-off request is the one way found for its count to come out one too high,
    # not shown to be what happened in the one failing run).
    import socket
    import urllib.parse

    with FakeOpenAIServer() as srv:
        url = urllib.parse.urlparse(srv.base_url)
        with socket.create_connection((url.hostname, url.port), timeout=5) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"prompt\": \"cut")
        deadline = time.monotonic() + 10
        while srv.incomplete == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.incomplete == 1 and srv.attempts == 0 and not srv.served
        llm = OpenAICompatLLM(srv.base_url, "fake-llm-v1")  # and it still answers whole requests
        llm.generate("a prompt")
        assert srv.attempts >= 1 and sum(srv.served.values()) >= 1 and srv.incomplete == 1
