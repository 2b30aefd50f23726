"""Configs, pulse runs of every entry point (2 steps, then resume), bad input, NaN stop, event files."""
from __future__ import annotations

import json
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402
from gecko_jax.data.jsonl import JsonlError  # noqa: E402
from gecko_jax.train import config as C  # noqa: E402
from gecko_jax.train.metrics import crc32c, read_records  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"


def _train_configs():
    out = []
    for path in sorted([*(REPO / "experiments").rglob("*.json"), *(REPO / "gecko_jax" / "configs").glob("*.json")]):
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(raw, dict) and "trainer" in raw:
            out.append(path)
    return out


def test_shipped_configs_are_found():
    names = {p.name for p in _train_configs()}
    assert {"gecko_finetune_minilm.json", "gecko_prefinetune_minilm.json", "ccd_debias_minilm.json",
            "noisy_mnist_gamblers.json", "tiny_contrastive.json", "tiny_classifier_digits.json"} <= names


_IMAGE_SHAPES = {"digits": (8, 8, 1), "tfds_local:mnist": (28, 28, 1), "tfds_local:cifar10": (32, 32, 3)}


def _config_params():
    """Configs whose pretrained model is large (the Gemma 3 270M GGUF: a ~2 min, 1 GB conversion on first use) are
    slow; the rest run in the default suite."""
    return [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if "gemma" in p.name else []) for p in _train_configs()]


