"""Parameters and optimizer state sharded over an ``fsdp`` (and ``model``) mesh axis by config rules train exactly
like the replicated layout on 8 simulated CPU devices; rules are checked; checkpoints restore across layouts.

Runs in a subprocess through ``run_multidevice`` (tests/conftest.py): hard timeout, up to two retries on the XLA:CPU
collective deadlock only.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

HERE = pathlib.Path(__file__).parent
import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles, root_conftest  # noqa: E402,F401  (fixtures)

from gecko_jax import train  # noqa: E402
from gecko_jax.errors import ConfigError  # noqa: E402

SCRIPT = r"""
import json, pathlib, sys
import jax, numpy as np
from tests.train import train_helpers as th
exec(th.fast_compile_code())
from gecko_jax import train
from gecko_jax.train.checkpoint import Checkpointer

assert jax.device_count() == 8, jax.devices()
tmp = pathlib.Path({tmp!r})
data = th.write_pairs(tmp / "pairs.jsonl", 48, negatives=2)
base = th.contrastive_raw(data, data={{"batch_size": 16, "hard_negatives": 2, "buckets": [32]}},
                          model={{"tiny": {{"num_layers": 1, "hidden_dropout": 0.1, "attention_dropout": 0.1,
                                             "intermediate_size": 64}}}})
variants = {variants}
batches = None
out = {{}}
for name, sharding in variants.items():
    config = train.from_dict({{**base, "sharding": sharding}})
    task = train.build_task(config)
    batches = batches or [task.stream.batch(b) for b in range(3)]
    mesh = train.mesh_from_config(config)
    state = train.create_state(config, mesh, task)
    step = train.make_step(task.step_loss(), config, mesh)
    losses = []
    for i, b in enumerate(batches):
        state, metrics = step(state, train.global_batch(b, mesh))
        losses.append(float(metrics["loss"]))
        if i == 1 and name == {save!r}:
            ckpt = Checkpointer(tmp / "ckpt", every_steps=1, keep=1)
            ckpt.save(2, state, force=True)
            ckpt.close()
            saved = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    per_device = sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for _, x in flat)
    shards = {{jax.tree_util.keystr(p): list(x.sharding.shard_shape(x.shape)) for p, x in flat
               if "word_embeddings" in jax.tree_util.keystr(p) or "mlp_in" in jax.tree_util.keystr(p)}}
    out[name] = {{"losses": losses, "params": [np.asarray(x) for x in jax.tree.leaves(state.params)],
                 "bytes": per_device, "shards": shards, "mesh": dict(mesh.shape)}}
# a checkpoint written in one layout restores into another (orbax reshards on read)
other = {restore!r}
config = train.from_dict({{**base, "sharding": variants[other]}})
task = train.build_task(config)
like = train.create_state(config, train.mesh_from_config(config), task)
ckpt = Checkpointer(tmp / "ckpt", every_steps=1, keep=1)
restored = ckpt.restore(like)
ckpt.close()
restore_diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(jax.tree.leaves(restored.params), saved))
restored_sharded = [str(x.sharding.spec) for x in jax.tree.leaves(restored.params)]
ref = out.pop("replicated")
report = {{"ref_losses": ref["losses"], "ref_bytes": ref["bytes"], "restore_diff": restore_diff,
          "restored_specs": restored_sharded}}
for name, r in out.items():
    report[name] = {{"losses": r["losses"], "bytes": r["bytes"], "shards": r["shards"], "mesh": r["mesh"],
                    "diff": max(float(np.max(np.abs(a - b))) for a, b in zip(r["params"], ref["params"]))}}
report["moved"] = max(float(np.max(np.abs(a - b))) for a, b in
                      zip(ref["params"], jax.tree.leaves(train.create_state(config, train.make_mesh(1), task).params)))
