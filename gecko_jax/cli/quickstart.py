"""``gecko-jax quickstart``: flags -> :func:`gecko_jax.recipes.quickstart.run_quickstart`."""
from __future__ import annotations

import argparse
import os
import sys

from gecko_jax.recipes.data import resolve_data_dir
from gecko_jax.recipes.options import (DEFAULT_TASKS, QUICKSTART_PREFINETUNE_STEPS, QUICKSTART_STEPS,
                                       QuickstartOptions, resolve_options)


def configure_parser(p: argparse.ArgumentParser) -> None:
    d = QuickstartOptions()
    p.add_argument("--workdir", default="runs/quickstart", help="output folder; a re-run resumes it "
                   "(default: runs/quickstart)")
    p.add_argument("--passages", type=int, default=None, help=f"FRet seed passages (default: {d.passages})")
    p.add_argument("--neighbours", type=int, default=None, help=f"candidates per query, N (default: {d.neighbours})")
    p.add_argument("--pool", type=int, default=None,
                   help=f"retrieval pool of corpus passages, 0 = all 5,183 (default: {d.pool})")
    p.add_argument("--max-passage-chars", type=int, default=None,
                   help=f"passage cut for prompts, retrieval and training (default: {d.max_passage_chars})")
    p.add_argument("--recipe", default=None, help="recipe config (default: gecko_jax/configs/"
                   "gecko_recipe_minilm.json; its FRet source becomes this run's FRet records)")
    p.add_argument("--fret-only", action="store_true", help="fine-tune on the FRet records alone (the earlier "
                   "quickstart: gecko_jax/configs/quickstart_minilm.json) instead of the recipe")
    p.add_argument("--steps", type=int, default=None, help="mixture fine-tuning steps (default: "
                   f"{QUICKSTART_STEPS} with the shipped recipe, whose own 300 are the experiments' budget; a --recipe "
                   f"file's own; with --fret-only {d.epochs:g} epochs of FRet)")
    p.add_argument("--prefinetune-steps", type=int, default=None, help="pre-finetuning steps (default: "
                   f"{QUICKSTART_PREFINETUNE_STEPS} with the shipped recipe (its own: 60); a --recipe file's own)")
    p.add_argument("--epochs", type=float, default=None, help=f"--fret-only: epochs when --steps is not given "
                   f"({d.epochs:g})")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning global batch (default: the recipe's; "
                   "--fret-only: 16)")
    p.add_argument("--learning-rate", type=float, default=None, help="fine-tuning peak learning rate (default: the "
                   "recipe's; --fret-only: 2e-5)")
    p.add_argument("--seed", type=int, default=None, help="seed sampling, data order and init (default: 0)")
    p.add_argument("--llm", choices=("local", "openai", "fake"), default=None,
                   help="local = embedded Gemma 3 270M (default); openai = any OpenAI-compatible server; "
                        "fake = deterministic stand-in (tests)")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="--llm openai: server URL")
    p.add_argument("--model", default=os.environ.get("OPENAI_MODEL"), help="--llm openai: model name")
    p.add_argument("--api-key-env", default=None, help="env var holding the API key (default: OPENAI_API_KEY)")
    p.add_argument("--model-path", default=None, help="--llm local: a GGUF file (default: the bundled Gemma)")
    p.add_argument("--threads", type=int, default=None, help="--llm local: CPU threads")
    p.add_argument("--concurrency", type=int, default=None, help="LLM calls in flight (default: 1 local, 8 openai)")
    p.add_argument("--eval-tasks", default=None,
                   help=f"comma-separated run_suite tasks (default: {','.join(DEFAULT_TASKS)})")
    p.add_argument("--eval-prompts", default=None,
                   help="fine-tuned model prompt modes: gecko,none (default: gecko, the headline; none adds a "
                        "raw-text column, one more SciFact corpus encode)")
    p.add_argument("--dims", default=None, help="comma-separated eval widths, 'full' for all (default: full,256,128)")
    p.add_argument("--data-dir", default=None, help="data folder in the mirror layout (default: each dataset from "
                   "$GECKO_JAX_DATA, the cache or a download; see `gecko-jax datasets --help`)")
    p.add_argument("--recompute-base", action="store_true",
                   help="evaluate the base model, mine its hard negatives and embed FRet's pool with it here, even "
                        "where the results shipped in gecko_jax/assets/reference have the same content key (same "
                        "weights, data bytes, settings)")
    p.add_argument("--tiny", action="store_true", help="pulse-test budget: 4 passages, 2 steps, eval subsets")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _csv(value: str | None, flag: str, conv=str):
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise SystemExit(f"{flag}: expected a comma-separated list, got {value!r}")
    try:
        return tuple(conv(v) for v in items)
    except ValueError as e:
        raise SystemExit(f"{flag}: {e}") from None


def _dim(v: str):
    if v == "full":
        return None
    d = int(v)
    if d < 1:
        raise ValueError(f"expected 'full' or a positive width, got {v!r}")
    return d


def run(args: argparse.Namespace) -> int:
    names = ("passages", "neighbours", "pool", "max_passage_chars", "steps", "prefinetune_steps", "epochs",
             "batch_size", "learning_rate", "seed", "llm", "base_url", "model", "api_key_env", "model_path", "threads",
             "concurrency", "data_dir", "recipe")
    kwargs = {k: getattr(args, k) for k in names}
    kwargs["fret_only"] = args.fret_only or None
    kwargs.update(eval_tasks=_csv(args.eval_tasks, "--eval-tasks"), eval_prompts=_csv(args.eval_prompts,
                  "--eval-prompts"), dims=_csv(args.dims, "--dims", _dim), tiny=args.tiny or None,
                  progress=False if args.no_progress else None, recompute_base=args.recompute_base or None)
    if kwargs["eval_tasks"]:
        from gecko_jax.eval import TASKS

        unknown = [t for t in kwargs["eval_tasks"] if t not in TASKS]
        if unknown:
            raise SystemExit(f"--eval-tasks: unknown {unknown}; known: {sorted(TASKS)}")
    try:  # bad flags and a missing data folder are user errors: a message, not a traceback
        opts = resolve_options(**kwargs)
        resolve_data_dir(opts.data_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"gecko-jax quickstart: error: {e}", file=sys.stderr)
        return 2
    from gecko_jax.recipes.quickstart import run_quickstart  # JAX is imported here, not by `gecko-jax --help`

    run_quickstart(args.workdir, **kwargs)
    return 0
