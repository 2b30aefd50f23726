"""run_suite on the real local data with a fast bag-of-words embedder; JSON/Markdown output; the CLI."""
from __future__ import annotations

import json

import pytest

from gecko_jax.eval import SUITES, TASKS, run_suite
from gecko_jax.cli import eval as eval_cli


def test_small_suite_end_to_end(tmp_path, shared_data, bow, capsys):
    out = run_suite(bow, "small", dims=[None, 32], out_dir=tmp_path / "res", cache_dir=tmp_path / "cache",
                    data_dir=shared_data)
    assert list(out["tasks"]) == ["scifact", "stsb", "banking77"]
    for name, by_dims in out["tasks"].items():
        assert list(by_dims) == ["64 (full)", "32"]
        for r in by_dims.values():
            assert 0.0 < r["main_score"] <= 100.0, name
    # A bag of words is a real (weak) retriever: well above zero on SciFact.
    assert out["tasks"]["scifact"]["64 (full)"]["metrics"]["ndcg@10"] > 5.0
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    assert saved["tasks"]["stsb"]["32"]["main_score"] == pytest.approx(out["tasks"]["stsb"]["32"]["main_score"])
    md = (tmp_path / "res" / "results.md").read_text()
    assert "| scifact | ndcg@10 |" in md and "non-commercial" in md
    printed = capsys.readouterr().out
    assert "| banking77 | accuracy |" in printed
    # No task prompts by default.
    assert all(c["task"] is None for c in bow.calls)
    # Second run: the corpus comes from the disk cache.
    n_calls = len(bow.calls)
    run_suite(bow, "small", tasks=["scifact"], cache_dir=tmp_path / "cache", data_dir=shared_data, verbose=False)
    assert [c["kind"] for c in bow.calls[n_calls:]] == ["query"]


def test_gecko_task_prompts(tmp_path, shared_data, bow):
    run_suite(bow, "full", tasks=["stsb", "mr", "banking77_clustering"], task_prompts="gecko", cache_dir=None,
              data_dir=shared_data, verbose=False)
    # Clustering takes "classification" (issue 15), the string the mixture's classification sources train with.
    assert [c["task"] for c in bow.calls] == ["semantic similarity", "classification", "classification",
                                              "classification"]
    assert TASKS["scifact"].gecko_task == "fact checking"


def test_bad_arguments(bow, shared_data):
    with pytest.raises(ValueError, match="unknown suite 'medium'"):
        run_suite(bow, "medium")
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['msmarco'\]"):
        run_suite(bow, "small", tasks=["msmarco"], data_dir=shared_data)
    with pytest.raises(ValueError, match="task_prompts"):
        run_suite(bow, "small", tasks=["stsb"], task_prompts="e5", data_dir=shared_data, cache_dir=None)
    assert set(SUITES["small"]) <= set(SUITES["full"])


def test_cli_parser():
    import argparse

    p = argparse.ArgumentParser()
    eval_cli.configure_parser(p)
    a = p.parse_args(["--model", "m", "--suite", "fairness", "--dims", "full", "256", "--out", "o"])
    assert a.dims == [None, 256] and a.suite == "fairness" and a.task_prompts == "none"
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m", "--dims", "0"])
