"""Unit tests for data_gen: ranking/fusion, retrieval, parsing, JSONL, limits, cache, corpus loading."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_gen import (CachedLLM, FakeLLM, JsonlAppender, JsonlError, ParseError, SqliteCache, TokenBucket,
                      backoff_delay, cache_key, exact_topk, fuse_and_select, load_by_id, load_corpus,
                      parse_retry_after, parse_task_query, read_jsonl, reciprocal_rank_fusion)
from data_gen.fret import ranks_descending

REPO = Path(__file__).resolve().parents[2]


# ---- import hygiene ---------------------------------------------------------------------------------------------

def test_import_pulls_in_no_ml_framework():
    code = ("import sys, data_gen, data_gen.cli, data_gen.fret, data_gen.fair, data_gen.llm, data_gen.fake\n"
            "data_gen.cli.build_parser().parse_args(['fret', '--out', 'x.jsonl'])\n"
            "bad = [m for m in ('torch', 'jax', 'jaxlib', 'tensorflow', 'flax', 'llama_cpp', 'gecko_jax', "
            "'transformers') if m in sys.modules]\n"
            "print('LOADED', bad)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


def test_cli_help_runs_without_frameworks():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for sub in ("fret", "augment-fair"):
        out = subprocess.run([sys.executable, "-m", "data_gen.cli", sub, "--help"], capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--llm" in out.stdout and "--out" in out.stdout


# ---- ranking ----------------------------------------------------------------------------------------------------

def test_rrf_hand_computed():
    # QL ranks [1, 3, 2], RC ranks [2, 1, 3]  ->  R = [1 + 1/2, 1/3 + 1, 1/2 + 1/3]
    r = reciprocal_rank_fusion([1, 3, 2], [2, 1, 3])
    assert r == pytest.approx([1.5, 4 / 3, 5 / 6], abs=1e-12)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([1, 2], [1])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([0, 1])


def test_ranks_descending_ties_follow_tiebreak():
    assert ranks_descending([0.5, 0.9, 0.5, 0.1], [1, 2, 3, 4]) == [2, 1, 3, 4]
    assert ranks_descending([0.5, 0.9, 0.5, 0.1], [3, 2, 1, 4]) == [3, 1, 2, 4]


def _cands():
    # id, retrieval rank, QL, RC; QL ranks: a1 b3 c2 d4; RC ranks: a3 b1 c2 d4
    return [{"id": "a", "retrieval_rank": 1, "ql": -1.0, "rc": -0.9},
            {"id": "b", "retrieval_rank": 2, "ql": -3.0, "rc": -0.1},
            {"id": "c", "retrieval_rank": 3, "ql": -2.0, "rc": -0.5},
            {"id": "d", "retrieval_rank": 4, "ql": -9.0, "rc": -2.0}]


def test_fuse_and_select_lowest():
    # R: a = 1 + 1/3 = 1.333, b = 1/3 + 1 = 1.333 (tie -> retrieval rank: a first), c = 1/2 + 1/2 = 1, d = 1/2
    sel = fuse_and_select(_cands(), negative="lowest", rng_key="k")
    got = [(c["id"], c["ql_rank"], c["rc_rank"], round(c["rrf"], 6), c["rank"]) for c in sel["candidates"]]
    assert got == [("a", 1, 3, 1.333333, 1), ("b", 3, 1, 1.333333, 2), ("c", 2, 2, 1.0, 3), ("d", 4, 4, 0.5, 4)]
    assert sel["positive_id"] == "a" and sel["negative_id"] == "d"


def test_positive_can_differ_from_seed_and_random_negative():
    c = _cands()
    c[1]["ql"] = 0.0  # b now first under both QL and RC
    sel = fuse_and_select(c, negative="lowest", rng_key="k")
    assert sel["positive_id"] == "b"
    negs = {fuse_and_select(c, negative="random", rng_key=f"s:{i}")["negative_id"] for i in range(40)}
    assert negs == {"a", "c", "d"}  # uniform over the candidates other than the positive
    same = {fuse_and_select(c, negative="random", rng_key="s:7")["negative_id"] for _ in range(5)}
    assert len(same) == 1  # deterministic per key: a resumed run picks the same negative
    with pytest.raises(ValueError, match="negative"):
        fuse_and_select(c, negative="median", rng_key="k")


# ---- retrieval --------------------------------------------------------------------------------------------------

def test_exact_topk_matches_naive_with_blocks_and_ties():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 16)).astype(np.float32)
    d = rng.normal(size=(103, 16)).astype(np.float32)
    d[50] = d[10]  # an exact tie: the smaller index must come first
    for bs in (1, 8, 64, 1000):
        sc, idx = exact_topk(q, d, 12, block_size=bs)
        s = q @ d.T
        for r in range(q.shape[0]):
            naive = sorted(range(d.shape[0]), key=lambda j: (-s[r, j], j))[:12]
            assert idx[r].tolist() == naive
            np.testing.assert_allclose(sc[r], s[r, naive], rtol=1e-6)
    _, idx = exact_topk(q, d, 500)
    assert idx.shape == (7, 103)
    with pytest.raises(ValueError, match="must share d"):
        exact_topk(q, d[:, :8], 3)


# ---- parsing ----------------------------------------------------------------------------------------------------

def test_parse_task_query_strict():
    tq = parse_task_query(" has the answer to the query.\nQuery: how long is the reef")
    assert tq.task == "Given a query, find a passage that has the answer to the query."
    assert tq.query == "how long is the reef"
    bad = ["", "no query line", " task\nQuery:", " task\nQuery: q1\nPassage: more", " task\nQuestion: what",
           "\nQuery: only query", " task\nQuery: ok\nQuery: again"]
    for b in bad:
        with pytest.raises(ParseError):
            parse_task_query(b)


def test_parse_failures_are_recorded_and_not_cached(tmp_path):
    from data_gen import FRetConfig, FRetPipeline, hashed_bow_embed
    corpus = load_corpus(REPO / "data_gen" / "assets" / "scifact_demo.jsonl")
    ids = list(corpus)[:30]
    fake = FakeLLM(garbage_every=4)
    llm = CachedLLM(fake, SqliteCache(tmp_path / "c.sqlite"))
    pipe = FRetPipeline(llm, hashed_bow_embed, corpus, workdir=tmp_path / "w",
                        config=FRetConfig(neighbours=3, progress=False))
    s = pipe.run(ids, tmp_path / "out.jsonl")
    gen = load_by_id(tmp_path / "w" / "queries.jsonl")
    failed = [r for r in gen.values() if not r["ok"]]
    assert failed and all(r["error_kind"] == "parse" and "expected" in r["error"] and r["raw"] for r in failed)
    assert s.records == len(ids) - len(failed) and s.failures == len(failed)
    fails = [json.loads(l) for l in open(tmp_path / "out.jsonl.failures.jsonl")]
    assert sorted(f["id"] for f in fails) == sorted(r["id"] for r in failed)
    # Cached: only the parsed generations + all scores. A re-run with retry_failed asks again for the failures only.
    calls = fake.usage.requests
    pipe2 = FRetPipeline(CachedLLM(fake, SqliteCache(tmp_path / "c.sqlite")), hashed_bow_embed, corpus,
                         workdir=tmp_path / "w", config=FRetConfig(neighbours=3, progress=False, retry_failed=True))
    pipe2.run(ids, tmp_path / "out.jsonl")
    assert fake.usage.requests - calls == len(failed)


# ---- JSONL ------------------------------------------------------------------------------------------------------

def test_jsonl_torn_tail_is_ignored_and_truncated(tmp_path):
    p = tmp_path / "x.jsonl"
    with JsonlAppender(p) as w:
        w.append({"id": "1", "v": 1})
        w.append({"id": "2", "v": 2})
    with open(p, "ab") as f:
        f.write(b'{"id": "3", "v"')  # a writer killed mid-line
    assert [r["id"] for r in read_jsonl(p)] == ["1", "2"]
    with JsonlAppender(p) as w:
        w.append({"id": "3", "v": 3})
    assert [r["id"] for r in read_jsonl(p)] == ["1", "2", "3"]
    assert p.read_bytes().count(b"\n") == 3


def test_jsonl_corruption_in_the_middle_names_the_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "1"}\nnot json\n{"id": "2"}\n')
    with pytest.raises(JsonlError, match=r"x\.jsonl:2"):
        list(read_jsonl(p))
    p.write_text('{"id": "1"}\n{"x": 2}\n')
    with pytest.raises(JsonlError, match=r":2: missing required field 'id'"):
        load_by_id(p)


def test_load_corpus_errors_name_the_record(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "title": "t"}\n')
    with pytest.raises(JsonlError, match=r"c\.jsonl:2 \(id b\): missing field 'text'"):
        load_corpus(p)
    p.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(JsonlError, match="duplicate id 'a'"):
        load_corpus(p)


# ---- limits -----------------------------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += dt


def test_token_bucket_paces_to_the_rate():
    clk = _Clock()
    b = TokenBucket(60, capacity=5, clock=clk, sleep=clk.sleep)  # 1 per second, burst 5
    for _ in range(5):
        assert b.acquire() == 0.0
    for _ in range(10):
        b.acquire()
    assert clk.t == pytest.approx(10.0, abs=1e-9)
    big = TokenBucket(60, capacity=5, clock=clk, sleep=clk.sleep)
    big.acquire(20)  # larger than the capacity: allowed once full, then the debt is repaid
    t = clk.t
    big.acquire(1)
    assert clk.t - t == pytest.approx(16.0, abs=1e-9)
    assert TokenBucket(None).acquire(1e9) == 0.0


def test_retry_after_and_backoff():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    rng = random.Random(0)
    ds = [backoff_delay(a, base=0.5, cap=4.0, rng=rng) for a in range(10) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in ds)
    assert max(backoff_delay(1, base=0.5, cap=30, rng=rng) for _ in range(200)) <= 1.0


# ---- cache ------------------------------------------------------------------------------------------------------

def test_cache_key_covers_backend_model_prompt_params():
    base = dict(backend="openai", model="m", op="generate", prompt="p", params={"temperature": 0.0, "max_tokens": 5})
    k = cache_key(**base)
    assert k == cache_key(**{**base, "params": {"max_tokens": 5, "temperature": 0.0}})  # order-independent
    for change in ({"backend": "local"}, {"model": "m2"}, {"prompt": "q"}, {"op": "score"},
                   {"params": {"temperature": 0.7, "max_tokens": 5}}):
        assert cache_key(**{**base, **change}) != k


def test_cached_llm_hits_and_rejects(tmp_path):
    fake = FakeLLM()
    llm = CachedLLM(fake, SqliteCache(tmp_path / "c.sqlite"))
    a = llm.score("Passage: vitamin d bones\nQuery:", " vitamin d")
    b = llm.score("Passage: vitamin d bones\nQuery:", " vitamin d")
    assert a == b and fake.usage.requests == 1 and fake.usage.cache_hits == 1
    llm.generate("hello", max_tokens=3, accept=lambda t: False)
    llm.generate("hello", max_tokens=3, accept=lambda t: False)
    assert fake.usage.requests == 3  # a rejected output is never replayed from the cache
    llm.generate("hello", max_tokens=3)
    llm.generate("hello", max_tokens=3)
    assert fake.usage.requests == 4
    # persisted across processes/instances
    llm2 = CachedLLM(FakeLLM(), SqliteCache(tmp_path / "c.sqlite"))
    assert llm2.score("Passage: vitamin d bones\nQuery:", " vitamin d") == a and llm2.usage.requests == 0


def test_parse_rejects_a_copied_demonstration():
    with pytest.raises(ParseError, match="copies a demonstration"):
        parse_task_query(" describes the discovery the query asks about.\nQuery: Who discovered penicillin and how")


def test_bare_backend_is_wrapped(tmp_path):
    from data_gen import FRetConfig, FRetPipeline, hashed_bow_embed
    corpus = load_corpus(REPO / "data_gen" / "assets" / "scifact_demo.jsonl")
    s = FRetPipeline(FakeLLM(), hashed_bow_embed, corpus, workdir=tmp_path,
                     config=FRetConfig(neighbours=2, progress=False)).run(list(corpus)[:2], tmp_path / "o.jsonl")
    assert s.records == 2


def test_cli_fret_on_bundled_corpus(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "f.jsonl"
    p = subprocess.run([sys.executable, "-m", "data_gen.cli", "fret", "--out", str(out), "--passages", "3",
                        "--neighbours", "4", "--negative", "random", "--llm", "fake", "--embedder", "hash",
                        "--no-progress", "--price-in", "1.0", "--price-out", "2.0"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    recs = [json.loads(l) for l in open(out)]
    assert rep["records"] == len(recs) == 3 and rep["seeds"] == 3
    u = rep["usage"]
    assert u["requests"] == 3 * (1 + 2 * 4)
    assert u["cost_usd"] == pytest.approx((u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 2.0) / 1e6)
    for r in recs:
        assert r["negative_strategy"] == "random" and r["negative"]["id"] != r["positive"]["id"]
        assert r["prompt_version"] and r["model"] == "fake-llm-v1" and r["embedder"] == "hashed-bow-512"
    bad = subprocess.run([sys.executable, "-m", "data_gen.cli", "fret", "--out", str(out), "--llm", "openai"],
                         capture_output=True, text=True, env={**env, "OPENAI_BASE_URL": ""}, cwd=REPO, timeout=120)
    assert bad.returncode != 0 and "--base-url" in bad.stderr
