"""Sources of Gecko's unified fine-tuning mixture (PAPERS.md 1.2, 1.4; Appendix B) as training records.

Every converter returns records of one shape, which :func:`gecko_jax.data.read_pairs` reads::

    {"id": "nli-dev-17", "source": "nli", "task": "semantic similarity", "symmetric": true,
     "query": "...", "positive": {"id": "...", "title"?: "...", "text": "..."},
     "negative": {"id": "...", "text": "..."}}          # optional: at most one hard negative here

``positive.id`` is the **mask id**: rows of a batch that share it are not each other's negatives (STYLE.md 11).
It is the passage id for retrieval sources, the pair id for STS (both directions of a pair share it) and the
*label* for classification (same-label rows are never in-batch negatives). A hard negative whose id equals the
row's mask id is dropped by the loss, so a converter never emits one.

Sources and their task strings (Gecko Table 9; the evaluation uses the same ones, ``gecko_jax.eval.suites``):

===============================  ======================  =========  =========================================
source                           task                    symmetric  query -> positive (hard negative)
===============================  ======================  =========  =========================================
:func:`nli_records`              semantic similarity     yes        premise -> entailment (contradiction)
:func:`classification_records`   classification          yes        x -> same label x+ (other label x-)
:func:`sts_records`              semantic similarity     yes        s1 -> s2 of a high-scored pair (none)
:func:`retrieval_records`        e.g. fact checking      no         query -> relevant doc (mined non-relevant)
:func:`title_body_records`       search result           no         title -> body (none; pre-finetuning)
:func:`fret_records`             the LLM's task          no         FRet records as ``data_gen`` wrote them
===============================  ======================  =========  =========================================

NLI uses "semantic similarity" because Table 9 gives it to STS and pair classification, the symmetric sentence-pair
tasks NLI trains for (the paper names no NLI string). Converters are pure functions of already-read data (the eval
readers in ``gecko_jax.eval`` read STS-B, the labelled sets and BEIR folders; :func:`read_snli_senteval` reads SNLI),
deterministic in their ``seed``, and keep what they drop countable (``ConversionStats``).

Dev data for model selection is carved out here too (:func:`dev_split`): the same rule removes a slice from training
and gives it to ``gecko_jax.eval.dev``, so selection never sees a training row or a reported test row.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
import random
from typing import Iterable, Mapping, Sequence

SOURCE_KINDS = ("fret", "nli", "classification", "sts", "retrieval", "title_body")
NLI_TASK = "semantic similarity"
STS_TASK = "semantic similarity"
CLASSIFICATION_TASK = "classification"
TITLE_BODY_TASK = "search result"


class MixtureDataError(ValueError):
    """A source file or record is malformed; the message names the file, line and field."""


@dataclasses.dataclass
class ConversionStats:
    """What a converter kept and dropped (printed by the recipe, saved next to the records)."""

    source: str
    records: int = 0
    dropped: dict = dataclasses.field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


def _passage(pid: str, text: str, title: str | None = None) -> dict:
    out = {"id": pid, "text": text}
    if title:
        out["title"] = title
    return out


def _record(rid: str, source: str, task: str, query: str, positive: dict, negative: dict | None,
            symmetric: bool) -> dict:
    rec = {"id": rid, "source": source, "task": task, "symmetric": symmetric, "query": query, "positive": positive}
    if negative is not None:
        rec["negative"] = negative
    return rec


def _short_hash(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:8]


# ---- dev splits -------------------------------------------------------------------------------------------------

def dev_split(keys: Iterable, fraction: float, *, salt: str) -> tuple[list, list]:
    """``(train keys, dev keys)``: a key is dev when its salted sha256 falls below ``fraction``.

    A hash rule (not a shuffle) keeps each key's side fixed whatever else is in the list, so the training
    converter and the dev evaluator agree without sharing state. Order within each side follows ``keys``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"dev fraction must be in [0, 1), got {fraction}")
    train, dev = [], []
    for k in keys:
        h = int.from_bytes(hashlib.sha256(f"{salt}\x1f{k}".encode()).digest()[:8], "big") / 2.0 ** 64
        (dev if h < fraction else train).append(k)
    return train, dev


