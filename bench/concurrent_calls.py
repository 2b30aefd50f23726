"""Encode calls in flight at once on CPU: ``Embedder.encode`` with ``cpu_concurrent_calls`` = 1, 2, 3 in one process.

XLA:CPU runs the calls one host thread dispatches one after another, each op split over the cores; ops that split
poorly (attention's matmuls over a 32-wide head dimension) leave a core idle. ``Embedder.encode`` therefore runs
``cpu_concurrent_calls`` calls at once, each from its own host thread. This script measures that choice: the same
texts encoded with each setting, the settings alternating round after round (order reversed every other round) so
that a drifting machine speed hits them alike. Baseline: 1 (one call at a time, what ``encode`` did before).

    .venv/bin/python bench/concurrent_calls.py                          # SciFact 300 + STS-B 2,000, 1 2 3, 6 rounds
    .venv/bin/python bench/concurrent_calls.py --texts scifact --settings 1 2 --rounds 10

Prints the machine (CPU, ISA, load), then per text set and setting the median texts per second, its share of the f32
matmul peak measured in this process before each round (useful FLOPs, padding not counted:
``runtime.encoder_flops``), the ratio to one call at a time, and the largest difference of any output from the
baseline's (0.0: the calls compute exactly what they compute alone). Not a test: record figures in BENCHMARKS.md
with CPU, ISA, date and load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from encode import load_scifact, load_stsb, start_process


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", default="scifact,stsb", help="comma-separated: scifact, stsb")
    p.add_argument("--limit-scifact", type=int, default=300)
    p.add_argument("--limit-stsb", type=int, default=2000)
    p.add_argument("--settings", type=int, nargs="+", default=[1, 2, 3], help="cpu_concurrent_calls values")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    start_process(argv)
    from gecko_jax import runtime
    from gecko_jax.embedder import Embedder

    print(f"# settings {args.settings}, {args.rounds} rounds (median)")
    emb = Embedder.from_pretrained("all-MiniLM-L6-v2")
    loaders = {"scifact": lambda: load_scifact(args.limit_scifact or None),
               "stsb": lambda: load_stsb(args.limit_stsb or None)}
    print("texts | cpu_concurrent_calls | texts/s | share of peak | vs 1 at a time | max |diff| from it")
    for name in [t.strip() for t in args.texts.split(",") if t.strip()]:
        texts = loaders[name]()
        flops = runtime.encoder_flops(emb.config, [len(s) for s in emb.tokenizer.encode(texts, max_length=emb.max_length)])
        outputs, secs, shares = {}, {c: [] for c in args.settings}, {c: [] for c in args.settings}
        for c in args.settings:  # warm-up: compile every shape (once: the shapes do not depend on the setting)
            emb.cpu_concurrent_calls = c
            outputs[c] = emb.encode(texts, show_progress=False)
        for r in range(args.rounds):
            peak = runtime.matmul_peak_gflops(seconds=0.6)
            for c in (args.settings if r % 2 == 0 else args.settings[::-1]):
                emb.cpu_concurrent_calls = c
                start = time.perf_counter()
                emb.encode(texts, show_progress=False)
                dt = time.perf_counter() - start
                secs[c].append(dt)
                shares[c].append(flops / dt / 1e9 / peak)
        base = args.settings[0]
        for c in args.settings:
            t = statistics.median(secs[c])
            print(f"{name} ({len(texts)}) | {c} | {len(texts) / t:.1f} | {100 * statistics.median(shares[c]):.0f}% | "
                  f"{statistics.median(secs[base]) / t:.3f}x | {float(np.abs(outputs[c] - outputs[base]).max()):.1e}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
