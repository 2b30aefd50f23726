"""Per-run scorer calibration (seed recall@1 against chance) and weighted RRF."""
from __future__ import annotations

import json
import math
import random

import pytest

from data_gen import (CachedLLM, FakeLLM, FRetConfig, FRetPipeline, SqliteCache, hashed_bow_embed, load_corpus,
                      sample_seed_ids)
from data_gen.stages import CalibrationCounts, binomial_sf, calibrate, fuse_and_select
from tests.conftest import REPO


def _cands(n, seed_top: dict, rng, sid="s"):
    """``n`` candidates of seed ``sid``; for each scorer in ``seed_top`` whether the seed is its top-1."""
    ids = [sid] + [f"c{i}" for i in range(1, n)]
    cands = [{"id": i, "retrieval_rank": r} for r, i in enumerate(rng.sample(ids, n), 1)]
    for m in ("ql", "rc"):
        vals = [rng.random() for _ in cands]
        if m in seed_top:
            top = max(vals)
            for c, v in zip(cands, vals):
                c[m] = (top + 1 if c["id"] == sid else v) if seed_top[m] else (v - 2 if c["id"] == sid else v)
        else:
            for c, v in zip(cands, vals):
                c[m] = v
    return cands


def test_binomial_sf_matches_the_sum():
    for n, p in [(10, 0.1), (57, 0.05), (200, 0.3)]:
        for k in (0, 1, 3, n // 2, n):
            want = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))
            assert binomial_sf(k, n, p) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_calibration_drops_a_scorer_at_chance():
    rng = random.Random(0)
    counts = CalibrationCounts()
    for i in range(200):
        # QL finds the seed 70 % of the time, RC never prefers it beyond chance (random values), N = 10.
        cands = _cands(10, {"ql": rng.random() < 0.7}, rng, sid=f"s{i}")
        counts.add(f"s{i}", cands)
    assert counts.n["ql"] == counts.n["rc"] == counts.n["retrieval"] == 200
    assert counts.chance() == pytest.approx(0.1)
    drop = calibrate(counts, fusion="drop")
    assert drop["weights"] == {"ql": 1.0} and "rc dropped" in drop["note"]
    assert drop["seed_recall_at_1"]["ql"] > 0.6 and drop["p_value"]["ql"] < 1e-10 and drop["p_value"]["rc"] > 0.01
    weighted = calibrate(counts, fusion="weighted")
    assert weighted["weights"] == {"ql": 1.0}
    paper = calibrate(counts, fusion="rrf")
    assert paper["weights"] == {"ql": 1.0, "rc": 1.0} and paper["seed_recall_at_1"] == drop["seed_recall_at_1"]
    few = calibrate(counts, fusion="drop", min_records=201)
    assert few["weights"] == {"ql": 1.0, "rc": 1.0} and "too few" in few["note"]


def test_weighted_fusion_follows_the_lift_and_falls_back_to_retrieval():
    rng = random.Random(1)
    counts = CalibrationCounts()
    for i in range(400):
        counts.add(f"s{i}", _cands(10, {"ql": rng.random() < 0.8, "rc": rng.random() < 0.4}, rng, sid=f"s{i}"))
    w = calibrate(counts, fusion="weighted")["weights"]
    assert w["ql"] == 1.0 and 0.2 < w["rc"] < 0.6  # lift (0.4-0.1)/0.9 vs (0.8-0.1)/0.9, roughly
    assert calibrate(counts, fusion="drop")["weights"] == {"ql": 1.0, "rc": 1.0}
    none = CalibrationCounts()
    for i in range(100):
        none.add(f"s{i}", _cands(10, {"ql": False, "rc": False}, rng, sid=f"s{i}"))
    fb = calibrate(none, fusion="drop")
    assert fb["weights"] == {"retrieval": 1.0} and "fallback" in fb["note"]


def test_counts_do_not_depend_on_the_merge_order():
    rng = random.Random(2)
    recs = [(f"s{i}", _cands(rng.randint(3, 9), {"ql": rng.random() < 0.5}, rng, sid=f"s{i}")) for i in range(60)]
    whole = CalibrationCounts()
    for sid, c in recs:
        whole.add(sid, c)
    parts = [CalibrationCounts() for _ in range(4)]
    for j, (sid, c) in enumerate(reversed(recs)):
        parts[j % 4].add(sid, c)
    merged = CalibrationCounts()
    for p in reversed(parts):
        merged.merge(p)
    assert calibrate(merged) == calibrate(whole)


def test_weighted_rrf_reduces_to_the_paper_and_to_one_scorer():
    cands = [{"id": "a", "retrieval_rank": 1, "ql": -3.0, "rc": -0.1},
             {"id": "b", "retrieval_rank": 2, "ql": -1.0, "rc": -0.9},
             {"id": "c", "retrieval_rank": 3, "ql": -2.0, "rc": -0.5}]
    paper = fuse_and_select(cands, negative="lowest", rng_key="k")
    by = {c["id"]: c for c in paper["candidates"]}
    for c in by.values():
        assert c["rrf"] == 1.0 / c["ql_rank"] + 1.0 / c["rc_rank"]
    ql_only = fuse_and_select(cands, negative="lowest", rng_key="k", weights={"ql": 1.0})
    assert [c["id"] for c in ql_only["candidates"]] == ["b", "c", "a"]
    rc_only = [{k: v for k, v in c.items() if k != "ql"} | {"ql": None} for c in cands]
    sel = fuse_and_select(rc_only, negative="lowest", rng_key="k", weights={"rc": 1.0})
    assert sel["positive_id"] == "a" and all(c["ql_rank"] is None for c in sel["candidates"])
    with pytest.raises(ValueError, match="no ql scores"):
        fuse_and_select(rc_only, negative="lowest", rng_key="k")


def test_fake_relevance_classifier_is_dropped_on_the_demo(tmp_path):
    """The fake RC is noise (its "Yes" always follows demos that say Yes): the run's own records show it, RRF's
    vote for it is dropped, and fewer positives move off the seed; all of it recorded in every record."""
    corpus = load_corpus(REPO / "data_gen" / "assets" / "scifact_demo.jsonl")
    seeds = sample_seed_ids(iter(corpus), 120)
    cache = SqliteCache(tmp_path / "c.sqlite")
    out = {}
    for fusion in ("rrf", "drop"):
        cfg = FRetConfig(neighbours=5, progress=False, fusion=fusion)
        s = FRetPipeline(CachedLLM(FakeLLM(), cache), hashed_bow_embed, corpus, workdir=tmp_path / "w",
                         config=cfg).run(seeds, tmp_path / f"{fusion}.jsonl")
        recs = [json.loads(l) for l in open(tmp_path / f"{fusion}.jsonl")]
        assert len(recs) == 120 and all(r["fusion"] == s.fusion for r in recs)
        out[fusion] = s
    assert out["rrf"].fusion["weights"] == {"ql": 1.0, "rc": 1.0}
    assert out["drop"].fusion["weights"] == {"ql": 1.0}
    assert out["drop"].fusion["p_value"]["rc"] >= 0.01 > out["drop"].fusion["p_value"]["ql"]
    assert out["drop"].positive_differs_from_seed < out["rrf"].positive_differs_from_seed
    assert out["drop"].stages["score"]["todo"] == 0  # the second run re-fused the same scores, asked nothing