def stratified_dev_split(labels: Sequence, per_label: int, *, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train indices, dev indices)``: ``per_label`` rows of each label to dev (seeded, fixed), the rest train."""
    by = collections.defaultdict(list)
    for i, y in enumerate(labels):
        by[y].append(i)
    rng = random.Random(f"dev|{seed}")
    dev = set()
    for y in sorted(by, key=str):
        idx = list(by[y])
        rng.shuffle(idx)
        dev.update(idx[:min(per_label, len(idx) - 2)])  # keep >= 2 per label for x / x+ in training
    return [i for i in range(len(labels)) if i not in dev], sorted(dev)


# ---- SNLI (SentEval layout) ---------------------------------------------------------------------------------------

NLI_LABELS = ("entailment", "neutral", "contradiction")


def read_snli_senteval(folder, splits: Sequence[str] = ("dev", "test")) -> list[tuple[str, str, str, str]]:
    """``(split, premise, hypothesis, label)`` rows of SentEval's SNLI files (``s1.<split>``, ``s2.<split>``,
    ``labels.<split>``: one item a line, aligned). Blank trailing lines are skipped.

    Raises:
      MixtureDataError: a missing file, files of different lengths, or a label outside NLI_LABELS (file:line).
    """
    folder = pathlib.Path(folder)
    rows = []
    for split in splits:
        files = [folder / f"{name}.{split}" for name in ("s1", "s2", "labels")]
        lines = []
        for f in files:
            try:
                lines.append(f.read_text(encoding="utf-8").rstrip("\n").split("\n"))
            except OSError as e:
                raise MixtureDataError(f"{f}: cannot read SNLI file ({e.strerror})") from None
        if len({len(x) for x in lines}) != 1:
            raise MixtureDataError(f"{folder}: s1/s2/labels .{split} have {[len(x) for x in lines]} lines; "
                                   "expected aligned files of equal length")
        for lineno, (p, h, lab) in enumerate(zip(*lines), 1):
            lab = lab.strip()
            if not (p.strip() or h.strip() or lab):
                continue
            if lab not in NLI_LABELS:
                raise MixtureDataError(f"{files[2]}:{lineno}: field 'label' must be one of {list(NLI_LABELS)}, "
                                       f"got {lab!r}")
            if not p.strip() or not h.strip():
                raise MixtureDataError(f"{files[0 if not p.strip() else 1]}:{lineno}: empty sentence")
            rows.append((split, " ".join(p.split()), " ".join(h.split()), lab))
    return rows


def nli_records(rows: Sequence[tuple[str, str, str, str]], *, source: str = "nli", task: str = NLI_TASK,
                stats: ConversionStats | None = None) -> list[dict]:
    """One record per premise: premise -> its first entailment hypothesis, hard negative = its first contradiction
    hypothesis (symmetric format). Premises without both are dropped (counted in ``stats``).

    Args:
      rows: ``(split, premise, hypothesis, label)`` as :func:`read_snli_senteval` returns.
    """
    stats = stats if stats is not None else ConversionStats(source)
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for split, premise, hypothesis, label in rows:
        g = groups.setdefault((split, premise), {})
        g.setdefault(label, hypothesis)
    out = []
    for k, ((split, premise), g) in enumerate(groups.items()):
        if "entailment" not in g or "contradiction" not in g:
            stats.drop("premise without entailment + contradiction")
            continue
        if g["entailment"] == g["contradiction"]:
            stats.drop("entailment text == contradiction text")
            continue
        rid = f"{source}-{split}-{k}"
        out.append(_record(rid, source, task, premise, _passage(f"{rid}/e", g["entailment"]),
                           _passage(f"{rid}/c", g["contradiction"]), True))
    stats.records += len(out)
    return out


# ---- readers for user files ----------------------------------------------------------------------------------------

def _jsonl(path):
    from gecko_jax.data.jsonl import iter_jsonl

    return iter_jsonl(path, error=MixtureDataError)


def read_labelled_texts(path) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of a JSONL file of ``{"text": str, "label": str | int}`` rows (any labelled set a user
    has; labels are compared as strings). Errors name the file, line and field."""
    texts, labels = [], []
    for lineno, obj in _jsonl(path):
        where = f"{path}:{lineno}"
        text, label = obj.get("text"), obj.get("label")
        if not isinstance(text, str) or not text.strip():
            raise MixtureDataError(f"{where}: field 'text' must be a non-empty string, got {text!r}")
        if not isinstance(label, (str, int)) or isinstance(label, bool) or str(label).strip() == "":
            raise MixtureDataError(f"{where}: field 'label' must be a string or integer, got {label!r}")
        texts.append(text)
        labels.append(str(label))
    if not texts:
        raise MixtureDataError(f"{path}: no rows")
    return texts, labels


