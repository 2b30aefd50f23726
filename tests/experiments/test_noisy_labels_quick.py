"""The ``--quick`` budgets of experiments/label_smoothing and experiments/gamblers, run in the suite through the
experiments' own command line (``gecko_jax.train``'s classifier grid): each trains the papers' MNIST CNN on a seeded
2,000-row subset for a few epochs (seed 0) and asserts, through the experiments' ``check_quick``, only what held with a
wide margin at every seed measured (CONTRIBUTING.md, "Direction checks"):

* gambler's loss (o = 9.9): the L* stopping rule fires at 50 % and 80 % symmetric noise, and the per-row training
  loss at the stop epoch separates corrupted from clean training rows (ROC-AUC, thresholds far below seeds 0-4);
* label smoothing at n = 0.6 (``slow``): every p learns the clean task (best-epoch accuracy > 0.5).

The papers' directions on this budget (stopped gambler's vs final NLL, p* vs p = 1) are seed- and CPU-dependent: one
flipped on an AVX2-only CPU (issue 14), the gambler's gain at n = 0.8 was -0.012 at seed 4. They are reported in the
experiment READMEs across seeds, never asserted on one seed here. The thresholds were measured on the earlier
``experiments/common.py`` loop, which gives the same per-epoch numbers as the grid trainer on these budgets (README
"--quick": before/after at seeds 0-1 for the gambler's loss, seed 0 for label smoothing).

Cost on the shared 2-core box: ~1-2 min per quick run idle, 4-6 min under load (load average 15).

Run: ``.venv/bin/python -m pytest -q tests/experiments/test_noisy_labels_quick.py``
"""
from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _experiment(exp: str):
    spec = importlib.util.spec_from_file_location(f"_quick_{exp}", ROOT / "experiments" / exp / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_quick(exp: str, config: str, out: pathlib.Path) -> dict:
    config_path = ROOT / "experiments" / exp / "configs" / f"{config}.json"
    rc = _experiment(exp).main(["--quick", "--config", str(config_path), "--out", str(out)])  # check_quick raises
    assert rc == 0
    return json.loads((out / f"{config}_summary.json").read_text())


def _needs(dataset: str):
    from gecko_jax import datasets

    res = datasets.where(dataset)
    if res.kind == "missing":
        pytest.skip(f"no local {dataset} copy ($GECKO_JAX_DATA or the cache {res.path})")


def test_quick_gamblers_stop_rule_fires_and_loss_finds_corrupted_rows(tmp_path):
    _needs("mnist")
    summary = _run_quick("gamblers", "mnist_symmetric", tmp_path)
    for name in _experiment("gamblers").QUICK_MIN["mnist_symmetric"]:
        row = summary["runs"][name]
        assert row["stop_epoch"] is not None and row["noise_rate"] in (0.5, 0.8)
        assert row["stop_threshold"] is not None and 0.0 <= row["loss_auc_stop"] <= 1.0
    assert (tmp_path / "mnist_symmetric_curves.png").stat().st_size > 0


@pytest.mark.slow
def test_quick_label_smoothing_learns_at_every_p(tmp_path):
    _needs("mnist")
    summary = _run_quick("label_smoothing", "mnist_grid", tmp_path)
    row = summary["per_noise"]["0.6"]
    assert row["p_nearest_pstar"] == pytest.approx(0.2) and row["acc_at_p1"] is not None
    assert len(row["final_acc"]) == len(row["p"]) == 3


def test_quick_text_set_runs_when_features_are_cached(tmp_path):
    from gecko_jax.train.grid_data import features_cache_dir

    _needs("mr")
    if not list(features_cache_dir().glob("mr_train_all-MiniLM-L6-v2_*.npy")):
        pytest.skip("MR sentence embeddings not cached (run experiments/gamblers/run.py --config "
                    "experiments/gamblers/configs/mr_symmetric.json once)")
    summary = _run_quick("gamblers", "mr_symmetric", tmp_path)
    assert set(summary["runs"]) == {"nll_n0.4", "gamblers_o1.95_n0.4"}
    assert all(0.5 < r["best_test_acc"] <= 1.0 for r in summary["runs"].values())
