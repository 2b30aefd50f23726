"""Time estimates for the main job, printed before it starts (issue 21).

    peak = runtime.matmul_peak_gflops(seconds=0.5)     # this box's measured f32 matmul rate, GFLOP/s
    est = estimate_quickstart(peak, passages=48, neighbours=5, prefinetune_steps=20, steps=60, eval_base=True)
    est["total"]                                        # seconds; est[stage] per stage

Every stage of the quickstart is compute-bound on a CPU (the LLM's matmuls, the encoder's matmuls), so its time
scales with the work and inversely with a measured rate: the f32 matmul peak for the encoder's stages, and the
embedded LLM's own prompt-evaluation rate (``data_gen.llm.llama_cpp_prompt_rate``, passed as ``llm_rate``) for
FRet's LLM calls, whose quantised kernels do not follow the f32 peak across CPU families (the issue's AVX2-only box
took 499 s for FRet, 2-3x this box's time where the peaks differ 1.55x). The constants are one measured run of the
defaults (:data:`REFERENCE`: ``bash scripts/demo.sh`` on a fresh clone, idle box, BENCHMARKS.md "Main job"); the
work of each stage scales linearly in what the options change (seeds, neighbours per seed, steps). It is an
estimate (about +-25 % between runs on one box; more across CPU families, whose per-core efficiency differs).
"""
from __future__ import annotations

from typing import Mapping

# One idle run of the defaults: AMD EPYC (AVX-512), 2 cores, 2026-12-01 10:37 UTC, fresh clone at dc98c83, caches
# empty, base evaluation, SciFact negatives and FRet pool vectors from the shipped reference (BENCHMARKS.md "Main
# job, third timing"): 679 s in all (11 min 26 s wall with setup and model loads).
REFERENCE: Mapping[str, float] = {
    "peak_gflops": 222.0,       # runtime.matmul_peak_gflops() at that run's start, idle, 2 threads
    "passages": 48, "neighbours": 5,
    "fret": 107.0,              # LLM generation + reranking + the queries' embedding (the pool's: shipped)
    "fret_llm": 105.0,          # of which the LLM's calls: generate 25 + score 79 s (decoding on both cores)
    "pool_embed": 40.0,         # embedding FRet's 2,000-passage retrieval pool (when no shipped reference matches)
    "llm_tokens_per_s": 682.0,  # data_gen.llm.llama_cpp_prompt_rate() at that run's start
    "eval": 229.0,              # one model over the default suite (the fine-tuned one with prompts; 34.3 TFLOP)
    "prefinetune_steps": 20, "prefinetune_step": 5.4,    # s per stage-1 step (batch 64, 128-token bodies; 134 s stage)
    "steps": 60, "step": 2.5,                            # s per stage-2 step (batch 32, one source per batch; 204 s)
    "train_fixed": 82.0,        # sources, compiles (6 step shapes), checkpoints and the export, besides the steps
}


def estimate_quickstart(peak_gflops: float, *, passages: int, neighbours: int, prefinetune_steps: int, steps: int,
                        eval_base: bool = True, eval_tuned: int = 1, llm_rate: float | None = None,
                        embed_pool: bool = False, reference: Mapping[str, float] = REFERENCE) -> dict[str, float]:
    """Seconds per quickstart stage on a box whose measured matmul peak is ``peak_gflops``.

    Args:
      peak_gflops: :func:`gecko_jax.runtime.matmul_peak_gflops` of this process (> 0).
      passages, neighbours: FRet seeds and candidates per seed (the reranking scores each candidate).
      prefinetune_steps, steps: the recipe's stage-1 and stage-2 steps.
      eval_base: whether the base model is evaluated (False when its results are already in the workdir).
      eval_tuned: evaluations of the fine-tuned model (one per prompt mode).
      llm_rate: the embedded LLM's measured prompt rate, tokens/s (``data_gen.llm.llama_cpp_prompt_rate``); None
        (an HTTP LLM, or no llama.cpp): FRet's LLM share is scaled by the matmul peak like the rest.
      embed_pool: FRet embeds its retrieval pool here (False when the shipped reference vectors match).

    Returns:
      ``{"fret", "eval_base", "train", "eval_tuned", "total"}`` in seconds.
    """
    if not peak_gflops > 0:
        raise ValueError(f"peak_gflops must be > 0, got {peak_gflops!r}")
    if llm_rate is not None and not llm_rate > 0:
        raise ValueError(f"llm_rate must be > 0 tokens/s or None, got {llm_rate!r}")
    r = reference
    scale = r["peak_gflops"] / peak_gflops
    llm_scale = scale if llm_rate is None else r["llm_tokens_per_s"] / llm_rate
    # Per seed: one generation and (1 + neighbours) reranking prompts, against the reference's 1 + 5.
    work = (passages / r["passages"]) * ((1 + neighbours) / (1 + r["neighbours"]))
    fret = work * (r["fret_llm"] * llm_scale + (r["fret"] - r["fret_llm"]) * scale) + \
        (r["pool_embed"] * scale if embed_pool else 0.0)
    train = r["train_fixed"] + prefinetune_steps * r["prefinetune_step"] + steps * r["step"]
    out = {"fret": fret, "eval_base": (r["eval"] if eval_base else 0.0) * scale, "train": train * scale,
           "eval_tuned": r["eval"] * eval_tuned * scale}
    out["total"] = sum(out.values())
    return out


def describe(est: Mapping[str, float], peak_gflops: float, llm_rate: float | None = None) -> str:
    """One line for the log: the total and the stages, in minutes, and the rates they were scaled by."""
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in est.items() if k != "total" and v > 0)
    llm = ("" if llm_rate is None else f"; LLM prompt rate {llm_rate:.0f} tokens/s against "
           f"{REFERENCE['llm_tokens_per_s']:.0f}")
    return (f"estimated {est['total'] / 60:.0f} min on this box ({parts} min; matmul peak {peak_gflops:.0f} GFLOP/s "
            f"measured now, against {REFERENCE['peak_gflops']:.0f} on the reference run{llm})")