def read_beir_corpus(path) -> dict[str, dict[str, str]]:
    """``{id: {"title", "text"}}`` of a BEIR ``corpus.jsonl`` (``{"_id", "title"?, "text"}`` per line), in file
    order; for title -> body pairs from any corpus a user has."""
    out = {}
    for lineno, obj in _jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj.get("_id"), (str, int)) or isinstance(obj.get("_id"), bool):
            raise MixtureDataError(f"{where}: field '_id' must be a string or integer, got {obj.get('_id')!r}")
        text, title = obj.get("text"), obj.get("title") or ""
        if not isinstance(text, str):
            raise MixtureDataError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
        if not isinstance(title, str):
            raise MixtureDataError(f"{where}: field 'title' must be a string, got {type(title).__name__}")
        out[str(obj["_id"])] = {"title": title, "text": text}
    if not out:
        raise MixtureDataError(f"{path}: no documents")
    return out


# ---- classification as retrieval ----------------------------------------------------------------------------------

def classification_records(texts: Sequence[str], labels: Sequence, *, source: str, task: str = CLASSIFICATION_TASK,
                           seed: int = 0, append_id: bool = True, limit: int | None = None,
                           stats: ConversionStats | None = None) -> list[dict]:
    """Classification as retrieval (Gecko Sec. 3.2): for each ``x`` a positive ``x+`` with the same label and a hard
    negative ``x-`` with another (uniformly drawn) label, all three in the symmetric format.

    ``append_id`` adds the same unique string (`` (id 1f3a9c0e)``) to ``x``, ``x+`` and ``x-`` of a triple, as the
    paper does, so other in-batch rows are told apart by it; on top, the mask id of every row is its label, so
    same-label rows are never in-batch negatives (both tricks against label-level false negatives).

    Args:
      texts, labels: the labelled set (training split only: the caller removes dev and test rows).
      limit: keep a seeded sample of this many anchors (None: all).
    """
    if len(texts) != len(labels):
        raise ValueError(f"classification_records({source}): {len(texts)} texts but {len(labels)} labels")
    stats = stats if stats is not None else ConversionStats(source)
    by_label = collections.defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    # positions (in by_label[y]) of each text: x+ is drawn from the label's rows minus the copies of x's text
    text_pos = collections.defaultdict(list)
    for y, idx in by_label.items():
        for k, j in enumerate(idx):
            text_pos[(y, texts[j])].append(k)
    names = sorted(by_label, key=str)
    if len(names) < 2:
        raise ValueError(f"classification_records({source}): needs >= 2 labels, got {names}")
    rng = random.Random(f"{source}|{seed}")
    order = list(range(len(texts)))
    if limit is not None and limit < len(order):
        order = sorted(rng.sample(order, limit))
    out = []
    for i in order:
        y = labels[i]
        excluded = text_pos[(y, texts[i])]  # sorted; includes x itself
        n_same = len(by_label[y]) - len(excluded)
        if n_same <= 0:
            stats.drop("no other text with the same label")
            continue
        k = rng.randrange(n_same)  # the k-th allowed row, skipping the excluded positions
        for e in excluded:
            if e <= k:
                k += 1
        j = by_label[y][k]
        other = names[rng.randrange(len(names) - 1)]
        other = other if other != y else names[-1]
        n = by_label[other][rng.randrange(len(by_label[other]))]
        rid = f"{source}-{i}"
        tag = f" (id {_short_hash(source, seed, i)})" if append_id else ""
        out.append(_record(rid, source, task, texts[i] + tag,
                           _passage(f"{source}:label:{y}", texts[j] + tag),
                           _passage(f"{source}:label:{other}", texts[n] + tag), True))
    stats.records += len(out)
    return out


# ---- STS pairs ----------------------------------------------------------------------------------------------------

