"""The classifier trainer's vmapped grid of runs (gecko_jax.train.grid): stacked runs equal runs trained alone for
every loss family, early-stopping callbacks (L*, noisy validation, halting, kept params), exact resume, and the one
loss definition shared with the single-run task. A linear head on synthetic class-dependent features (fast to
compile); the papers' CNN runs in tests/experiments (the --quick budgets)."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax import losses
from gecko_jax.train import grid
from gecko_jax.train.classifier import (AUTO_PAYOFF_CODES, loss_hparam, observed_label_loss, per_example_loss)
from gecko_jax.train.config import ConfigError, LossConfig, ModelConfig
from gecko_jax.train.early_stopping import LStarStop, NoisyValidationStop, RunView
from gecko_jax.train.grid_config import GridConfig, GridData, GridRun
from gecko_jax.train.grid_data import GridArrays


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """Compile time dominates these tests; both sides of every comparison run under the same flag."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def toy_data(n=192, n_val=64, seed=0, rates=(0.0, 0.5)) -> GridArrays:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 10, n + n_val).astype(np.int32)
    # Class-dependent features so a few steps learn something.
    images = (rng.normal(size=(10, 16))[clean] + rng.normal(size=(n + n_val, 16))).astype(np.float32)
    noisy, corrupted = {}, {}
    for rate in rates:
        flip = rng.random(n + n_val) < rate
        lab = np.where(flip, (clean + rng.integers(1, 10, n + n_val)) % 10, clean).astype(np.int32)
        noisy[rate], corrupted[rate] = lab, lab != clean
    tr, va = np.arange(n), np.arange(n, n + n_val)
    return GridArrays(train_inputs=images[tr], clean_label=clean[tr], noisy_label={k: v[tr] for k, v in noisy.items()},
                      corrupted={k: v[tr] for k, v in corrupted.items()}, test_inputs=images[:100],
                      test_label=clean[:100], num_classes=10, val_inputs=images[va], val_clean=clean[va],
                      val_noisy={k: v[va] for k, v in noisy.items()})


def cfg(runs, epochs=2, data=None, **kw) -> GridConfig:
    kw.setdefault("model", ModelConfig(classifier="linear"))
    return GridConfig(name="t", data=data or GridData(dataset="mnist", batch_size=64), runs=tuple(runs),
                      epochs=epochs, eval_batch=64, **kw)


def run(run_name, rate, loss, **fields) -> GridRun:
    return GridRun(run_name, rate, LossConfig(name=loss, **fields))


