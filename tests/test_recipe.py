"""gecko_jax.recipes.gecko (the Gecko recipe; gecko_jax.recipe re-exports it): the shipped recipe config parses, bad configs name the field, and a pulse of the whole recipe on
a tiny random encoder (stage 1 -> stage 2 hand-over, per-source metrics, dev selection of the interpolation, export,
resume)."""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

from gecko_jax.recipes import gecko as R
from gecko_jax import train
from gecko_jax.cli import recipe as recipe_cli
from gecko_jax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_shipped_recipe_parses_and_builds_its_stage_configs():
    cfg = R.load_recipe(R.DEFAULT_RECIPE)
    kinds = {s.kind for s in cfg.sources}
    assert {"fret", "nli", "classification", "sts", "retrieval"} <= kinds
    assert [s.kind for s in cfg.prefinetune_sources] == ["title_body"]
    assert all(pathlib.Path(s.path).is_file() for s in cfg.sources if s.kind == "fret")
    c2 = cfg.stage_config("finetune", [{"path": "x.jsonl", "name": "x"}], init_checkpoint="ckpt")
    assert c2.checkpoint.init_checkpoint == "ckpt" and c2.model.pretrained == cfg.model and c2.seed == cfg.seed
    assert c2.loss.same_tower and c2.loss.matryoshka_dims and c2.checkpoint.export
    c1 = cfg.stage_config("prefinetune", [{"path": "x.jsonl"}])
    assert not c1.loss.same_tower and c1.data.hard_negatives == 0  # Gecko eq. 2: in-batch negatives only
    assert cfg.sha() == R.load_recipe(R.DEFAULT_RECIPE, data_dir="/elsewhere").sha()
    assert cfg.sha() != R.load_recipe(R.DEFAULT_RECIPE, seed=1).sha()


@pytest.mark.parametrize("change, message", [
    ({"sources": []}, "at least one source"),
    ({"sources": [{"name": "a", "kind": "sts", "dataset": "s"}, {"name": "a", "kind": "sts", "dataset": "s"}]},
     "duplicate source names"),
    ({"sources": [{"name": "a", "kind": "poetry"}]}, "field 'kind'"),
    ({"sources": [{"name": "a", "kind": "retrieval", "dataset": "scifact"}]}, "needs field 'task'"),
    ({"sources": [{"name": "a", "kind": "classification", "dataset": "imdb"}]}, "field 'dataset'"),
    ({"sources": [{"name": "a b", "kind": "sts", "dataset": "s"}]}, "field 'name'"),
    ({"interpolate": [2.0]}, "'interpolate'"),
    ({"finetune": {"steps": 0}}, "recipe field 'finetune'.*'steps'"),
    ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
])
def test_recipe_errors_name_the_field(tmp_path, change, message):
    raw = json.loads(R.DEFAULT_RECIPE.read_text())
    raw.update(change)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        R.load_recipe(path)


def test_missing_fret_file_is_a_one_line_config_error(tmp_path):
    cfg = R.load_recipe(R.DEFAULT_RECIPE, data_dir=str(tmp_path))
    fret = [dataclasses.replace(s, path="experiments/gecko/data/no_such.jsonl") for s in cfg.sources
            if s.kind == "fret"]
    with pytest.raises(ConfigError, match=r"source 'fret' field 'path': no such file .*no_such.jsonl.*--fret") as e:
        R.build_sources(cfg, fret, tmp_path / "work", root=tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "work" / "data" / "fret.jsonl").exists()


def test_shipped_recipe_trains_on_fret_records_inside_the_package():
    """The default FRet file ships in the wheel (package data), so `gecko-jax recipe` needs no --fret outside a clone."""
    import gecko_jax

    (fret,) = [s for s in R.load_recipe().sources if s.kind == "fret"]
    path = pathlib.Path(fret.path)
    assert path.is_file() and path.parent == pathlib.Path(gecko_jax.__file__).resolve().parent / "assets"
    assert 'gecko_jax = ["assets/*"' in (R.REPO / "pyproject.toml").read_text()


def test_recipe_sha_follows_file_content_not_location(tmp_path):
    cfg = R.load_recipe()
    (fret,) = [s for s in cfg.sources if s.kind == "fret"]
    a, b = tmp_path / "a" / "fret.jsonl", tmp_path / "b" / "other.jsonl"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(pathlib.Path(fret.path).read_bytes())
    assert cfg.with_fret(str(a)).sha() == cfg.with_fret(str(b)).sha() == cfg.sha()  # same records, any checkout
    b.write_bytes(b.read_bytes()[:-200])
    assert cfg.with_fret(str(b)).sha() != cfg.sha()  # other records, another recipe