print("RESULT " + json.dumps(report))
"""

REPLICATED = {}
AUTO = {"fsdp2": {"fsdp": 2, "min_shard_size": 0}, "fsdp4": {"fsdp": 4, "min_shard_size": 0},
        "fsdp8": {"fsdp": 8, "min_shard_size": 0}}
# explicit rules: the token table split over fsdp by rows, the FFN split over model (tensor parallel), others fsdp
EXPLICIT = {"fsdp2_model2": {"fsdp": 2, "model": 2, "rules": [
    ["word_embeddings/embedding$", ["fsdp", None]],
    ["mlp_in/kernel$", [None, "model"]],
    ["mlp_in/bias$", ["model"]],
    ["mlp_out/kernel$", ["model", None]],
    [".*", "fsdp"]], "min_shard_size": 0}}


def _run(tmp_path, root_conftest, variants: dict, save: str, restore: str) -> dict:
    script = SCRIPT.format(here=str(HERE), tmp=str(tmp_path), variants=repr({"replicated": REPLICATED, **variants}),
                           save=save, restore=restore)
    proc = root_conftest.run_multidevice(script, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _check(r: dict, names) -> None:
    assert r["moved"] > 1e-4  # the steps changed the params, so equality is not vacuous
    for name in names:
        v = r[name]
        for a, b in zip(v["losses"], r["ref_losses"]):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (name, v["losses"], r["ref_losses"])
        assert v["diff"] <= 1e-5, (name, v["diff"])
        assert v["bytes"] < r["ref_bytes"], (name, v["bytes"], r["ref_bytes"])  # really less state per device
    assert r["restore_diff"] == 0.0
    assert any("fsdp" in s for s in r["restored_specs"])  # restored straight into the other (sharded) layout


@pytest.mark.multidevice
def test_fsdp_and_model_rules_equal_replicated_on_8_devices(tmp_path, root_conftest):
    r = _run(tmp_path, root_conftest, {"fsdp4": AUTO["fsdp4"], **EXPLICIT}, save="fsdp4", restore="fsdp2_model2")
    _check(r, ["fsdp4", "fsdp2_model2"])
    fsdp4, tp = r["fsdp4"], r["fsdp2_model2"]
    assert fsdp4["mesh"] == {"data": 2, "fsdp": 4, "model": 1} and tp["mesh"] == {"data": 2, "fsdp": 2, "model": 2}
    def shard(r, *words):
        return [s for k, s in r["shards"].items() if all(w in k for w in words)][0]

    # "fsdp" picks the largest dimension that divides: 30,522 rows do not divide by 4, the 32 columns do
    assert shard(fsdp4, ".params", "word_embeddings") == [30522, 32 // 4]
    assert shard(fsdp4, "mu", "word_embeddings") == [30522, 32 // 4]  # the Adam moments follow their parameter
    assert shard(tp, ".params", "mlp_in", "kernel") == [32, 64 // 2]  # the FFN's columns split over model=2
    assert shard(tp, ".params", "word_embeddings") == [30522 // 2, 32]  # the explicit rule: rows over fsdp=2


@pytest.mark.multidevice
@pytest.mark.slow
def test_fsdp_2_and_8_equal_replicated_on_8_devices(tmp_path, root_conftest):
    r = _run(tmp_path, root_conftest, {"fsdp2": AUTO["fsdp2"], "fsdp8": AUTO["fsdp8"]}, save="fsdp8",
             restore="fsdp2")
    _check(r, ["fsdp2", "fsdp8"])
    assert r["fsdp8"]["bytes"] < r["fsdp2"]["bytes"]


# ------------------------------------------------------------------------------------------ rules, in process
def _config(tmp_path, **sharding):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 8)
    return train.from_dict({**th.contrastive_raw(data), "sharding": sharding})


def test_sharding_config_errors_name_the_field(tmp_path):
    bad = [({"fsdp": 0}, "sharding.fsdp"), ({"rules": [["(", "fsdp"]]}, r"sharding.rules\[0\]"),
           ({"rules": [[".*", "zero3"]]}, r"sharding.rules\[0\]"), ({"rules": [[".*", ["data", "tensor"]]]}, "sharding"),
           ({"rules": [".*"]}, "sharding.rules"), ({"fsdp": "2"}, "sharding.fsdp")]
    for sharding, field in bad:
        with pytest.raises(ConfigError, match=field):
            _config(tmp_path, **sharding)


def test_rules_pick_shardings_and_refuse_what_does_not_divide(tmp_path):
    from jax.sharding import PartitionSpec as P

    from gecko_jax.train.state import state_shardings

    mesh = train.make_mesh(1, fsdp=1)
    tree = {"params": {"emb": jax.ShapeDtypeStruct((30, 8), np.float32), "bias": jax.ShapeDtypeStruct((8,), np.float32)},
            "step": jax.ShapeDtypeStruct((), np.int32)}
    got = state_shardings(tree, mesh, [("emb", "replicated"), (".*", P("fsdp"))])
    assert got["params"]["emb"].spec == P() and got["params"]["bias"].spec == P("fsdp") and got["step"].spec == P()
    # "fsdp": the largest dimension that divides; small leaves stay replicated
    fake = type("M", (), {"shape": {"data": 1, "fsdp": 4, "model": 1}})
    from gecko_jax.train import state as S

    assert S._fsdp_spec((30, 8), 4, 0) == P(None, "fsdp") and S._fsdp_spec((32, 8), 4, 0) == P("fsdp")
    assert S._fsdp_spec((32, 8), 4, 1000) == P() and S._fsdp_spec((3, 5), 4, 0) == P()
    with pytest.raises(ConfigError, match="does not divide"):
        S._check_divides(P("fsdp"), (30, 8), fake, "emb", "params/emb")
    with pytest.raises(ConfigError, match="sharding.fsdp"):
        train.make_mesh(1, fsdp=2)
    config = _config(tmp_path, fsdp=1)
    assert config.sharding.partition_rules() == []
    assert _config(tmp_path, fsdp=4).sharding.partition_rules() == [(".*", "fsdp")]
