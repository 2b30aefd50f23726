"""Grid configs of the classifier trainer (gecko_jax.train.grid_config): grid expansion, loss defaults, the quick
block, and one-line errors that name the file, the line and the field."""
from __future__ import annotations

import json

import pytest

from gecko_jax.train.config import ConfigError
from gecko_jax.train.grid_config import expand_grid, grid_from_dict, load_grid_config

BASE = {"name": "g", "data": {"dataset": "mnist", "subset": 100}, "epochs": 3}


def write(tmp_path, raw, indent=1):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw, indent=indent))
    return path


def test_grid_crosses_lists_first_listed_outermost_and_names_runs():
    runs = expand_grid({"name": "p{smoothing_p}_n{noise_rate}", "loss": {"name": "smoothed_ce",
                                                                        "smoothing_p": [0.2, 1.0]},
                        "noise_rate": [0.4, 0.6]})
    assert [r["name"] for r in runs] == ["p0.2_n0.4", "p0.2_n0.6", "p1.0_n0.4", "p1.0_n0.6"]
    assert runs[1] == {"name": "p0.2_n0.6", "noise_rate": 0.6, "loss": {"name": "smoothed_ce", "smoothing_p": 0.2}}
    default = expand_grid({"loss": {"name": "ce"}, "noise_rate": [0.1]})
    assert default[0]["name"] == "ce_noise_rate0.1"


def test_loss_defaults_quick_block_and_seed(tmp_path):
    raw = dict(BASE, loss_defaults={"nll_warmup_epochs": 2},
               runs=[{"name": "a", "noise_rate": 0.5, "loss": {"name": "gamblers", "payoff": 9.9}},
                     {"name": "b", "noise_rate": 0.5, "loss": {"name": "gamblers", "payoff": None,
                                                               "nll_warmup_epochs": 0}}],
               quick={"epochs": 1, "data": {"subset": 10}, "loss_defaults": {"nll_warmup_epochs": 1}, "runs": ["a"]})
    cfg = load_grid_config(write(tmp_path, raw))
    assert [r.loss.nll_warmup_epochs for r in cfg.runs] == [2, 0]          # a run's own value wins
    assert cfg.optimizer.name == "adam" and cfg.optimizer.clip_norm is None  # the papers' optimiser by default
    quick = load_grid_config(write(tmp_path, raw), quick=True)
    assert [r.name for r in quick.runs] == ["a"] and quick.epochs == 1 and quick.data.subset == 10
    assert quick.data.dataset == "mnist" and quick.runs[0].loss.nll_warmup_epochs == 1
    seeded = cfg.with_seed(4)
    assert seeded.seed == 4 and seeded.name == "g_seed4" and seeded.runs == cfg.runs


@pytest.mark.parametrize("change, match", [
    (lambda r: r.update(epoch=3), r"c.json:1: field '<top level>': unknown field\(s\) \['epoch'\]"),
    (lambda r: r["data"].update(dataset="imagenet"), r"c.json:4: field 'data.dataset': expected one of"),
    (lambda r: r["data"].update(val_fraction=0.7), r"c.json:\d+: field 'data.val_fraction'"),
    (lambda r: r["runs"][1]["loss"].update(payoff=0.5), r"c.json:\d+: runs\[1\] \('b'\): .*'loss.payoff'.*0.5"),
    (lambda r: r["runs"][0]["loss"].update(name="mse"), r"runs\[0\] \('a'\): .*'loss.name'.*'mse'"),
    (lambda r: r["runs"][0].update(noise_rate=1.5), r"runs\[0\] \('a'\): field 'noise_rate'"),
    (lambda r: r["runs"].append(dict(r["runs"][0])), r"field 'runs': expected unique run names, got \['a'\]"),
    (lambda r: r.update(model={"classifier": "text_head"}), r"'model.classifier'.*text sets"),
    (lambda r: r["quick"].update(runs=["zz"]), r"c.json:\d+: quick.field 'runs'.*\['zz'\]"),
])
def test_errors_name_file_line_and_field(tmp_path, change, match):
    raw = dict(BASE, runs=[{"name": "a", "noise_rate": 0.5, "loss": {"name": "ce"}},
                           {"name": "b", "noise_rate": 0.5, "loss": {"name": "gamblers", "payoff": 9.9}}],
               quick={"runs": ["a"]})
    raw = json.loads(json.dumps(raw))
    change(raw)
    with pytest.raises(ConfigError, match=match) as err:
        load_grid_config(write(tmp_path, raw), quick=True)
    assert "\n" not in str(err.value)


def test_json_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"name": "g",\n "epochs": 3,,\n}')
    with pytest.raises(ConfigError, match=r"c.json:2: not valid JSON"):
        load_grid_config(path)
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_grid_config(tmp_path / "missing.json")


def test_line_of_a_run_error_points_at_that_run(tmp_path):
    raw = dict(BASE, runs=[{"name": "a", "loss": {"name": "ce"}}, {"name": "b", "loss": {"name": "xx"}}])
    path = write(tmp_path, raw, indent=2)
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if '"b"' in l)
    with pytest.raises(ConfigError, match=rf"c.json:{line}: runs\[1\]"):
        load_grid_config(path)
    cfg = grid_from_dict(dict(BASE, runs=[{"name": "a", "loss": {"name": "ce"}}]))
    assert cfg.keep_runs(["a"]).runs == cfg.runs
