"""Training-side sequence packing (``data.pack_length``): same embeddings, loss and gradients as padded rows."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402
from gecko_jax.data.tokenize import Tokenizer  # noqa: E402
from gecko_jax.embedder import resolve_model_path  # noqa: E402
from gecko_jax.train.config import ConfigError  # noqa: E402

TOWERS = ("query", "positive", "negative")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"), max_length=32)


def test_pack_layout_holds_every_text_once(tokenizer):
    texts = [f"sentence number {i} " + "word " * (i % 9) for i in range(21)] + ["", "x"]
    ref = tokenizer.encode(texts, max_length=32)
    out = tokenizer.pack(texts, width=32, max_length=32, row_multiple=4)
    rows = out["input_ids"].shape[0]
    assert rows % 4 == 0 and out["input_ids"].shape == out["segment_ids"].shape == (rows, 32)
    np.testing.assert_array_equal(out["lengths"], [len(s) for s in ref])
    used = sum(len(s) for s in ref)
    assert rows * 32 < 23 * 32 and rows * 32 >= used  # fewer tokens than one text per row, and nothing lost
    for i, seq in enumerate(ref):  # each text's tokens, in order, with positions restarting at 0
        where = out["segment_ids"] == i
        assert where.sum() == len(seq) and len(np.unique(np.nonzero(where)[0])) == 1  # one row, contiguous
        np.testing.assert_array_equal(out["input_ids"][where], seq)
        np.testing.assert_array_equal(out["position_ids"][where], np.arange(len(seq)))
        assert len(np.unique(out["packed_ids"][where])) == 1 and out["packed_ids"][where][0] > 0
    pad = out["segment_ids"] == len(texts)
    assert (out["packed_ids"][pad] == 0).all() and pad.sum() == rows * 32 - used
    # the row count comes from at most 8 bucket sizes per text count: a few compiles, not one per batch
    counts = {tokenizer.pack([t * k for t in texts], width=32, max_length=32)["input_ids"].shape[0]
              for k in range(1, 6)}
    assert counts <= {-(-23 * k // 8) for k in range(1, 9)}
    with pytest.raises(ValueError, match="pack width must be an int >= max_length=32"):
        tokenizer.pack(texts, width=16, max_length=32)


def _tasks(tmp_path, **model):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 32, negatives=2)
    out = []
    for pack in (None, 32):
        raw = th.contrastive_raw(data, data={"batch_size": 16, "hard_negatives": 2, "pack_length": pack,
                                             "buckets": [32]},
                                 model={"dropout": 0.0, **model}, loss={"matryoshka_dims": [32, 16]})
        task = train.build_task(train.from_dict(raw))
        out.append((task, jax.tree.map(jnp.asarray, task.stream.batch(0))))
    return out


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_loss_and_grads_equal_padded(tmp_path, pooling):
    (plain, b_plain), (packed, b_packed) = _tasks(tmp_path, tiny={"num_layers": 1, "pooling": pooling})
    # one token batch for all three towers: 16 queries + 16 positives + 32 hard negatives
    assert set(TOWERS).isdisjoint(b_packed) and b_packed["packed"]["lengths"].shape == (64,)
    assert "attention_mask" in b_plain["query"]
    padded_tokens = sum(b_plain[t]["input_ids"].size for t in TOWERS)
    assert b_packed["packed"]["input_ids"].size < padded_tokens  # the point of packing: fewer token positions
    params = jax.jit(plain.init_params)(jax.random.PRNGKey(0))
    e_plain = plain.embed_towers(params, b_plain, jax.random.PRNGKey(1))  # dropout 0: keys do not matter
    e_packed = packed.embed_towers(params, b_packed, jax.random.PRNGKey(2))
    for t in TOWERS:
        assert e_plain[t].shape == e_packed[t].shape
        np.testing.assert_allclose(np.asarray(e_packed[t]), np.asarray(e_plain[t]), atol=2e-5)
    step = jnp.zeros((), jnp.int32)

    def value_and_grad(task, batch):
        return jax.jit(jax.value_and_grad(lambda p: task.loss_fn(p, batch, jax.random.PRNGKey(1), step, {}),
                                          has_aux=True))(params)

    (l_plain, _), g_plain = value_and_grad(plain, b_plain)
    (l_packed, _), g_packed = value_and_grad(packed, b_packed)
    assert float(l_plain) > 0
    np.testing.assert_allclose(float(l_packed), float(l_plain), rtol=1e-5, atol=1e-5)
    gmax = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_plain))
    assert gmax > 1e-5  # not vacuous (random tiny encoder: cls-pooled gradients are small)
    for a, b in zip(jax.tree.leaves(g_packed), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3 * gmax, rtol=1e-4)


def test_packed_training_runs_and_resumes(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 40)
    raw = th.contrastive_raw(data, data={"pack_length": 32}, steps=2)
    wd = tmp_path / "run"
    first = train.train_and_evaluate(train.from_dict(raw), wd)
    assert first.steps_run == 2 and all(np.isfinite(r["loss"]) for r in th.read_metrics(wd) if "loss" in r)
    second = train.train_and_evaluate(train.from_dict({**raw, "steps": 4}), wd)
    assert second.origin == "workdir" and int(second.state.step) == 4


def test_pack_config_errors_name_the_field(tmp_path):
    data = th.write_pairs(tmp_path / "pairs.jsonl", 8)
    cases = [({"data": {"pack_length": 16}}, "data.pack_length"),  # shorter than max_length=32
             ({"data": {"pack_length": 64}, "grad_cache_chunk": 4}, "grad_cache_chunk")]
    for over, field in cases:
        with pytest.raises(ConfigError, match=f"config field '{field}'"):
            train.from_dict(th.contrastive_raw(data, **over))
    config = train.from_dict(th.contrastive_raw(data, data={"pack_length": 64}))
    config.check_devices(1, num_processes=2)  # each process packs its own rows (tests/train/test_train_distributed.py)
    with pytest.raises(ConfigError, match="data.batch_size"):
        config.check_devices(1, num_processes=3)  # 8 rows do not split over 3 processes


def test_step_flops_count_real_tokens_packed_or_padded_and_the_loop_tallies_them(tmp_path):
    from gecko_jax import runtime

    (plain, b_plain), (packed, b_packed) = _tasks(tmp_path, tiny={"num_layers": 1})
    lengths = [int(n) for t in TOWERS for n in np.asarray(b_plain[t]["attention_mask"]).sum(axis=1)]
    want = runtime.encoder_flops(plain.encoder_config, lengths, training=True)
    assert want > 0 and plain.step_flops(b_plain) == pytest.approx(want)
    assert packed.step_flops(b_packed) == pytest.approx(want)  # padding never counts, packed or not

    data = th.write_pairs(tmp_path / "pairs2.jsonl", 40)
    raw = th.contrastive_raw(data, data={"pack_length": 32}, steps=2)
    cfg = train.from_dict(raw)
    task = train.build_task(cfg)
    expect = sum(task.step_flops(task.stream.batch(b)) for b in range(2))
    before = runtime.flops_counted()
    train.train_and_evaluate(cfg, tmp_path / "run", task=task)
    assert runtime.flops_counted(since=before)["train"] == pytest.approx(expect)
