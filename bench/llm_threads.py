"""Decode threads of the embedded LLM (llama.cpp Gemma 3 270M): FRet query generations with 1 vs N threads.

    .venv/bin/python bench/llm_threads.py [--threads 1 2] [--passages 8] [--rounds 2]

Each round builds a ``LlamaCppLLM`` per thread count, warms the few-shot preamble's KV cache on the first passage,
then times greedy FRet generations (``gen_max_tokens`` 96, stop at a blank line) of the other passages; thread
counts alternate within a round so load changes hit all alike. Prints seconds per round and whether the outputs
of every thread count are identical. Not a test: record results in BENCHMARKS.md with CPU, ISA, date and load.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

from data_gen.llm import LlamaCppLLM
from data_gen.prompts import query_generation_prompt

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--passages", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--corpus", default=str(CORPUS), help="BEIR corpus.jsonl (default: the SciFact mirror)")
    args = p.parse_args(argv)
    with open(args.corpus, encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(args.passages))]
    prompts = [query_generation_prompt(r["title"] + " " + r["text"][:400]) for r in rows]
    outputs = {}
    for rnd in range(args.rounds):
        for n in args.threads:
            llm = LlamaCppLLM(n_threads=n)
            llm.generate(prompts[0], max_tokens=8)  # the preamble's KV cache, as FRet has it after its first call
            t = time.perf_counter()
            outs = [llm.generate(q, max_tokens=96, stop=["\n\n"]) for q in prompts[1:]]
            print(f"round {rnd} n_threads {n}: {time.perf_counter() - t:.2f} s for {len(outs)} generations",
                  flush=True)
            outputs.setdefault(n, outs)
    print("identical outputs:", all(o == outputs[args.threads[0]] for o in outputs.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
