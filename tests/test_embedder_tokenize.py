"""gecko_jax.data.tokenize: local tokenizer, truncation, static length buckets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gecko_jax.data.tokenize import Tokenizer
from tests.conftest import GOLDEN


@pytest.fixture(scope="module")
def tok(minilm_path):
    return Tokenizer.from_pretrained(minilm_path, max_length=256)


def test_token_counts_match_sentence_transformers(tok):
    rows = [json.loads(line) for line in open(GOLDEN / "all-MiniLM-L6-v2.jsonl")]
    ids = tok.encode([r["text"] for r in rows])
    assert [len(s) for s in ids] == [r["token_count"] for r in rows]
    assert all(s[0] == 101 and s[-1] == 102 for s in ids)  # truncation keeps [CLS] ... [SEP]


def test_baked_in_padding_is_disabled_and_buckets_apply(tok):
    # The shipped tokenizer.json pads every input to 128; ours pads to the smallest bucket.
    batch = tok(["hello world", "a"])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == np.int32 and v.shape == (2, 32) for v in batch.values())
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), [4, 3])
    np.testing.assert_array_equal(batch["input_ids"][0, :4], [101, 7592, 2088, 102])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
    long = tok(["word " * 40])
    assert long["input_ids"].shape == (1, 64)


def test_truncation_and_bucket_cap(tok):
    batch = tok(["x " * 1000], max_length=100)
    assert batch["input_ids"].shape == (1, 100)  # 128 bucket replaced by max_length
    assert batch["attention_mask"].sum() == 100 and batch["input_ids"][0, 99] == 102
    assert tok.bucket_for(33) == 64 and tok.bucket_for(32) == 32 and tok.bucket_for(200) == 256
    assert tok.bucket_for(5, (8, 16)) == 8
    with pytest.raises(ValueError, match="exceeds max_length=256"):
        tok.bucket_for(300)


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        tok(["ok", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        tok.encode([3])
    with pytest.raises(TypeError, match="got None"):
        tok(None)
    with pytest.raises(ValueError, match="max_length must be an int >= 2"):
        tok(["a"], max_length=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no usable tokenizer"):
        Tokenizer.from_pretrained(tmp_path)


def test_save_and_reload_gives_the_same_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "vocab.txt").is_file()
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["model_max_length"] == 256
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.max_length == 256
    texts = ["Ünïcödé façade", "A man is playing a guitar.", "x " * 300]
    assert again.encode(texts) == tok.encode(texts)


def test_vocab_only_folder_loads_through_transformers(minilm_path, tmp_path, tok):
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((minilm_path / name).read_bytes())
    slow = Tokenizer.from_pretrained(tmp_path, max_length=256)
    texts = ["UPPER case Words", "A girl is styling her hair."]
    assert slow.encode(texts) == tok.encode(texts)
