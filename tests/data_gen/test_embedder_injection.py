"""The embedder is injected into data_gen by its caller (data_gen names no embedder package), and LLM clients come
from one factory, ``data_gen.llm.make_llm``."""
from __future__ import annotations

import importlib
import json

import pytest

from data_gen import cli
from data_gen.errors import InputError
from data_gen.llm import CachedLLM, LLMSpec, make_llm
from data_gen.retrieval import hashed_bow_embed
from data_gen.specs import EmbedderSpec

CALLS = []


def _factory(model):
    CALLS.append(model)
    return hashed_bow_embed, None


_MINE = EmbedderSpec("mine", factory=f"{__name__}:_factory", label="t")


def test_factory_spec_builds_by_name_and_labels_records():
    spec = EmbedderSpec("mine", model="m1", factory=f"{__name__}:_factory", label="t")
    doc_fn, query_fn = spec.build()
    assert doc_fn is hashed_bow_embed and query_fn is None and CALLS[-1] == "m1"
    assert spec.name == "t:m1"
    with pytest.raises(InputError, match="cannot load"):
        EmbedderSpec("x", factory="no_such_module_xyz:f").build()


def _fret_args(tmp_path, embedder):
    return ["fret", "--out", str(tmp_path / "o.jsonl"), "--passages", "2", "--neighbours", "3", "--llm", "fake",
            "--embedder", embedder, "--no-progress", "--workdir", str(tmp_path / "w")]


def test_cli_uses_the_injected_embedder(tmp_path):
    assert cli.main(_fret_args(tmp_path, "mine"), embedders={"mine": _MINE}) == 0
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert recs and {r["embedder"] for r in recs} == {"t:all-MiniLM-L6-v2"}


def test_cli_without_injection_names_the_gecko_data_command(tmp_path, capsys):
    assert cli.main(_fret_args(tmp_path, "gecko")) == 2
    assert "gecko-data command" in capsys.readouterr().err


def test_gecko_data_command_injects_gecko_jax_embedder():
    from gecko_jax.cli import gecko_data

    spec = gecko_data.EMBEDDERS["gecko"]
    module, fn = spec.factory.split(":")
    assert callable(getattr(importlib.import_module(module), fn))
    assert spec.name == "gecko_jax:all-MiniLM-L6-v2"  # the label records carried before the injection


def test_make_llm_is_the_one_factory(tmp_path):
    llm = make_llm(LLMSpec(llm="fake", cache=str(tmp_path / "c.sqlite")))
    assert isinstance(llm, CachedLLM) and llm.name == "fake" and llm.cache is not None
    assert LLMSpec(llm="fake").build().cache is None
    with pytest.raises(InputError, match="--base-url"):
        make_llm(LLMSpec(llm="openai"))
    with pytest.raises(InputError, match="expected local, openai or fake"):
        make_llm(LLMSpec(llm="nope"))
