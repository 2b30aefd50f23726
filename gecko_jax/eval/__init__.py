"""Evaluation of embedders on local MTEB-style sets: retrieval, STS, classification, clustering, fairness.

Entry points::

    import gecko_jax as gj
    emb = gj.Embedder.from_pretrained("all-MiniLM-L6-v2")
    gj.eval.run_suite(emb, "small", dims=[None, 256], out_dir="runs/eval")   # table + results.json/.md
    gj.eval.evaluate_retrieval(emb, gj.datasets.path("scifact"))              # one task
    model = gj.eval.MTEBModel(emb)                                             # for the `mteb` package

Importing this package pulls in NumPy only; JAX, SciPy, scikit-learn and pytrec_eval load when a function needs them.
"""
from gecko_jax.eval.beir import BeirData, BeirFormatError, load_beir, read_qrels
from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir, model_fingerprint, truncate
from gecko_jax.eval.classification import (evaluate_classification, evaluate_clustering, logreg_scores,
                                           undersample_indices, v_measure_kmeans, v_measure_runs)
from gecko_jax.eval.compare import Difference, difference
from gecko_jax.eval.datasets import (CLASSIFICATION_LOADERS, LabeledText, fixed_split, load_ag_news, load_banking77,
                                     load_mr, load_sst2)
from gecko_jax.eval.fairness import (GENDER_SEAT_TESTS, evaluate_cced, evaluate_crows_pairs, evaluate_seat, load_seat,
                                     read_tuples, rule_based_tuples, seat_effect_size, seat_p_value)
from gecko_jax.eval.metrics import evaluate_run, per_query_metrics, per_query_metrics_pytrec, rank_documents
from gecko_jax.eval.mteb_wrapper import MTEBModel
from gecko_jax.eval.retrieval import evaluate_retrieval, exact_topk, naive_topk, retrieval_run
from gecko_jax.eval.sts import evaluate_sts, read_stsb
from gecko_jax.eval.suites import SUITES, TASKS, run_suite

__all__ = [
    "BeirData", "BeirFormatError", "load_beir", "read_qrels",
    "EmbeddingCache", "default_cache_dir", "model_fingerprint", "truncate",
    "evaluate_classification", "evaluate_clustering", "logreg_scores", "undersample_indices", "v_measure_kmeans",
    "v_measure_runs", "Difference", "difference",
    "CLASSIFICATION_LOADERS", "LabeledText", "fixed_split", "load_ag_news", "load_banking77", "load_mr", "load_sst2",
    "GENDER_SEAT_TESTS", "evaluate_cced", "evaluate_crows_pairs", "evaluate_seat", "load_seat", "read_tuples",
    "rule_based_tuples", "seat_effect_size", "seat_p_value",
    "evaluate_run", "per_query_metrics", "per_query_metrics_pytrec", "rank_documents",
    "MTEBModel",
    "evaluate_retrieval", "exact_topk", "naive_topk", "retrieval_run",
    "evaluate_sts", "read_stsb",
    "SUITES", "TASKS", "run_suite",
]
