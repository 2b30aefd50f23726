"""3 train steps on 8 simulated CPU devices equal the same steps on 1 device (hard + same-tower negatives on).

Runs in a subprocess through ``run_multidevice`` (tests/conftest.py): XLA:CPU collectives deadlock now and then on
2 cores (DESIGN.md), so the subprocess has a hard timeout and up to two retries on that failure only.
"""
from __future__ import annotations

import json
import pathlib

import pytest

HERE = pathlib.Path(__file__).parent
from train_helpers import root_conftest  # noqa: E402,F401  (fixture)


@pytest.fixture
def run_multidevice(root_conftest):  # noqa: F811
    return root_conftest.run_multidevice

SCRIPT = r"""
import json, pathlib, sys
import jax, jax.numpy as jnp, numpy as np
from tests.train import train_helpers as th
exec(th.fast_compile_code())
from gecko_jax import train

assert jax.device_count() == 8, jax.devices()
data = th.write_pairs(pathlib.Path({tmp!r}) / "pairs.jsonl", 48, negatives=2)
raw = th.contrastive_raw(data, data={{"batch_size": 16, "hard_negatives": 2, "pack_length": {pack}}},
                         grad_cache_chunk={chunk})
config = train.from_dict(raw)
task = train.build_task(config)
batches = [task.stream.batch(b) for b in range(3)]
out = {{}}
for n in (8, 1):
    mesh = train.make_mesh(n)
    config.check_devices(mesh.size)
    state = train.create_state(config, mesh, task)
    step = train.make_step(task.step_loss(), config, mesh)
    losses = []
    for b in batches:
        state, metrics = step(state, train.global_batch(b, mesh))
        losses.append(float(metrics["loss"]))
    p = jax.tree.leaves(state.params)
    out[n] = {{"losses": losses, "params": [np.asarray(x) for x in p],
              "sharding": str(jax.tree.leaves(state.params)[0].sharding), "ndev": len(p[0].sharding.device_set)}}
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(out[8]["params"], out[1]["params"]))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(out[8]["params"],
            jax.tree.leaves(train.create_state(config, train.make_mesh(1), task).params)))
print("RESULT " + json.dumps({{"loss8": out[8]["losses"], "loss1": out[1]["losses"], "param_diff": diff,
                               "moved": moved, "ndev8": out[8]["ndev"], "ndev1": out[1]["ndev"]}}))
"""


@pytest.mark.multidevice
@pytest.mark.parametrize("chunk,pack", [(0, None), (0, 32), pytest.param(8, None, marks=pytest.mark.slow)],
                         ids=["plain", "packed", "grad_cache"])
def test_eight_devices_equal_one(tmp_path, chunk, pack, run_multidevice):
    """chunk=8: the gradient-cached step (strided chunks spread over all 8 devices) too; marked slow (~1 min).
    pack=32: packed rows (data.pack_length) sharded over the 8 devices, segment sums reduced across them."""
    script = SCRIPT.format(here=str(HERE), tmp=str(tmp_path), chunk=chunk, pack="None" if pack is None else pack)
    proc = run_multidevice(script, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT "):])
    assert r["ndev8"] == 8 and r["ndev1"] == 1  # params really replicated over 8 devices vs on one
    for a, b in zip(r["loss8"], r["loss1"]):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (r["loss8"], r["loss1"])
    assert r["param_diff"] <= 1e-5, r["param_diff"]
    assert r["moved"] > 1e-4  # the steps changed the params, so equality is not vacuous
    assert r["loss1"][0] != r["loss1"][1]