FAMILIES = {
    "smoothed": [run("ce", 0.5, "ce"), run("ls", 0.0, "smoothed_ce", smoothing_p=0.3),
                 run("opt", 0.5, "smoothed_ce", smoothing_p="optimal")],
    "forward": [run("fsym", 0.5, "forward_ce"), run("fpair", 0.5, "forward_ce", transition="pairflip")],
    "gamblers": [run("g", 0.5, "gamblers", payoff=5.0), run("euc", 0.0, "gamblers", payoff=None),
                 run("mid", 0.5, "gamblers", payoff=None, payoff_method="mid", nll_warmup_epochs=1),
                 run("exp", 0.5, "gamblers", payoff=None, payoff_method="exp")],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_vmapped_runs_equal_runs_trained_alone(family):
    data, runs = toy_data(), FAMILIES[family]
    together = grid.train_grid(cfg(runs), data=data, log=lambda *_: None).runs
    for r, joint in zip(runs, together):
        alone = grid.train_grid(cfg([r]), data=data, log=lambda *_: None).runs[0]
        np.testing.assert_allclose(joint["train_loss"], alone["train_loss"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(joint["test_loss"], alone["test_loss"], rtol=1e-4, atol=1e-4)
        assert joint["test_acc"] == alone["test_acc"]
    assert together[0]["train_loss"] != together[1]["train_loss"]


def test_histories_rules_and_stop_records():
    data = toy_data()
    runs = [run("nll", 0.5, "ce"), run("g", 0.5, "gamblers", payoff=9.9, nll_warmup_epochs=1)]
    rules = [LStarStop(halt=False), NoisyValidationStop(patience=1, halt=False)]
    out = grid.train_grid(cfg(runs, epochs=3), data=data, rules=rules, log=lambda *_: None).runs
    nll, gam = out
    for r in out:
        assert len(r["train_loss"]) == len(r["test_acc"]) == len(r["val_acc"]) == len(r["train_fit"]) == 3
        assert np.isfinite(r["train_loss"]).all() and 0.0 <= r["loss_auc_final"] <= 1.0
        best_val = int(np.argmax(r["val_acc"])) + 1
        assert r["stops"]["noisy_val"]["selected_epoch"] == best_val
        assert r["stops"]["noisy_val"]["test_acc"] == r["test_acc"][best_val - 1]
    assert "lstar" not in nll["stops"] and nll["abstain_auc"] == [] and len(gam["abstain_auc"]) == 3
    assert gam["stop_threshold"] == pytest.approx(1.786, abs=1e-3)
    # The rule reads the epochs after the NLL warm-up only.
    below = [e + 1 for e, l in enumerate(gam["train_loss"]) if e >= 1 and l < gam["stop_threshold"]]
    assert gam["stop_epoch"] == (below[0] if below else None)
    h = gam["abstain_final"]
    assert sum(h["clean"]) == int((~data.corrupted[0.5]).sum()) and sum(h["corrupted"]) == int(data.corrupted[0.5].sum())


@dataclasses.dataclass(frozen=True)
class StopAt:
    """A test rule: stops every run at ``epoch``, keeping the epoch before."""

    epoch: int
    only: str | None = None
    name: str = "stop_at"
    halt: bool = True
    needs_validation = False

    def applies(self, run):
        return self.only is None or run.name == self.only

    def update(self, view: RunView):
        return max(view.epoch - 1, 1), view.epoch >= self.epoch

    def describe(self, run):
        return {}


def test_halting_rule_ends_training_and_keeps_the_selected_params():
    data = toy_data()
    runs = FAMILIES["smoothed"][:2]
    res = grid.train_grid(cfg(runs, epochs=4), data=data, rules=[StopAt(2)], keep_params=True, log=lambda *_: None)
    for r in res.runs:
        assert r["epochs_run"] == 2 and len(r["test_acc"]) == 2
        assert r["stops"]["stop_at"] == dict(r["stops"]["stop_at"], stop_epoch=2, selected_epoch=1)
    one = grid.train_grid(cfg(runs, epochs=1), data=data, keep_params=True, log=lambda *_: None)
    for r in runs:  # the params kept at epoch 1 are those of a 1-epoch run (same program, same batches)
        kept, ref = res.params[r.name]["stop_at"], one.params[r.name]["final"]
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), kept, ref)
    # A halting rule that applies to only some runs cannot stop the group.
    partial = grid.train_grid(cfg(runs, epochs=3), data=data, rules=[StopAt(1, only="ce")], log=lambda *_: None)
    assert [r["epochs_run"] for r in partial.runs] == [3, 3]
    assert partial.runs[0]["stops"]["stop_at"]["stop_epoch"] == 1 and "stop_at" not in partial.runs[1]["stops"]


class _Interrupt(Exception):
    pass


def test_resume_from_workdir_equals_straight(tmp_path):
    data = toy_data()
    runs = FAMILIES["gamblers"][:2]
    straight = grid.train_grid(cfg(runs, epochs=3), data=data, log=lambda *_: None).runs

    def die_after_two(msg):
        if "epoch 2/3" in msg:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        grid.train_grid(cfg(runs, epochs=3), data=data, workdir=tmp_path, log=die_after_two)
    lines = []
    resumed = grid.train_grid(cfg(runs, epochs=3), data=data, workdir=tmp_path, log=lines.append).runs
    assert any("resumed after epoch 2" in x for x in lines) and sum("epoch 3/3" in x for x in lines) == 1
    for a, b in zip(straight, resumed):
        for key in ("train_loss", "test_loss", "test_acc", "loss_auc", "abstain_auc"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)


def test_resume_key_ignores_the_description_but_not_the_training(tmp_path):
    runs = FAMILIES["gamblers"][:2]
    base = cfg(runs, epochs=3)
    path = grid._group_path(tmp_path, base, runs, [])
    assert grid._group_path(tmp_path, dataclasses.replace(base, description="reworded"), runs, []) == path
    assert grid._group_path(tmp_path, cfg(runs, epochs=4), runs, []) != path


def test_noisy_validation_rule_needs_a_split():
    data = dataclasses.replace(toy_data(), val_inputs=None, val_clean=None, val_noisy=None)
    with pytest.raises(ConfigError, match=r"need a noisy validation split \(data.val_fraction > 0\)"):
        grid.train_grid(cfg(FAMILIES["smoothed"][:1]), data=data, rules=[NoisyValidationStop()])
    with pytest.raises(ValueError, match="metric"):
        NoisyValidationStop(metric="acc")


def test_loss_hparam_resolves_rules_and_channels():
    assert loss_hparam(LossConfig(name="ce"), 10, 0.4, "symmetric") == 1.0
    opt = LossConfig(name="smoothed_ce", smoothing_p="optimal")
    assert loss_hparam(opt, 10, 0.4, "symmetric") == pytest.approx(losses.optimal_smoothing(0.4, 10), abs=1e-7)
    told = dataclasses.replace(opt, assumed_noise_rate=0.2)
    assert loss_hparam(told, 10, 0.4, "symmetric") == pytest.approx(0.644, abs=1e-3)
    assert loss_hparam(LossConfig(name="smoothed_ce", smoothing_p="agnostic"), 10, 0.4, "x") == pytest.approx(0.4)
    t = loss_hparam(LossConfig(name="forward_ce"), 4, 0.3, "pairflip")
    np.testing.assert_allclose(t, [[0.7, 0.3, 0, 0], [0, 0.7, 0.3, 0], [0, 0, 0.7, 0.3], [0.3, 0, 0, 0.7]], atol=1e-7)
    sym = loss_hparam(LossConfig(name="forward_ce", transition="symmetric"), 3, 0.3, "pairflip")
    np.testing.assert_allclose(sym, [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]], atol=1e-7)
    with pytest.raises(ConfigError, match="row-stochastic"):
        loss_hparam(LossConfig(name="forward_ce", transition=[[1.0, 0.5], [0.0, 1.0]]), 2, 0.1, "symmetric")
    assert loss_hparam(LossConfig(name="gamblers", payoff=None, payoff_method="exp"), 10, 0.5, "x") == -3.0
    with pytest.raises(ConfigError, match="smoothing_p"):
        LossConfig(name="smoothed_ce", smoothing_p="best")