@pytest.mark.parametrize("path", _config_params())
def test_every_shipped_config_parses_and_builds(path, monkeypatch):
    monkeypatch.chdir(REPO)  # shipped configs use paths relative to the repository root
    config = train.load_config(path)
    tx, schedule = train.make_optimizer(config.optimizer, config.steps)
    assert float(schedule(config.steps // 2)) > 0
    from gecko_jax.train.tasks import load_encoder, make_classifier_module

    key = jax.random.PRNGKey(0)
    if config.trainer == "contrastive":
        enc_cfg, params, tokenizer, module = load_encoder(config)
        ids = jnp.ones((2, 8), jnp.int32)
        shapes = jax.eval_shape(lambda k: module.init(k, ids, ids)["params"], key)
        if params is not None:  # the pretrained weights fit the module the config builds
            assert jax.tree.structure(shapes) == jax.tree.structure(params)
        if config.loss.matryoshka_dims:
            assert max(config.loss.matryoshka_dims) <= enc_cfg.output_dim
        assert tokenizer is not None
    else:
        from gecko_jax.train.classifier import FieldAdapter, takes_batch_dict

        k = 10 if config.data.source in _IMAGE_SHAPES else 2
        module = make_classifier_module(config, k + (config.loss.name == "gamblers"))
        if not takes_batch_dict(module):
            module = FieldAdapter(module)
        batch = {"image": jnp.zeros((2, *_IMAGE_SHAPES[config.data.source]), jnp.float32)}
        jax.eval_shape(lambda k_: module.init(k_, batch), key)
    files = [s.path for s in config.data.datasets] + ([config.data.debias_path] if config.data.debias_path else [])
    if files and all(pathlib.Path(f).exists() for f in files):  # local data: build the whole task too
        task = train.build_task(config)
        assert task.stream.batch(0)


def test_config_validation_names_the_field(tmp_path):
    data = th.write_pairs(tmp_path / "p.jsonl", 8)
    raw = th.contrastive_raw(data)
    cfg = train.from_dict(raw)
    with pytest.raises(C.ConfigError, match=r"'data.batch_size': expected a multiple of the device count \(3\)"):
        cfg.check_devices(3)
    with pytest.raises(C.ConfigError, match="'grad_cache_chunk': expected a divisor of data.batch_size=8"):
        train.from_dict({**raw, "grad_cache_chunk": 3})
    with pytest.raises(C.ConfigError, match=r"unknown field\(s\) \['learning_rat'\]"):
        train.from_dict({**raw, "optimizer": {"learning_rat": 1e-3}})
    with pytest.raises(C.ConfigError, match="'optimizer.schedule': expected one of"):
        train.from_dict(C.apply_overrides(raw, ["optimizer.schedule=exponential"]))
    with pytest.raises(C.ConfigError, match="'loss.name': expected one of \\['gecko'\\] for trainer 'contrastive'"):
        train.from_dict({**raw, "loss": {"name": "ce"}})
    over = train.from_dict(C.apply_overrides(raw, ["optimizer.learning_rate=0.5", "loss.matryoshka_dims=[16,8]",
                                                   "data.datasets=[{\"path\": \"x.jsonl\", \"weight\": 2}]"]))
    assert over.optimizer.learning_rate == 0.5 and over.loss.matryoshka_dims == (16, 8)
    assert over.data.datasets[0].weight == 2.0
    bad = tmp_path / "bad.json"
    bad.write_text('{"trainer": "contrastive",\n "steps": }')
    with pytest.raises(C.ConfigError, match=r"bad\.json:2: not valid JSON"):
        train.load_config(bad)


def test_registries_build():
    for name in C.OPTIMIZERS:
        for sched in C.SCHEDULES:
            tx, s = train.make_optimizer(C.OptimizerConfig(name=name, schedule=sched, warmup_steps=2), 10)
            assert float(s(0)) == 0.0 and float(s(2)) == pytest.approx(2e-5)
            tx.init({"w": jnp.zeros(3)})


def test_pulse_contrastive_resume_bad_input_and_init_checkpoint(tmp_path, monkeypatch):
    """The tiny shipped config: 2 steps, resume to 4; then bad data must fail before touching the workdir."""
    monkeypatch.chdir(REPO)
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    over = [f'data.datasets=[{{"path": "{data}"}}]', "steps=2", "checkpoint.every_steps=2", "progress=false",
            "log_every=1"]
    config = train.load_config(CONFIGS / "tiny_contrastive.json", over)
    assert config.grad_cache_chunk and config.loss.matryoshka_dims  # the pulse exercises both
    wd = tmp_path / "run"
    first = train.train_and_evaluate(config, wd)
    assert first.origin == "random" and first.steps_run == 2 and first.compilations >= 1
    m = th.read_metrics(wd)
    assert m[0] == {"step": 0, "negatives_per_query": 31.0}  # 15 in-batch + 1 hard + 15 same-tower, batch 16
    assert [r["step"] for r in m if "loss" in r] == [1, 2] and all(np.isfinite(r["loss"]) for r in m[1:])
    assert (wd / "export" / "model.safetensors").exists()

    config4 = train.load_config(CONFIGS / "tiny_contrastive.json", over[:1] + ["steps=4", "progress=false"])
    second = train.train_and_evaluate(config4, wd)
    assert second.origin == "workdir" and second.steps_run == 2 and int(second.state.step) == 4

    # bad input: a non-JSON line / a missing field / an empty text -> file:line error, nothing written is lost
    before = {p: p.read_bytes() for p in wd.rglob("*") if p.is_file()}
    good = data.read_text().splitlines()
    for bad_line, msg in [("{oops", "not valid JSON"), ('{"id": "x", "query": "q"}', "missing field 'positive'"),
                          ('{"id": "x", "query": "", "positive": "p", "negative": "n"}', "field 'query' is empty")]:
        data.write_text("\n".join(good[:7] + [bad_line] + good[7:]) + "\n")
        cfg6 = train.load_config(CONFIGS / "tiny_contrastive.json", over[:1] + ["steps=6"])
        with pytest.raises(JsonlError, match=rf"{data}:8: {msg}"):
            train.train_and_evaluate(cfg6, wd)
    after = {p: p.read_bytes() for p in wd.rglob("*") if p.is_file()}
    assert after == before

    # resume order, step 2: an explicit init checkpoint gives its params with a fresh optimizer at step 0
    data.write_text("\n".join(good) + "\n")
    cfg_init = train.load_config(CONFIGS / "tiny_contrastive.json",
                                 over[:1] + [f"checkpoint.init_checkpoint={json.dumps(str(wd / 'checkpoints'))}"])
    fresh = train.train_and_evaluate(cfg_init, tmp_path / "from_init", stop_after=0)
    assert fresh.origin == "init_checkpoint" and int(fresh.state.step) == 0
    for a, b in zip(jax.tree.leaves(fresh.state.params), jax.tree.leaves(second.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pulse_classifier_digits_then_resume(tmp_path):
    config = train.load_config(CONFIGS / "tiny_classifier_digits.json", ["steps=2", "progress=false", "log_every=1"])
    first = train.train_and_evaluate(config, tmp_path)
    assert first.origin == "random" and first.steps_run == 2
    assert 0.0 <= first.eval_metrics["eval_accuracy"] <= 1.0
    config4 = train.load_config(CONFIGS / "tiny_classifier_digits.json", ["steps=4", "progress=false"])
    second = train.train_and_evaluate(config4, tmp_path)
    assert second.origin == "workdir" and second.steps_run == 2
    # the gambler's head has m + 1 = 11 outputs (10 digits + abstain)
    head = [x for x in jax.tree.leaves(second.state.params) if x.ndim == 2][-1]
    assert head.shape == (64, 11)


def test_pulse_text_classifier_and_debias(tmp_path):
    lab = tmp_path / "lab.jsonl"
    lab.write_text("".join(json.dumps({"id": i, "text": f"note {i} about {th.TOPICS[i % 4]}", "label": i % 4}) + "\n"
                           for i in range(24)))
    raw = {"trainer": "classifier", "steps": 2, "progress": False, "log_every": 1,
           "model": {"tiny": {"num_layers": 1}, "tokenizer": "all-MiniLM-L6-v2", "classifier": "text_head"},
           "data": {"datasets": [{"path": str(lab)}], "eval_path": str(lab), "batch_size": 8, "max_length": 16,
                    "buckets": [16]},
           "optimizer": {"learning_rate": 1e-3}, "loss": {"name": "smoothed_ce", "smoothing_p": 0.8},
           "checkpoint": {"every_steps": 2}}
    res = train.train_and_evaluate(train.from_dict(raw), tmp_path / "text")
    assert res.steps_run == 2 and "eval_accuracy" in res.eval_metrics
    res = train.train_and_evaluate(train.from_dict({**raw, "steps": 3}), tmp_path / "text")
    assert res.origin == "workdir" and res.steps_run == 1

    data = th.write_pairs(tmp_path / "pairs.jsonl", 24)
    fair = th.write_fair(tmp_path / "fair.jsonl", 12)
    raw = th.contrastive_raw(data, steps=2, data={"debias_path": str(fair)},
                             loss={"debias_weight": 0.5, "debias_gamma": 1.0})
    res = train.train_and_evaluate(train.from_dict(raw), tmp_path / "debias")
    assert res.steps_run == 2 and res.last_metrics["debias_loss"] >= 0
    expected = res.last_metrics["contrastive_loss"] + 0.5 * res.last_metrics["debias_loss"]
    assert res.last_metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert "reference" in res.state.frozen  # f_0 of the anchor term is checkpointed with the state


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 24)
    config = train.from_dict(th.contrastive_raw(data, steps=6, checkpoint={"every_steps": 2, "keep": 5}))
    task = train.build_task(config)
    plain = task.loss_fn

    def poisoned(params, batch, rng, step, frozen):
        loss, aux = plain(params, batch, rng, step, frozen)
        return jnp.where(step >= 2, jnp.nan, loss), aux  # the 3rd step's loss is NaN

    task.step_loss = lambda: poisoned
    with pytest.raises(train.NonFiniteLossError, match=r"loss is nan at step 3.*last good checkpoint is step 2"):
        train.train_and_evaluate(config, tmp_path / "run", task=task)
    saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [2]
    ckpt = train.Checkpointer(tmp_path / "run" / "checkpoints", every_steps=2, keep=5)
    state = ckpt.restore(train.create_state(config, train.make_mesh(1), task))
    ckpt.close()
    assert int(state.step) == 2 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_event_file_is_valid_tfrecord(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    w = train.MetricsWriter(tmp_path)
    w.write(3, {"loss": 0.25, "note": "x"})
    w.close()
    (events,) = list((tmp_path / "tb").iterdir())
    records = read_records(events)
    assert len(records) == 2 and b"brain.Event:2" in records[0]
    rec = records[1]
    assert rec[rec.index(b"loss") - 2:rec.index(b"loss")] == b"\x0a\x04"  # tag field, length 4
    value = struct.unpack("<f", rec[rec.index(b"loss") + 5:rec.index(b"loss") + 9])[0]
    assert value == 0.25 and rec[9:11] == b"\x10\x03"  # step = 3
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "loss": 0.25, "note": "x"}


def test_export_keeps_the_pretrained_serving_length(tmp_path):
    """data.max_length caps training texts only: the exported model serves with the pretrained model's cap (256 for
    all-MiniLM-L6-v2), so before/after evaluations compare the same truncation."""
    data = th.write_pairs(tmp_path / "pairs.jsonl", 8)
    raw = th.contrastive_raw(data, model={"pretrained": "all-MiniLM-L6-v2", "tiny": None, "tokenizer": None})
    task = train.build_task(train.from_dict(raw))
    assert task.tokenizer.max_length == 32  # training cap from the config
    out = pathlib.Path(task.export(task.pretrained, tmp_path / "export"))
    emb = __import__("gecko_jax").Embedder.from_pretrained(out)
    assert emb.max_length == 256
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 256
    long_text = "word " * 200  # 200+ tokens: truncated at 256, not 32
    assert len(emb.tokenizer.encode([long_text], max_length=emb.max_length)[0]) > 32