def test_recipe_built_in_python_equals_the_loaded_file_and_the_old_module_reexports_it():
    from gecko_jax import recipe as old

    assert old.run_recipe is R.run_recipe and old.RecipeConfig is R.RecipeConfig and old.load_recipe is R.load_recipe
    loaded = R.RecipeConfig.load()
    assert loaded.sha() == R.load_recipe(R.DEFAULT_RECIPE).sha()
    built = R.RecipeConfig(sources=list(loaded.sources), finetune=dict(loaded.finetune),
                           prefinetune_sources=list(loaded.prefinetune_sources), prefinetune=loaded.prefinetune,
                           model=loaded.model, max_chars=loaded.max_chars, interpolate=loaded.interpolate,
                           dev=loaded.dev, description=loaded.description)
    assert built.sha() == loaded.sha()
    assert dataclasses.replace(built, seed=7).sha() != loaded.sha()


def test_interpolate_is_wise_ft():
    base = {"a": np.zeros(3, np.float32), "b": {"c": np.ones(2, np.float32)}}
    tuned = {"a": np.full(3, 2.0, np.float32), "b": {"c": np.full(2, 3.0, np.float32)}}
    mid = R.interpolate(base, tuned, 0.25)
    np.testing.assert_allclose(mid["a"], 0.5)
    np.testing.assert_allclose(mid["b"]["c"], 1.5)
    np.testing.assert_allclose(R.interpolate(base, tuned, 1.0)["a"], tuned["a"])


# ---- pulse on a tiny encoder --------------------------------------------------------------------------------------

def _tiny_model(folder: pathlib.Path) -> pathlib.Path:
    import jax.numpy as jnp

    from gecko_jax import Embedder
    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.embedder import resolve_model_path
    from gecko_jax.models import Encoder, EncoderConfig

    cfg = EncoderConfig.tiny(num_layers=1, max_position_embeddings=128)
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.jit(Encoder(cfg).init)(jax.random.key(0), ids, ids)["params"]
    tok = Tokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"), max_length=64)
    return Embedder.from_params(cfg, params, tok, max_length=64).save_pretrained(folder)


