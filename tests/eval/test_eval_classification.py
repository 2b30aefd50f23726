"""Local labelled sets, MTEB's undersampling, logistic-regression and k-means protocols."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from gecko_jax.eval.classification import (evaluate_classification, evaluate_clustering, undersample_indices,
                                           v_measure_kmeans)
from gecko_jax.eval.datasets import LabeledText, fixed_split, load_ag_news, load_banking77, load_mr, load_sst2


def test_local_sets(shared_data):
    b = load_banking77(shared_data)
    assert (len(b.train_texts), len(b.test_texts), len(b.label_names)) == (10003, 3080, 77)
    s = load_sst2(shared_data)
    assert (len(s.train_texts), len(s.test_texts)) == (67349, 1821) and set(s.test_labels) == {0, 1}
    m = load_mr(shared_data)
    assert len(m.test_texts) == 2132 and len(m.train_texts) == 10662 - 2132
    assert Counter(m.test_labels.tolist()) == {0: 1066, 1: 1066}
    a = load_ag_news(shared_data)
    assert len(a.test_texts) == 1900 and Counter(a.test_labels.tolist()) == {0: 475, 1: 475, 2: 475, 3: 475}
    assert a.label_names == ["World", "Sports", "Business", "Sci/Tech"] and "\\" not in "".join(a.test_texts)
    assert load_mr(shared_data).test_texts == m.test_texts  # the split is fixed


def test_fixed_split_is_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    tr, te = fixed_split(labels, 0.2)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 60
    assert Counter(labels[te].tolist()) == {0: 2, 1: 4, 2: 6}
    with pytest.raises(ValueError, match="test_fraction"):
        fixed_split(labels, 1.0)


def mteb_undersample_reference(labels, samples_per_label, n_experiments, seed):
    """MTEB 1.x AbsTaskClassification._undersample_data, transcribed loop for loop."""
    idxs, runs = None, []
    for _ in range(n_experiments):
        if idxs is None:
            idxs = np.arange(len(labels))
        np.random.default_rng(seed).shuffle(idxs)
        counter, chosen = defaultdict(int), []
        for i in idxs:
            if counter[labels[i]] < samples_per_label:
                chosen.append(i)
                counter[labels[i]] += 1
        runs.append(chosen)
    return runs


def test_undersampling_matches_mteb():
    labels = np.random.default_rng(1).integers(0, 5, size=200)
    labels[:3] = 7  # a rare class with fewer than samples_per_label examples
    ours = undersample_indices(labels, 8, 10, 42)
    ref = mteb_undersample_reference(labels, 8, 10, 42)
    assert [r.tolist() for r in ours] == [list(map(int, r)) for r in ref]
    assert Counter(labels[ours[0]].tolist()) == {0: 8, 1: 8, 2: 8, 3: 8, 4: 8, 7: 3}
    assert ours[0].tolist() != ours[1].tolist()  # each experiment draws a new sample


def test_classification_and_clustering_on_separable_data(bow):
    words = {0: "apple banana cherry", 1: "engine wheel brake", 2: "violin cello flute"}
    rng = np.random.default_rng(0)
    def make(n):
        y = rng.integers(0, 3, size=n)
        return [" ".join(rng.permutation(words[int(c)].split())[:2]) for c in y], y
    trx, try_ = make(90)
    tex, tey = make(30)
    data = LabeledText("toy", trx, try_, tex, tey, ["fruit", "car", "music"], "toy-fp")
    res = evaluate_classification(bow, data, n_experiments=3, samples_per_label=4, dims=[None, 32])
    assert res[None]["metrics"]["accuracy"] == pytest.approx(100.0)
    assert res[None]["metrics"]["f1"] == pytest.approx(100.0)
    assert res[None]["num_train_per_run"] == 12
    assert len(res[32]["runs"]) == 3 and np.mean(res[32]["runs"]) == pytest.approx(res[32]["main_score"])
    clu = evaluate_clustering(bow, data, n_runs=2)
    assert clu["main_score"] > 80.0 and clu["num_clusters"] == 3
    assert len(clu["runs"]) == 2 and np.mean(clu["runs"]) == pytest.approx(clu["main_score"])
    # Random labels carry no information: accuracy near chance, V-measure near 0.
    shuffled = LabeledText("toy", trx, rng.permutation(try_), tex, rng.permutation(tey), data.label_names, "toy2")
    assert evaluate_clustering(bow, shuffled, n_runs=2)["main_score"] < 30.0


def test_v_measure_needs_two_labels_and_unknown_names(bow):
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        v_measure_kmeans(np.eye(3, dtype=np.float32), np.zeros(3, int))
    with pytest.raises(ValueError, match="unknown classification set 'imdb'"):
        evaluate_classification(bow, "imdb")
