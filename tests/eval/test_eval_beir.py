"""BEIR reader: the SciFact copy, and bad input (malformed lines, missing docs, empty queries)."""
from __future__ import annotations

import json

import pytest

from gecko_jax.eval.beir import BeirFormatError, load_beir, read_qrels


def write_beir(root, corpus, queries, qrels_lines, split="test"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(c if isinstance(c, str) else json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(q if isinstance(q, str) else json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(l + "\n" for l in qrels_lines))
    return root


CORPUS = [{"_id": "d1", "title": "Cats", "text": "cats purr"}, {"_id": "d2", "title": "", "text": "dogs bark"}]
QUERIES = [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "  "}, {"_id": "q3", "text": "who barks"}]


def test_scifact_copy(shared_data):
    data = load_beir(shared_data / "scifact", "test")
    assert len(data.corpus) == 5183
    assert len(data.queries) == 300 and set(data.queries) == set(data.qrels)
    assert sum(len(j) for j in data.qrels.values()) == 339
    assert data.warnings == {}
    assert data.corpus["4983"]["title"].startswith("Microstructural development")
    assert load_beir(shared_data / "scifact", "train").fingerprint != data.fingerprint
    assert load_beir(shared_data / "scifact", "train").corpus_fingerprint == data.corpus_fingerprint


def test_tolerated_problems_are_counted(tmp_path, caplog):
    root = write_beir(tmp_path / "ds", CORPUS + [{"_id": "d1", "text": "dup"}], QUERIES,
                      ["q1\td1\t1", "q1\tmissing_doc\t1", "q2\td2\t1", "q3\td2\t1", "q9\td1\t1"])
    data = load_beir(root)
    assert data.warnings == {"duplicate_doc_ids": 1, "qrels_doc_not_in_corpus": 1, "empty_queries": 1,
                             "qrels_query_not_in_queries": 1}
    assert set(data.queries) == {"q1", "q3"}
    # The missing document stays in the judgements (it counts in the ideal DCG, as in trec_eval).
    assert data.qrels["q1"] == {"d1": 1, "missing_doc": 1}
    assert "qrels_doc_not_in_corpus" in caplog.text


@pytest.mark.parametrize("corpus_line, message", [
    ("{not json\n", r"corpus.jsonl:2: not valid JSON"),
    ('{"_id": "d3"}\n', r"corpus.jsonl:2: missing field 'text'"),
    ('["d3", "text"]\n', r"corpus.jsonl:2: expected a JSON object"),
    ('{"_id": "d3", "text": 5}\n', r"corpus.jsonl:2: field 'text' must be a string"),
])
def test_malformed_corpus_lines(tmp_path, corpus_line, message):
    root = write_beir(tmp_path / "ds", [CORPUS[0], corpus_line], QUERIES, ["q1\td1\t1"])
    with pytest.raises(BeirFormatError, match=message):
        load_beir(root)


@pytest.mark.parametrize("line, message", [
    ("q1\td1", r"test.tsv:3: expected 3 tab-separated fields"),
    ("q1\td1\thigh", r"test.tsv:3: score must be an integer grade, got 'high'"),
    ("q1\td1\t0.5", r"test.tsv:3: score must be an integer grade"),
])
def test_malformed_qrels(tmp_path, line, message):
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, ["q1\td1\t1", line])
    with pytest.raises(BeirFormatError, match=message):
        load_beir(root)


def test_missing_files_and_nothing_to_evaluate(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        load_beir(tmp_path / "nope")
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, ["q2\td1\t1", "q1\td1\t0"])
    with pytest.raises(BeirFormatError, match="no judged query with a relevant document"):
        load_beir(root)
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        load_beir(root, "dev")


def test_read_qrels_without_header(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("a\tx\t2\na\ty\t0\nb\tx\t1\n")
    assert read_qrels(p) == {"a": {"x": 2, "y": 0}, "b": {"x": 1}}
