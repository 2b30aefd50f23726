"""Ranking metrics for retrieval: nDCG@k, Recall@k, MRR@k with trec_eval's conventions.

The scores reported in the tables come from ``pytrec_eval`` (the Python binding of NIST's ``trec_eval``, the library
BEIR and MTEB use) when it is installed; the pure-NumPy implementation below follows the same conventions and is
tested equal to it, so results are identical with or without the library:

* ranking: documents sorted by score descending; **ties broken by document id descending** (byte-wise string order),
  which is what ``trec_eval`` does (``form_res_rels.c`` sorts by ``sim`` then by ``docno`` in reverse);
* relevance: a document is relevant when its qrels grade is ``> 0``; unjudged documents have grade 0;
* nDCG@k: linear gains ``g = grade`` (trec_eval's ``ndcg_cut``, not the ``2^g - 1`` variant), discount
  ``1 / log2(rank + 1)``, ideal DCG from the sorted positive grades of **all** judged documents of the query;
* Recall@k: relevant documents in the top k / all relevant documents of the query;
* MRR@k: ``1 / rank`` of the first relevant document within the top k, else 0 (MTEB's ``MRR@k``);
* averages: the mean over the queries of ``qrels`` that have at least one relevant document; a query absent from the
  run scores 0 (``trec_eval -c``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def rank_documents(doc_scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, ties by document id descending.

    Args:
      doc_scores: mapping doc id -> score for one query.

    Returns:
      The doc ids, best first.
    """
    # Two stable sorts: secondary key first (doc id descending), then primary (score descending).
    ids = sorted(doc_scores, reverse=True)
    return sorted(ids, key=lambda d: -float(doc_scores[d]))


def _parse_metric(name: str) -> tuple[str, int]:
    base, sep, k = name.lower().partition("@")
    if not sep or base not in ("ndcg", "recall", "mrr") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric must look like 'ndcg@10', 'recall@100' or 'mrr@10', got {name!r}")
    return base, int(k)


def per_query_metrics(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    r"""Per-query ranking metrics, pure Python, trec_eval conventions.

    .. math::
      \mathrm{DCG@k} = \sum_{r=1}^{k} \frac{g_{d_r}}{\log_2(r+1)},\quad
      \mathrm{nDCG@k} = \mathrm{DCG@k} / \mathrm{IDCG@k},\quad
      \mathrm{R@k} = |\mathrm{rel} \cap \mathrm{top}_k| / |\mathrm{rel}|,\quad
      \mathrm{MRR@k} = 1 / \min\{r \le k : g_{d_r} > 0\}

    Args:
      qrels: query id -> {doc id -> integer grade}.
      run: query id -> {doc id -> score}; any number of documents per query.
      metrics: names such as ``"ndcg@10"``, ``"recall@100"``, ``"mrr@10"``.

    Returns:
      query id -> {metric name -> value in [0, 1]} for every query of ``qrels`` with a relevant document.

    Example:
      >>> per_query_metrics({"q": {"a": 2, "b": 1}}, {"q": {"b": 0.9, "a": 0.5}}, ["mrr@10"])
      {'q': {'mrr@10': 1.0}}
    """
    parsed = [(m, *_parse_metric(m)) for m in metrics]
    out: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        grades = {d: int(g) for d, g in judged.items()}
        relevant = {d for d, g in grades.items() if g > 0}
        if not relevant:
            continue
        ranking = rank_documents(run.get(qid, {}))
        ideal = sorted((g for g in grades.values() if g > 0), reverse=True)
        row = {}
        for name, base, k in parsed:
            top = ranking[:k]
            if base == "ndcg":
                dcg = sum(grades.get(d, 0) / math.log2(r + 2) for r, d in enumerate(top) if grades.get(d, 0) > 0)
                idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal[:k]))
                row[name] = dcg / idcg
            elif base == "recall":
                row[name] = sum(d in relevant for d in top) / len(relevant)
            else:
                row[name] = next((1.0 / (r + 1) for r, d in enumerate(top) if d in relevant), 0.0)
        out[qid] = row
    return out


def per_query_metrics_pytrec(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """The same as :func:`per_query_metrics`, computed by ``pytrec_eval`` (trec_eval).

    MRR@k is trec_eval's ``recip_rank`` on the run cut to its top k (trec_eval has no cut-off for it).

    Raises:
      ImportError: when ``pytrec_eval`` (package ``pytrec_eval-terrier``) is not installed.
    """
    import pytrec_eval

    parsed = [(m, *_parse_metric(m)) for m in metrics]
    qrels = {q: {d: int(g) for d, g in j.items()} for q, j in qrels.items() if any(int(g) > 0 for g in j.values())}
    full_run = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels}
    measures = set()
    for _, base, k in parsed:
        measures.add(f"ndcg_cut.{k}" if base == "ndcg" else f"recall.{k}" if base == "recall" else "recip_rank")
    res = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(full_run)
    out = {q: {} for q in qrels}
    for name, base, k in parsed:
        if base == "mrr":
            cut = {q: {d: full_run[q][d] for d in rank_documents(full_run[q])[:k]} for q in qrels}
            rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
            for q in qrels:
                out[q][name] = rr.get(q, {}).get("recip_rank", 0.0)
        else:
            key = f"ndcg_cut_{k}" if base == "ndcg" else f"recall_{k}"
            for q in qrels:
                out[q][name] = res.get(q, {}).get(key, 0.0)
    return out


def have_pytrec_eval() -> bool:
    try:
        import pytrec_eval  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_run(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS, *,
                 backend: str = "auto") -> dict[str, float]:
    """Mean ranking metrics over the queries of ``qrels`` (see module docstring for the conventions).

    Args:
      qrels: query id -> {doc id -> grade}.
      run: query id -> {doc id -> score}.
      metrics: metric names, e.g. ``("ndcg@10", "recall@100", "mrr@10")``.
      backend: ``"pytrec_eval"``, ``"python"`` or ``"auto"`` (pytrec_eval when installed).

    Returns:
      metric name -> mean value in [0, 1], plus ``"num_queries"``.
    """
    metrics = tuple(metrics)
    if backend not in ("auto", "pytrec_eval", "python"):
        raise ValueError(f"backend must be 'auto', 'pytrec_eval' or 'python', got {backend!r}")
    use_lib = backend == "pytrec_eval" or (backend == "auto" and have_pytrec_eval())
    per_q = per_query_metrics_pytrec(qrels, run, metrics) if use_lib else per_query_metrics(qrels, run, metrics)
    if not per_q:
        raise ValueError("qrels contain no query with a relevant document (grade > 0): nothing to evaluate")
    out = {m: sum(row[m] for row in per_q.values()) / len(per_q) for m in metrics}
    out["num_queries"] = len(per_q)
    return out
