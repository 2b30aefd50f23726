"""``gecko-jax`` command line: thin wrappers over the importable API.

Each command lives in its own module exposing ``configure_parser(parser)`` and ``run(args) -> int``; modules import
heavy dependencies (jax, flax) inside ``run`` so that ``gecko-jax --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "encode": ("gecko_jax.commands.encode", "embed texts from a .txt or .jsonl file into a .npy matrix"),
    "train": ("gecko_jax.train.cli", "train an encoder or classifier from a config file"),
    "eval": ("gecko_jax.eval.cli", "evaluate an embedding model on local MTEB-style suites"),
    "quickstart": ("gecko_jax.quickstart", "the whole Gecko recipe on bundled defaults: FRet -> fine-tune -> evaluate"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gecko-jax", description=__doc__.splitlines()[0])
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
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
