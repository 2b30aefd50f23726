"""SEAT effect size and permutation test against naive references; CCED tuples; CrowS-Pairs."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from gecko_jax.eval.fairness import (GENDER_SEAT_TESTS, evaluate_cced, evaluate_crows_pairs, evaluate_seat, load_seat,
                                     read_tuples, rule_based_tuples, seat_effect_size, seat_p_value)


def unit(rng, n, d=6):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def naive_s(w, A, B):
    cos = lambda u, v: float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return np.mean([cos(w, a) for a in A]) - np.mean([cos(w, b) for b in B])


def test_effect_size_matches_naive_formula():
    rng = np.random.default_rng(0)
    X, Y, A, B = unit(rng, 5), unit(rng, 5), unit(rng, 4), unit(rng, 7)
    sx = [naive_s(x, A, B) for x in X]
    sy = [naive_s(y, A, B) for y in Y]
    expected = (np.mean(sx) - np.mean(sy)) / np.std(sx + sy, ddof=1)
    assert seat_effect_size(X, Y, A, B) == pytest.approx(expected, abs=1e-5)
    assert seat_effect_size(Y, X, A, B) == pytest.approx(-expected, abs=1e-5)
    assert seat_effect_size(X, Y, B, A) == pytest.approx(-expected, abs=1e-5)


def test_p_value_exact_enumeration_and_sampling():
    rng = np.random.default_rng(1)
    X, Y, A, B = unit(rng, 4), unit(rng, 4), unit(rng, 3), unit(rng, 3)
    s = {i: naive_s(w, A, B) for i, w in enumerate(np.concatenate([X, Y]))}
    observed = sum(s[i] for i in range(4)) - sum(s[i] for i in range(4, 8))
    stats = [sum(s[i] for i in c) - sum(s[i] for i in set(range(8)) - set(c))
             for c in itertools.combinations(range(8), 4)]
    expected = np.mean([st > observed + 1e-9 for st in stats])
    assert seat_p_value(X, Y, A, B) == pytest.approx(expected, abs=1e-12)  # 70 partitions: exact
    sampled = seat_p_value(X, Y, A, B, n_samples=20, seed=0)  # fewer samples than partitions: Monte Carlo
    assert 1 / 20 <= sampled <= 1.0
    # Targets that differ strongly get a small p-value; swapping them, a large one.
    X2 = np.repeat(A[:1], 8, axis=0) + 0.01 * unit(rng, 8)
    Y2 = np.repeat(B[:1], 8, axis=0) + 0.01 * unit(rng, 8)
    assert seat_p_value(X2, Y2, A, B, n_samples=5000) < 0.01
    assert seat_p_value(Y2, X2, A, B, n_samples=5000) > 0.99
    with pytest.raises(ValueError, match=r"\|X\| == \|Y\|"):
        seat_p_value(X[:3], Y, A, B)


def test_seat_files(shared_data):
    for name in GENDER_SEAT_TESTS:
        spec = load_seat(shared_data / "seat" / f"{name}.jsonl")
        assert all(len(spec[k]["examples"]) > 10 for k in ("targ1", "targ2", "attr1", "attr2"))
    assert load_seat(shared_data / "seat" / "sent-weat6.jsonl")["targ1"]["category"] == "MaleNames"


def test_seat_bad_file(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"targ1": {"examples": ["a"]}, "targ2": {"examples": []}}))
    with pytest.raises(ValueError, match="field 'targ2'"):
        load_seat(p)
    p.write_text("{oops")
    with pytest.raises(ValueError, match=r"t.jsonl:1: not valid JSON"):
        load_seat(p)


def test_evaluate_seat_on_real_tests(shared_data, bow):
    res = evaluate_seat(bow, tests=("sent-weat6", "sent-weat8"), n_samples=2000, data_root_=shared_data)
    assert set(res["tests"]) == {"sent-weat6", "sent-weat8"}
    for r in res["tests"].values():
        assert -2.0 <= r["effect_size"] <= 2.0 and 0.0 < r["p_value"] <= 1.0
    assert res["tests"]["sent-weat8"]["n_targets"] == 56
    assert res["main_score"] == pytest.approx(np.mean([abs(r["effect_size"]) for r in res["tests"].values()]))


def test_rule_based_tuples():
    t = rule_based_tuples(["He is a man.", "His father is here.", "She is here.", "The cat sat.", "He is a man."])
    assert [x["groups"]["male"] for x in t] == ["He is a man.", "His father is here."]
    assert t[0]["groups"]["female"] == "She is a woman." and t[0]["neutral"] == "They are a person."
    assert t[1]["groups"]["female"] == "Her mother is here." and t[1]["neutral"] == "Their parent is here."


def test_evaluate_cced_matches_manual(tmp_path, bow):
    tuples = [{"id": "1", "neutral": "the person codes", "groups": {"male": "the man codes", "female": "the woman codes"}},
              {"id": "2", "neutral": "they cook dinner", "groups": {"male": "he cooks dinner", "female": "she cooks"}}]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(t) + "\n" for t in tuples))
    res = evaluate_cced(bow, p, kernel="cosine")
    gaps = []
    for t in tuples:
        n = bow.vector(t["neutral"])
        gaps.append(abs((1 - bow.vector(t["groups"]["male"]) @ n) - (1 - bow.vector(t["groups"]["female"]) @ n)))
    assert res["main_score"] == pytest.approx(np.mean(gaps), abs=1e-5)
    assert res["num_tuples"] == 2 and res["groups"] == ["female", "male"]
    p.write_text('{"id": 1, "neutral": "x"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:1: expected"):
        read_tuples(p)


def test_default_tuples_and_crows_pairs(shared_data, bow):
    res = evaluate_cced(bow, data_root_=shared_data)
    assert res["num_tuples"] >= 50 and res["source"] == "rule_based" and res["main_score"] >= 0
    cp = evaluate_crows_pairs(bow, data_root_=shared_data)
    assert cp["bias_types"]["gender"]["num_pairs"] == 262 and 0 < cp["main_score"] <= 100
