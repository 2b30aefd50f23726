"""`gecko-jax encode`: txt/jsonl in, .npy out, clear errors."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax import Embedder, cli
from gecko_jax.data.tokenize import Tokenizer
from gecko_jax.models import Encoder, EncoderConfig

ASSET = cli.__file__.rsplit("/", 1)[0] + "/assets/sentences.txt"


@pytest.fixture(scope="module")
def model_dir(minilm_path, tmp_path_factory):
    """A tiny random model saved in the sentence-transformers layout (fast to load and compile)."""
    cfg = EncoderConfig.tiny(max_position_embeddings=64)
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.jit(Encoder(cfg).init)(jax.random.key(0), ids, ids)["params"]
    emb = Embedder.from_params(cfg, params, Tokenizer.from_pretrained(minilm_path, max_length=64))
    out = tmp_path_factory.mktemp("tiny_model")
    emb.save_pretrained(out)
    return out


def test_encode_txt_matches_the_api(model_dir, tmp_path):
    out = tmp_path / "vecs.npy"
    assert cli.main(["encode", "--model", str(model_dir), "--input", ASSET, "--output", str(out),
                     "--dims", "16", "--task", "clustering"]) == 0
    texts = open(ASSET, encoding="utf-8").read().splitlines()
    vecs = np.load(out)
    assert vecs.shape == (len(texts), 16) and vecs.dtype == np.float32 and len(texts) >= 50
    want = Embedder.from_pretrained(model_dir).encode(texts, dims=16, task="clustering")
    np.testing.assert_allclose(vecs, want, atol=1e-6)


def test_encode_jsonl_documents_with_titles(model_dir, tmp_path):
    src = tmp_path / "docs.jsonl"
    rows = [{"id": 1, "body": "Vaccines train the immune system.", "title": "Vaccines"},
            {"id": 2, "body": "Rain is expected tomorrow.", "title": None}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    out = tmp_path / "sub" / "docs.npy"
    assert cli.main(["encode", "--model", str(model_dir), "--input", str(src), "--output", str(out),
                     "--field", "body", "--title-field", "title", "--kind", "document", "--task", "search result"]) == 0
    want = Embedder.from_pretrained(model_dir).encode(
        [r["body"] for r in rows], titles=[r["title"] for r in rows], kind="document", task="search result")
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": "ok",\n', r"bad\.jsonl:2: not valid JSON"),
    ('{"text": "ok"}\n\n{"body": "x"}\n', r"bad\.jsonl:3: missing field 'text' \(fields: body\)"),
    ('{"text": 5}\n', r"bad\.jsonl:1: field 'text' is int; expected a string"),
    ('["text"]\n', r"bad\.jsonl:1: expected a JSON object, got list"),
])
def test_bad_jsonl_names_file_and_line(model_dir, tmp_path, capsys, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    assert cli.main(["encode", "--model", str(model_dir), "--input", str(src), "--output",
                     str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "gecko-jax encode: error:" in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "o.npy").exists()


def test_other_bad_arguments(model_dir, tmp_path, capsys):
    cases = [
        (["--model", str(model_dir), "--input", str(tmp_path / "none.txt")], "input file .* does not exist"),
        (["--model", str(tmp_path / "nomodel"), "--input", ASSET], "model folder .* does not exist"),
        (["--model", str(model_dir), "--input", str(model_dir / "config.json")], "expected .txt or .jsonl"),
        (["--model", str(model_dir), "--input", ASSET, "--dims", "999"], r"dims must be an int in \[1, 32\]"),
    ]
    import re

    for extra, message in cases:
        assert cli.main(["encode", *extra, "--output", str(tmp_path / "o.npy")]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err), (extra, err)


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--input", "--output", "--task", "--kind", "--dims", "--batch-size", "--field"):
        assert flag in out
    assert "gecko-jax encode --model all-MiniLM-L6-v2" in out  # the examples epilog
