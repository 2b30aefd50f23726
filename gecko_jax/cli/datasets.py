"""``gecko-jax datasets``: list the datasets gecko_jax uses and where each resolves now; fetch them into the cache.

Resolution order (every command that reads data follows it):
  1. --data-dir DIR (or data_dir=): DIR/<folder>, nothing else is tried
  2. $GECKO_JAX_DATA/<folder>: a read-only local mirror (the layout of ../shared/data)
  3. $GECKO_JAX_CACHE/datasets/<name> (default ~/.cache/gecko_jax/datasets/<name>): an earlier download
  4. a download from the dataset's canonical source into that cache (resumable, verified, atomic)
Offline (GECKO_JAX_OFFLINE=1 or HF_HUB_OFFLINE=1): step 4 is an error naming what to fetch and where to put it.
Hub sources honour HF_ENDPOINT and HF_HOME (huggingface_hub).

Examples:
  gecko-jax datasets list
  gecko-jax datasets fetch scifact stsb banking77
  gecko-jax datasets fetch scifact --source hub
"""
from __future__ import annotations

import argparse
import sys


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n", 2)[2]
    sub = p.add_subparsers(dest="datasets_command", metavar="{list,fetch}")
    ls = sub.add_parser("list", help="name, source, licence, size and where each dataset resolves now")
    ls.add_argument("--data-dir", default=None, help="resolve against this folder (mirror layout) first")
    fe = sub.add_parser("fetch", help="download datasets into the cache ($GECKO_JAX_CACHE/datasets)")
    fe.add_argument("names", nargs="+", metavar="NAME", help="dataset names (see `gecko-jax datasets list`)")
    fe.add_argument("--source", default=None, help="source id (default: the canonical one; `list` shows them)")
    fe.add_argument("--force", action="store_true", help="download again even when the cache is complete")
    fe.add_argument("--no-progress", action="store_true", help="no progress bars")


def _checks(ds) -> str:
    src = ds.source()
    pinned = sum(1 for r in src.files if r.sha256)
    return "pinned sha256" if pinned == len(src.files) else ("recorded sha256" if not pinned else "partly pinned")


def list_table(data_dir=None) -> str:
    """The ``datasets list`` table (Markdown)."""
    from gecko_jax import datasets

    rows = ["| name | folder | sources | checksum | licence | size | resolves now |", "|" + "---|" * 7]
    for ds in datasets.DATASETS.values():
        res = datasets.where(ds.name, data_dir)
        state = ("missing (download on first use)" if res.kind == "missing"
                 else f"{res.kind}: {res.path}" + ("" if res.path.is_dir() else " (absent)"))
        sources = "; ".join(f"{s.id}: {s.note}" for s in ds.sources)
        rows.append(f"| {ds.name} | {ds.folder} | {sources} | {_checks(ds)} | {ds.licence} | "
                    f"{ds.size_mb:g} MB | {state} |")
    return "\n".join(rows)


def run(args) -> int:
    from gecko_jax import datasets

    if args.datasets_command == "list":
        print(list_table(args.data_dir))
        mirror = datasets.mirror_root()
        print(f"\nGECKO_JAX_DATA={mirror or '(unset)'}  cache: {datasets.cache_root() / 'datasets'}  "
              f"offline: {datasets.is_offline()}")
        return 0
    if args.datasets_command == "fetch":
        unknown = [n for n in args.names if n not in datasets.DATASETS and n not in datasets.FOLDERS]
        if unknown:
            print(f"gecko-jax datasets: error: unknown dataset(s) {unknown}; known: {sorted(datasets.DATASETS)}",
                  file=sys.stderr)
            return 2
        for name in args.names:
            try:
                folder = datasets.fetch(name, source=args.source, force=args.force, progress=not args.no_progress)
            except (datasets.DatasetNotAvailable, datasets.ChecksumError, ConnectionError, ValueError) as e:
                print(f"gecko-jax datasets: error: {e}", file=sys.stderr)
                return 1
            print(f"{name}: {folder}")
        return 0
    print("gecko-jax datasets: error: expected a subcommand, list or fetch (see --help)", file=sys.stderr)
    return 2
