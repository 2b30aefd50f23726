"""LLM reranking ablation (Gecko App. A direction): rerank a dense retriever's top-k by QL, RC and their RRF.

For a fixed subset of SciFact **test** queries, all-MiniLM-L6-v2 (raw text, as it was trained) retrieves the top-k
over the whole corpus; the same LLM as FRet (``data_gen``: by default the embedded Gemma 3 270M) then scores every
(query, candidate) pair with

* query likelihood :math:`QL(q,p) = \\log P(q \\mid p, P_{QL})` and
* relevance classification :math:`RC(q,p) = \\log P(\\text{Yes} \\mid q, p, P_{RC})`,

with exactly FRet's prompts (``data_gen.prompts``), and we report nDCG@10 of four orderings of the same top-k:
retriever only, QL alone, RC alone and the fusion :math:`R = 1/r_{QL} + 1/r_{RC}` (ties by retrieval rank, as in
``data_gen.fret.fuse_and_select``), plus the oracle ordering of the top-k (the ceiling any reranker can reach).

Every LLM call is cached (``data_gen.CachedLLM`` + SQLite in ``--out``), so an interrupted run resumes for free.

Example (the run in experiments/gecko/README.md; ~500 Gemma calls, tens of minutes on 2 CPU cores)::

    nice -n 10 .venv/bin/python experiments/gecko/rerank.py --out runs/gecko_rerank --queries 25 --top-k 10
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys
import time
from typing import Sequence


METHODS = ("retriever", "QL", "RC", "RRF(QL,RC)", "oracle")
RANDOM = "random order (mean of 200 shuffles)"


def _log(msg: str) -> None:
    print(f"[rerank {time.strftime('%H:%M:%S', time.gmtime())}Z] {msg}", flush=True)


def select_queries(qrels: dict, n: int, seed: int = 0) -> list[str]:
    """``n`` judged query ids drawn uniformly without replacement (seeded), in qrels order; all when ``n`` <= 0."""
    ids = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if n <= 0 or n >= len(ids):
        return ids
    keep = set(random.Random(seed).sample(ids, n))
    return [q for q in ids if q in keep]


def orderings(cands: Sequence[dict], qrels_q: dict | None = None) -> dict[str, list[str]]:
    """Candidate ids ordered by each method.

    Args:
      cands: dicts with ``id``, ``retrieval_rank`` (1-based), ``ql``, ``rc`` (log-probabilities).
      qrels_q: doc id -> grade for this query (for the oracle ordering; omitted when None).

    Returns:
      method name -> ids best first. QL / RC ties are broken by retrieval rank, the RRF ordering is
      ``data_gen.fret.fuse_and_select``'s (positive = its first element).
    """
    from data_gen.fret import fuse_and_select, ranks_descending

    rr = [c["retrieval_rank"] for c in cands]
    by_rank = lambda ranks: [cands[i]["id"] for i in sorted(range(len(cands)), key=lambda i: ranks[i])]  # noqa: E731
    out = {"retriever": by_rank(rr),
           "QL": by_rank(ranks_descending([c["ql"] for c in cands], rr)),
           "RC": by_rank(ranks_descending([c["rc"] for c in cands], rr))}
    fused = fuse_and_select(cands, negative="lowest", rng_key="")
    out["RRF(QL,RC)"] = [c["id"] for c in fused["candidates"]]
    if qrels_q is not None:
        out["oracle"] = by_rank(ranks_descending([float(qrels_q.get(c["id"], 0)) for c in cands], rr))
    return out


def random_baseline(records: Sequence[dict], qrels: dict, n: int = 200, seed: int = 0) -> dict:
    """nDCG@10 / MRR@10 (x100) of uniformly shuffled top-k lists, averaged over ``n`` seeded shuffles (the level a
    reranker with no signal reaches)."""
    from gecko_jax.eval.metrics import evaluate_run

    rng = random.Random(seed)
    sub = {r["qid"]: qrels[r["qid"]] for r in records}
    acc = {"ndcg@10": 0.0, "mrr@10": 0.0}
    for _ in range(n):
        run = {}
        for r in records:
            order = [c["id"] for c in r["candidates"]]
            rng.shuffle(order)
            run[r["qid"]] = as_run(order)
        s = evaluate_run(sub, run, ("ndcg@10", "mrr@10"), backend="python")
        for k in acc:
            acc[k] += 100 * s[k] / n
    return {**acc, "num_queries": len(records), "shuffles": n}


def as_run(order: Sequence[str]) -> dict[str, float]:
    """An ordering as a run ``{doc id: score}`` with distinct, decreasing scores."""
    return {d: float(len(order) - i) for i, d in enumerate(order)}


def score_candidates(llm, query: str, cands: list[dict], corpus: dict, max_chars: int) -> list[dict]:
    """Add ``ql`` and ``rc`` to each candidate with FRet's prompts (QL calls first, then RC: shared prefixes)."""
    from data_gen.prompts import passage_text, query_likelihood_prompt, relevance_prompt

    texts = [passage_text(corpus[c["id"]]["title"], corpus[c["id"]]["text"], max_chars) for c in cands]
    ql = []
    for t in texts:
        prompt, lead = query_likelihood_prompt(t)
        ql.append(llm.score(prompt, lead + query))
    rc = []
    for t in texts:
        prompt, label = relevance_prompt(query, t)
        rc.append(llm.score(prompt, label))
    return [dict(c, ql=float(a), rc=float(b)) for c, a, b in zip(cands, ql, rc)]


