"""Gemma-3-270M as a Gecko encoder: base (bidirectional, mean pooled, no training) vs after our recipe vs
all-MiniLM-L6-v2, on tasks of the local suite, with wall times, steps/s and the machine.

    python experiments/backbones/run.py --workdir runs/backbones                 # STS-B, 12 steps (the config)
    python experiments/backbones/run.py --workdir runs/bb --tasks stsb banking77 --steps 12
    python experiments/backbones/run.py --workdir runs/bbq --quick               # 2 steps, STS-B only
    # on a small shared host: one stage per process, token table frozen (see README.md)
    python experiments/backbones/run.py --workdir runs/bb --stages train --steps 4 \
        --set 'optimizer.frozen=["backbone/embed_tokens"]'

Stages (``--stages``, default all, in order): ``base`` (evaluate the untrained encoder), ``train``, ``trained``
(evaluate the export), ``minilm``. Each stage's result is merged into ``<workdir>/results.json`` (so stages can run
in separate processes) and the table is rewritten to ``results.md``; the numbers in README.md come from these files.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
import resource
import time

from gecko_jax.fileio import write_text

CONFIG = "experiments/configs/gecko_finetune_gemma3_270m.json"


def machine() -> str:
    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    except OSError:
        isa = "?"
    return f"{name} ({isa}), {os.cpu_count()} cores, {platform.machine()}"


def evaluate(name_or_path, tasks, out_dir, cache_dir, max_length=None) -> dict:
    """``max_length``: truncate every input to this many tokens (None: the model's own serving cap)."""
    import gecko_jax as gj

    t0 = time.perf_counter()
    emb = gj.Embedder.from_pretrained(name_or_path, max_length=max_length)
    res = gj.eval.run_suite(emb, "small", tasks=tasks, out_dir=out_dir, cache_dir=cache_dir, verbose=True)
    scores = {t: next(iter(v.values()))["main_score"] for t, v in res["tasks"].items()}
    del emb
    gc.collect()
    return {"scores": scores, "seconds": time.perf_counter() - t0, "model": res["model"]["repr"],
            "max_length": max_length}


def train(workdir: pathlib.Path, steps: int, overrides: list[str]) -> dict:
    import gecko_jax as gj

    config = gj.train.load_config(CONFIG, [f"steps={steps}", *overrides])
    t0 = time.perf_counter()
    result = gj.train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl") if line.strip()]
    rates = [r["steps_per_sec"] for r in rows if "steps_per_sec" in r]
    steady = rates[1:] or rates  # the first interval includes compilation
    return {"steps": steps, "wall_seconds": wall, "export": result.export_dir,
            "steps_per_sec_after_first": sorted(steady)[len(steady) // 2] if steady else None,
            "first_interval_steps_per_sec": rates[0] if rates else None,
            "losses": [r.get("loss") for r in rows if "loss" in r], "batch_size": config.data.batch_size,
            "max_length": config.data.max_length, "grad_cache_chunk": config.grad_cache_chunk}


def table(out: dict) -> str:
    tasks = out["tasks"]
    head = ("| model | " + " | ".join(tasks) + " | max tokens | eval wall (s) |\n|---|" + "---|" * (len(tasks) + 2)
            + "\n")
    rows = []
    for label, key in (("Gemma-3-270M encoder, base (bidirectional, mean pooled, no training)", "base"),
                       (f"Gemma-3-270M encoder after our recipe ({out.get('train', {}).get('steps', '?')} steps)",
                        "trained"),
                       ("all-MiniLM-L6-v2", "minilm")):
        if key in out and all(t in out[key]["scores"] for t in tasks):
            r = out[key]
            rows.append(f"| {label} | " + " | ".join(f"{100 * r['scores'][t]:.2f}" if r['scores'][t] <= 1 else
                                                     f"{r['scores'][t]:.2f}" for t in tasks)
                        + f" | {r.get('max_length') or 'model'} | {r['seconds']:.0f} |")
    return head + "\n".join(rows) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    ap.add_argument("--tasks", nargs="+", default=["stsb"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. data.batch_size=8")
    ap.add_argument("--stages", nargs="+", default=["base", "train", "trained", "minilm"],
                    choices=["base", "train", "trained", "minilm"])
    ap.add_argument("--quick", action="store_true", help="2 training steps, STS-B only")
    ap.add_argument("--max-length", type=int, default=None,
                    help="evaluate every model with inputs truncated to this many tokens (default: each model's own "
                         "cap: 2,048 for Gemma, 256 for MiniLM); 256 puts the models on equal SciFact abstracts")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.tasks = 2, ["stsb"]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "embedding_cache"
    results_file = work / "results.json"
    out = json.loads(results_file.read_text()) if results_file.is_file() else {}
    out.update({"machine": machine(), "tasks": args.tasks, "config": CONFIG})
    for stage in args.stages:
        t0 = time.perf_counter()
        if stage == "base":
            out["base"] = evaluate("gemma-3-270m", args.tasks, work / "eval_base", cache, args.max_length)
        elif stage == "train":
            out["train"] = {**train(work / "train", args.steps, args.set), "overrides": args.set}
        elif stage == "trained":
            out["trained"] = evaluate(out["train"]["export"], args.tasks, work / "eval_trained", cache,
                                      args.max_length)
        else:
            out["minilm"] = evaluate("all-MiniLM-L6-v2", args.tasks, work / "eval_minilm", cache, args.max_length)
        out.setdefault("stage_log", []).append({
            "stage": stage, "seconds": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "load_average_at_end": os.getloadavg()[0]})
        out["table"] = table(out)
        write_text(results_file, json.dumps(out, indent=2) + "\n")  # atomic: temp file, fsync, rename
        write_text(work / "results.md", out["table"] + f"\n{out['machine']}\n")
        print(f"[backbones] {stage} done in {out['stage_log'][-1]['seconds']:.0f} s", flush=True)
    print(out["table"])


if __name__ == "__main__":
    main()
