"""``gecko-jax encode``: embed the texts of a .txt (one per line) or .jsonl file into a .npy matrix.

Examples:
  gecko-jax encode --model all-MiniLM-L6-v2 --input texts.txt --output vecs.npy
  gecko-jax encode --model ./my_model --input corpus.jsonl --field text --title-field title \\
      --kind document --task "search result" --dims 256 --output corpus.npy
"""
from __future__ import annotations

import argparse
import io
import pathlib
import sys

from gecko_jax.errors import InputError, exit_codes_help


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n", 2)[2] + "\n" + exit_codes_help((0, 2, 5))
    p.add_argument("--model", required=True,
                   help="model folder (Hugging Face or sentence-transformers layout) or a known name such as "
                        "all-MiniLM-L6-v2")
    p.add_argument("--input", required=True, type=pathlib.Path,
                   help=".txt (one text per line, blank lines kept as empty texts) or .jsonl (one object per line)")
    p.add_argument("--output", required=True, type=pathlib.Path, help="where to write the float32 [n, d] .npy")
    p.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--title-field", default=None, help="JSONL field holding a document title (optional)")
    p.add_argument("--task", default=None, help='Gecko task description, e.g. "search result"; none by default')
    p.add_argument("--kind", choices=("query", "document"), default="query", help="input formatting (default: query)")
    p.add_argument("--symmetric", action="store_true", help="format documents like queries (STS, clustering)")
    p.add_argument("--dims", type=int, default=None, help="Matryoshka width: keep the first DIMS dims, renormalise")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    p.add_argument("--max-length", type=int, default=None, help="truncate to this many tokens (default: the model's)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def read_texts(path: pathlib.Path, field: str = "text", title_field: str | None = None):
    """Texts (and titles, or None) from a .txt or .jsonl file; :class:`InputError` with ``file:line`` on bad
    records (non-UTF-8 bytes included)."""
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        from gecko_jax.fileio import read_text

        # universal newlines, as text-mode open() reads them: \n, \r\n and \r end a line
        return [line.rstrip("\r\n") for line in io.StringIO(read_text(path), newline=None)], None
    if suffix != ".jsonl":
        raise InputError(f"{path}: unsupported input type {suffix or '(no suffix)'!r}; expected .txt or .jsonl")
    from gecko_jax.data.jsonl import iter_jsonl

    texts, titles = [], []
    for lineno, record in iter_jsonl(path, error=InputError):
        if field not in record:
            raise InputError(f"{path}:{lineno}: missing field {field!r} (fields: {', '.join(record) or 'none'})")
        if not isinstance(record[field], str):
            raise InputError(f"{path}:{lineno}: field {field!r} is {type(record[field]).__name__}; expected a string")
        texts.append(record[field])
        if title_field is not None:
            title = record.get(title_field)
            if title is not None and not isinstance(title, str):
                raise InputError(f"{path}:{lineno}: field {title_field!r} is {type(title).__name__}; expected a "
                                 "string or null")
            titles.append(title)
    return texts, (titles if title_field is not None else None)


def run(args: argparse.Namespace) -> int:
    from gecko_jax.fileio import check_writable, save_npy

    try:
        texts, titles = read_texts(args.input, args.field, args.title_field)
        if args.output.suffix != ".npy":
            raise InputError(f"--output must end in .npy, got {args.output}")
        check_writable(args.output)  # before the model loads and the texts are encoded
        from gecko_jax.embedder import Embedder

        emb = Embedder.from_pretrained(args.model, dtype=args.dtype, max_length=args.max_length,
                                       batch_size=args.batch_size)
        vecs = emb.encode(texts, task=args.task, kind=args.kind, titles=titles, symmetric=args.symmetric,
                          dims=args.dims, show_progress=False if args.no_progress else None)
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError, ValueError, TypeError, KeyError) as e:
        print(f"gecko-jax encode: error: {e}", file=sys.stderr)
        return 2
    save_npy(args.output, vecs)  # atomic: a failed write leaves the previous file at --output intact
    print(f"wrote {vecs.shape[0]} x {vecs.shape[1]} float32 embeddings to {args.output}", file=sys.stderr)
    return 0
