"""Mixture training through the engine: one source per batch with per-source hard-negative counts, per-source
metrics (metrics.jsonl + TensorBoard), and an interrupted mixture run resumed equal to a straight one."""
from __future__ import annotations


import jax
import numpy as np
import pytest

import train_helpers as th  # noqa: E402
from train_helpers import fast_compiles  # noqa: E402,F401  (autouse fixture)

from gecko_jax import train  # noqa: E402
from gecko_jax.data import mixture as mx  # noqa: E402
from gecko_jax.train.metrics import read_records  # noqa: E402


def _mixture(tmp_path) -> list[dict]:
    """Three sources: retrieval-style pairs with hard negatives, symmetric STS-style pairs without any, and a
    classification source (label mask ids)."""
    pairs = th.write_pairs(tmp_path / "pairs.jsonl", 24, negatives=1)
    sts = mx.write_records(mx.sts_records([f"a sentence about {t}" for t in th.TOPICS],
                                          [f"one more sentence on {t}" for t in th.TOPICS], [5.0] * 8),
                           tmp_path / "sts.jsonl")
    texts = [f"{t} text number {k}" for k in range(4) for t in th.TOPICS[:4]]
    labels = [t for k in range(4) for t in th.TOPICS[:4]]
    cls = mx.write_records(mx.classification_records(texts, labels, source="cls"), tmp_path / "cls.jsonl")
    return [{"path": str(pairs), "weight": 1.0, "name": "pairs"},
            {"path": str(sts), "weight": 1.0, "name": "sts", "hard_negatives": 0},
            {"path": str(cls), "weight": 1.0, "name": "cls"}]


def _config(tmp_path, **top):
    raw = th.contrastive_raw(tmp_path / "unused.jsonl", steps=8, **top)
    raw["data"]["datasets"] = _mixture(tmp_path)
    raw["data"]["hard_negatives"] = 1
    return train.from_dict(raw)


def test_batches_come_from_one_source_with_its_own_negative_count(tmp_path):
    config = _config(tmp_path)
    task = train.build_task(config)
    seen = set()
    for b in range(24):
        name = task.stream.source_name(b)
        batch = task.stream.batch(b)
        seen.add(name)
        assert ("negative" in batch) == (name != "sts")  # STS pairs: in-batch negatives only
        if name == "cls":  # label mask ids: rows of one label share an id, so they mask each other
            assert len(set(batch["ids"].tolist())) <= 4
    assert seen == {"pairs", "sts", "cls"}
    assert config.data.datasets[1].hard_negatives == 0 and config.data.datasets[0].name == "pairs"


def test_per_source_metrics_and_resume_equals_straight_run(tmp_path):
    config = _config(tmp_path, log_every=4, checkpoint={"every_steps": 4, "keep": 2, "export": False})
    straight = train.train_and_evaluate(config, tmp_path / "straight")
    m = th.read_metrics(tmp_path / "straight")
    logged = [r for r in m if "loss" in r]
    assert [r["step"] for r in logged] == [4, 8]
    task = train.build_task(config)
    for r, window in zip(logged, (range(0, 4), range(4, 8))):
        names = [task.stream.source_name(b) for b in window]
        counts = {k: float(names.count(k)) for k in set(names)}
        assert {k[len("batches/"):]: v for k, v in r.items() if k.startswith("batches/")} == counts
        assert {k[len("loss/"):] for k in r if k.startswith("loss/")} == set(counts)
        assert all(np.isfinite(v) for k, v in r.items() if k.startswith("loss/"))
    tags = b"".join(read_records(next((tmp_path / "straight" / "tb").glob("events.*"))))
    assert b"loss/" in tags and b"batches/" in tags

    # interrupted after 4 steps, resumed: the same parameters as the straight run (1e-6)
    first = train.train_and_evaluate(config, tmp_path / "resumed", stop_after=4)
    assert int(first.state.step) == 4
    second = train.train_and_evaluate(config, tmp_path / "resumed")
    assert second.origin == "workdir" and second.steps_run == 4
    for a, b in zip(jax.tree.leaves(second.state.params), jax.tree.leaves(straight.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_dataset_spec_validation_names_the_field(tmp_path):
    with pytest.raises(train.ConfigError, match="'data.datasets\\[\\].hard_negatives'"):
        train.from_dict(th.contrastive_raw(tmp_path / "x.jsonl", data={"datasets": [{"path": "x", "hard_negatives":
                                                                                      -1}]}))
