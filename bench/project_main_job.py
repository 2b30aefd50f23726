"""Project a finished main job (``quickstart_results.json``) to another box from its per-stage FLOP counts.

    .venv/bin/python bench/project_main_job.py runs/quickstart/quickstart_results.json --peak 141 --llm-rate 296
    .venv/bin/python bench/project_main_job.py RESULTS --peak 141 --share train=0.38 --share eval_tuned=0.66 \
        --llm-factor 1.43

The quickstart records, per stage, its wall seconds and the useful model FLOPs it ran (``stage_flops``: the
encoder's matmuls over real tokens, ``gecko_jax.runtime.encoder_flops``; training counts forward + backward), the
box's measured f32 matmul peak and the embedded LLM's prompt rate (``box``). Each stage is split into

* LLM time (FRet's generate and score stages): projected as ``seconds x llm_rate_here / llm_rate_there``, or
  ``seconds x --llm-factor`` (the ratio of measured LLM stage times, when the target's are known);
* the rest: ``FLOPs / (share x peak_there)``, where ``share`` is what the stage reached here (its FLOPs over its
  non-LLM seconds, over this box's peak: compiles, tokenisation and data loading included) unless ``--share``
  gives the share measured for that stage on a box like the target.

Prints one row per stage and the total. A projection, not a measurement: record it in BENCHMARKS.md with the run it
came from (CPU, ISA, date, load) and the assumptions (peak, LLM rate, shares).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

STAGES = ("fret", "eval_base", "train", "eval_tuned")


def split_stage(results: dict, stage: str) -> tuple[float, float, float]:
    """``(seconds, llm_seconds, flops)`` of one stage of a quickstart result."""
    seconds = float(results["stage_seconds"].get(stage, 0.0))
    llm = 0.0
    if stage == "fret":
        parts = results.get("fret", {}).get("stages", {})
        llm = sum(float(parts.get(k, {}).get("seconds", 0.0)) for k in ("generate", "score"))
    flops = float(sum(results.get("stage_flops", {}).get(stage, {}).values()))
    return seconds, min(llm, seconds), flops


def project(results: dict, *, peak: float, llm_rate: float | None = None, shares: dict | None = None,
            llm_factor: float | None = None) -> list[dict]:
    """One row per stage: here (seconds, LLM seconds, TFLOP, share of peak) and projected seconds on a box with
    matmul peak ``peak`` GFLOP/s and LLM prompt rate ``llm_rate`` tokens/s (None: this run's rate scaled by the
    peak ratio), or LLM seconds ``llm_factor`` times this run's."""
    box = results.get("box") or {}
    here_peak = box.get("peak_gflops")
    if not here_peak or "stage_flops" not in results:
        raise ValueError("results: no 'box.peak_gflops' / 'stage_flops' (a run of the quickstart before they were "
                         "recorded, or a --tiny run)")
    if not peak > 0:
        raise ValueError(f"--peak: expected > 0 GFLOP/s, got {peak}")
    here_llm = box.get("llm_tokens_per_s")
    llm_scale = here_peak / peak if (llm_rate is None or not here_llm) else here_llm / llm_rate
    if llm_factor is not None:
        if not llm_factor > 0:
            raise ValueError(f"--llm-factor: expected > 0, got {llm_factor}")
        llm_scale = llm_factor
    rows = []
    for stage in STAGES:
        seconds, llm, flops = split_stage(results, stage)
        rest = seconds - llm
        share = (flops / 1e9 / rest / here_peak) if flops > 0 and rest > 0 else None
        use = (shares or {}).get(stage, share)
        there = llm * llm_scale + (flops / 1e9 / (use * peak) if flops > 0 and use else rest * here_peak / peak)
        rows.append({"stage": stage, "seconds": seconds, "llm_seconds": llm, "tflop": flops / 1e12,
                     "share_here": share, "share_used": use, "projected": there})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="quickstart_results.json of a finished run")
    p.add_argument("--peak", type=float, required=True, help="target box's f32 matmul peak, GFLOP/s")
    p.add_argument("--llm-rate", type=float, default=None,
                   help="target box's llama.cpp prompt rate, tokens/s (default: this run's, scaled by the peaks)")
    p.add_argument("--llm-factor", type=float, default=None,
                   help="LLM seconds on the target over this run's (instead of --llm-rate)")
    p.add_argument("--share", action="append", default=[], metavar="STAGE=F",
                   help="share of peak to assume for a stage on the target (default: the share reached here)")
    args = p.parse_args(argv)
    shares = {}
    for item in args.share:
        stage, _, value = item.partition("=")
        if stage not in STAGES or not value:
            p.error(f"--share: expected STAGE=F with STAGE in {STAGES}, got {item!r}")
        shares[stage] = float(value)
    path = pathlib.Path(args.results)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        rows = project(results, peak=args.peak, llm_rate=args.llm_rate, shares=shares, llm_factor=args.llm_factor)
    except (OSError, ValueError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 2
    box = results["box"]
    print(f"run: {box.get('machine')}; peak {box['peak_gflops']:.0f} GFLOP/s, LLM "
          f"{box.get('llm_tokens_per_s') or 0:.0f} tokens/s; {results['seconds']:.0f} s in all")
    llm = (f"{args.llm_factor} x this run's seconds" if args.llm_factor else
           f"{args.llm_rate:.0f} tokens/s" if args.llm_rate else "scaled by the peaks")
    print(f"target: peak {args.peak:.0f} GFLOP/s, LLM {llm}")
    print(f"{'stage':<11} {'here s':>8} {'LLM s':>7} {'TFLOP':>7} {'share here':>10} {'share used':>10} "
          f"{'projected s':>11}")
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        print(f"{r['stage']:<11} {r['seconds']:>8.0f} {r['llm_seconds']:>7.0f} {r['tflop']:>7.1f} "
              f"{fmt(r['share_here']):>10} {fmt(r['share_used']):>10} {r['projected']:>11.0f}")
    other = results["seconds"] - sum(r["seconds"] for r in rows)  # model loads, the estimate, reports
    other_there = other * box["peak_gflops"] / args.peak
    total = sum(r["projected"] for r in rows) + other_there
    print(f"{'other':<11} {other:>8.0f} {'':>7} {'':>7} {'':>10} {'':>10} {other_there:>11.0f}")
    print(f"total: {results['seconds']:.0f} s here -> {total:.0f} s ({total / 60:.1f} min) projected")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
