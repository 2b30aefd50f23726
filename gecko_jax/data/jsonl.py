"""JSONL readers for training data: one record per line, each with an ``id``; errors name ``file:line`` and the field.

Record kinds (extra keys are ignored, so generated files can carry provenance):

- **pairs / triples** (contrastive training, Gecko's FRet and fine-tuning mixture)::

    {"id": "q1", "task": "search result", "query": "...", "positive": "...",
     "negative": "..." | ["...", ...],            # optional hard negative(s)
     "positive_title": "...", "negative_title": "..."}   # optional titles (Gecko's "title: ... | text: ...")
     "symmetric": true, "source": "nli"}                  # optional (gecko_jax.data.mixture writes both)

  A passage may also be an object ``{"id"?, "title"?, "text"}`` (what ``data_gen``'s FRet writes); its ``id``
  then identifies it for the in-batch false-negative masks, instead of its text. ``symmetric`` (format passages
  like queries) overrides the dataset's setting for that record; ``source`` names the mixture source.

- **fair tuples** (content-conditional debiasing)::

    {"id": "t1", "groups": ["he is a nurse", "she is a nurse"], "neutral": "they are a nurse"}
    {"id": "t1", "groups": {"male": "he is ...", "female": "she is ..."}, "neutral": "..."}   # data_gen.fair

  Every line must have the same number of groups (and, for objects, the same group names).

- **labelled texts** (classifier trainer)::

    {"id": "x1", "text": "...", "label": 3}

Files are read and validated completely before training starts, so a bad line fails the run up front and nothing
already written to the work directory (checkpoints, metrics) is touched.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterator

from data_gen.jsonl import JsonlError  # noqa: F401  (the one JSONL error type: a bad line, ``file:line`` first)

from gecko_jax.fileio import iter_lines


@dataclasses.dataclass(frozen=True)
class PairRecord:
    id: str
    query: str
    positive: str
    negatives: tuple = ()  # texts
    task: str | None = None
    positive_title: str | None = None
    negative_title: str | None = None  # title shared by all negatives (flat form)
    positive_id: str | None = None  # passage id (object form); masks use it instead of the text
    negative_ids: tuple = ()  # per negative: id or None
    negative_titles: tuple = ()  # per negative: title or None (object form)
    symmetric: bool | None = None  # format passages like queries; None: the dataset's setting
    source: str | None = None  # mixture source name (provenance)


@dataclasses.dataclass(frozen=True)
class FairTuple:
    id: str
    groups: tuple
    neutral: str


@dataclasses.dataclass(frozen=True)
class LabelledText:
    id: str
    text: str
    label: int


def iter_jsonl(path, *, error: type[ValueError] = None) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file.

    Raises ``error`` (default :class:`JsonlError`) naming ``file:line`` for a line that is not UTF-8, not JSON or
    not an object, and for a file that cannot be opened; the shared reader of every JSONL input in gecko_jax.
    """
    error = error or JsonlError
    path = pathlib.Path(path)
    for lineno, line in iter_lines(path, error=error):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


_lines = iter_jsonl


def _text(obj: dict, key: str, where: str, *, required: bool = True) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise JsonlError(f"{where}: missing field {key!r} (expected a non-empty string)")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise JsonlError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise JsonlError(f"{where}: field {key!r} is empty (expected a non-empty string)")
    return value


def _id(obj: dict, where: str) -> str:
    if "id" not in obj:
        raise JsonlError(f"{where}: missing field 'id'")
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
        raise JsonlError(f"{where}: field 'id' must be a string or integer, got {obj['id']!r}")
    return str(obj["id"])


def _passage(value, field: str, where: str) -> tuple[str, str | None, str | None]:
    """(text, title, id) of a passage given as a string or an object {id?, title?, text}."""
    if isinstance(value, str):
        if not value.strip():
            raise JsonlError(f"{where}: field {field!r} is empty (expected a non-empty string)")
        return value, None, None
    if isinstance(value, dict):
        text = _text(value, "text", f"{where}: field {field!r}")
        title = value.get("title")
        if title is not None and not isinstance(title, str):
            raise JsonlError(f"{where}: field '{field}.title' must be a string, got {type(title).__name__}")
        pid = value.get("id")
        return text, (title or None), (None if pid is None else str(pid))
    raise JsonlError(f"{where}: field {field!r} must be a string or an object {{id, title, text}}, got {value!r}")


