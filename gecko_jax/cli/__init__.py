"""``gecko-jax`` command line: thin wrappers over the importable API.

Each subcommand is one module of this package exposing ``configure_parser(parser)`` and ``run(args) -> int`` (a new
subcommand: a module here and a line in :data:`COMMANDS`); they parse flags into a config and call the library, and
import heavy dependencies (jax, flax) inside ``run`` so that ``gecko-jax --help`` stays fast. ``gecko_data`` is the
``gecko-data`` program (data_gen's CLI with gecko_jax's embedder injected). User errors (bad input, bad
config, unrestorable checkpoints, unwritable outputs; ``gecko_jax.errors``) end as one line on stderr and the exit
code listed in ``--help``; set ``GECKO_JAX_TRACEBACK=1`` to see their tracebacks too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from gecko_jax.errors import exit_code, exit_codes_help

COMMANDS = {  # name -> (module of gecko_jax.cli with configure_parser(parser) and run(args) -> int, help)
    "encode": ("gecko_jax.cli.encode", "embed texts from a .txt or .jsonl file into a .npy matrix"),
    "train": ("gecko_jax.cli.train", "train an encoder or classifier from a config file"),
    "eval": ("gecko_jax.cli.eval", "evaluate an embedding model on local MTEB-style suites"),
    "quickstart": ("gecko_jax.cli.quickstart",
                   "the whole Gecko recipe on bundled defaults: FRet -> fine-tune -> evaluate"),
    "recipe": ("gecko_jax.cli.recipe", "train the Gecko recipe from one config (pre-finetuning -> mixture "
                                       "fine-tuning -> interpolation picked on dev data) and export the model"),
    "datasets": ("gecko_jax.cli.datasets", "list the datasets and where they resolve; fetch them into the cache"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gecko-jax", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=exit_codes_help((0, 1, 2, 3, 4, 5, 143)))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # command not built in this version
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gecko_jax import runtime

    if argv is None:  # the `gecko-jax` program itself (not a call from Python): glibc malloc tunables, once
        runtime.tune_malloc()
    runtime.configure_cpu()  # XLA:CPU flags must be in place before any command starts jax
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except Exception as e:  # noqa: BLE001 (user errors become one line; everything else keeps its traceback)
        code = exit_code(e)
        if code is None or os.environ.get("GECKO_JAX_TRACEBACK"):
            raise
        print(f"gecko-jax {args.command}: error: {one_line(e)}", file=sys.stderr)
        # A failed checkpoint write leaves orbax's sibling write tasks with the same error unretrieved; asyncio would
        # log each one at exit. The failure is reported above in one line, so their echoes are not.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return code


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message keeps its first line)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