def sts_records(s1: Sequence[str], s2: Sequence[str], scores: Sequence[float], *, source: str = "stsb",
                task: str = STS_TASK, min_score: float = 4.0, both_directions: bool = True,
                stats: ConversionStats | None = None) -> list[dict]:
    """Pairs scored ``>= min_score`` (0-5 scale) as symmetric query -> positive records, in-batch negatives only.

    Both directions of a pair share its mask id, so neither row is the other's negative.
    """
    if not len(s1) == len(s2) == len(scores):
        raise ValueError(f"sts_records({source}): s1, s2 and scores differ in length "
                         f"({len(s1)}, {len(s2)}, {len(scores)})")
    stats = stats if stats is not None else ConversionStats(source)
    out = []
    for k, (a, b, s) in enumerate(zip(s1, s2, scores)):
        if float(s) < min_score:
            stats.drop(f"score < {min_score}")
            continue
        if a.strip() == b.strip():
            stats.drop("identical sentences")
            continue
        pid = f"{source}-pair-{k}"
        out.append(_record(f"{source}-{k}", source, task, a, _passage(pid, b), None, True))
        if both_directions:
            out.append(_record(f"{source}-{k}-r", source, task, b, _passage(pid, a), None, True))
    stats.records += len(out)
    return out


# ---- human retrieval pairs and pre-finetuning pairs -------------------------------------------------------------------

