"""Benchmark: FRet records/second, sequential vs concurrent LLM calls, and LLM calls on a cached re-run.

Server: data_gen.fake.FakeOpenAIServer on 127.0.0.1, an OpenAI-compatible server with `--slots` parallel slots, each
request taking `--latency` seconds (a stand-in for a hosted API or a vLLM/llama.cpp server with parallel slots; the
embedded Gemma on this 2-core box is compute-bound, so concurrency cannot help there and is not what is measured).

Baseline: the same pipeline with concurrency 1 (one call in flight). Target: >= 4x with concurrency 8, and 0 LLM
calls when the same run is repeated with the cache.

Usage: python bench/data_gen_speed.py [--seeds 16 --neighbours 5 --latency 0.05 --slots 8 --concurrency 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from data_gen import (CachedLLM, FakeOpenAIServer, FRetConfig, FRetPipeline, OpenAICompatLLM,  # noqa: E402
                      SqliteCache, choose_seeds, hashed_bow_embed, load_corpus)


def run_once(srv, corpus, seeds, neighbours, concurrency, workdir: Path, cache_path: Path):
    llm = OpenAICompatLLM(srv.base_url, "fake-llm-v1", api_key_env=None, timeout=30)
    pipe = FRetPipeline(CachedLLM(llm, SqliteCache(cache_path)), hashed_bow_embed, corpus, workdir=workdir,
                        config=FRetConfig(neighbours=neighbours, concurrency=concurrency, progress=False))
    before = srv.attempts
    t0 = time.perf_counter()
    s = pipe.run(seeds, workdir / "fret.jsonl")
    dt = time.perf_counter() - t0
    return {"records": s.records, "seconds": round(dt, 3), "records_per_s": round(s.records / dt, 2),
            "server_calls": srv.attempts - before, "client_requests": llm.usage.requests,
            "cache_hits": llm.usage.cache_hits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--neighbours", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    corpus = load_corpus(REPO / "data_gen" / "assets" / "scifact_demo.jsonl")
    seeds = choose_seeds(list(corpus), args.seeds, seed=0)
    with tempfile.TemporaryDirectory() as d, FakeOpenAIServer(latency=args.latency, slots=args.slots) as srv:
        d = Path(d)
        seq = run_once(srv, corpus, seeds, args.neighbours, 1, d / "seq", d / "seq.sqlite")
        con = run_once(srv, corpus, seeds, args.neighbours, args.concurrency, d / "con", d / "con.sqlite")
        # Cached re-run: fresh stage files (so every call is asked for again) but the concurrent run's cache.
        cached = run_once(srv, corpus, seeds, args.neighbours, args.concurrency, d / "cached", d / "con.sqlite")
        outs = [{r["id"]: r for r in map(json.loads, open(d / k / "fret.jsonl"))} for k in ("seq", "con", "cached")]
        same = outs[0] == outs[1] == outs[2]
    ratio = con["records_per_s"] / seq["records_per_s"]
    print(f"server: FakeOpenAIServer, {args.slots} slots, {args.latency * 1000:.0f} ms per request; "
          f"{args.seeds} seeds x (1 + 2 x {args.neighbours}) calls")
    print(f"baseline sequential (concurrency 1): {json.dumps(seq)}")
    print(f"concurrent (concurrency {args.concurrency}):  {json.dumps(con)}")
    print(f"cached re-run:                      {json.dumps(cached)}")
    print(f"identical records in all three runs: {same}")
    print(f"RATIO concurrent / sequential records/s = {ratio:.2f}x (target >= 4x); "
          f"LLM calls on cached re-run = {cached['server_calls']} (target 0)")


if __name__ == "__main__":
    main()