def read_pairs(path: str | pathlib.Path, *, min_negatives: int = 0) -> list[PairRecord]:
    """Read query/positive(/negative) records; ``min_negatives`` hard negatives are required on every line."""
    path = pathlib.Path(path)
    out = []
    for lineno, obj in _lines(path):
        where = f"{path}:{lineno}"
        rid, query = _id(obj, where), _text(obj, "query", where)
        if "positive" not in obj or obj["positive"] is None:
            raise JsonlError(f"{where}: missing field 'positive' (expected a non-empty string or an object)")
        pos, pos_title, pos_id = _passage(obj["positive"], "positive", where)
        neg = obj.get("negative")
        if neg is None:
            negs = []
        elif isinstance(neg, list):
            negs = [_passage(n, f"negative[{k}]", where) for k, n in enumerate(neg)]
        else:
            negs = [_passage(neg, "negative", where)]
        if len(negs) < min_negatives:
            raise JsonlError(f"{where}: field 'negative' has {len(negs)} hard negative(s), expected at least "
                             f"{min_negatives} (data.hard_negatives)")
        symmetric = obj.get("symmetric")
        if symmetric is not None and not isinstance(symmetric, bool):
            raise JsonlError(f"{where}: field 'symmetric' must be true or false, got {symmetric!r}")
        out.append(PairRecord(
            id=rid, query=query, positive=pos, negatives=tuple(n[0] for n in negs),
            task=_text(obj, "task", where, required=False),
            positive_title=pos_title or _text(obj, "positive_title", where, required=False),
            negative_title=_text(obj, "negative_title", where, required=False),
            positive_id=pos_id, negative_ids=tuple(n[2] for n in negs), negative_titles=tuple(n[1] for n in negs),
            symmetric=symmetric, source=_text(obj, "source", where, required=False)))
    if not out:
        raise JsonlError(f"{path}: no records")
    return out


def read_fair_tuples(path: str | pathlib.Path) -> list[FairTuple]:
    """Read debiasing tuples; every line must have the same number (>= 2) of group versions."""
    path = pathlib.Path(path)
    out, names = [], None
    for lineno, obj in _lines(path):
        where = f"{path}:{lineno}"
        groups = obj.get("groups")
        if isinstance(groups, dict):
            keys = sorted(groups)
            if names is not None and keys != names:
                raise JsonlError(f"{where}: field 'groups' has groups {keys}, expected {names} like the first line")
            names = keys
            labels, groups = [f"groups.{k}" for k in keys], [groups[k] for k in keys]
        elif isinstance(groups, list):
            labels = [f"groups[{k}]" for k in range(len(groups))]
        else:
            raise JsonlError(f"{where}: field 'groups' must be a list or an object of >= 2 texts, got {groups!r}")
        if len(groups) < 2:
            raise JsonlError(f"{where}: field 'groups' must hold >= 2 texts, got {len(groups)}")
        for label, g in zip(labels, groups):
            if not isinstance(g, str) or not g.strip():
                raise JsonlError(f"{where}: field '{label}' must be a non-empty string, got {g!r}")
        if out and len(groups) != len(out[0].groups):
            raise JsonlError(f"{where}: field 'groups' has {len(groups)} texts, expected {len(out[0].groups)} "
                             "like the first line")
        out.append(FairTuple(id=_id(obj, where), groups=tuple(groups), neutral=_text(obj, "neutral", where)))
    if not out:
        raise JsonlError(f"{path}: no records")
    return out


def read_labelled(path: str | pathlib.Path, *, num_classes: int = 0) -> list[LabelledText]:
    """Read ``{id, text, label}`` lines; labels must be integers in ``[0, num_classes)`` when it is given."""
    path = pathlib.Path(path)
    out = []
    for lineno, obj in _lines(path):
        where = f"{path}:{lineno}"
        if "label" not in obj:
            raise JsonlError(f"{where}: missing field 'label' (expected an integer class id)")
        label = obj["label"]
        if not isinstance(label, int) or isinstance(label, bool) or label < 0 or (num_classes and label >= num_classes):
            bound = f" in [0, {num_classes})" if num_classes else " >= 0"
            raise JsonlError(f"{where}: field 'label' must be an integer{bound}, got {label!r}")
        out.append(LabelledText(id=_id(obj, where), text=_text(obj, "text", where), label=label))
    if not out:
        raise JsonlError(f"{path}: no records")
    return out
