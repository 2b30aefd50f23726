"""Where the quickstart's data lives: the data root (SciFact must resolve), its explicit folder, and the small copies
of SciFact and STS-B the pulse tests and tiny runs evaluate on."""
from __future__ import annotations

import json
import os
import pathlib

from gecko_jax.datasets import DataRoot
from gecko_jax.fileio import write_text


def resolve_data_dir(data_dir: str | os.PathLike | None):
    """The data root (:class:`gecko_jax.datasets.DataRoot`): ``data_dir`` if given, else each dataset from
    ``$GECKO_JAX_DATA``, the cache or a download (:mod:`gecko_jax.datasets`); SciFact's corpus is resolved now.

    Raises:
      FileNotFoundError: naming the folder tried and how to point at another one.
    """
    root = DataRoot(data_dir)
    corpus = root / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        raise FileNotFoundError(
            f"quickstart: SciFact corpus not found at {corpus}; expected a data folder with scifact/, stsb/, "
            f"banking77/ (see `gecko-jax datasets --help`). Pass --data-dir, set GECKO_JAX_DATA, or drop both to "
            f"download them.")
    return root


def data_dir_of(data_root) -> str | None:
    """The explicit data folder of ``data_root`` (a :class:`gecko_jax.datasets.DataRoot` or a path); None when each
    dataset resolves through ``$GECKO_JAX_DATA`` / the cache."""
    d = getattr(data_root, "data_dir", data_root)
    return None if d is None else str(d)


def make_tiny_data(src: pathlib.Path, dst: pathlib.Path, *, queries: int = 10, extra_docs: int = 150,
                   sts_pairs: int = 100) -> pathlib.Path:
    """Small copies of SciFact (first ``queries`` test queries, their relevant docs + ``extra_docs`` others) and
    STS-B test (first ``sts_pairs`` rows) for the pulse test; returns ``dst``."""
    sci = dst / "scifact"
    (sci / "qrels").mkdir(parents=True, exist_ok=True)
    lines = (src / "scifact" / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], [l.split("\t") for l in lines[1:] if l.strip()]
    keep_q = list(dict.fromkeys(r[0] for r in rows))[:queries]
    rows = [r for r in rows if r[0] in keep_q]
    rel_docs = {r[1] for r in rows}
    write_text(sci / "qrels" / "test.tsv", "\n".join([header] + ["\t".join(r) for r in rows]) + "\n")
    with open(src / "scifact" / "queries.jsonl") as f:
        qs = [l for l in f if json.loads(l)["_id"] in keep_q]
    write_text(sci / "queries.jsonl", "".join(qs))
    docs, others = [], 0
    with open(src / "scifact" / "corpus.jsonl") as f:
        for line in f:
            did = json.loads(line)["_id"]
            if did in rel_docs or others < extra_docs:
                others += did not in rel_docs
                docs.append(line)
    write_text(sci / "corpus.jsonl", "".join(docs))
    (dst / "stsb").mkdir(parents=True, exist_ok=True)
    with open(src / "stsb" / "sts-test.csv", encoding="utf-8") as f:
        head = [next(f) for _ in range(sts_pairs)]
    write_text(dst / "stsb" / "sts-test.csv", "".join(head))
    return dst
