"""Parity with sentence-transformers (PyTorch) on all-MiniLM-L6-v2, through the public Embedder."""
from __future__ import annotations

import json

import numpy as np
import pytest

import gecko_jax as gj
from tests.conftest import GOLDEN

MIN_COSINE = 0.99999  # golden/README.md: a faithful float32 port reaches this on every row
BF16_MIN_COSINE = 0.9995  # measured: min 0.99995, mean 0.99998 over the golden rows (BENCHMARKS.md)


@pytest.fixture(scope="module")
def golden():
    rows = [json.loads(line) for line in open(GOLDEN / "all-MiniLM-L6-v2.jsonl", encoding="utf-8")]
    return [r["text"] for r in rows], np.array([r["embedding"] for r in rows], np.float64), \
        [r["token_count"] for r in rows]


@pytest.fixture(scope="module")
def minilm():
    return gj.Embedder.from_pretrained("all-MiniLM-L6-v2")


def _cosines(got, want):
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def test_every_golden_row_matches(minilm, golden):
    texts, want, counts = golden
    assert minilm.max_length == 256 and minilm.dim == 384  # from sentence_bert_config.json / config.json
    ids = minilm.tokenizer.encode(texts, max_length=minilm.max_length)
    assert [len(s) for s in ids] == counts
    got = minilm.encode(texts)
    assert got.shape == want.shape and got.dtype == np.float32
    cos = _cosines(got, want)
    worst = int(np.argmin(cos))
    assert cos.min() >= MIN_COSINE, f"row {worst} ({texts[worst][:40]!r}): cosine {cos[worst]:.7f}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_save_pretrained_round_trip_of_the_real_model(minilm, golden, tmp_path):
    texts = golden[0][:8] + golden[0][-6:]
    minilm.save_pretrained(tmp_path)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer",
                                            "sentence_transformers.models.Pooling",
                                            "sentence_transformers.models.Normalize"]
    assert json.loads((tmp_path / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    tok_cfg = json.loads((tmp_path / "tokenizer.json").read_text())
    assert tok_cfg["padding"] is None and tok_cfg["truncation"] is None  # no baked-in padding to 128
    again = gj.Embedder.from_pretrained(tmp_path)
    np.testing.assert_array_equal(again.encode(texts), minilm.encode(texts))


def test_bfloat16_compute_is_close(golden):
    texts, want, _ = golden
    emb = gj.Embedder.from_pretrained("all-MiniLM-L6-v2", dtype="bfloat16")
    assert emb.config.dtype == "bfloat16"
    got = emb.encode(texts)
    assert got.dtype == np.float32
    assert _cosines(got, want).min() > BF16_MIN_COSINE


def test_sentence_transformers_loads_what_we_save(golden, tmp_path):
    """A PyTorch user gets the same vectors from our saved folder (runs only where sentence-transformers is)."""
    st = pytest.importorskip("sentence_transformers")
    texts, want, _ = golden
    emb = gj.Embedder.from_pretrained("all-MiniLM-L6-v2", max_length=128)
    emb.save_pretrained(tmp_path)
    model = st.SentenceTransformer(str(tmp_path), device="cpu")
    assert model.max_seq_length == 128
    theirs = model.encode(texts, batch_size=16, convert_to_numpy=True)
    ours = emb.encode(texts)
    assert _cosines(theirs, ours).min() >= MIN_COSINE
    assert _cosines(theirs[:40], want[:40]).min() >= MIN_COSINE  # short rows: unaffected by max_length=128
