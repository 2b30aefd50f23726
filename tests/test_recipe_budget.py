"""RecipeConfig's typed variants (with_training, tiny, with_fret, with_budget / StageBudget): the recipe's sha and the
stage keys (the StageStore folder names) are pinned, so runs finished before the variants became methods are still
found. The pinned digests were computed on the pre-method code (JSON patched as dicts) from the recipe below."""
import json

import pytest

from gecko_jax import quickstart as qs
from gecko_jax.errors import ConfigError
from gecko_jax.recipes import gecko as R
from gecko_jax.recipes.gecko import _stage_dict
from gecko_jax.recipes.runlog import digest

RECIPE = {
    "model": "all-MiniLM-L6-v2", "seed": 0, "max_chars": 400,
    "sources": [{"name": "fret", "kind": "fret", "path": "/nonexistent/fret.jsonl", "task_balance": "uniform"},
                {"name": "nli", "kind": "nli", "dataset": "snli_senteval"},
                {"name": "banking77", "kind": "classification", "dataset": "banking77", "limit": 500},
                {"name": "scifact", "kind": "retrieval", "dataset": "scifact", "task": "fact checking"}],
    "prefinetune_sources": [{"name": "title_body", "kind": "title_body", "dataset": "scifact"}],
    "finetune": {"trainer": "contrastive", "steps": 300, "log_every": 10,
                 "data": {"batch_size": 32, "max_length": 128, "hard_negatives": 1, "gecko_format": True},
                 "optimizer": {"learning_rate": 2e-5, "schedule": "warmup_linear", "warmup_steps": 30},
                 "loss": {"name": "gecko", "same_tower": True},
                 "checkpoint": {"every_steps": 50, "keep": 1, "export": True}},
    "prefinetune": {"trainer": "contrastive", "steps": 60, "log_every": 10,
                    "data": {"batch_size": 64, "max_length": 128, "hard_negatives": 0},
                    "optimizer": {"learning_rate": 2e-5, "schedule": "warmup_linear", "warmup_steps": 6},
                    "loss": {"name": "gecko", "same_tower": False},
                    "checkpoint": {"every_steps": 30, "keep": 1, "export": False}},
    "interpolate": [0.5, 1.0]}
FRET = "/nonexistent/fret2.jsonl"
# name -> (recipe sha, stage-1 key, stage-2 key), from the code before the methods (see the module docstring)
PINNED = {"plain": ("c00b4c9a4131", "75feed3c49b5", "0e0626e5ac9d"),
          "qs_default": ("508c69d6a09b", "ef498001dd57", "05d18b371a6b"),
          "qs_flags": ("26be027c6547", "157ff7501662", "fc06804195e9"),
          "qs_tiny": ("7d3e1d49201b", "1ddccf36d0ae", "9f4a7d6bb6db"),
          "qs_tiny_flags": ("caf1a8feaaad", "d3764295a0e8", "3b0a768bd680"),
          "budget_100": ("be96a0094e0b", "75feed3c49b5", "1c8ae009f780"),
          "budget_40_8": ("92f3c63718e8", "ab65da8414a7", "547b1287d056")}


def _keys(cfg):
    return (cfg.sha(),) + tuple(digest(_stage_dict(cfg.stage_config(s, [{"path": "p", "name": "n"}])))
                                for s in ("prefinetune", "finetune"))


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(RECIPE))
    return str(path)


def test_variants_keep_the_pinned_sha_and_stage_keys(recipe_file):
    plain = R.load_recipe(recipe_file)
    opts = qs.resolve_options
    built = {
        "plain": plain,
        # the quickstart's default budget for the shipped recipe, here from a file (so given explicitly)
        "qs_default": qs.recipe_config(opts(recipe=recipe_file, steps=60, prefinetune_steps=20), FRET, None),
        "qs_flags": qs.recipe_config(opts(recipe=recipe_file, steps=7, prefinetune_steps=5, batch_size=8,
                                          learning_rate=1e-5), FRET, None),
        "qs_tiny": qs.recipe_config(opts(recipe=recipe_file, tiny=True), FRET, None),
        "qs_tiny_flags": qs.recipe_config(opts(recipe=recipe_file, tiny=True, steps=3, batch_size=6,
                                               learning_rate=3e-5), FRET, None),
        "budget_100": plain.with_training(steps=100),  # the mixture cells at --steps 100
        "budget_40_8": R.budget_recipe(plain, steps=40, prefinetune_steps=8, interpolate=[1.0]),
    }
    assert {k: _keys(v) for k, v in built.items()} == PINNED
    # the same variants written as method calls on the recipe
    direct = plain.with_fret(FRET).tiny().with_training(learning_rate=None)
    assert _keys(direct) == PINNED["qs_tiny"]
    assert _keys(plain.with_fret(FRET).with_training(steps=60, prefinetune_steps=20, checkpoints=1)) == \
        PINNED["qs_default"]
    assert plain.with_training().sha() == plain.sha() and plain.with_budget().sha() == plain.sha()


def test_variants_are_typed_and_leave_the_recipe_alone(recipe_file):
    plain = R.load_recipe(recipe_file)
    small = plain.with_training(steps=40, prefinetune_steps=8, batch_size=16, learning_rate=1e-4)
    ft, pft = small.stage_config("finetune"), small.stage_config("prefinetune")
    assert (ft.steps, ft.data.batch_size, ft.optimizer.learning_rate) == (40, 16, 1e-4)
    assert (ft.optimizer.warmup_steps, ft.checkpoint.every_steps) == (4, 20)  # a tenth; two checkpoints
    assert (pft.steps, pft.data.batch_size, pft.optimizer.warmup_steps, pft.checkpoint.every_steps) == (8, 64, 1, 4)
    assert plain.stage_config("finetune").steps == 300 and plain.finetune["steps"] == 300  # untouched
    tiny = plain.tiny(steps=3, batch_size=6)
    t2, t1 = tiny.stage_config("finetune"), tiny.stage_config("prefinetune")
    assert (t2.steps, t2.data.batch_size, t2.optimizer.warmup_steps, t2.checkpoint.every_steps) == (3, 6, 1, 2)
    assert (t1.steps, t1.data.batch_size) == (2, 6)
    assert [s.limit for s in tiny.sources] == [None, None, 32, None] and not any(s.mine_negatives
                                                                                for s in tiny.sources)
    assert [s.limit for s in tiny.prefinetune_sources] == [32]
    assert [s.path for s in plain.with_fret(FRET).sources if s.kind == "fret"] == [FRET]
    no_stage1 = R.RecipeConfig(sources=plain.sources, finetune=plain.finetune)
    assert no_stage1.with_training(prefinetune_steps=5).prefinetune is None
    with pytest.raises(ConfigError, match="recipe field 'finetune': config field 'data.batch_size'"):
        plain.with_training(batch_size=0)  # a variant validates like a loaded recipe
    got = R.StageBudget(steps=10, warmup_steps=7, warmup_cap=2, every_cap=3).apply({"steps": 1})
    assert got == {"steps": 10, "optimizer": {"warmup_steps": 2}, "checkpoint": {"every_steps": 3}}
