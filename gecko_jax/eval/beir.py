"""BEIR-layout retrieval data: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

The same layout the BEIR downloads (``https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/``) unpack
to, so a user with a network points ``load_beir`` at any unzipped BEIR folder (``gecko_jax.datasets.path("scifact")``
downloads and verifies the SciFact one).

Bad input policy: a line that is not valid JSON, lacks ``_id``/``text``, or a qrels row that does not have three
tab-separated fields with an integer grade raises ``BeirFormatError`` naming the file and line. Problems that BEIR's
own loader silently tolerates are counted in ``BeirData.warnings`` (and logged once per kind): duplicate ids, empty
queries (dropped from evaluation), qrels pointing at documents missing from the corpus (the judgement is kept for the
ideal DCG, as ``trec_eval`` would, but is counted), qrels for queries missing from ``queries.jsonl`` (dropped).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import pathlib

from gecko_jax.errors import InputError
from gecko_jax.fileio import decode_utf8

log = logging.getLogger(__name__)


class BeirFormatError(InputError):
    """A BEIR file does not follow the expected format; the message names the file and line."""


@dataclasses.dataclass
class BeirData:
    """One split of a BEIR dataset.

    Attributes:
      corpus: doc id -> {"title": str, "text": str}, in file order.
      queries: query id -> text, only the queries judged in ``qrels`` (non-empty text).
      qrels: query id -> {doc id -> integer grade}.
      warnings: kind -> count of tolerated problems (see module docstring).
      fingerprint: sha256 over the bytes of the three files read (cache key for corpus embeddings).
      path: the dataset folder; split: the qrels split.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    warnings: dict[str, int]
    fingerprint: str
    corpus_fingerprint: str
    path: pathlib.Path
    split: str


def _read_jsonl(path: pathlib.Path, required: tuple[str, ...], hasher) -> list[tuple[int, dict]]:
    from gecko_jax.data.jsonl import iter_jsonl

    if not path.is_file():
        raise FileNotFoundError(f"BEIR file not found: {path}")
    hasher.update(path.read_bytes())
    rows = []
    for lineno, obj in iter_jsonl(path, error=BeirFormatError):
        for key in required:
            if key not in obj:
                raise BeirFormatError(f"{path}:{lineno}: missing field {key!r} (expected fields {list(required)})")
        if not isinstance(obj["_id"], (str, int)):
            raise BeirFormatError(f"{path}:{lineno}: field '_id' must be a string, got {type(obj['_id']).__name__}")
        if not isinstance(obj["text"], str):
            raise BeirFormatError(f"{path}:{lineno}: field 'text' must be a string, got {type(obj['text']).__name__}")
        rows.append((lineno, obj))
    return rows


def read_qrels(path: pathlib.Path, hasher=None) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, optional header line).

    Raises:
      BeirFormatError: a row without three fields or with a non-integer score (file and line named).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BEIR qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = collections.defaultdict(dict)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if hasher is not None:
                hasher.update(raw)
            line = decode_utf8(raw, path, error=BeirFormatError, first_line=lineno).rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if lineno == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(fields) != 3:
                raise BeirFormatError(f"{path}:{lineno}: expected 3 tab-separated fields "
                                      f"(query-id, corpus-id, score), got {len(fields)}: {line[:80]!r}")
            qid, did, score = (x.strip() for x in fields)
            try:
                grade = int(float(score)) if float(score).is_integer() else None
            except ValueError:
                grade = None
            if grade is None:
                raise BeirFormatError(f"{path}:{lineno}: score must be an integer grade, got {score!r}")
            qrels[qid][did] = grade
    return dict(qrels)


def load_beir(path, split: str = "test") -> BeirData:
    """Load one split of a BEIR-layout dataset folder.

    Args:
      path: folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv``.
      split: qrels split name (``"test"`` for SciFact's MTEB evaluation).

    Returns:
      A :class:`BeirData`; ``queries`` holds only the judged, non-empty queries.

    Raises:
      FileNotFoundError: a file is missing. BeirFormatError: a malformed line (file:line in the message), or no query
      left to evaluate.
    """
    path = pathlib.Path(path)
    warnings: collections.Counter = collections.Counter()
    h_corpus = hashlib.sha256()
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in _read_jsonl(path / "corpus.jsonl", ("_id", "text"), h_corpus):
        did = str(obj["_id"])
        if did in corpus:
            warnings["duplicate_doc_ids"] += 1
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise BeirFormatError(f"{path / 'corpus.jsonl'}:{lineno}: field 'title' must be a string")
        if not (title.strip() or obj["text"].strip()):
            warnings["empty_documents"] += 1
        corpus[did] = {"title": title, "text": obj["text"]}
    h_all = h_corpus.copy()
    all_queries: dict[str, str] = {}
    for _, obj in _read_jsonl(path / "queries.jsonl", ("_id", "text"), h_all):
        qid = str(obj["_id"])
        if qid in all_queries:
            warnings["duplicate_query_ids"] += 1
        all_queries[qid] = obj["text"]
    qrels_path = path / "qrels" / f"{split}.tsv"
    h_all.update(split.encode())
    raw_qrels = read_qrels(qrels_path, h_all)
    qrels: dict[str, dict[str, int]] = {}
    queries: dict[str, str] = {}
    for qid, judged in raw_qrels.items():
        if qid not in all_queries:
            warnings["qrels_query_not_in_queries"] += 1
            continue
        if not all_queries[qid].strip():
            warnings["empty_queries"] += 1
            continue
        missing = [d for d in judged if d not in corpus]
        warnings["qrels_doc_not_in_corpus"] += len(missing)
        qrels[qid] = judged
        queries[qid] = all_queries[qid]
    warnings = collections.Counter({k: v for k, v in warnings.items() if v})
    for kind, n in warnings.items():
        log.warning("%s: %d x %s (tolerated, see gecko_jax.eval.beir)", path, n, kind)
    if not any(any(g > 0 for g in j.values()) for j in qrels.values()):
        raise BeirFormatError(f"{qrels_path}: no judged query with a relevant document is left to evaluate "
                              f"(problems: {dict(warnings) or 'none'})")
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, warnings=dict(warnings),
                    fingerprint=h_all.hexdigest(), corpus_fingerprint=h_corpus.hexdigest(), path=path, split=split)
