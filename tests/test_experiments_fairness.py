"""experiments/fairness: gender-sentence extraction, augmentation statistics, the quick-run checker, and the
``--quick`` run itself (a few minutes: fine-tunes all-MiniLM-L6-v2 for 20 steps and asserts the CCED gap drops)."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = ROOT / "experiments" / "fairness"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"fairness_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def eg():
    return _load("extract_gender")


@pytest.fixture(scope="module")
def run_mod():
    return _load("run")


def test_split_is_deterministic_and_balanced(eg):
    texts = [f"the man number {i} walked home ." for i in range(3000)]
    splits = [eg.split_of(t) for t in texts]
    assert splits == [eg.split_of(t) for t in texts]
    share = {k: splits.count(k) / len(splits) for k in ("train", "val", "test")}
    assert 0.75 < share["train"] < 0.85 and 0.07 < share["val"] < 0.13 and 0.07 < share["test"] < 0.13


def test_extract_filters_dedupes_and_keeps_splits_disjoint(eg, shared_data):
    rows = eg.extract(shared_data)
    words = eg.gender_words(shared_data / "seat" / "bias_attribute_words.json")
    assert len(rows) > 5000
    assert {r["corpus"] for r in rows} == set(eg.SOURCES)
    keys = [r["text"].lower() for r in rows]
    assert len(keys) == len(set(keys))
    for r in rows[:: max(1, len(rows) // 500)]:
        toks = {t.lower() for t in eg.WORD_RE.findall(r["text"])}
        assert toks & words and set(r["gender_words"]) <= words
        assert r["split"] == eg.split_of(r["text"].lower())
    # STS-B test sentences are held out for utility evaluation, never extracted.
    assert not any(r["id"].startswith("stsb-test") for r in rows)


def test_gender_words_bad_file_names_it(eg, tmp_path):
    bad = tmp_path / "words.json"
    bad.write_text('{"race": []}')
    with pytest.raises(ValueError, match="words.json.*'gender'"):
        eg.gender_words(bad)


def test_augmentation_stats_counts_failures_ratios_and_leftovers(run_mod):
    recs = [
        {"id": "a", "source": "The man is here.", "ok": True, "neutral": "The person is here.",
         "groups": {"male": "The man is here.", "female": "The woman is here."}},
        {"id": "b", "source": "The man is here.", "ok": False, "neutral": "The man is here.",
         "groups": {"male": "The man is here.", "female": "The man is here."},
         "errors": {"neutral": ["gendered words in the neutral version: ['man']"],
                    "female": ["male words in the female version: ['man']"]}},
    ]
    s = run_mod.augmentation_stats(recs)
    assert s["n"] == 2 and s["ok"] == 1 and s["failure_rate"] == 0.5
    assert s["leftover"] == {"male": 0.0, "female": 0.5, "neutral": 0.5}
    assert s["length_ratio"]["male"] == pytest.approx(1.0)
    assert s["length_ratio"]["female"] == pytest.approx((18 / 16 + 1.0) / 2)
    assert s["failure_reasons"] == {"neutral: gendered words in the neutral version": 1,
                                    "female: male words in the female version": 1}


def _res(base_cced, run_cced, base_sts, run_sts):
    ev = lambda c, s: {"cced_test": {"cced": c}, "stsb_spearman": s}  # noqa: E731
    return {"runs": {"base": {"eval": ev(base_cced, base_sts)}, "r": {"eval": ev(run_cced, run_sts)}}}


def test_check_quick_flags_wrong_direction(run_mod):
    assert run_mod.check_quick(_res(0.03, 0.01, 80.0, 79.0)) == []
    assert "CCED gap" in run_mod.check_quick(_res(0.03, 0.029, 80.0, 79.0))[0]
    assert "STS-B" in run_mod.check_quick(_res(0.03, 0.01, 80.0, 70.0))[0]


def test_train_config_validates_with_the_engine(run_mod, tmp_path):
    from gecko_jax import train

    cfg = dict(run_mod.QUICK)
    for cw in (0.0, 0.1):
        tc = train.from_dict(run_mod.train_config(cfg, {"name": "x", "beta": 3.0, "contrastive_weight": cw},
                                                  tmp_path / "t.jsonl", tmp_path / "p.jsonl", 0.4))
        assert tc.loss.debias_beta == 3.0 and tc.loss.debias_gamma == 0.4 and tc.steps == cfg["steps"]
        assert tc.loss.contrastive_weight == cw and len(tc.data.datasets) == (1 if cw else 0)


# Not marked slow: this is the CI-sized --quick run issue 9 asks CI to run (~2-3 min on 2 cores).
def test_quick_run_reduces_cced_gap(tmp_path, shared_data, minilm_path, run_mod):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(HERE / "run.py"), "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    base, run = res["runs"]["base"]["eval"], res["runs"]["ccd_beta1"]["eval"]
    assert run["cced_test"]["cced"] < run_mod.QUICK_MAX_CCED_RATIO * base["cced_test"]["cced"]  # seeds 0-2: 5.8-8.8x lower
    assert res["data"]["rules_train_used"] == 64 and res["data"]["rules_test_used"] == 64


def test_tables_report_reduction_factor(run_mod):
    res = _res(0.03, 0.01, 80.0, 79.0)
    for r in res["runs"].values():
        r["eval"]["cced_test_rbf"] = 0.02
    res["runs"]["r"].update(spec={"data": "rules", "beta": 1.0}, steps=20)
    md = run_mod.tables(res).splitlines()
    assert md[0].startswith("| run |") and len(md) == 4
    assert "| 3.0x |" in md[3] and "| -1.00 |" in md[3] and "| 1.0x |" in md[2]


def test_llm_input_keeps_single_gender_train_sentences(eg):
    rows = [{"id": "a", "text": "The man walked his dog to the park today.", "split": "train"},
            {"id": "b", "text": "The man and the woman walked to the park.", "split": "train"},
            {"id": "c", "text": "She walked her dog to the park today again.", "split": "test"},
            {"id": "d", "text": "Her brother walked the dog.", "split": "train"},  # 27 characters: too short
            {"id": "e", "text": "A girl is playing the violin on a stage.", "split": "train"}]
    got = eg.llm_input(rows, 10)
    assert sorted(r["id"] for r in got) == ["a", "e"] and set(got[0]) == {"id", "text"}
    assert eg.llm_input(rows, 10) == got and len(eg.llm_input(rows, 1)) == 1


def test_tables_add_train_tuples_and_scifact_columns(run_mod):
    res = _res(0.03, 0.01, 80.0, 79.0)
    for r in res["runs"].values():
        r["eval"]["cced_test_rbf"] = 0.02
    res["runs"]["base"]["eval"]["scifact"] = {"ndcg@10": 64.51}
    res["runs"]["r"].update(spec={"data": "llm", "beta": 1.0}, steps=60, train_tuples=47)
    res["runs"]["base"]["eval"]["cced_llm_test"] = 0.04
    res["runs"]["r"]["eval"]["cced_llm_test"] = 0.01
    md = run_mod.tables(res).splitlines()
    head = [c.strip() for c in md[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md[2:]]
    assert head[2] == "train tuples" and head[-2:] == ["SciFact nDCG@10", "CCED LLM-made test"]
    assert rows[0][2] == "-" and rows[1][2] == "47" and rows[0][-2] == "64.51" and rows[1][-2] == "-"
    assert rows[1][-1] == "0.01000 (4.0x)" and rows[0][-1] == "0.04000 (1.0x)"
    assert all(len(r) == len(head) for r in rows)