def evaluate_orderings(records: Sequence[dict], qrels: dict) -> dict[str, dict]:
    """nDCG@10 / MRR@10 (x100) of every method over ``records`` (one per query, with ``orderings``)."""
    from gecko_jax.eval.metrics import evaluate_run, per_query_metrics

    sub = {r["qid"]: qrels[r["qid"]] for r in records}
    out, per_q = {}, {}
    for m in records[0]["orderings"]:
        run = {r["qid"]: as_run(r["orderings"][m]) for r in records}
        s = evaluate_run(sub, run, ("ndcg@10", "mrr@10"), backend="python")
        per_q[m] = per_query_metrics(sub, run, ("ndcg@10",))
        out[m] = {"ndcg@10": 100 * s["ndcg@10"], "mrr@10": 100 * s["mrr@10"], "num_queries": s["num_queries"]}
    out[RANDOM] = random_baseline(records, qrels)
    if "retriever" in per_q:  # paired comparison with the retriever's own order, per query
        ref = per_q["retriever"]
        for m, pq in per_q.items():
            diffs = [pq[q]["ndcg@10"] - ref[q]["ndcg@10"] for q in ref]
            out[m].update(better=sum(d > 1e-12 for d in diffs), worse=sum(d < -1e-12 for d in diffs))
    return out


def retrieve(embedder, data, qids: Sequence[str], k: int, cache_dir="default") -> dict[str, list[dict]]:
    """Top-``k`` candidates per query by dense retrieval over the whole corpus (raw text; the corpus embeddings
    come from / go to ``gecko_jax.eval``'s embedding cache, the same entry ``run_suite`` uses)."""
    import numpy as np

    from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir, encode_checked
    from gecko_jax.eval.retrieval import EVAL_BLOCK, exact_topk

    cache = EmbeddingCache(default_cache_dir() if cache_dir == "default" else cache_dir)
    doc_ids = list(data.corpus)
    c = cache.get_or_encode(embedder, [data.corpus[d]["text"] for d in doc_ids], data_fp=data.corpus_fingerprint,
                            fmt={"kind": "document", "task": None, "titles": True}, task=None, kind="document",
                            titles=[data.corpus[d]["title"] for d in doc_ids])
    q = encode_checked(embedder, [data.queries[x] for x in qids], task=None, kind="query")
    scores, idx = exact_topk(np.asarray(q), np.asarray(c), k, block_size=EVAL_BLOCK, dtype=np.float32)
    return {qid: [{"id": doc_ids[j], "retrieval_rank": r + 1, "retrieval_score": float(s)}
                  for r, (s, j) in enumerate(zip(scores[i], idx[i]))] for i, qid in enumerate(qids)}


def markdown(summary: dict) -> str:
    res = summary["results"]
    rows = ["| ordering of the MiniLM top-{k} | nDCG@10 | MRR@10 | queries better / worse than retriever |"
            .format(k=summary["top_k"]), "|---|---|---|---|"]
    for m, v in res.items():
        bw = f"{v['better']} / {v['worse']}" if "better" in v else "-"
        rows.append(f"| {m} | {v['ndcg@10']:.2f} | {v['mrr@10']:.2f} | {bw} |")
    return "\n".join(rows)


def _write_summary(out: pathlib.Path, summary: dict) -> None:
    summary["table_md"] = markdown(summary)
    (out / "rerank_results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "rerank_results.md").write_text(
        f"# Reranking ablation\n\n{summary['queries']} SciFact test queries (seed {summary['seed']}), "
        f"top-{summary['top_k']} of all-MiniLM-L6-v2, LLM {summary['llm']}, passages cut to "
        f"{summary['max_passage_chars']} chars; {summary['seconds']:.0f} s.\n\n" + summary["table_md"] + "\n")


