"""Mixture-source converters (gecko_jax.data.mixture) on small fixtures: unique ids, the symmetric flag, no label
leakage between a query and its hard negative, dev rows kept out, and records the trainer's reader accepts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gecko_jax.data import mixture as mx
from gecko_jax.data.jsonl import read_pairs


def _ids(recs):
    return [r["id"] for r in recs]


# ---- NLI ----------------------------------------------------------------------------------------------------------

def _snli_folder(tmp_path, rows):
    for name, col in (("s1", 0), ("s2", 1), ("labels", 2)):
        (tmp_path / f"{name}.dev").write_text("".join(r[col] + "\n" for r in rows) + "\n")
    return tmp_path


SNLI = [("A dog runs .", "An animal moves .", "entailment"),
        ("A dog runs .", "A cat sleeps .", "contradiction"),
        ("A dog runs .", "The dog is happy .", "neutral"),
        ("Two men cook .", "People make food .", "entailment"),
        ("Two men cook .", "Nobody is cooking .", "contradiction"),
        ("A kid swims .", "A child is in water .", "entailment")]  # no contradiction: dropped


def test_nli_records(tmp_path):
    rows = mx.read_snli_senteval(_snli_folder(tmp_path, SNLI), splits=("dev",))
    assert len(rows) == 6 and rows[0] == ("dev", "A dog runs .", "An animal moves .", "entailment")
    stats = mx.ConversionStats("nli")
    recs = mx.nli_records(rows, stats=stats)
    assert [(r["query"], r["positive"]["text"], r["negative"]["text"]) for r in recs] == [
        ("A dog runs .", "An animal moves .", "A cat sleeps ."),
        ("Two men cook .", "People make food .", "Nobody is cooking .")]
    assert all(r["symmetric"] is True and r["task"] == "semantic similarity" and r["source"] == "nli" for r in recs)
    assert len(set(_ids(recs))) == len(recs)
    assert stats.records == 2 and sum(stats.dropped.values()) == 1
    mx.check_records(recs)


def test_snli_reader_errors_name_file_and_line(tmp_path):
    _snli_folder(tmp_path, SNLI[:2] + [("A b .", "C d .", "maybe")])
    with pytest.raises(mx.MixtureDataError, match=r"labels\.dev:3: field 'label'"):
        mx.read_snli_senteval(tmp_path, splits=("dev",))
    (tmp_path / "s2.dev").write_text("only one line\n")
    with pytest.raises(mx.MixtureDataError, match="aligned"):
        mx.read_snli_senteval(tmp_path, splits=("dev",))


def test_real_snli_records(shared_data):
    rows = mx.read_snli_senteval(shared_data / "snli_senteval")
    recs = mx.nli_records(rows)
    premises = {(split, p) for split, p, _, _ in rows}
    assert 0.8 * len(premises) < len(recs) <= len(premises)  # most premises have both an entailment and a contradiction
    mx.check_records(recs)


# ---- classification ------------------------------------------------------------------------------------------------

def _labelled(n_per=6, labels=("refund", "card", "atm", "pin")):
    texts, ys = [], []
    for k in range(n_per):
        for y in labels:
            texts.append(f"{y} question number {k}")
            ys.append(y)
    return texts, ys


@pytest.mark.parametrize("append_id", [True, False])
def test_classification_records_no_label_leakage(append_id):
    texts, ys = _labelled()
    label_of = dict(zip(texts, ys))
    recs = mx.classification_records(texts, ys, source="toy", seed=3, append_id=append_id)
    assert len(recs) == len(texts) and len(set(_ids(recs))) == len(recs)
    for r in recs:
        assert r["symmetric"] is True and r["task"] == "classification"
        q, p, n = r["query"], r["positive"]["text"], r["negative"]["text"]
        if append_id:  # the same unique id string on x, x+ and x- of one triple, and only there
            tag = q[q.index(" (id "):]
            assert p.endswith(tag) and n.endswith(tag)
            q, p, n = (t[:-len(tag)] for t in (q, p, n))
        assert label_of[p] == label_of[q] and p != q  # positive: same label, another text
        assert label_of[n] != label_of[q]  # hard negative: another label (no leakage)
        assert r["positive"]["id"] == f"toy:label:{label_of[q]}"  # mask id = label
        assert r["negative"]["id"] == f"toy:label:{label_of[n]}"
    if append_id:
        tags = [r["query"][r["query"].index(" (id "):] for r in recs]
        assert len(set(tags)) == len(tags)
    mx.check_records(recs)
    again = mx.classification_records(texts, ys, source="toy", seed=3, append_id=append_id)
    assert again == recs  # deterministic in the seed
    other = mx.classification_records(texts, ys, source="toy", seed=4, append_id=append_id)
    assert other != recs


def test_classification_negative_labels_cover_all_other_labels():
    texts, ys = _labelled(n_per=40)
    recs = mx.classification_records(texts, ys, source="toy", append_id=False)
    by = {}
    for r in recs:
        by.setdefault(r["positive"]["id"], set()).add(r["negative"]["id"])
    for pos, negs in by.items():
        assert pos not in negs and len(negs) == 3  # uniform over the other labels: all of them appear


def test_classification_limit_and_singletons():
    texts, ys = _labelled()
    texts, ys = texts + ["lonely text"], ys + ["lonely"]
    stats = mx.ConversionStats("toy")
    recs = mx.classification_records(texts, ys, source="toy", stats=stats)
    assert len(recs) == len(texts) - 1 and stats.dropped == {"no other text with the same label": 1}
    assert len(mx.classification_records(texts, ys, source="toy", limit=5)) == 5


# ---- STS, retrieval, title-body, FRet ---------------------------------------------------------------------------------

def test_sts_records_pairs_share_mask_id():
    recs = mx.sts_records(["a b", "c d", "e f"], ["a b c", "x y", "e f g"], [4.5, 1.0, 4.0])
    assert [(r["query"], r["positive"]["text"]) for r in recs] == [("a b", "a b c"), ("a b c", "a b"),
                                                                   ("e f", "e f g"), ("e f g", "e f")]
    assert recs[0]["positive"]["id"] == recs[1]["positive"]["id"] != recs[2]["positive"]["id"]
    assert all(r["symmetric"] and "negative" not in r for r in recs)
    assert len(set(_ids(recs))) == 4
    with pytest.raises(ValueError, match="differ in length"):
        mx.sts_records(["a"], [], [1.0])


CORPUS = {"d1": {"title": "T1", "text": "one " * 30}, "d2": {"title": "", "text": "two"},
          "d3": {"title": "T3", "text": "three"}, "d4": {"title": "T4", "text": "four"}}


def test_retrieval_records_negatives_never_relevant():
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}}
    negs = {"q1": ["d3", "d1", "d4"], "q2": ["d2", "d1"]}
    recs = mx.retrieval_records({"q1": "claim one", "q2": "claim two"}, CORPUS, qrels, source="sf",
                                task="fact checking", negatives=negs, max_chars=20)
    assert [(r["query"], r["positive"]["id"], r["negative"]["id"]) for r in recs] == [
        ("claim one", "d1", "d4"), ("claim one", "d3", "d4"), ("claim two", "d2", "d1")]
    assert len(recs[0]["positive"]["text"]) <= 20 and recs[0]["positive"]["title"] == "T1"
    assert all(r["symmetric"] is False for r in recs)
    mx.check_records(recs)


def test_mine_negatives_skips_top_and_relevant():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(40, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    q = docs[:2] + 0.01
    ids = [f"d{i}" for i in range(40)]
    qrels = {"q0": {"d0": 1}, "q1": {"d1": 1}}
    out = mx.mine_negatives(q, docs, ["q0", "q1"], ids, qrels, skip=3, depth=10, k=2)
    for r, qid in enumerate(["q0", "q1"]):
        order = [ids[j] for j in np.argsort(-(docs @ q[r]))]
        ranked = [d for d in order if d not in qrels[qid]]
        assert len(out[qid]) == 2 and set(out[qid]) <= set(ranked[3:10])


def test_title_body_records():
    recs = mx.title_body_records(CORPUS, max_chars=None)
    assert [(r["query"], r["positive"]["id"]) for r in recs] == [("T1", "d1"), ("T3", "d3"), ("T4", "d4")]
    assert all(r["task"] == "search result" and "negative" not in r for r in recs)


def test_fret_records_and_task_groups():
    rows = [{"id": i, "task": t, "query": f"q{i}", "positive": {"id": f"p{i}", "text": "x"},
             "negative": {"id": f"n{i}", "text": "y"}, "candidates": []}
            for i, t in enumerate(["qa"] * 5 + ["fact"] * 4 + ["rare"] * 1 + ["odd"] * 1)]
    recs = mx.fret_records(rows)
    assert all(r["source"] == "fret" and r["symmetric"] is False and "candidates" not in r for r in recs)
    groups = mx.group_by_task(recs, min_size=4)
    assert {k: len(v) for k, v in groups.items()} == {"qa": 5, "fact": 4, "other tasks": 2} or \
        {k: len(v) for k, v in groups.items()} == {"qa": 7, "fact": 4}
    assert sum(len(v) for v in groups.values()) == len(recs)


# ---- checks, files, dev splits ---------------------------------------------------------------------------------------

def test_check_records_rejects_duplicates_leakage_and_bad_flags():
    good = mx.sts_records(["a"], ["b"], [5.0], both_directions=False)
    with pytest.raises(mx.MixtureDataError, match="duplicate id"):
        mx.check_records(good + good)
    bad = [dict(good[0], negative={"id": good[0]["positive"]["id"], "text": "c"})]
    with pytest.raises(mx.MixtureDataError, match="negative.id' equals 'positive.id"):
        mx.check_records(bad)
    with pytest.raises(mx.MixtureDataError, match="'symmetric' must be true or false"):
        mx.check_records([dict(good[0], symmetric="yes")])


def test_write_records_roundtrip_through_trainer_reader(tmp_path):
    texts, ys = _labelled()
    recs = mx.classification_records(texts, ys, source="toy")
    path = mx.write_records(recs, tmp_path / "toy.jsonl")
    pairs = read_pairs(path, min_negatives=1)
    assert [p.id for p in pairs] == _ids(recs)
    assert all(p.symmetric is True and p.source == "toy" and p.positive_id.startswith("toy:label:") for p in pairs)
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.jsonl").write_text(json.dumps(dict(recs[0], symmetric=1)) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: field 'symmetric'"):
        read_pairs(tmp_path / "bad.jsonl")


def test_dev_splits_are_fixed_and_disjoint():
    keys = [str(i) for i in range(1000)]
    tr, dev = mx.dev_split(keys, 0.2, salt="x")
    assert set(tr).isdisjoint(dev) and len(tr) + len(dev) == 1000 and 150 < len(dev) < 250
    tr2, dev2 = mx.dev_split(list(reversed(keys[:500])), 0.2, salt="x")  # membership depends on the key only
    assert set(dev2) == set(dev) & set(keys[:500])
    labels = [i % 7 for i in range(70)]
    tr, dev = mx.stratified_dev_split(labels, 3)
    assert len(dev) == 21 and set(tr).isdisjoint(dev) and sorted(tr + dev) == list(range(70))
    assert mx.stratified_dev_split(labels, 3) == (tr, dev)


def test_user_file_readers_name_file_line_and_field(tmp_path):
    good = tmp_path / "labelled.jsonl"
    good.write_text('{"text": "refund please", "label": "refund"}\n{"text": "lost card", "label": 3}\n')
    assert mx.read_labelled_texts(good) == (["refund please", "lost card"], ["refund", "3"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": "", "label": "b"}\n')
    with pytest.raises(mx.MixtureDataError, match=r"bad\.jsonl:2: field 'text'"):
        mx.read_labelled_texts(bad)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "title": "T", "text": "body"}\n{"title": "no id", "text": "x"}\n')
    with pytest.raises(mx.MixtureDataError, match=r"corpus\.jsonl:2: field '_id'"):
        mx.read_beir_corpus(corpus)
    corpus.write_text('{"_id": 7, "text": "body"}\n')
    assert mx.read_beir_corpus(corpus) == {"7": {"title": "", "text": "body"}}
