"""Packed-row width A/B: the same compiled encoder call on short texts packed into rows of 128, 64 or 32 tokens.

A packed row of width ``W`` makes each of its tokens attend over ``W`` keys, so narrower rows spend less on attention
at the same padding; ``Embedder.encode`` packs texts that fit into half of ``pack_length`` into rows of that half
(``gecko_jax.embedder.pack_widths``). This script measures that choice in isolation: STS-B test sentences (up to
32 tokens, so that every width holds them) are packed once per width, and the jitted packed call runs on the
resulting batches (1,024 token slots per call, the CPU budget of ``Embedder.encode``), the widths alternating
round after round in one process so that a drifting machine speed hits them alike. Baseline: 128-token rows
(what ``encode`` did before the narrow rows).

    .venv/bin/python bench/pack_widths.py                       # widths 128 64 32, 15 rounds of 30 calls
    .venv/bin/python bench/pack_widths.py --widths 128 64 --rounds 5

Prints the machine (CPU, ISA, load), per width the median real (non-padding) tokens per second, its share of the
f32 matmul peak measured in this process (useful FLOPs of the real tokens, ``runtime.encoder_flops``), and the ratio
to the 128-token rows. Not a test: record figures in BENCHMARKS.md with CPU, ISA, date and load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from encode import load_stsb, start_process


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[128, 64, 32])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=30, help="calls per width per round")
    p.add_argument("--tokens-per-call", type=int, default=1024)
    args = p.parse_args(argv)
    start_process(argv)
    from gecko_jax import runtime
    from gecko_jax.data.tokenize import fill_rows, pack_rows
    from gecko_jax.embedder import Embedder

    emb = Embedder.from_pretrained("all-MiniLM-L6-v2")
    texts = load_stsb(None)
    ids = emb.tokenizer.encode(texts, max_length=emb.max_length)
    lengths = np.array([len(s) for s in ids])
    short = np.argsort(-lengths, kind="stable")
    short = short[lengths[short] <= min(args.widths)]
    print(f"# {len(short)} STS-B test sentences of <= {min(args.widths)} tokens (mean {lengths[short].mean():.1f})")

    batches, real_tokens = {}, {}
    for width in args.widths:
        rows = [[int(short[m]) for m in members] for members in pack_rows(lengths[short], width)]
        per_call = max(1, args.tokens_per_call // width)
        batches[width] = []
        for start in range(0, len(rows) - per_call + 1, per_call):  # full calls only: no filler rows
            chunk = rows[start:start + per_call]
            packed = fill_rows(ids, chunk, per_call, width, emb.tokenizer.pad_token_id)
            batches[width].append((packed["input_ids"], packed["packed_ids"], packed["position_ids"],
                                   [len(ids[i]) for members in chunk for i in members]))
        real_tokens[width] = sum(sum(b[3]) for b in batches[width]) / len(batches[width])
        print(f"# width {width}: {len(batches[width])} calls of {per_call} rows, "
              f"{real_tokens[width] / per_call:.1f} real tokens per row")

    def run(width, n):
        calls = batches[width]
        start = time.perf_counter()
        for i in range(n):
            out = emb._jitted_packed(emb.params, *calls[i % len(calls)][:3])
        out.block_until_ready()
        return (time.perf_counter() - start) / n

    for width in args.widths:
        run(width, 3)  # compile and warm up
    seconds = {w: [] for w in args.widths}
    peaks = []
    for r in range(args.rounds):
        peaks.append(runtime.matmul_peak_gflops(seconds=0.3))
        for width in (args.widths if r % 2 == 0 else args.widths[::-1]):
            seconds[width].append(run(width, args.calls))
    peak = statistics.median(peaks)
    flops_per_token = {w: statistics.mean(runtime.encoder_flops(emb.config, b[3]) / sum(b[3]) for b in batches[w])
                       for w in args.widths}
    base = args.widths[0]
    base_rate = real_tokens[base] / statistics.median(seconds[base])
    print(f"# peak (median of {args.rounds} in-process readings) {peak:.1f} GFLOP/s; load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    print(f"width | ms per call | real tokens/s | share of peak | vs width {base}")
    for width in args.widths:
        t = statistics.median(seconds[width])
        rate = real_tokens[width] / t
        share = rate * flops_per_token[width] / 1e9 / peak
        print(f"{width} | {1e3 * t:.2f} | {rate:,.0f} | {100 * share:.0f}% | {rate / base_rate:.3f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