def test_per_example_loss_is_the_papers_losses():
    rng = np.random.default_rng(0)
    logits, labels = jnp.asarray(rng.normal(size=(8, 11)) * 2, jnp.float32), jnp.asarray(rng.integers(0, 10, 8))
    want = {9.9: losses.gamblers(logits, labels, payoff=9.9)}
    for method, code in AUTO_PAYOFF_CODES.items():
        want[code] = losses.gamblers(logits, labels, payoff=losses.auto_payoff(logits, method))
    for code, w in want.items():
        got = jax.jit(per_example_loss, static_argnums=(0, 5))("gamblers", logits, labels, jnp.float32(code),
                                                               jnp.bool_(False), 10)
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)
    warm = per_example_loss("gamblers", logits, labels, jnp.float32(-1.0), jnp.bool_(True), 10)
    np.testing.assert_allclose(warm, losses.gamblers(logits, labels, payoff=1010.0, allow_nll_payoff=True), rtol=1e-5)
    t = jnp.asarray(loss_hparam(LossConfig(name="forward_ce"), 10, 0.3, "pairflip"))
    np.testing.assert_allclose(per_example_loss("forward", logits[:, :10], labels, t, False, 10),
                               losses.forward_corrected_cross_entropy(logits[:, :10], labels, transition=t), rtol=1e-6)


def test_observed_label_loss_matches_the_training_losses():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50, 11)).astype(np.float32) * 2
    labels = rng.integers(0, 10, (3, 50))
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1), np.float64)
    got = observed_label_loss(probs, labels, "gamblers", np.array([9.9, -1.0, 9.9], np.float32),
                              np.array([False, False, True]))
    want = [losses.gamblers(jnp.asarray(logits[0]), jnp.asarray(labels[0]), payoff=9.9),
            losses.gamblers(jnp.asarray(logits[1]), jnp.asarray(labels[1]),
                            payoff=losses.auto_payoff(jnp.asarray(logits[1]), method="euc")),
            losses.gamblers(jnp.asarray(logits[2]), jnp.asarray(labels[2]), payoff=1010.0, allow_nll_payoff=True)]
    np.testing.assert_allclose(got, np.stack([np.asarray(w) for w in want]), rtol=1e-4, atol=1e-5)
    cls = np.asarray(jax.nn.softmax(jnp.asarray(logits[..., :10]), axis=-1), np.float64)
    nll = observed_label_loss(cls, labels, "smoothed", None, None)
    np.testing.assert_allclose(nll, -np.log(np.take_along_axis(cls, labels[..., None], -1)[..., 0]), rtol=1e-6)
    t = np.stack([loss_hparam(LossConfig(name="forward_ce"), 10, 0.3, "pairflip")] * 3)
    fwd = observed_label_loss(cls, labels, "forward", t, None)
    np.testing.assert_allclose(fwd, np.stack([np.asarray(losses.forward_corrected_cross_entropy(
        jnp.asarray(logits[i, :, :10]), jnp.asarray(labels[i]), transition=t[i])) for i in range(3)]), rtol=1e-4)


