"""MTEBModel against stub tasks that call it the way mteb 1.x does (no mteb install, no network)."""
from __future__ import annotations

import enum

import numpy as np
import pytest
from scipy.stats import spearmanr

from gecko_jax.eval import MTEBModel


class PromptType(str, enum.Enum):  # mirrors mteb.encoder_interface.PromptType
    query = "query"
    passage = "passage"


class StubSTSTask:
    """What mteb's STS evaluator does: encode both sides with task_name, no prompt type, cosine, Spearman."""
    name = "STSBenchmark"

    def evaluate(self, model, pairs, gold):
        a = model.encode([p[0] for p in pairs], task_name=self.name, prompt_type=None, batch_size=2)
        b = model.encode([p[1] for p in pairs], task_name=self.name, prompt_type=None, batch_size=2)
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return spearmanr(cos, gold).statistic


class StubRetrievalTask:
    """What mteb's exact search does: queries with PromptType.query, corpus as dicts with PromptType.passage."""
    name = "SciFact"

    def evaluate(self, model, queries, corpus):
        q = model.encode(queries, task_name=self.name, prompt_type=PromptType.query)
        c = model.encode(corpus, task_name=self.name, prompt_type=PromptType.passage)
        return np.argmax(q @ c.T, axis=1)


def test_sts_stub(bow):
    pairs = [("a cat sleeps", "a cat is sleeping"), ("stocks fall", "a cat runs"), ("men play ball", "men play")]
    gold = [4.8, 0.1, 3.0]
    m = MTEBModel(bow)
    rho = StubSTSTask().evaluate(m, pairs, gold)
    cos = [float(bow.vector(a) @ bow.vector(b)) for a, b in pairs]
    assert rho == pytest.approx(spearmanr(cos, gold).statistic)
    assert all(c["task"] is None and c["kind"] == "query" for c in bow.calls)


def test_retrieval_stub_with_gecko_prompts(bow):
    corpus = [{"title": "Cats", "text": "cats purr"}, {"title": "Dogs", "text": "dogs bark"}]
    m = MTEBModel(bow, task_prompts="gecko")
    best = StubRetrievalTask().evaluate(m, ["do cats purr", "dogs bark loudly"], corpus)
    assert best.tolist() == [0, 1]
    q_call, c_call = bow.calls
    assert (q_call["task"], q_call["kind"], q_call["symmetric"]) == ("fact checking", "query", False)
    assert (c_call["task"], c_call["kind"], c_call["titles"]) == ("fact checking", "document", True)


def test_task_format_table(bow):
    m = MTEBModel(bow, task_prompts="gecko")
    assert m.task_format("STSBenchmark") == {"task": "semantic similarity", "kind": "query", "symmetric": True}
    assert m.task_format("NQ", "passage") == {"task": "question answering", "kind": "document", "symmetric": False}
    assert m.task_format("QuoraRetrieval", PromptType.passage)["symmetric"] is True
    assert m.task_format("SomethingNew")["task"] is None
    assert MTEBModel(bow).task_format("SciFact", PromptType.query) == {"task": None, "kind": "query",
                                                                        "symmetric": False}
    with pytest.raises(ValueError, match="task_prompts"):
        MTEBModel(bow, task_prompts="instructor")


def test_dims_and_beir_style_corpus(bow):
    m = MTEBModel(bow, dims=16)
    out = m.encode_corpus({"title": ["A", "B"], "text": ["x y", "z"]})
    assert out.shape == (2, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out, bow.encode(["x y", "z"], kind="document", titles=["A", "B"], dims=16))
    assert bow.calls[0]["kind"] == "document" and bow.calls[0]["titles"]
    assert m.encode_queries(["q"]).shape == (1, 16)
