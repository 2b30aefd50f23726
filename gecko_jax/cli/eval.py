"""``gecko-jax eval``: run an evaluation suite on a model folder or known name, print a table, write JSON + Markdown."""
from __future__ import annotations

import argparse
import pathlib

from gecko_jax.errors import InputError, exit_codes_help


def _dims(value: str):
    if value.lower() in ("full", "none"):
        return None
    try:
        d = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dims takes integers or 'full', got {value!r}") from None
    if d < 1:
        raise argparse.ArgumentTypeError(f"--dims must be >= 1, got {d}")
    return d


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = exit_codes_help((0, 2, 5))
    p.add_argument("--model", required=True, help="model folder (HF / sentence-transformers layout) or known name, "
                                                  "e.g. all-MiniLM-L6-v2")
    p.add_argument("--suite", default="small", choices=["small", "full", "fairness"], help="task list (default small)")
    p.add_argument("--dims", nargs="+", type=_dims, default=[None], metavar="D",
                   help="embedding width(s): 'full' and/or integers; several give a Matryoshka table "
                        "(e.g. --dims full 256)")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    p.add_argument("--tasks", nargs="+", default=None, help="run only these tasks (names from gecko_jax.eval.TASKS)")
    p.add_argument("--task-prompts", choices=["none", "gecko"], default="none",
                   help="'gecko': Gecko task strings per task (for models trained with them); default none")
    p.add_argument("--data-dir", default=None, help="data folder in the mirror layout (default: each dataset from "
                   "$GECKO_JAX_DATA, the cache, or a download; see `gecko-jax datasets --help`)")
    p.add_argument("--cache-dir", default="default", help="embedding cache folder; 'none' keeps it in memory")
    p.add_argument("--batch-size", type=int, default=None, help="encode batch size")


def run(args) -> int:
    """Bad arguments or data (exit 2) and unwritable outputs (5) propagate as ``gecko_jax.errors`` types, checked
    before the model loads where possible; ``gecko_jax.cli.main`` prints them as one line."""
    import gecko_jax as gj
    from gecko_jax.eval import TASKS, run_suite
    from gecko_jax.eval.datasets import data_root
    from gecko_jax.fileio import check_writable

    unknown = sorted(set(args.tasks or ()) - set(TASKS))
    if unknown:
        raise InputError(f"--tasks: unknown task(s) {unknown}; known: {sorted(TASKS)}")
    data_root(args.data_dir)
    if args.out is not None:
        for name in ("results.json", "results.md"):
            check_writable(pathlib.Path(args.out) / name)
    if str(args.cache_dir).lower() != "none":
        from gecko_jax.eval.cache import default_cache_dir

        check_writable((default_cache_dir() if args.cache_dir == "default" else pathlib.Path(args.cache_dir)) / "x")
    kwargs = {} if args.batch_size is None else {"batch_size": args.batch_size}
    embedder = gj.Embedder.from_pretrained(args.model, **kwargs)
    dims = args.dims if len(args.dims) > 1 else args.dims[0]
    run_suite(embedder, args.suite, dims=dims, out_dir=args.out, tasks=args.tasks,
              task_prompts=None if args.task_prompts == "none" else "gecko",
              cache_dir=None if str(args.cache_dir).lower() == "none" else args.cache_dir, data_dir=args.data_dir)
    return 0
