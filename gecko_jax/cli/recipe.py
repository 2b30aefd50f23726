"""``gecko-jax recipe``: flags -> :func:`gecko_jax.recipes.gecko.run_recipe` (the Gecko recipe from one config, exported)."""
from __future__ import annotations

import json
import pathlib
import sys

from gecko_jax.recipes import gecko as R
from gecko_jax.errors import ConfigError


def configure_parser(p) -> None:
    p.add_argument("--config", default=str(R.DEFAULT_RECIPE),
                   help="recipe JSON (default: gecko_jax/configs/gecko_recipe_minilm.json)")
    p.add_argument("--workdir", default="runs/recipe", help="stage folders; a re-run resumes (default runs/recipe)")
    p.add_argument("--export", default=None, help="folder for the final model (default: WORKDIR/export)")
    p.add_argument("--seed", type=int, default=None, help="seed of both stages and the sources (default: config's)")
    p.add_argument("--fret", default=None, help="FRet JSONL for the 'fret' source(s) (default: config's)")
    p.add_argument("--interpolate", default=None,
                   help="comma-separated WiSE-FT alphas; several are picked on dev data (default: config's)")
    p.add_argument("--steps", type=int, default=None, help="mixture fine-tuning steps (default: config's)")
    p.add_argument("--prefinetune-steps", type=int, default=None, help="pre-finetuning steps (default: config's)")
    p.add_argument("--data-dir", default=None, help="data folder in the mirror layout (default: each dataset from "
                   "$GECKO_JAX_DATA, the cache or a download; see `gecko-jax datasets --help`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--recompute-base", action="store_true",
                   help="mine the base model's hard negatives here even when the shipped reference ones match "
                        "(gecko_jax.recipes.reference)")


def run(args) -> int:
    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    try:
        if args.interpolate is not None:
            overrides["interpolate"] = [float(a) for a in args.interpolate.split(",") if a.strip()]
        for flag in ("steps", "prefinetune_steps"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise ConfigError(f"--{flag.replace('_', '-')}: expected >= 1, got {getattr(args, flag)}")
        cfg = R.load_recipe(args.config, **overrides).with_training(steps=args.steps,
                                                                   prefinetune_steps=args.prefinetune_steps)
        if args.fret is not None:
            if not pathlib.Path(args.fret).is_file():
                raise ConfigError(f"--fret: no such file {args.fret}")
            cfg = cfg.with_fret(pathlib.Path(args.fret).resolve())
    except (ConfigError, ValueError) as e:
        print(f"gecko-jax recipe: error: {e}", file=sys.stderr)
        return 2
    res = R.run_recipe(cfg, args.workdir, progress=not args.no_progress, export_dir=args.export,
                       reference=not args.recompute_base)
    print(json.dumps({"export_dir": res.export_dir, "alpha": res.alpha, "config_sha": res.config_sha,
                      "steps": res.steps, "sources": res.sources}, indent=1))
    return 0
