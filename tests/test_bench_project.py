"""bench/project_main_job.py: a finished main job projected to another box from its per-stage FLOP counts."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("project_main_job", REPO / "bench" / "project_main_job.py")
pm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pm)


def _results():
    return {
        "seconds": 700.0,
        "stage_seconds": {"fret": 150.0, "eval_base": 0.1, "train": 340.0, "eval_tuned": 200.0},
        "stage_flops": {"fret": {"encode": 2.0e12}, "train": {"train": 34.0e12}, "eval_tuned": {"encode": 30.0e12}},
        "fret": {"stages": {"generate": {"seconds": 25.0}, "retrieve": {"seconds": 5.0}, "score": {"seconds": 85.0}}},
        "box": {"machine": "test box", "peak_gflops": 200.0, "llm_tokens_per_s": 700.0},
    }


def test_same_box_gives_back_the_measured_stage_times():
    rows = {r["stage"]: r for r in pm.project(_results(), peak=200.0, llm_rate=700.0)}
    for stage, secs in _results()["stage_seconds"].items():
        assert rows[stage]["projected"] == pytest.approx(secs)
    assert rows["fret"]["llm_seconds"] == 110.0
    assert rows["train"]["share_here"] == pytest.approx(34e3 / 340 / 200)  # 34,000 GFLOP in 340 s on 200 GFLOP/s


def test_projection_splits_llm_time_from_flop_time_and_takes_given_shares():
    res = _results()
    rows = {r["stage"]: r for r in pm.project(res, peak=100.0, llm_rate=350.0)}
    assert rows["train"]["projected"] == pytest.approx(680.0)  # half the peak: twice the compute time
    assert rows["fret"]["projected"] == pytest.approx(110.0 * 2 + 40.0 * 2)
    scaled = {r["stage"]: r for r in pm.project(res, peak=100.0, llm_rate=1400.0)}
    assert scaled["fret"]["projected"] == pytest.approx(110.0 / 2 + 40.0 * 2)  # the LLM follows its own rate
    factor = {r["stage"]: r for r in pm.project(res, peak=100.0, llm_rate=1400.0, llm_factor=3.0)}
    assert factor["fret"]["projected"] == pytest.approx(110.0 * 3 + 40.0 * 2)  # measured LLM times win
    with pytest.raises(ValueError, match="llm-factor"):
        pm.project(res, peak=100.0, llm_factor=0.0)
    given = {r["stage"]: r for r in pm.project(res, peak=100.0, shares={"eval_tuned": 0.5})}
    assert given["eval_tuned"]["projected"] == pytest.approx(30e3 / (0.5 * 100.0))
    assert given["eval_base"]["projected"] == pytest.approx(0.2)  # no FLOPs: wall time scaled by the peaks


def test_cli_prints_a_total_and_refuses_results_without_counts(tmp_path, capsys):
    good = tmp_path / "r.json"
    good.write_text(json.dumps(_results()))
    assert pm.main([str(good), "--peak", "100", "--llm-rate", "350"]) == 0
    out = capsys.readouterr().out
    assert "total: 700 s here ->" in out and "train" in out
    old = dict(_results())
    del old["stage_flops"]
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(old))
    assert pm.main([str(bad), "--peak", "100"]) == 2
    assert f"{bad}: results: no 'box.peak_gflops'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pm.main([str(good), "--peak", "100", "--share", "nonsense=0.5"])
