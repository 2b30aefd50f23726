"""experiments/gecko: the ablation script's variant builders, configs, fp16 loading and reports; a tiny pulse run of two
cells; the reranking ablation with a fake LLM.

Run: ``.venv/bin/python -m pytest -q tests/experiments/test_gecko_ablations.py``
"""
from __future__ import annotations

import json
import math
import statistics
import sys

import numpy as np
import pytest

from data_gen import Passage

from experiments.gecko import ablations as abl
from experiments.gecko import rerank


# ---- synthetic FRet records ---------------------------------------------------------------------------------------

def _corpus(n=50):
    return {f"d{i}": Passage(f"d{i}", f"text of passage {i} " + "word " * 5, f"Title {i}") for i in range(n)}


def _record(rid, seed, cands):
    """``cands``: [(id, ql_rank, rc_rank, retrieval_rank)]; rank = FRet's RRF order (ties by retrieval rank)."""
    rows = [{"id": c, "ql_rank": q, "rc_rank": r, "retrieval_rank": rr, "rrf": 1 / q + 1 / r} for c, q, r, rr in cands]
    order = sorted(rows, key=lambda c: (-c["rrf"], c["retrieval_rank"]))
    for k, c in enumerate(order, 1):
        c["rank"] = k
    return {"id": rid, "seed_id": seed, "task": "Given a query, find a passage that answers it.",
            "query": f"query {rid}", "candidates": rows}


def _records():
    return [
        # seed d0 is RRF top-1; lowest RRF is d3
        _record("r0", "d0", [("d0", 1, 1, 1), ("d1", 2, 3, 2), ("d2", 3, 2, 3), ("d3", 4, 4, 4)]),
        # LLM prefers d5 over the seed d4; the seed is ranked last
        _record("r1", "d4", [("d5", 1, 1, 2), ("d6", 2, 2, 1), ("d7", 3, 3, 3), ("d4", 4, 4, 4)]),
        _record("r2", "d8", [("d9", 1, 2, 1), ("d8", 2, 1, 2), ("d10", 3, 3, 3)]),
    ]


def test_positive_seed_gives_the_seed_text_and_rrf_the_top1():
    corpus, recs = _corpus(), _records()
    rows, stats = abl.build_variant(recs, corpus, positive="seed", negative="none")
    assert [r["positive"]["id"] for r in rows] == ["d0", "d4", "d8"]
    assert rows[1]["positive"]["text"] == abl.cut_text(corpus["d4"].text, abl.MAX_PASSAGE_CHARS)
    assert rows[1]["positive"]["title"] == "Title 4"
    assert all("negative" not in r for r in rows) and stats["positive_not_seed"] == 0
    rows, stats = abl.build_variant(recs, corpus, positive="rrf", negative="none")
    # r2: d9 and d8 tie on RRF (1.5); d9 wins on retrieval rank
    assert [r["positive"]["id"] for r in rows] == ["d0", "d5", "d9"] and stats["positive_not_seed"] == 2


def test_negative_lowest_is_the_lowest_rrf_candidate_never_the_positive():
    recs = _records()
    for rec in recs:
        lowest = min(rec["candidates"], key=lambda c: (c["rrf"], -c["retrieval_rank"]))["id"]
        assert abl.choose_negative(rec, "lowest", abl.choose_positive(rec, "rrf"), []) == lowest
    # positive = seed d4 is itself the lowest-ranked candidate of r1: the next lowest (d7) is taken instead
    assert abl.choose_negative(recs[1], "lowest", "d4", []) == "d7"
    rows, stats = abl.build_variant(recs, _corpus(), positive="seed", negative="lowest")
    assert all(r["negative"]["id"] != r["positive"]["id"] for r in rows)


def test_ql_labelling_ranks_by_query_likelihood_alone():
    recs = _records()
    # r0: QL order d0 d1 d2 d3; r1: d5 d6 d7 d4; r2: QL prefers d9 (rank 1) although RC prefers d8
    assert [abl.choose_positive(r, "ql") for r in recs] == ["d0", "d5", "d9"]
    assert [abl.choose_negative(r, "lowest_ql", abl.choose_positive(r, "ql"), []) for r in recs] == ["d3", "d4", "d10"]
    # where QL and RRF disagree on the order, so do the two labellings
    rec = _record("r3", "d0", [("d0", 3, 1, 1), ("d1", 1, 3, 2), ("d2", 2, 2, 3)])
    assert abl.choose_positive(rec, "rrf") == "d0" and abl.choose_positive(rec, "ql") == "d1"
    assert abl.choose_negative(rec, "lowest", "d0", []) != abl.choose_negative(rec, "lowest_ql", "d1", [])
    with pytest.raises(ValueError, match="positive"):
        abl.choose_positive(rec, "rc")