def cut_text(text: str, max_chars: int | None) -> str:
    """``text`` cut to at most ``max_chars`` characters at the last space (hard cut when there is none)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def retrieval_records(queries: Mapping[str, str], corpus: Mapping[str, Mapping[str, str]],
                      qrels: Mapping[str, Mapping[str, int]], *, source: str, task: str,
                      negatives: Mapping[str, Sequence[str]] | None = None, max_chars: int | None = None,
                      stats: ConversionStats | None = None) -> list[dict]:
    """Human retrieval pairs (e.g. SciFact *train* qrels: claim -> abstract): one record per (query, relevant doc).

    Args:
      queries: query id -> text (only ids in ``qrels`` are used). corpus: doc id -> ``{"title", "text"}``.
      qrels: query id -> {doc id: grade}; grade > 0 is relevant.
      negatives: query id -> candidate doc ids, best first (e.g. :func:`mine_negatives`); the first one that is
        not relevant to the query becomes the hard negative. None: no hard negatives.
      max_chars: cut document texts (the training length; evaluation keeps full texts).
    """
    stats = stats if stats is not None else ConversionStats(source)
    out = []
    for qid, judged in qrels.items():
        if qid not in queries or not queries[qid].strip():
            stats.drop("query missing or empty")
            continue
        relevant = [d for d, g in judged.items() if g > 0]
        neg = None
        if negatives is not None:
            pick = next((d for d in negatives.get(qid, ()) if d not in judged and d in corpus), None)
            if pick is None:
                stats.drop("no non-relevant candidate (record kept without a hard negative)")
            else:
                neg = _passage(pick, cut_text(corpus[pick]["text"], max_chars), corpus[pick].get("title"))
        for d in relevant:
            if d not in corpus:
                stats.drop("relevant doc not in corpus")
                continue
            doc = corpus[d]
            out.append(_record(f"{source}-{qid}-{d}", source, task, queries[qid],
                               _passage(d, cut_text(doc["text"], max_chars), doc.get("title")), neg, False))
    stats.records += len(out)
    return out


def title_body_records(corpus: Mapping[str, Mapping[str, str]], *, source: str = "title_body",
                       task: str = TITLE_BODY_TASK, max_chars: int | None = None, limit: int | None = None,
                       stats: ConversionStats | None = None) -> list[dict]:
    """Pre-finetuning pairs (Gecko Sec. 2.1; web title-body pairs): title -> body of each titled corpus document,
    in-batch negatives only (eq. 2). Works on any BEIR-layout corpus."""
    stats = stats if stats is not None else ConversionStats(source)
    out = []
    for did, doc in corpus.items():
        title, text = (doc.get("title") or "").strip(), (doc.get("text") or "").strip()
        if not title or not text:
            stats.drop("no title or no text")
            continue
        out.append(_record(f"{source}-{did}", source, task, title, _passage(did, cut_text(text, max_chars)), None,
                           False))
        if limit and len(out) >= limit:
            break
    stats.records += len(out)
    return out


def mine_negatives(query_emb, doc_emb, query_ids: Sequence[str], doc_ids: Sequence[str],
                   qrels: Mapping[str, Mapping[str, int]], *, skip: int = 3, depth: int = 30, seed: int = 0,
                   k: int = 1) -> dict[str, list[str]]:
    """Hard negatives from the source: for each query, ``k`` documents drawn at random from ranks ``skip+1..depth``
    of a retriever's ranking (``query_emb @ doc_emb.T``), relevant documents excluded.

    Skipping the very top avoids the unjudged relevant documents sparse qrels leave there (false negatives), the
    usual practice for mined negatives. numpy only; embeddings are unit rows.
    """
    import numpy as np

    q = np.asarray(query_emb, np.float32)
    d = np.asarray(doc_emb, np.float32)
    if q.shape[0] != len(query_ids) or d.shape[0] != len(doc_ids):
        raise ValueError(f"mine_negatives: {q.shape[0]} query vectors for {len(query_ids)} ids, "
                         f"{d.shape[0]} doc vectors for {len(doc_ids)} ids")
    out = {}
    for r, qid in enumerate(query_ids):
        scores = d @ q[r]
        top = np.argsort(-scores, kind="stable")[:depth + len(qrels.get(qid, {}))]
        cands = [doc_ids[j] for j in top if doc_ids[j] not in qrels.get(qid, {})][skip:depth]
        rng = random.Random(f"neg|{seed}|{qid}")
        out[qid] = rng.sample(cands, min(k, len(cands)))
    return out


# ---- FRet ---------------------------------------------------------------------------------------------------------

def fret_records(rows: Sequence[dict], *, source: str = "fret") -> list[dict]:
    """FRet records as ``data_gen`` writes them (``{id, task, query, positive: {id, title, text}, negative?}``)
    tagged with ``source`` and ``symmetric: false``; other keys (candidates, scores) are dropped."""
    out = []
    for r in rows:
        rec = {"id": str(r["id"]), "source": source, "task": r["task"], "symmetric": False, "query": r["query"],
               "positive": r["positive"]}
        if r.get("negative") is not None:
            rec["negative"] = r["negative"]
        out.append(rec)
    return out


def group_by_task(records: Sequence[dict], *, min_size: int, other: str = "other tasks") -> dict[str, list[dict]]:
    """Records grouped by ``task`` for uniform sampling over tasks (Gecko Table 4): tasks with fewer than
    ``min_size`` records (a batch's worth) are pooled into one ``other`` group, so no batch is a few repeated rows."""
    groups = collections.defaultdict(list)
    for r in records:
        groups[r["task"]].append(r)
    out, pooled = {}, []
    for task in sorted(groups, key=lambda t: (-len(groups[t]), t)):
        if len(groups[task]) >= min_size:
            out[task] = groups[task]
        else:
            pooled.extend(groups[task])
    if pooled:
        if len(pooled) >= min_size or not out:
            out[other] = pooled
        else:  # too small even pooled: join the largest group
            first = next(iter(out))
            out[first] = out[first] + pooled
    return out


# ---- checks and files ---------------------------------------------------------------------------------------------

def check_records(records: Sequence[dict], *, where: str = "records") -> None:
    """Validate the record shape and the mixture's invariants: unique ids, a task, a boolean ``symmetric``, a
    positive, and no hard negative that shares the row's mask id (label leakage)."""
    seen = set()
    for k, r in enumerate(records):
        at = f"{where}[{k}] (id {r.get('id')!r})"
        for field in ("id", "source", "task", "query", "positive", "symmetric"):
            if field not in r:
                raise MixtureDataError(f"{at}: missing field {field!r}")
        if r["id"] in seen:
            raise MixtureDataError(f"{at}: duplicate id {r['id']!r}")
        seen.add(r["id"])
        if not isinstance(r["symmetric"], bool):
            raise MixtureDataError(f"{at}: field 'symmetric' must be true or false, got {r['symmetric']!r}")
        for field in ("task", "query"):
            if not isinstance(r[field], str) or not r[field].strip():
                raise MixtureDataError(f"{at}: field {field!r} must be a non-empty string")
        neg = r.get("negative")
        pos_id = r["positive"].get("id") if isinstance(r["positive"], dict) else None
        if isinstance(neg, dict) and pos_id is not None and neg.get("id") == pos_id:
            raise MixtureDataError(f"{at}: field 'negative.id' equals 'positive.id' ({pos_id!r}): the hard "
                                   "negative shares the positive's label/passage")


def write_records(records: Sequence[dict], path) -> pathlib.Path:
    """Check the records and write them as JSONL atomically (:func:`gecko_jax.fileio.atomic_write`)."""
    path = pathlib.Path(path)
    check_records(records, where=str(path))
    from gecko_jax.fileio import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
