"""Blocked exact top-k against the naive full sort; end-to-end retrieval with a hand-checkable embedder; the cache."""
from __future__ import annotations

import numpy as np
import pytest

from gecko_jax.eval.beir import load_beir
from gecko_jax.eval.cache import EmbeddingCache, model_fingerprint, truncate
from gecko_jax.eval.metrics import evaluate_run
from gecko_jax.eval.retrieval import evaluate_retrieval, exact_topk, naive_topk

from test_eval_beir import write_beir


@pytest.mark.parametrize("block_size", [1, 7, 64, 10_000])
def test_blocked_topk_equals_naive(block_size):
    rng = np.random.default_rng(0)
    # Small integers: every dot product is exact in float32 whatever the BLAS summation order, so ties are real.
    q = rng.integers(-3, 4, size=(13, 8)).astype(np.float32)
    c = rng.integers(-3, 4, size=(101, 8)).astype(np.float32)
    c[50] = c[3]  # exact ties across blocks: the lower index must win
    c[77] = c[3]
    for k in (1, 5, 101, 500):
        s1, i1 = exact_topk(q, c, k, block_size=block_size)
        s2, i2 = naive_topk(q, c, min(k, 101))
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)


def test_topk_bad_input():
    with pytest.raises(ValueError, match="must share d"):
        exact_topk(np.zeros((2, 3)), np.zeros((4, 5)), 1)
    with pytest.raises(ValueError, match="k and block_size"):
        exact_topk(np.zeros((2, 3)), np.zeros((4, 3)), 0)


def test_truncate_is_prefix_renormalised():
    x = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(truncate(x, 2), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match=r"dims must be an int in \[1, 3\]"):
        truncate(x, 4)


def test_evaluate_retrieval_matches_direct_computation(tmp_path, bow):
    corpus = [{"_id": "d1", "title": "Cats", "text": "cats purr softly"},
              {"_id": "d2", "title": "Dogs", "text": "dogs bark loudly"},
              {"_id": "d3", "title": "", "text": "birds sing songs"},
              {"_id": "d4", "title": "Cats and dogs", "text": "pets at home"}]
    queries = [{"_id": "q1", "text": "cats purr"}, {"_id": "q2", "text": "dogs bark"}, {"_id": "q3", "text": "songs"}]
    root = write_beir(tmp_path / "toy", corpus, queries, ["q1\td1\t2", "q1\td4\t1", "q2\td2\t1", "q3\td3\t1"])
    res = evaluate_retrieval(bow, root, top_k=10)
    # Direct computation: documents as "title text", cosine scores, every doc retrieved.
    data = load_beir(root)
    docs = [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in data.corpus.values()]
    D = np.stack([bow.vector(t) for t in docs])
    run = {q: {did: float(bow.vector(t) @ D[j]) for j, did in enumerate(data.corpus)} for q, t in data.queries.items()}
    direct = evaluate_run(data.qrels, run, ("ndcg@10", "recall@100", "mrr@10"))
    for m in ("ndcg@10", "recall@100", "mrr@10"):
        assert res["metrics"][m] == pytest.approx(100 * direct[m], abs=1e-4)
    assert res["num_queries"] == 3 and res["num_docs"] == 4
    doc_call = [c for c in bow.calls if c["kind"] == "document"][0]
    assert doc_call["titles"] and doc_call["task"] is None
    # Gecko task string reaches the query side only through `task`.
    res_t = evaluate_retrieval(bow, root, task="fact checking", dims=[None, 32])
    assert set(res_t) == {None, 32}
    assert {c["task"] for c in bow.calls[-2:]} == {"fact checking"}


def test_corpus_cache_hits_and_keys(tmp_path, bow_cls):
    root = write_beir(tmp_path / "toy", [{"_id": "d1", "text": "alpha beta"}, {"_id": "d2", "text": "gamma"}],
                      [{"_id": "q1", "text": "alpha"}], ["q1\td1\t1"])
    emb = bow_cls()
    cache = EmbeddingCache(tmp_path / "cache")
    r1 = evaluate_retrieval(emb, root, cache=cache)
    n_doc_calls = sum(c["kind"] == "document" for c in emb.calls)
    r2 = evaluate_retrieval(emb, root, cache=EmbeddingCache(tmp_path / "cache"))  # fresh object: disk hit
    assert sum(c["kind"] == "document" for c in emb.calls) == n_doc_calls == 1
    assert r1["metrics"] == r2["metrics"]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    evaluate_retrieval(emb, root, cache=cache, task="fact checking")  # other formatting: new entry
    evaluate_retrieval(bow_cls(seed=1), root, cache=cache)  # other model: new entry
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_model_fingerprint_from_params():
    class P:
        def __init__(self, w, max_length=128):
            self.params = {"layer": {"w": w}}
            self.config = {"hidden": 2}
            self.max_length = max_length

        def encode(self, texts, **kw):
            return np.ones((len(texts), 2), np.float32)

    a = model_fingerprint(P(np.zeros((2, 2), np.float32)))
    assert a == model_fingerprint(P(np.zeros((2, 2), np.float32)))
    assert a != model_fingerprint(P(np.eye(2, dtype=np.float32)))
    assert a != model_fingerprint(P(np.zeros((2, 2), np.float32), max_length=256))
    assert model_fingerprint(object()) is None


def test_model_fingerprint_is_remembered_only_while_the_same_immutable_leaves_are_held(monkeypatch):
    import jax.numpy as jnp

    import gecko_jax.eval.cache as cache_module

    class P:
        def __init__(self, w):
            self.params = {"layer": {"w": w}}
            self.config = {"hidden": 2}
            self.max_length = 128

    jax_model, np_model = P(jnp.zeros((2, 2))), P(np.zeros((2, 2), np.float32))
    first = {id(m): model_fingerprint(m) for m in (jax_model, np_model)}
    hashed = []
    import hashlib
    import types

    counting = types.SimpleNamespace(sha256=lambda *a: hashed.append(1) or hashlib.sha256(*a))
    monkeypatch.setattr(cache_module, "hashlib", counting)  # this module's sha256 calls only
    assert model_fingerprint(jax_model) == first[id(jax_model)] and not hashed  # same jax leaves: remembered
    np_model.params["layer"]["w"][0, 0] = 1.0  # numpy leaves can change in place: always hashed again
    assert model_fingerprint(np_model) != first[id(np_model)] and len(hashed) == 1
    jax_model.params = {"layer": {"w": jnp.eye(2)}}  # new leaves
    assert model_fingerprint(jax_model) != first[id(jax_model)] and len(hashed) == 2
    jax_model.params = {"layer": {"w": jnp.zeros((2, 2))}}  # equal bytes, new objects: hashed, same digest
    assert model_fingerprint(jax_model) == first[id(jax_model)] and len(hashed) == 3
    jax_model.max_length = 256  # same leaves, other truncation: not the remembered digest
    assert model_fingerprint(jax_model) != first[id(jax_model)] and len(hashed) == 4


def test_encode_contract_violation_is_reported(tmp_path):
    class Bad:
        fingerprint = "bad"

        def encode(self, texts, **kw):
            return np.zeros((len(texts) + 1, 3), np.float32)

    root = write_beir(tmp_path / "toy", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "x"}], ["q1\td1\t1"])
    with pytest.raises(ValueError, match=r"Bad.encode returned shape \(2, 3\), expected \[1, d\]"):
        evaluate_retrieval(Bad(), root)
