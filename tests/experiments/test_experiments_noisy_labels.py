"""Configs of experiments/label_smoothing and experiments/gamblers parse and build; the shared vmapped loop equals
training each run on its own; a pulse run of both loss families.

Run: ``.venv/bin/python -m pytest -q experiments/label_smoothing/test_experiments_noisy_labels.py``
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import common  # noqa: E402

CONFIGS = sorted(p for exp in ("label_smoothing", "gamblers")
                 for p in (ROOT / "experiments" / exp / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shipped_config_parses_and_builds(path):
    cfg = common.load_config(path)
    assert cfg.runs and len({r.name for r in cfg.runs}) == len(cfg.runs)
    keep = cfg.quick.get("runs_filter")
    quick = cfg.quick_version()
    assert quick.runs and quick.quick == {}
    if keep:
        assert sorted(r.name for r in quick.runs) == sorted(keep), "runs_filter names a run the grid lacks"
    model = common.MODELS[cfg.dataset]
    assert model(num_outputs=cfg.num_classes + 1) is not None


def test_grid_expansion_and_config_errors(tmp_path):
    runs = common.expand_grid({"loss": "smoothed_ce", "p": [0.2, 1.0], "noise_rate": [0.4, 0.6]}, "x")
    assert [(r["p"], r["noise_rate"]) for r in runs] == [(0.2, 0.4), (0.2, 0.6), (1.0, 0.4), (1.0, 0.6)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "b", "dataset": "mnist", "epoch": 3, "runs": []}))
    with pytest.raises(common.ConfigError, match=r"bad.json: unknown fields \['epoch'\]"):
        common.load_config(bad)
    bad.write_text(json.dumps({"name": "b", "dataset": "mnist", "runs": [{"name": "r", "loss": "mse",
                                                                          "noise_rate": 0.2}]}))
    with pytest.raises(common.ConfigError, match=r"runs\[0\].*loss='mse'"):
        common.load_config(bad)
    bad.write_text(json.dumps({"name": "b", "dataset": "mnist", "runs": [{"name": "r", "loss": "gamblers",
                                                                          "noise_rate": 0.2, "payoff": 0.5}]}))
    with pytest.raises(common.ConfigError, match="payoff=0.5"):
        common.load_config(bad)


def _toy_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 10, n).astype(np.int32)
    # Class-dependent images so a few steps learn something.
    images = (rng.integers(0, 60, (n, 28, 28, 1)) + 19 * clean[:, None, None, None]).astype(np.uint8)
    noisy, corrupted = {}, {}
    for rate in (0.0, 0.5):
        flip = rng.random(n) < rate
        lab = np.where(flip, (clean + rng.integers(1, 10, n)) % 10, clean).astype(np.int32)
        noisy[rate], corrupted[rate] = lab, lab != clean
    return {"train_images": images, "clean_label": clean, "noisy_label": noisy, "corrupted": corrupted,
            "test_images": images[:100], "test_label": clean[:100]}


def _cfg(runs, **kw):
    return common.ExperimentConfig(name="t", dataset="mnist", runs=tuple(runs), epochs=2, batch_size=64, **kw)


@pytest.mark.parametrize("family_runs", [
    [common.RunSpec("ce", "ce", 0.5), common.RunSpec("ls", "smoothed_ce", 0.0, p=0.3)],
    [common.RunSpec("g", "gamblers", 0.5, payoff=5.0), common.RunSpec("ga", "gamblers", 0.0, payoff="auto")],
], ids=["smoothed", "gamblers"])
def test_vmapped_runs_equal_runs_trained_alone(family_runs):
    data = _toy_data()
    together = common.train_group(_cfg(family_runs), family_runs, data, log=lambda *_: None)
    for run, joint in zip(family_runs, together):
        alone = common.train_group(_cfg([run]), [run], data, log=lambda *_: None)[0]
        np.testing.assert_allclose(joint["train_loss"], alone["train_loss"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(joint["test_loss"], alone["test_loss"], rtol=1e-4, atol=1e-4)
        assert joint["test_acc"] == alone["test_acc"]
    assert together[0]["train_loss"] != together[1]["train_loss"]


def test_pulse_records_histories_and_stop_rule():
    data = _toy_data()
    runs = [common.RunSpec("nll", "ce", 0.5), common.RunSpec("g", "gamblers", 0.5, payoff=9.9)]
    out = [r for fam in ("smoothed", "gamblers")
           for r in common.train_group(_cfg(runs), [x for x in runs if x.family == fam], data, log=lambda *_: None)]
    nll, gam = out
    for r in out:
        assert len(r["train_loss"]) == len(r["test_acc"]) == 2 and np.isfinite(r["train_loss"]).all()
        assert len(r["loss_auc"]) == 2 and 0.0 <= r["loss_auc_final"] <= 1.0
        assert 0.0 <= r["final_test_acc"] <= 1.0
    assert nll["abstain_auc"] == [] and len(gam["abstain_auc"]) == 2
    assert gam["stop_threshold"] == pytest.approx(1.786, abs=1e-3)
    expected_stop = next((e + 1 for e, l in enumerate(gam["train_loss"]) if l < gam["stop_threshold"]), None)
    assert gam["stop_epoch"] == expected_stop
    h = gam["abstain_final"]
    assert sum(h["clean"]) == int((~data["corrupted"][0.5]).sum())
    assert sum(h["corrupted"]) == int(data["corrupted"][0.5].sum())


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = rng.random(500) + 0.3 * y
    s[:50] = 0.5                                                # ties
    assert common._roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_observed_label_loss_matches_the_training_losses():
    import jax.numpy as jnp

    from gecko_jax import losses

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50, 11)).astype(np.float32) * 2
    labels = rng.integers(0, 10, (3, 50))
    probs = np.asarray(jax_softmax(logits), np.float64)
    got = common._observed_label_loss(probs, labels, "gamblers", np.array([9.9, -1.0, 9.9], np.float32),
                                      np.array([False, False, True]))
    want = [losses.gamblers(jnp.asarray(logits[0]), jnp.asarray(labels[0]), payoff=9.9),
            losses.gamblers(jnp.asarray(logits[1]), jnp.asarray(labels[1]),
                            payoff=losses.auto_payoff(jnp.asarray(logits[1]), method="euc")),
            losses.gamblers(jnp.asarray(logits[2]), jnp.asarray(labels[2]), payoff=1010.0, allow_nll_payoff=True)]
    np.testing.assert_allclose(got, np.stack([np.asarray(w) for w in want]), rtol=1e-4, atol=1e-5)
    nll = common._observed_label_loss(probs[..., :10] / probs[..., :10].sum(-1, keepdims=True), labels, "smoothed",
                                      None, None)
    np.testing.assert_allclose(nll, -np.log(np.take_along_axis(np.asarray(jax_softmax(logits[..., :10])),
                                                               labels[..., None], -1)[..., 0]), rtol=1e-4, atol=1e-5)


def jax_softmax(x):
    import jax

    return jax.nn.softmax(jax.numpy.asarray(x), axis=-1)
