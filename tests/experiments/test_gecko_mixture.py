"""experiments/gecko/mixture.py: every cell is a valid variant of the shipped recipe, and the report (results/
mixture.json in the issue's shape + the Markdown table) is computed from the per-cell files."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mix():
    spec = importlib.util.spec_from_file_location("gecko_mixture_exp", REPO / "experiments/gecko/mixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cells_are_recipe_variants(mix):
    from gecko_jax.recipe import load_recipe

    base = load_recipe()
    full = mix.cell_recipe("full", 1, base)
    assert full.seed == 1 and [s.name for s in full.sources] == [s.name for s in base.sources]
    names = {c: [s.name for s in mix.cell_recipe(c, 0, base).sources] for c in mix.ABLATION[:-1]}
    assert names["a1_retr"] == ["fret", "scifact"]
    assert set(names["a1_retr"]) < set(names["a2_nli"]) < set(names["a3_cls"]) < {s.name for s in base.sources}
    uni = mix.cell_recipe("w_uniform", 0, base)
    assert {s.weight for s in uni.sources} == {1.0}
    size = mix.cell_recipe("w_size", 0, base, records={s.name: 10 * (k + 1) for k, s in enumerate(base.sources)})
    assert [s.weight for s in size.sources] == [10.0 * (k + 1) for k in range(len(base.sources))]
    with pytest.raises(ValueError, match="w_size needs"):
        mix.cell_recipe("w_size", 0, base)
    records = {s.name: 3 + k for k, s in enumerate(base.sources)}
    shas = {mix.cell_recipe(c, 0, base, records=records).sha() for c in mix.ORDER}
    assert len(shas) == len(mix.ORDER)  # every cell is a different recipe
    assert mix.cell_tasks("full") == mix.TEST_TASKS and "scifact" not in mix.cell_tasks("a2_nli")
    assert "scifact" in mix.cell_tasks("a2_nli", scifact_test_all=True)


def _fake(cell, seed, shift):
    metrics = {t: 50.0 + shift + seed for t in ("scifact", "stsb", "banking77")}
    return {"cell": cell, "seed": seed, "prompts": True, "config_sha": "x", "sources": {"nli": 9}, "steps": 3,
            "metrics": metrics, "metrics_by_dims": {"256": metrics}, "dev": {"stsb_dev": 70.0 + seed}}


def test_report_shape_and_table(mix, tmp_path):
    base = {"raw": {"metrics": {"scifact": 51.0, "stsb": 52.0, "banking77": 49.0}, "metrics_by_dims": {}},
            "prompts": {"metrics": {"scifact": 50.0, "stsb": 40.0, "banking77": 45.0}},
            "dev_raw": {"stsb_dev": 71.0}, "dev_prompts": {"stsb_dev": 60.0}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "cells").mkdir()
    for seed in (0, 1, 2):
        (tmp_path / "cells" / f"full_s{seed}.json").write_text(json.dumps(_fake("full", seed, 0.0)))
    (tmp_path / "cells" / "a2_nli_s0.json").write_text(json.dumps(
        {**_fake("a2_nli", 0, -5.0), "metrics": {"stsb": 44.0, "banking77": 45.0}}))
    res = mix.report(tmp_path, tmp_path / "copy")
    saved = json.loads((tmp_path / "results" / "mixture.json").read_text())
    assert saved == json.loads((tmp_path / "copy" / "mixture.json").read_text())
    assert saved["base"] == base["raw"]["metrics"]
    assert [(c["cell"], c["seed"]) for c in saved["cells"]] == [("full", 0), ("full", 1), ("full", 2), ("a2_nli", 0)]
    for c in saved["cells"]:
        assert {"cell", "seed", "prompts", "config_sha", "sources", "steps", "metrics", "metrics_by_dims"} <= set(c)
    full = res["summary"]["full"]["metrics"]["scifact"]
    assert full["mean"] == pytest.approx(51.0) and full["sd"] == pytest.approx(1.0)
    md = (tmp_path / "results" / "mixture.md").read_text()
    assert "| full | 3 | 51.00 ± 1.00 | 51.00 ± 1.00 | **51.00 ± 1.00** |" in md  # bold: above the base
    assert "| a2_nli | 1 | - | 44.00 | 45.00 |" in md  # one seed: no sd


def test_recipe_with_training_and_raw_only_base_report(mix, tmp_path):
    from gecko_jax.recipe import load_recipe

    base_cfg = load_recipe()
    small = base_cfg.with_training(steps=100, prefinetune_steps=20, interpolate=[0.5, 1.0])
    ft, pft = small.stage_config("finetune"), small.stage_config("prefinetune")
    assert (ft.steps, pft.steps, tuple(small.interpolate)) == (100, 20, (0.5, 1.0))
    assert ft.optimizer.warmup_steps <= 10 and pft.optimizer.warmup_steps <= 2
    assert ft.checkpoint.every_steps <= 50 and pft.checkpoint.every_steps <= 10
    assert small.sha() != base_cfg.sha() and base_cfg.with_training().sha() == base_cfg.sha()
    assert base_cfg.stage_config("finetune").steps != 100  # the shipped recipe is untouched
    # A raw-only base (short budget): the base dev row comes from the cell's dev selection; no prompted base rows.
    (tmp_path / "base.json").write_text(json.dumps(
        {"raw": {"metrics": {"scifact": 51.0, "stsb": 52.0, "banking77": 49.0}, "metrics_by_dims": {}}}))
    (tmp_path / "cells").mkdir()
    cell = {**_fake("full", 0, 0.0), "dev_base": {"stsb_dev": 71.0}}
    (tmp_path / "cells" / "full_s0.json").write_text(json.dumps(cell))
    res = mix.report(tmp_path)
    assert res["base_dev"] == {"stsb_dev": 71.0} and res["base_prompts"] == {}
    md = (tmp_path / "results" / "mixture.md").read_text()
    assert "Gecko prompts" not in md and "| base, raw text | 71.00 |" in md
    assert "| full | 1 | 50.00 | 50.00 | **50.00** |" in md


def test_merge_evals_adds_missing_tasks(mix):
    prev = {"metrics": {"stsb": 80.0}, "metrics_by_dims": {"256": {"stsb": 79.0}}, "seconds": 5.0}
    new = {"metrics": {"sst2": 60.0}, "metrics_by_dims": {"256": {"sst2": 59.0}, "64": {"sst2": 50.0}},
           "seconds": 2.0}
    got = mix.merge_evals(prev, new)
    assert got == {"metrics": {"stsb": 80.0, "sst2": 60.0}, "seconds": 7.0,
                   "metrics_by_dims": {"256": {"stsb": 79.0, "sst2": 59.0}, "64": {"sst2": 50.0}}}
    assert mix.merge_evals(None, new) is new
    cell = dict(prev, seconds={"recipe": 9.0, "eval": 5.0})  # a saved cell file: seconds per stage
    assert mix.merge_evals(cell, new)["metrics"] == got["metrics"]


def test_w_size_weights_come_from_the_full_cell_even_without_its_workdir(mix, tmp_path):
    from gecko_jax.recipe import load_recipe

    base = load_recipe()
    assert mix.full_records(tmp_path, 0, base) is None
    (tmp_path / "cells").mkdir()
    counts = {s.name: 10 + k for k, s in enumerate(base.sources)}
    (tmp_path / "cells" / "full_s0.json").write_text(json.dumps({"sources": counts}))
    assert mix.full_records(tmp_path, 0, base) == counts
    run = tmp_path / "runs" / "full_s0"
    run.mkdir(parents=True)
    (run / "recipe_result.json").write_text(json.dumps({"sources": {**counts, "nli": 1}}))
    assert mix.full_records(tmp_path, 0, base)["nli"] == 1  # the workdir's own record wins


def test_put_table_fills_the_generated_block(mix, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{mix.README_BEGIN}\nold table\n{mix.README_END}\noutro\n")
    mix.put_table(readme, "| a |\n|---|\n")
    assert readme.read_text() == f"intro\n{mix.README_BEGIN}\n| a |\n|---|\n{mix.README_END}\noutro\n"
    (tmp_path / "other.md").write_text("no block\n")
    with pytest.raises(SystemExit, match="no '<!-- mixture table"):
        mix.put_table(tmp_path / "other.md", "x")