def test_random_negative_never_positive_seed_or_candidate_and_seeded():
    corpus = _corpus(30)
    ids = list(corpus)
    recs = [_record(f"r{i}", "d0", [("d0", 1, 1, 1), ("d1", 2, 2, 2), ("d2", 3, 3, 3)]) for i in range(40)]
    for seed in (0, 1):
        for rec in recs:
            for pos in ("seed", "rrf"):
                pid = abl.choose_positive(rec, pos)
                neg = abl.choose_negative(rec, "random", pid, ids, seed)
                assert neg in corpus and neg not in {"d0", "d1", "d2", pid}
    a = [abl.choose_negative(r, "random", "d0", ids, 0) for r in recs]
    assert a == [abl.choose_negative(r, "random", "d0", ids, 0) for r in recs]  # deterministic
    assert a != [abl.choose_negative(r, "random", "d0", ids, 1) for r in recs]  # the seed matters
    assert len(set(a)) > 5  # spread over the corpus, not a constant
    cand = [abl.choose_negative(r, "random_candidate", "d0", ids, 0) for r in recs]
    assert set(cand) <= {"d1", "d2"}
    with pytest.raises(ValueError, match="negative"):
        abl.choose_negative(recs[0], "hardest", "d0", ids)


def test_bundled_fret_records_small_and_main_variant_reproduces_them(shared_data):
    path = abl.FRET_DATA
    assert path.is_file() and path.stat().st_size < 200_000
    recs = abl.load_records(path)
    assert len(recs) == 45
    corpus = abl.load_corpus(shared_data / "scifact" / "corpus.jsonl")
    rows, stats = abl.build_variant(recs, corpus, positive="rrf", negative="lowest")
    for row, rec in zip(rows, recs):  # the quickstart trained on exactly these passages
        assert row["positive"] == {k: rec["positive"][k] for k in ("id", "title", "text")}
        assert row["negative"] == {k: rec["negative"][k] for k in ("id", "title", "text")}
    assert stats["positive_not_seed"] == sum(not r["positive_is_seed"] for r in recs)
    pft = abl.prefinetune_pairs(corpus, limit=10)
    assert len(pft) == 10 and pft[0]["query"] == corpus[pft[0]["positive"]["id"]].title


def test_cells_configs_and_eval_formats(tmp_path):
    from gecko_jax import train

    cells = abl.make_cells()
    assert abl.select_cells(["b"], cells) == ["base", "main", "b_no_mrl"]
    assert set(abl.select_cells(["a"], cells)) == {"base", "main", "a_seed_none", "a_seed_random", "a_seed_lowest",
                                                  "a_rrf_none", "a_rrf_random", "a_ql_lowest"}
    assert "quickstart" not in abl.select_cells(None, cells) and "d_pft_fret" in abl.select_cells(None, cells)
    with pytest.raises(SystemExit):
        abl.select_cells(["zz"], cells)
    s = abl.Settings(out=tmp_path, model_path="all-MiniLM-L6-v2", data_root=tmp_path, eval_root=tmp_path)
    f = tmp_path / "x.jsonl"
    main = abl.train_config(cells["main"], s, f)
    assert main["loss"]["matryoshka_dims"] == [384, 256, 128, 64] and main["loss"]["same_tower"]
    assert main["data"]["hard_negatives"] == 1 and main["data"]["gecko_format"] and main["steps"] == 12
    assert abl.train_config(cells["b_no_mrl"], s, f)["loss"]["matryoshka_dims"] == []
    assert abl.train_config(cells["a_seed_none"], s, f)["data"]["hard_negatives"] == 0
    assert not abl.train_config(cells["c_no_same_tower"], s, f)["loss"]["same_tower"]
    plain = abl.train_config(cells["c_plain_text"], s, f)
    assert not plain["data"]["gecko_format"] and cells["c_plain_text"].eval_format is None
    pft = abl.train_config(cells["d_pft"], s, f, pft=True)
    assert pft["data"]["hard_negatives"] == 0 and not pft["loss"]["same_tower"] and pft["steps"] == 60
    assert cells["main"].eval_format == "gecko" and cells["base"].eval_format is None
    assert cells["base_prompts"].eval_format == "gecko"
    assert abl.train_config(cells["e_seed2"], s, f)["seed"] == 2
    qs = abl.train_config(cells["quickstart"], s, f)
    assert qs["loss"]["matryoshka_dims"] == [384, 256, 128] and qs["data"]["buckets"] == [32, 64, 128]
    for raw in (main, plain, pft, qs):
        train.from_dict(raw)  # every variant validates


