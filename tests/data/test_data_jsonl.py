"""JSONL readers (file:line errors) and deterministic, resumable mixture batching."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gecko_jax.data.batching import (ArraySource, BatchStream, PairSource, epoch_batches, process_slice,
                                     stable_id, stream_indices)
from gecko_jax.data.jsonl import JsonlError, read_fair_tuples, read_labelled, read_pairs


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"id": "a", "task": "qa", "query": "q a", "positive": "p a", "negative": ["n1", "n2"]})


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"id": "b", "query": "q"}), "missing field 'positive'"),
    (json.dumps({"query": "q", "positive": "p"}), "missing field 'id'"),
    (json.dumps({"id": "b", "query": "  ", "positive": "p"}), "field 'query' is empty"),
    (json.dumps({"id": "b", "query": "q", "positive": 3}), "field 'positive' must be a string"),
    (json.dumps({"id": "b", "query": "q", "positive": "p", "negative": ["", "x"]}), "field 'negative[0]'"),
    (json.dumps(["a", "list"]), "expected a JSON object"),
])
def test_read_pairs_errors_name_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path / "pairs.jsonl", [GOOD, "", line])
    with pytest.raises(JsonlError) as e:
        read_pairs(path)
    assert str(e.value).startswith(f"{path}:3:"), str(e.value)
    assert message in str(e.value)


def test_read_pairs_fields_and_min_negatives(tmp_path):
    path = _write(tmp_path / "p.jsonl", [GOOD, json.dumps({"id": 7, "query": "q", "positive": "p", "negative": "n"})])
    recs = read_pairs(path)
    assert [r.id for r in recs] == ["a", "7"]
    assert recs[0].negatives == ("n1", "n2") and recs[1].negatives == ("n",) and recs[0].task == "qa"
    with pytest.raises(JsonlError, match=r"p\.jsonl:2: field 'negative' has 1 hard negative\(s\), expected at least 2"):
        read_pairs(path, min_negatives=2)


def test_other_readers(tmp_path):
    fair = _write(tmp_path / "f.jsonl", [json.dumps({"id": 1, "groups": ["he", "she"], "neutral": "they"}),
                                          json.dumps({"id": 2, "groups": ["he", "she", "x"], "neutral": "they"})])
    with pytest.raises(JsonlError, match=r"f\.jsonl:2: field 'groups' has 3 texts, expected 2"):
        read_fair_tuples(fair)
    lab = _write(tmp_path / "l.jsonl", [json.dumps({"id": 1, "text": "t", "label": 1}),
                                         json.dumps({"id": 2, "text": "t", "label": 5})])
    assert read_labelled(lab)[1].label == 5
    with pytest.raises(JsonlError, match=r"l\.jsonl:2: field 'label' must be an integer in \[0, 3\)"):
        read_labelled(lab, num_classes=3)
    with pytest.raises(JsonlError, match="no records"):
        read_pairs(_write(tmp_path / "empty.jsonl", [""]))


def test_stream_is_a_permutation_per_epoch_and_resumable():
    n = 10
    first = stream_indices(n, seed=1, source=0, start=0, count=30)
    for e in range(3):
        assert sorted(first[e * n:(e + 1) * n]) == list(range(n))
    assert not np.array_equal(first[:n], first[n:2 * n])  # a fresh order each epoch
    # any window equals the same window of a longer read: the order depends on (seed, position) only
    np.testing.assert_array_equal(stream_indices(n, 1, 0, 7, 13), first[7:20])
    assert not np.array_equal(stream_indices(n, 2, 0, 0, 10), first[:10])


def test_mixture_weights_and_resume_position():
    a = ArraySource({"x": np.arange(100)})
    b = ArraySource({"x": np.arange(1000, 1050)})
    stream = BatchStream([a, b], 4, weights=[3, 1], seed=5)
    picks = np.array([stream.locate(i)[0] for i in range(4000)])
    assert abs(np.mean(picks == 0) - 0.75) < 0.03
    # every batch comes from one source; a fresh stream (a resumed run) reproduces batch i from i alone
    fresh = BatchStream([a, b], 4, weights=[3, 1], seed=5)
    for i in (0, 1, 5, 1023, 1024, 2500):
        x = stream.batch(i)["x"]
        assert (x < 1000).all() or (x >= 1000).all()
        np.testing.assert_array_equal(fresh.batch(i)["x"], x)
    # consecutive batches of one source continue its epoch stream without repeats inside an epoch
    seen = np.concatenate([stream.batch(i)["x"] for i in range(200) if stream.locate(i)[0] == 1])
    assert len(set(seen[:50].tolist())) == 50


def test_process_slices_assemble_the_global_batch():
    src = ArraySource({"x": np.arange(64).reshape(32, 2), "y": np.arange(32)})
    stream = BatchStream([src], 8, seed=0)
    full = stream.batch(3)
    parts = [stream.batch(3, process_index=p, process_count=4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), full["x"])
    neg = {"neg": np.arange(16)}  # a [B*H] leaf (H=2) keeps whole records per process
    assert process_slice(neg, 8, 1, 4)["neg"].tolist() == [4, 5, 6, 7]


def test_epoch_batches_pad_and_drop():
    padded = epoch_batches(10, 4, remainder="pad")
    assert [len(i) for i, _ in padded] == [4, 4, 4]
    assert padded[-1][1].tolist() == [True, True, False, False]
    assert padded[-1][0][:2].tolist() == [8, 9]
    assert len(epoch_batches(10, 4, remainder="drop")) == 2
    with pytest.raises(ValueError, match="remainder"):
        epoch_batches(10, 4, remainder="wrap")


def test_pair_source_formats_and_ids(tmp_path):
    recs = read_pairs(_write(tmp_path / "p.jsonl", [
        json.dumps({"id": 1, "task": "fact checking", "query": "is it", "positive": "yes", "positive_title": "T",
                    "negative": "no"}),
        json.dumps({"id": 2, "query": "is it", "positive": "yes", "negative": "maybe"})]))
    seen = []

    def tokenize(texts):
        seen.append(list(texts))
        return {"input_ids": np.ones((len(texts), 4), np.int32)}

    batch = PairSource(recs, tokenize, hard_negatives=1, task="default task").make_batch(np.array([0, 1]))
    assert seen[0] == ["task: fact checking | query: is it", "task: default task | query: is it"]
    assert seen[1] == ["title: T | text: yes", "title: none | text: yes"]
    assert seen[2] == ["title: none | text: no", "title: none | text: maybe"]
    assert batch["ids"][0] == batch["ids"][1] == stable_id("yes")  # same positive -> same id (masked)
    assert batch["negative_ids"].shape == (2, 1) and batch["where"].all()
    plain = PairSource(recs, tokenize, gecko_format=False).make_batch(np.array([0]))
    assert seen[-2] == ["is it"] and seen[-1] == ["T yes"] and "negative" not in plain


def test_data_gen_object_forms(tmp_path):
    """FRet records carry passages as {id, title, text}; fair tuples carry groups as {male, female}."""
    fret = _write(tmp_path / "fret.jsonl", [
        json.dumps({"id": "s1", "task": "qa", "query": "q1", "positive": {"id": "d1", "title": "T1", "text": "x"},
                    "negative": {"id": "d2", "title": "", "text": "y"}}),
        json.dumps({"id": "s2", "task": "qa", "query": "q2", "positive": {"id": "d1", "title": "T1", "text": "x2"},
                    "negative": {"id": "d1", "text": "z"}})])
    recs = read_pairs(fret, min_negatives=1)
    assert recs[0].positive == "x" and recs[0].positive_title == "T1" and recs[0].positive_id == "d1"
    assert recs[0].negatives == ("y",) and recs[0].negative_ids == ("d2",)
    batch = PairSource(recs, lambda t: {"input_ids": np.zeros((len(t), 2), np.int32)}, hard_negatives=1
                       ).make_batch(np.array([0, 1]))
    assert batch["ids"][0] == batch["ids"][1] == stable_id("d1")  # masked by passage id, not text
    assert batch["negative_ids"][1, 0] == stable_id("d1")  # the loss drops this false negative
    bad = _write(tmp_path / "bad.jsonl", [json.dumps({"id": 1, "query": "q", "positive": {"title": "t"}})])
    with pytest.raises(JsonlError, match=r"bad\.jsonl:1: field 'positive': missing field 'text'"):
        read_pairs(bad)
    fair = _write(tmp_path / "fair.jsonl", [
        json.dumps({"id": 1, "neutral": "they", "groups": {"male": "he", "female": "she"}}),
        json.dumps({"id": 2, "neutral": "they", "groups": {"male": "he", "other": "x"}})])
    with pytest.raises(JsonlError, match=r"fair\.jsonl:2: field 'groups' has groups \['male', 'other'\]"):
        read_fair_tuples(fair)
    one = _write(tmp_path / "f1.jsonl", [json.dumps({"id": 1, "neutral": "they",
                                                      "groups": {"male": "he", "female": "she"}})])
    assert read_fair_tuples(one)[0].groups == ("she", "he")  # sorted group names: female, male
