"""experiments/gecko/paired.py: finds the exported cell models and compares their repeats with the base model's."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paired():
    spec = importlib.util.spec_from_file_location("gecko_paired_exp", REPO / "experiments/gecko/paired.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_find_models_needs_a_config(paired, tmp_path):
    for name, ok in (("full_s0", True), ("full_s2", True), ("a1_retr_s1", True), ("broken_s0", False)):
        d = tmp_path / "runs" / name / "export"
        d.mkdir(parents=True)
        if ok:
            (d / "config.json").write_text("{}")
    (tmp_path / "runs" / "notacell").mkdir()
    found = paired.find_models(tmp_path)
    assert {c: sorted(s) for c, s in found.items()} == {"a1_retr": [1], "full": [0, 2]}
    assert list(paired.find_models(tmp_path, cells=["a1_retr"])) == ["a1_retr"]


def test_compare_pairs_classification_draws_and_pools_clustering_runs(paired):
    rng = np.random.default_rng(0)
    names = (*paired.CLASSIFICATION, *paired.CLUSTERING)
    base = {n: list(70 + 4 * rng.normal(size=10)) for n in names}
    # seed s: ag_news 2 points lower on every draw (plus small noise); everything else the base's draws + noise
    seeds = {s: {n: list(np.asarray(base[n]) - (2.0 if n == "ag_news" else 0.0) + 0.1 * rng.normal(size=10))
                 for n in names} for s in (0, 1)}
    res = paired.compare(base, seeds)
    ag = res["ag_news"]
    assert ag["paired"] and ag["significant"] and ag["high"] < 0 and ag["mean"] == pytest.approx(-2.0, abs=0.15)
    assert sorted(ag["per_seed"]) == [0, 1] and ag["seed_sd"] is not None
    assert not res["mr"]["significant"]
    assert not res["ag_news_clustering"]["paired"] and res["ag_news_clustering"]["n"] == 10
    md = paired.markdown({"base": base, "cluster_runs": 10, "cells": {"full": {"seeds": [0, 1], "tasks": res}}})
    assert "| full | 2 |" in md and md.count("| **") == 1  # only ag_news is bold


def test_previous_results_are_kept_and_protocol_checked(paired, tmp_path):
    import json

    saved = {"base": {"mr": [1.0, 2.0]}, "cluster_runs": 10, "task_string": paired.TASK_STRING,
             "cells": {"full": {"seeds": [1], "repeats": {"1": {"mr": [1.0, 2.5]}}, "tasks": {}}}}
    (tmp_path / "paired.json").write_text(json.dumps(saved))
    prev = paired.previous(tmp_path / "paired.json", 10)
    assert prev["base"] == saved["base"] and list(prev["cells"]["full"]["repeats"]) == [1]
    assert paired.previous(tmp_path / "paired.json", 3) is None  # another k-means protocol: start again
    assert paired.previous(tmp_path / "missing.json", 10) is None
    assert sorted(["w_size", "zz", "a2_nli", "full"], key=paired._order) == ["full", "a2_nli", "w_size", "zz"]


def test_put_table_fills_the_generated_block(paired, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{paired.README_BEGIN}\nold\n{paired.README_END}\nafter\n")
    paired.put_table(readme, "| new |\n")
    assert readme.read_text() == f"intro\n{paired.README_BEGIN}\n| new |\n{paired.README_END}\nafter\n"
    readme.write_text("no block\n")
    with pytest.raises(SystemExit, match="no '<!-- paired table"):
        paired.put_table(readme, "x")