def report(out_dir, data_dir=None) -> dict:
    """Recompute ``rerank_results.{json,md}`` from ``rerank_records.jsonl`` (no retrieval, no LLM)."""
    from gecko_jax.eval.beir import read_qrels
    from gecko_jax.eval.datasets import data_root

    out = pathlib.Path(out_dir)
    records = [json.loads(l) for l in (out / "rerank_records.jsonl").read_text().splitlines() if l.strip()]
    qrels = read_qrels(data_root(data_dir) / "scifact" / "qrels" / "test.tsv")
    for r in records:
        r["orderings"] = orderings(r["candidates"], qrels[r["qid"]])
    old = json.loads((out / "rerank_results.json").read_text()) if (out / "rerank_results.json").is_file() else {}
    summary = {**old, "results": evaluate_orderings(records, qrels), "queries": len(records)}
    summary.setdefault("top_k", len(records[0]["candidates"]))
    for k, v in (("seed", "?"), ("max_passage_chars", "?"), ("llm", "?"), ("seconds", 0.0)):
        summary.setdefault(k, v)
    _write_summary(out, summary)
    print(summary["table_md"])
    return summary


def run_rerank(out_dir, *, queries: int = 25, top_k: int = 10, seed: int = 0, max_passage_chars: int = 400,
               data_dir=None, llm=None, embedder=None, threads: int | None = None, cache_dir="default") -> dict:
    """The whole ablation; writes ``rerank_records.jsonl``, ``rerank_results.{json,md}`` in ``out_dir``.

    Args:
      llm: anything with ``score(prompt, continuation)`` (tests pass a fake); default: the embedded Gemma 3 270M
        (``data_gen.LlamaCppLLM``), wrapped in a SQLite-cached ``CachedLLM`` in ``out_dir``.
      embedder: the retriever; default all-MiniLM-L6-v2.
    """
    from data_gen import CachedLLM, SqliteCache
    from data_gen.llm import LLMSpec, make_llm

    from gecko_jax.eval.beir import load_beir
    from gecko_jax.eval.datasets import data_root

    t_start = time.perf_counter()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_beir(data_root(data_dir) / "scifact", split="test")
    qids = select_queries(data.qrels, queries, seed)
    qids = [q for q in qids if q in data.queries]
    if embedder is None:
        from gecko_jax import Embedder

        embedder = Embedder.from_pretrained("all-MiniLM-L6-v2")
    _log(f"retrieving top-{top_k} for {len(qids)} SciFact test queries over {len(data.corpus)} passages")
    cands = retrieve(embedder, data, qids, top_k, cache_dir=cache_dir)
    cache = str(out / "llm_cache.sqlite")
    if llm is None:
        cached = make_llm(LLMSpec(llm="local", n_ctx=2048, threads=threads, cache=cache))
    else:
        cached = llm if isinstance(llm, CachedLLM) else CachedLLM(llm, SqliteCache(cache))
    records = []
    t0 = time.perf_counter()
    for i, qid in enumerate(qids, 1):
        scored = score_candidates(cached, data.queries[qid], cands[qid], data.corpus, max_passage_chars)
        records.append({"qid": qid, "query": data.queries[qid], "candidates": scored,
                        "orderings": orderings(scored, data.qrels[qid])})
        el = time.perf_counter() - t0
        _log(f"query {i}/{len(qids)} scored ({2 * len(scored)} LLM scores); {el:.0f} s so far, "
             f"{el / i:.1f} s/query; usage {cached.usage.as_dict()}")
    (out / "rerank_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    results = evaluate_orderings(records, data.qrels)
    summary = {"queries": len(qids), "top_k": top_k, "seed": seed, "max_passage_chars": max_passage_chars,
               "llm": f"{getattr(llm, 'name', '?')}:{getattr(llm, 'model', '?')}", "retriever": repr(embedder),
               "results": results, "llm_usage": cached.usage.as_dict(),
               "seconds": time.perf_counter() - t_start, "cpu_count": os.cpu_count(),
               "load_average": list(os.getloadavg()),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_summary(out, summary)
    print(summary["table_md"], flush=True)
    _log(f"done in {summary['seconds']:.0f} s -> {out / 'rerank_results.md'}")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/gecko_rerank", help="output folder (LLM cache lives here: re-runs resume)")
    p.add_argument("--queries", type=int, default=25, help="SciFact test queries (seeded subset; 0 = all 300)")
    p.add_argument("--top-k", type=int, default=10, help="candidates per query to rerank")
    p.add_argument("--seed", type=int, default=0, help="query subset seed")
    p.add_argument("--max-passage-chars", type=int, default=400, help="passage cut inside the LLM prompts "
                   "(400 = the quickstart's FRet setting)")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: llama-cpp's own)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $GECKO_JAX_DATA, the cache or a download)")
    p.add_argument("--report-only", action="store_true", help="recompute the table from OUT/rerank_records.jsonl")
    a = p.parse_args(argv)
    if a.report_only:
        report(a.out, data_dir=a.data_dir)
        return 0
    run_rerank(a.out, queries=a.queries, top_k=a.top_k, seed=a.seed, max_passage_chars=a.max_passage_chars,
               data_dir=a.data_dir, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
