"""Dev sets for model selection (gecko_jax.eval.dev): carved from training splits only, disjoint from what the
recipe trains on, encoded with the test tasks' strings, and the max-min selection rule."""
from __future__ import annotations

import pytest

from gecko_jax.eval import dev
from gecko_jax.eval.beir import load_beir
from gecko_jax.eval.datasets import load_banking77


def test_scifact_dev_is_train_qrels_only_and_disjoint(shared_data):
    cfg = dev.DevConfig(scifact_extra_docs=50)
    data = dev.scifact_dev_data(shared_data, cfg)
    train = load_beir(shared_data / "scifact", split="train")
    test = load_beir(shared_data / "scifact", split="test")
    keep, held = dev.scifact_train_queries(train.qrels, cfg.scifact_fraction)
    assert set(data.qrels) == set(held) and not set(held) & set(keep)
    assert not set(data.queries) & set(test.queries)  # never a reported test query
    assert 0.1 < len(held) / len(train.qrels) < 0.3
    relevant = {d for j in data.qrels.values() for d in j}
    assert relevant <= set(data.corpus) and len(data.corpus) <= len(relevant) + 50
    assert dev.scifact_dev_data(shared_data, cfg).corpus_fingerprint == data.corpus_fingerprint


def test_banking77_dev_rows_are_held_out_of_train(shared_data):
    cfg = dev.DevConfig(banking77_per_label=3)
    data = dev.banking77_dev_data(shared_data, cfg)
    b = load_banking77(shared_data)
    assert len(data.test_texts) == 3 * len(b.label_names)
    assert len(data.train_texts) + len(data.test_texts) == len(b.train_texts)
    tr, held = dev.banking77_split(b.train_labels, 3)
    assert [b.train_texts[i] for i in held] == data.test_texts and not set(tr) & set(held)


def test_evaluate_dev_uses_the_test_task_strings(shared_data, bow):
    cfg = dev.DevConfig(scifact_extra_docs=30, banking77_per_label=2, banking77_runs=1)
    out = dev.evaluate_dev(bow, task_prompts="gecko", root=shared_data, cfg=cfg)
    assert set(out) == set(dev.DEV_TASKS) and all(0 <= v <= 100 for v in out.values())
    tasks = {c["task"] for c in bow.calls}
    assert tasks == {"fact checking", "semantic similarity", "classification"}
    bow.calls.clear()
    dev.evaluate_dev(bow, task_prompts=None, root=shared_data, cfg=cfg, tasks=("stsb_dev",))
    assert {c["task"] for c in bow.calls} == {None}
    with pytest.raises(ValueError, match="unknown dev task"):
        dev.evaluate_dev(bow, root=shared_data, tasks=("msmarco_dev",))


def test_select_is_max_min_gain():
    ref = {"a": 50.0, "b": 80.0}
    cands = {"0.5": {"a": 51.0, "b": 80.5}, "1.0": {"a": 55.0, "b": 79.9}, "0.7": {"a": 52.0, "b": 80.5}}
    best, gains = dev.select(cands, ref)
    assert best == "0.7" and gains["1.0"]["b"] == pytest.approx(-0.1)
    tie = {"x": {"a": 51.0, "b": 81.0}, "y": {"a": 51.0, "b": 82.0}}
    assert dev.select(tie, ref)[0] == "y"  # equal worst gain: the larger mean wins
