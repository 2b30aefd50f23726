"""Encode calls in flight at once on CPU: ``Embedder.encode`` with ``cpu_concurrent_calls`` = 1, 2, 3 in one process.

XLA:CPU runs the calls one host thread dispatches one after another, each op split over the cores; ops that split
poorly (attention's matmuls over a 32-wide head dimension) leave a core idle. ``Embedder.encode`` therefore runs
``cpu_concurrent_calls`` calls at once, each from its own host thread. This script measures that choice: the same
texts encoded with each setting, the settings alternating round after round (order reversed every other round) so
that a drifting machine speed hits them alike. Baseline: 1 (one call at a time, what ``encode`` did before).

    .venv/bin/python bench/concurrent_calls.py                          # SciFact 300 + STS-B 2,000, 1 2 3, 6 rounds
    .venv/bin/python bench/concurrent_calls.py --texts scifact --settings 1 2 --rounds 10
    .venv/bin/python bench/concurrent_calls.py --calls --settings 1 2 4    # the compiled call alone, see below

``--calls``: the jitted encoder alone on ``--rows`` x ``--length`` random-token rows, ``--per-round`` calls per
round issued by 1, 2, 4 ... host threads (each dispatching and waiting on its own calls; 1 = the calls dispatched
one after another from one thread, then waited on, as ``encode`` did before), plus one program that runs two
independent halves of twice the rows (does XLA:CPU overlap independent ops inside one program?). Prints useful
GFLOP/s per setting and its share of the in-process peak.

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
    p.add_argument("--calls", action="store_true", help="time the compiled call alone (see the module docstring)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--per-round", type=int, default=16, help="--calls: calls per setting per round")
    args = p.parse_args(argv)
    start_process(argv)
    from gecko_jax import runtime
    from gecko_jax.embedder import Embedder

    print(f"# settings {args.settings}, {args.rounds} rounds (median)")
    emb = Embedder.from_pretrained("all-MiniLM-L6-v2")
    if args.calls:
        return calls_alone(emb, args)
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


def calls_alone(emb, args) -> int:
    """``--calls``: the compiled call from 1..N host threads, and two independent halves in one program."""
    import threading

    import jax
    import jax.numpy as jnp

    from gecko_jax import runtime

    rng = np.random.default_rng(0)

    def batch(rows):
        ids = rng.integers(1000, 20000, (rows, args.length)).astype(np.int32)
        return ids, np.ones_like(ids), np.zeros_like(ids)

    one, two = batch(args.rows), batch(2 * args.rows)
    call = emb._jitted

    def halves(params, ids, mask, types):
        h = ids.shape[0] // 2
        part = [{"input_ids": ids[sl], "attention_mask": mask[sl], "token_type_ids": types[sl]}
                for sl in (slice(None, h), slice(h, None))]
        return jnp.concatenate([emb.apply(params, b) for b in part])
    halves = jax.jit(halves)
    flops = runtime.encoder_flops(emb.config, [args.length] * args.rows)
    n = args.per_round

    def from_threads(k):
        def work(m):
            for _ in range(m):
                call(emb.params, *one).block_until_ready()
        if k == 1:  # dispatched back to back from one thread, then waited on
            outs = [call(emb.params, *one) for _ in range(n)]
            jax.block_until_ready(outs)
            return
        threads = [threading.Thread(target=work, args=(n // k + (i < n % k),)) for i in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def two_halves():
        outs = [halves(emb.params, *two) for _ in range(n // 2)]
        jax.block_until_ready(outs)

    def one_program_double():
        outs = [call(emb.params, *two) for _ in range(n // 2)]
        jax.block_until_ready(outs)

    runs = {f"{k} thread(s)": (lambda k=k: from_threads(k), n * flops) for k in args.settings}
    runs[f"one program, {2 * args.rows} rows"] = (one_program_double, (n // 2) * 2 * flops)
    runs[f"one program, two independent halves of {args.rows} rows"] = (two_halves, (n // 2) * 2 * flops)
    np.testing.assert_array_equal(np.asarray(halves(emb.params, *two)), np.asarray(call(emb.params, *two)))
    for fn, _ in runs.values():
        fn()  # compile and warm up
    rates, shares = {k: [] for k in runs}, {k: [] for k in runs}
    names = list(runs)
    for r in range(args.rounds):
        peak = runtime.matmul_peak_gflops(seconds=0.6)
        for name in (names if r % 2 == 0 else names[::-1]):
            fn, work = runs[name]
            start = time.perf_counter()
            fn()
            rate = work / (time.perf_counter() - start) / 1e9
            rates[name].append(rate)
            shares[name].append(rate / peak)
    print(f"how {n} calls of {args.rows} x {args.length} tokens are issued | GFLOP/s (median) | per round | "
          f"share of peak")
    for name in names:
        print(f"{name} | {statistics.median(rates[name]):.1f} | {' / '.join(f'{x:.0f}' for x in rates[name])} | "
              f"{100 * statistics.median(shares[name]):.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