def test_observed_label_loss_is_finite_when_a_row_abstains_fully():
    probs = np.zeros((1, 2, 11))
    probs[0, 0, -1] = 1.0  # every unit of mass on "abstain": the 'euc' payoff's numerator is 0
    probs[0, 1, :10] = 0.1
    got = observed_label_loss(probs, np.array([[3, 3]]), "gamblers", np.array([-1.0], np.float32), np.array([False]))
    assert np.isfinite(got).all() and got[0, 1] == pytest.approx(-np.log(0.1), rel=1e-6)


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = rng.random(500) + 0.3 * y
    s[:50] = 0.5                                                # ties
    assert grid.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(grid.roc_auc(s, np.zeros(500, bool)))


def test_chunked_pads_and_moves_the_row_axis():
    x = np.arange(2 * 5).reshape(2, 5)                          # [R, N] labels
    chunks, valid = grid.chunked(x, 2, axis=1)
    assert chunks.shape == (3, 2, 2) and valid.tolist() == [[True, True], [True, True], [True, False]]
    np.testing.assert_array_equal(chunks[1], x[:, 2:4])
    tree, _ = grid.chunked({"a": np.ones((5, 3)), "b": np.zeros(5, np.int32)}, 4)
    assert tree["a"].shape == (2, 4, 3) and tree["b"].shape == (2, 4)


class _TokenModel(nn.Module):
    """A token-dict model with the grid calling convention (as EncoderHead), cheap."""

    num_outputs: int

    @nn.compact
    def __call__(self, tokens, train=False):
        emb = nn.Embed(50, 8)(tokens["input_ids"]) * tokens["attention_mask"][..., None]
        return nn.Dense(self.num_outputs)(emb.sum(1))


def test_token_dict_inputs_train(monkeypatch):
    rng = np.random.default_rng(0)
    n = 96
    ids = rng.integers(1, 50, (n + 32, 6)).astype(np.int32)
    clean = (ids[:, 0] % 2).astype(np.int32)
    toks = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    take = lambda idx: {k: v[idx] for k, v in toks.items()}  # noqa: E731
    data = GridArrays(train_inputs=take(slice(0, n)), clean_label=clean[:n], noisy_label={0.2: clean[:n]},
                      corrupted={0.2: np.zeros(n, bool)}, test_inputs=take(slice(n, None)), test_label=clean[n:],
                      num_classes=2)
    monkeypatch.setattr(grid, "build_module", lambda c, outputs: (_TokenModel(outputs), None))
    runs = [run("nll", 0.2, "ce"), run("g", 0.2, "gamblers", payoff=1.95)]
    grid_cfg = cfg(runs, data=GridData(dataset="mr", batch_size=32, features="x"))
    out = grid.train_grid(grid_cfg, data=data, log=lambda *_: None).runs
    assert all(len(r["test_acc"]) == 2 and np.isfinite(r["train_loss"]).all() for r in out)


def test_grid_data_noisy_validation_split_is_fixed_across_seeds():
    from gecko_jax import datasets
    from gecko_jax.train.grid_data import load_grid_data

    if datasets.where("mnist").kind == "missing":
        pytest.skip("no local MNIST copy ($GECKO_JAX_DATA or the cache)")
    runs = (run("a", 0.0, "ce"), run("b", 0.5, "ce"))
    base = GridConfig(name="d", data=GridData(dataset="mnist", subset=300, test_subset=50, val_fraction=0.2),
                      runs=runs)
    d0, d1 = load_grid_data(base, log=lambda *_: None), load_grid_data(base.with_seed(1), log=lambda *_: None)
    assert d0.num_train == 240 and d0.val_clean.shape == (60,) and len(d0.test_label) == 50
    # The same training and validation rows at every seed; the seed redraws the noise (and the test subset).
    np.testing.assert_array_equal(d0.train_inputs, d1.train_inputs)
    np.testing.assert_array_equal(d0.val_inputs, d1.val_inputs)
    assert not np.array_equal(d0.noisy_label[0.5], d1.noisy_label[0.5])
    assert not np.any((d0.train_inputs[:, None] == d0.val_inputs[None]).all(axis=(2, 3, 4)))
    # Validation labels come from the same noise draw as the training labels; rate 0 leaves them clean.
    np.testing.assert_array_equal(d0.val_noisy[0.0], d0.val_clean)
    assert 0.3 < np.mean(d0.val_noisy[0.5] != d0.val_clean) < 0.7
    np.testing.assert_array_equal(d0.corrupted[0.5], d0.noisy_label[0.5] != d0.clean_label)