def test_float16_weights_are_upcast(tmp_path, minilm_path):
    from safetensors.numpy import load_file, save_file

    folder = abl.make_tiny_model(tmp_path / "m32", hidden=32)
    ref = abl.load_evaluator(folder)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    assert abl.safetensors_dtypes(folder) == {"F16": len(tensors)}
    emb = abl.load_evaluator(folder)
    import jax

    leaves = jax.tree.leaves(emb.params)
    assert leaves and all(np.asarray(x).dtype == np.float32 for x in leaves)
    for a, b in zip(jax.tree.leaves(ref.params), leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    half = jax.tree.map(lambda x: np.asarray(x, np.float16), ref.params)
    assert all(np.asarray(x).dtype == np.float32 for x in jax.tree.leaves(abl.to_float32(half)))


def _fake_results(values):
    out = {}
    for name, (sci, sts) in values.items():
        out[name] = {"what": name, "train_format": "gecko", "eval_format": "gecko",
                     "scores": {"scifact": {str(d): sci - i for i, d in enumerate(abl.DIMS)},
                                "stsb": {str(d): sts - i for i, d in enumerate(abl.DIMS)}},
                     "seconds": {"train": 1.0, "eval": 2.0, "total": 3.0}}
    return out


def test_tables_layout_and_seed_spread(tmp_path):
    res = _fake_results({"base": (60.0, 80.0), "main": (61.0, 79.0), "e_seed1": (63.0, 78.0), "e_seed2": (62.5, 77.0),
                         "a_seed_none": (58.0, 81.0), "b_no_mrl": (59.0, 76.0)})
    t = abl.tables(res)
    assert "| p_seed (the seed passage) | 58.00 / 81.00 | - / - | - / - |" in t["a_labelling"]
    assert "| p_1 (LLM top-1 by RRF) | - / - | - / - | 61.00 / 79.00 |" in t["a_labelling"]
    assert "QL alone" not in t["a_labelling"]  # the row appears only once its cell has run
    res_ql = dict(res, **_fake_results({"a_ql_lowest": (61.5, 78.5)}))
    assert "| p_1 by QL alone (no RC) | | | 61.50 / 78.50 |" in abl.tables(res_ql)["a_labelling"]
    assert "| 64 | 57.00 | 58.00 | 56.00 |" in t["b_matryoshka"]
    v = [61.0, 63.0, 62.5]
    assert f"scifact 384: mean {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" in t["e_seeds"]
    row = next(l for l in t["all"].splitlines() if l.startswith("| main |"))
    assert "| +1.00 |" in row
    for name, r in res.items():
        (tmp_path / "cells").mkdir(exist_ok=True)
        (tmp_path / "cells" / f"{name}.json").write_text(json.dumps(r))
    abl.write_reports(tmp_path)
    assert (tmp_path / "results" / "a_labelling.md").read_text().startswith("SciFact")
    pytest.importorskip("matplotlib")
    assert (tmp_path / "results" / "mrl_dims.png").stat().st_size > 1000


@pytest.mark.timeout(600)
def test_tiny_pulse_two_cells_without_optional_deps(shared_data, tmp_path, monkeypatch, minilm_path, fast_compiles):
    """The script end to end (tiny random encoder, 2 steps, eval slice) with tensorflow-datasets, pytrec_eval and
    llama-cpp made unimportable, as on the GPU host. ~20-40 s on the shared 2-core box: the only test that runs
    training + run_suite through the script, which the GPU grid depends on."""
    for mod in ("tensorflow_datasets", "tensorflow", "pytrec_eval", "llama_cpp"):
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "abl"
    res = abl.run_ablations(out, cells=["base", "main"], tiny=True, data_dir=str(shared_data), compile_cache=False)
    assert res["ran"] == ["base", "main"] and not res["skipped"]
    cells = res["results"]
    for name in ("base", "main"):
        for task in ("scifact", "stsb"):
            scores = cells[name]["scores"][task]
            assert set(scores) == {str(d) for d in abl.TINY_DIMS}
            assert all(math.isfinite(v) and -100 <= v <= 100 for v in scores.values())
    assert cells["main"]["eval_format"] == "gecko" and cells["base"]["eval_format"] == "raw text"
    assert cells["main"]["train"]["steps"] == 2 and cells["main"]["train"]["steps_run"] == 2
    assert cells["main"]["fingerprint"] != cells["base"]["fingerprint"]  # evaluated the trained weights
    assert cells["main"]["seconds"]["total"] > 0
    rows = [json.loads(l) for l in open(out / "data" / "fret_rrf_lowest_s0.jsonl")]
    assert len(rows) == 12 and all("negative" in r for r in rows)
    assert not (out / "runs" / "main" / "checkpoints").exists()  # dropped once evaluated
    assert (out / "results" / "all.md").read_text().count("| main |") == 1
    again = abl.run_ablations(out, cells=["base", "main"], tiny=True, data_dir=str(shared_data), compile_cache=False)
    assert again["ran"] == [] and again["reused"] == ["base", "main"]


# ---- reranking ablation -------------------------------------------------------------------------------------------

def test_rerank_orderings_and_ndcg_by_hand():
    cands = [{"id": "a", "retrieval_rank": 1, "ql": -5.0, "rc": -0.1},
             {"id": "b", "retrieval_rank": 2, "ql": -1.0, "rc": -0.9},
             {"id": "c", "retrieval_rank": 3, "ql": -3.0, "rc": -0.2}]
    o = rerank.orderings(cands, {"c": 1})
    assert o["retriever"] == ["a", "b", "c"]
    assert o["QL"] == ["b", "c", "a"] and o["RC"] == ["a", "c", "b"]
    # RRF: a 1/3+1 = 1.33, b 1+1/3 = 1.33, c 1/2+1/2 = 1 -> a, b tie, broken by retrieval rank
    assert o["RRF(QL,RC)"] == ["a", "b", "c"] and o["oracle"][0] == "c"
    recs = [{"qid": "q1", "orderings": o, "candidates": cands}]
    res = rerank.evaluate_orderings(recs, {"q1": {"c": 1}})
    assert res["oracle"]["ndcg@10"] == pytest.approx(100.0)
    assert res["retriever"]["ndcg@10"] == pytest.approx(100 / math.log2(4))  # relevant at rank 3
    assert res["QL"]["ndcg@10"] == pytest.approx(100 / math.log2(3)) and res["QL"]["mrr@10"] == pytest.approx(50.0)
    assert (res["QL"]["better"], res["QL"]["worse"]) == (1, 0) and (res["RC"]["better"], res["RC"]["worse"]) == (1, 0)
    assert (res["RRF(QL,RC)"]["better"], res["RRF(QL,RC)"]["worse"]) == (0, 0)
    # shuffles of 3 candidates, one relevant: E[nDCG@10] = mean over its rank r of 1/log2(r + 1)
    expect = 100 * sum(1 / math.log2(r + 1) for r in (1, 2, 3)) / 3
    assert res[rerank.RANDOM]["ndcg@10"] == pytest.approx(expect, abs=4.0)
    assert rerank.select_queries({"x": {"d": 1}, "y": {"d": 0}, "z": {"d": 2}}, 0) == ["x", "z"]
    sub = rerank.select_queries({f"q{i}": {"d": 1} for i in range(50)}, 5, seed=3)
    assert len(sub) == 5 and sub == rerank.select_queries({f"q{i}": {"d": 1} for i in range(50)}, 5, seed=3)


class _CountingLLM:
    """Scores that favour passages containing the query's first word (QL) / long passages (RC); counts calls."""

    name, model = "fake", "counting-v1"

    def __init__(self):
        from data_gen.llm import Usage

        self.usage, self.calls = Usage(), 0

    def score(self, prompt, continuation):
        self.calls += 1
        passage = prompt.rsplit("Passage:", 1)[1]
        if continuation == " Yes":
            return -1.0 / (1 + len(passage))
        word = continuation.split()[0].lower()
        return -10.0 + (word in passage.lower())


def test_rerank_run_with_fake_llm_and_cache(shared_data, tmp_path, monkeypatch, minilm_path, fast_compiles):
    from gecko_jax.quickstart import make_tiny_data

    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))
    root = make_tiny_data(shared_data, tmp_path / "data", queries=6, extra_docs=40, sts_pairs=5)
    emb = abl.load_evaluator(abl.make_tiny_model(tmp_path / "m", hidden=32))
    llm = _CountingLLM()
    s = rerank.run_rerank(tmp_path / "rr", queries=4, top_k=5, data_dir=str(root), llm=llm, embedder=emb)
    assert s["queries"] == 4 and llm.calls == 4 * 5 * 2
    res = s["results"]
    assert set(res) == set(rerank.METHODS) | {rerank.RANDOM}
    assert all(res["oracle"]["ndcg@10"] >= res[m]["ndcg@10"] - 1e-9 for m in res if m != rerank.RANDOM)
    recs = [json.loads(l) for l in open(tmp_path / "rr" / "rerank_records.jsonl")]
    assert all(len(r["candidates"]) == 5 and all(c["ql"] in (-10.0, -9.0) for c in r["candidates"]) for r in recs)
    llm2 = _CountingLLM()
    again = rerank.run_rerank(tmp_path / "rr", queries=4, top_k=5, data_dir=str(root), llm=llm2, embedder=emb)
    assert llm2.calls == 0 and again["results"] == res  # every score came from the SQLite cache
    assert rerank.report(tmp_path / "rr", data_dir=str(root))["results"] == res  # table from the saved records