def _toy_beir(folder: pathlib.Path) -> pathlib.Path:
    (folder / "qrels").mkdir(parents=True)
    topics = ["stars", "bread", "goals", "atoms", "poems", "loans", "roses", "drums"]
    with open(folder / "corpus.jsonl", "w") as f:
        for i, t in enumerate(topics):
            f.write(json.dumps({"_id": f"d{i}", "title": f"On {t}", "text": f"A long text about {t} number {i}."})
                    + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for i, t in enumerate(topics):
            f.write(json.dumps({"_id": f"q{i}", "text": f"what about {t}?"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                               + "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    return folder


def _pulse_config(tmp_path, shared_data) -> R.RecipeConfig:
    raw = json.loads(R.DEFAULT_RECIPE.read_text())
    stage = {"steps": 2, "log_every": 1, "progress": False,
             "data": {"batch_size": 8, "max_length": 32, "buckets": [32], "pack_length": None},
             "checkpoint": {"every_steps": 2, "keep": 1}}
    raw["prefinetune"] = {**raw["prefinetune"], **stage,
                          "data": {**raw["prefinetune"]["data"], **stage["data"]},
                          "checkpoint": {**raw["prefinetune"]["checkpoint"], **stage["checkpoint"]}}
    raw["finetune"] = {**raw["finetune"], **stage, "steps": 6,
                       "data": {**raw["finetune"]["data"], **stage["data"]},
                       "loss": {**raw["finetune"]["loss"], "matryoshka_dims": [32, 16]},
                       "checkpoint": {**raw["finetune"]["checkpoint"], **stage["checkpoint"]}}
    raw["model"] = str(_tiny_model(tmp_path / "tiny_model"))
    raw["prefinetune_sources"] = [{"name": "title_body", "kind": "title_body", "dataset": "scifact", "limit": 40}]
    raw["sources"] = [
        {"name": "fret", "kind": "fret", "path": str(REPO / "gecko_jax/assets/fret_quickstart.jsonl"),
         "task_balance": "uniform"},
        {"name": "nli", "kind": "nli", "dataset": "snli_senteval"},
        {"name": "banking77", "kind": "classification", "dataset": "banking77", "limit": 64},
        {"name": "stsb", "kind": "sts", "dataset": "sts-train.csv"},
        {"name": "toy", "kind": "retrieval", "path": str(_toy_beir(tmp_path / "toybeir")), "task": "fact checking"},
    ]
    raw["interpolate"] = [0.5, 1.0]
    raw["dev"] = {"scifact_fraction": 0.2, "scifact_extra_docs": 20, "banking77_per_label": 2, "banking77_runs": 1}
    raw["data_dir"] = str(shared_data)
    return R.recipe_from_dict(raw)


@pytest.mark.timeout(1800)
def test_recipe_pulse_handover_selection_export_and_resume(tmp_path, shared_data, monkeypatch, fast_compiles):
    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))
    cfg = _pulse_config(tmp_path, shared_data)
    wd = tmp_path / "recipe"
    res = R.run_recipe(cfg, wd, progress=False)

    # sources: FRet split per task group, dev rows kept out of Banking77, hard negatives where the source has them
    meta = {b["name"]: b for f in (wd / "data").glob("*.json") for b in json.loads(f.read_text())["built"]}
    assert sum(1 for n in meta if n.startswith("fret.")) >= 1
    assert meta["stsb"]["hard_negatives"] == 0 and meta["nli"]["hard_negatives"] == 1
    assert meta["toy"]["hard_negatives"] == 1  # mined with the base (tiny) model
    assert abs(sum(b["weight"] for n, b in meta.items() if n.startswith("fret.")) - 1.0) < 1e-9
    from gecko_jax.eval import dev as dev_eval
    from gecko_jax.eval.datasets import load_banking77

    b77 = load_banking77(shared_data)
    _, dev_rows = dev_eval.banking77_split(b77.train_labels, 2)
    dev_texts = {b77.train_texts[i] for i in dev_rows}
    queries = {json.loads(line)["query"].split(" (id ")[0] for line in open(meta["banking77"]["path"])}
    assert queries and not queries & dev_texts

    # stage 1 -> stage 2 hand-over: stage 2 starts from stage 1's params (fresh optimizer, step 0)
    s1, s2 = res.stages["prefinetune"], res.stages["finetune"]
    assert s1["origin"] == "pretrained" and s2["origin"] == "init_checkpoint"
    c1 = cfg.stage_config("prefinetune", [{"path": b["path"], "name": n, "hard_negatives": 0}
                                          for n, b in meta.items() if n == "title_body"])
    end1 = train.train_and_evaluate(dataclasses.replace(c1, progress=False), s1["run_dir"])
    assert end1.origin == "workdir" and end1.steps_run == 0
    c2 = cfg.stage_config("finetune", [{"path": meta["nli"]["path"]}], init_checkpoint=s1["checkpoint_dir"])
    start2 = train.train_and_evaluate(dataclasses.replace(c2, progress=False), tmp_path / "handover", stop_after=0)
    assert start2.origin == "init_checkpoint" and int(start2.state.step) == 0
    for a, b in zip(jax.tree.leaves(start2.state.params), jax.tree.leaves(end1.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # per-source metrics of the mixture stage
    logged = [json.loads(line) for line in open(pathlib.Path(s2["run_dir"]) / "metrics.jsonl")]
    assert any(k.startswith("loss/") for r in logged for k in r)

    # dev selection over the two alphas, on dev data only; the export loads and is the chosen interpolation
    assert set(res.dev["candidates"]) == {"0.5", "1.0"} and res.alpha in (0.5, 1.0)
    assert set(res.dev["base"]) == {"scifact_dev", "stsb_dev", "banking77_dev"}
    from gecko_jax import Embedder

    out = Embedder.from_pretrained(res.export_dir)
    tuned = Embedder.from_pretrained(s2["export_dir"])
    base = Embedder.from_pretrained(cfg.model)
    want = R.interpolate(base.params, tuned.params, res.alpha)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    saved = json.loads((wd / "recipe_result.json").read_text())
    assert saved["config_sha"] == cfg.sha() and saved["sources"]["nli"] > 0

    # a re-run reuses every stage: same choice, no training step
    again = R.run_recipe(cfg, wd, progress=False)
    assert again.alpha == res.alpha and again.stages == res.stages


def test_recipe_cli_budget_flags(tmp_path, capsys):
    import argparse

    p = argparse.ArgumentParser()
    recipe_cli.configure_parser(p)
    called = {}

    def fake_run(cfg, workdir, **kw):
        called.update(cfg=cfg, workdir=workdir, **kw)
        raise SystemExit(0)

    args = p.parse_args(["--workdir", str(tmp_path), "--seed", "3", "--steps", "40", "--prefinetune-steps", "8",
                         "--interpolate", "0.5,1", "--export", str(tmp_path / "model")])
    orig = R.run_recipe
    R.run_recipe = fake_run
    try:
        with pytest.raises(SystemExit):
            recipe_cli.run(args)
    finally:
        R.run_recipe = orig
    cfg = called["cfg"]
    ft, pft = cfg.stage_config("finetune"), cfg.stage_config("prefinetune")
    assert (cfg.seed, ft.steps, pft.steps, tuple(cfg.interpolate)) == (3, 40, 8, (0.5, 1.0))
    assert ft.optimizer.warmup_steps <= 4 and called["export_dir"] == str(tmp_path / "model")
    assert recipe_cli.run(p.parse_args(["--steps", "0"])) == 2
    assert "--steps: expected >= 1" in capsys.readouterr().err
