"""Ranking metrics: hand-computed toy example (graded qrels, ties), and parity with pytrec_eval (trec_eval)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gecko_jax.eval.metrics import (evaluate_run, have_pytrec_eval, per_query_metrics, per_query_metrics_pytrec,
                                    rank_documents)

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d9": 1},  # d9 relevant but never retrieved
    "q2": {"d5": 1},                            # query missing from the run -> scores 0
    "q3": {"d6": 0},                            # no relevant document -> not evaluated
}
RUN = {"q1": {"d3": 0.9, "d1": 0.8, "d2": 0.8, "d4": 0.5}, "q3": {"d6": 1.0}}
BACKENDS = ["python"] + (["pytrec_eval"] if have_pytrec_eval() else [])


def test_tie_order_is_doc_id_descending():
    # trec_eval breaks score ties by document id in reverse string order ("d2" > "d10" > "d1").
    assert rank_documents({"d1": 0.5, "d2": 0.5, "d10": 0.5, "x": 0.9}) == ["x", "d2", "d10", "d1"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_toy(backend):
    # q1 ranking with the tie broken as trec_eval does: d3 (0), d2 (1), d1 (2), d4 (unjudged).
    dcg3 = 0 + 1 / math.log2(3) + 2 / math.log2(4)
    idcg3 = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # ideal grades [2, 1, 1] incl. unretrieved d9
    dcg10 = dcg3
    idcg10 = idcg3
    expected_q1 = {"ndcg@3": dcg3 / idcg3, "ndcg@10": dcg10 / idcg10, "recall@2": 1 / 3, "recall@100": 2 / 3,
                   "mrr@10": 1 / 2, "mrr@1": 0.0}
    names = list(expected_q1)
    per_q = (per_query_metrics if backend == "python" else per_query_metrics_pytrec)(QRELS, RUN, names)
    assert set(per_q) == {"q1", "q2"}
    for m, v in expected_q1.items():
        assert per_q["q1"][m] == pytest.approx(v, abs=1e-12), m
        assert per_q["q2"][m] == 0.0
    mean = evaluate_run(QRELS, RUN, names, backend=backend)
    assert mean["num_queries"] == 2
    assert mean["ndcg@3"] == pytest.approx(dcg3 / idcg3 / 2, abs=1e-12)
    assert dcg3 / idcg3 == pytest.approx(0.5209, abs=1e-4)  # the number worked out on paper


@pytest.mark.parametrize("backend", BACKENDS)
def test_breaking_the_tie_changes_the_score(backend):
    run = {"q1": {"d3": 0.9, "d1": 0.8, "d2": 0.79, "d4": 0.5}}
    per_q = (per_query_metrics if backend == "python" else per_query_metrics_pytrec)(QRELS, run, ["ndcg@3"])
    dcg3 = 2 / math.log2(3) + 1 / math.log2(4)
    idcg3 = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert per_q["q1"]["ndcg@3"] == pytest.approx(dcg3 / idcg3, abs=1e-12)


@pytest.mark.skipif(not have_pytrec_eval(), reason="pytrec_eval-terrier not installed")
def test_python_matches_pytrec_eval_on_random_runs_with_ties():
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(40)]  # "d1" < "d10" < "d2": string order matters for ties
    qrels, run = {}, {}
    for q in range(60):
        judged = rng.choice(docs, size=rng.integers(1, 8), replace=False)
        qrels[f"q{q}"] = {d: int(rng.integers(0, 4)) for d in judged}
        retrieved = rng.choice(docs, size=rng.integers(0, 30), replace=False)
        run[f"q{q}"] = {d: float(np.round(rng.random(), 1)) for d in retrieved}  # one decimal: many ties
    metrics = ["ndcg@1", "ndcg@5", "ndcg@10", "recall@5", "recall@100", "mrr@3", "mrr@10"]
    a = per_query_metrics(qrels, run, metrics)
    b = per_query_metrics_pytrec(qrels, run, metrics)
    assert a.keys() == b.keys() and len(a) > 40
    for q in a:
        for m in metrics:
            assert a[q][m] == pytest.approx(b[q][m], abs=1e-12), (q, m)


def test_bad_metric_names_and_empty_qrels():
    with pytest.raises(ValueError, match="ndcg@10"):
        per_query_metrics(QRELS, RUN, ["ndcg10"])
    with pytest.raises(ValueError, match="ndcg@10"):
        per_query_metrics(QRELS, RUN, ["map@10"])
    with pytest.raises(ValueError, match="no query with a relevant document"):
        evaluate_run({"q": {"d": 0}}, {"q": {"d": 1.0}}, ["ndcg@10"])
    with pytest.raises(ValueError, match="backend"):
        evaluate_run(QRELS, RUN, ["ndcg@10"], backend="ranx")
