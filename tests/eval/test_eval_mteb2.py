"""MTEBModel under the real mteb 2.x (the ``[mteb]`` extra; skipped where mteb is not installed, as in the default
venv: mteb needs PyTorch). Runs mteb's own mock tasks and its retrieval evaluator on local BEIR folders."""
from __future__ import annotations

import pytest

mteb = pytest.importorskip("mteb")
if int(mteb.__version__.split(".")[0]) < 2:
    pytest.skip(f"mteb {mteb.__version__}: these tests are for mteb>=2", allow_module_level=True)

from gecko_jax.eval import MTEBModel, evaluate_retrieval  # noqa: E402
from gecko_jax.eval.mteb_wrapper import local_retrieval_task  # noqa: E402


def _ndcg10(model, folder, name="SciFactLocal") -> float:
    res = mteb.evaluate(model, [local_retrieval_task(folder, name=name)], cache=None, show_progress_bar=False)
    assert not res.exceptions, res.exceptions
    return 100 * res.task_results[0].scores["test"][0]["ndcg_at_10"]


def test_mock_run_all_passed(bow):
    from mteb.mocks.mock_run import mock_run

    results = mock_run(MTEBModel(bow))
    ran = [name for name, status in results.items() if status is not None]
    assert len(ran) >= 20 and results.all_passed, results.to_markdown()
    assert bow.calls and any(c["kind"] == "document" and c["titles"] for c in bow.calls)   # corpora as documents
    meta = MTEBModel(bow).mteb_model_meta
    assert meta.name.startswith("gecko-jax/") and meta.similarity_fn_name is not None


def test_local_retrieval_task_scores_like_our_evaluator(bow, shared_data, tmp_path):
    from gecko_jax.quickstart import make_tiny_data

    folder = make_tiny_data(shared_data, tmp_path, queries=15, extra_docs=120, sts_pairs=2) / "scifact"
    ours = evaluate_retrieval(bow, folder, split="test")["metrics"]["ndcg@10"]
    theirs = _ndcg10(MTEBModel(bow), folder)
    assert 0.0 < ours < 100.0
    assert theirs == pytest.approx(ours, abs=2e-3)        # mteb rounds its scores to 5 decimals


def test_gecko_task_strings_come_from_task_metadata(bow, shared_data, tmp_path):
    from gecko_jax.quickstart import make_tiny_data

    folder = make_tiny_data(shared_data, tmp_path, queries=3, extra_docs=10, sts_pairs=2) / "scifact"
    _ndcg10(MTEBModel(bow, task_prompts="gecko"), folder, name="SciFact")
    queries = [c for c in bow.calls if c["kind"] == "query"]
    docs = [c for c in bow.calls if c["kind"] == "document"]
    assert queries and docs and {c["task"] for c in queries + docs} == {"fact checking"}
    assert all(c["titles"] for c in docs) and not any(c["symmetric"] for c in queries)
    bow.calls.clear()
    _ndcg10(MTEBModel(bow, task_prompts="gecko"), folder, name="SomeNewRetrieval")   # by type: Retrieval
    assert {c["task"] for c in bow.calls} == {"question answering"}


@pytest.mark.slow
def test_minilm_scifact_ndcg_through_mteb_equals_ours(shared_data):
    """The full SciFact test split with all-MiniLM-L6-v2 (~5-10 min on 2 cores): mteb's evaluator on our encoder
    gives the same nDCG@10 as ours (64.51 in BENCHMARKS.md)."""
    import gecko_jax as gj

    emb = gj.Embedder.from_pretrained("all-MiniLM-L6-v2")
    folder = shared_data / "scifact"
    theirs = _ndcg10(MTEBModel(emb), folder)
    ours = evaluate_retrieval(emb, folder, split="test")["metrics"]["ndcg@10"]
    assert theirs == pytest.approx(ours, abs=2e-3)
