"""Folders written by ``save_pretrained`` load in PyTorch's transformers / sentence-transformers with no missing or
unexpected keys and embed like we do. PyTorch is never installed in our venv: set ``GECKO_JAX_TORCH_PYTHON`` to a
Python that has torch + sentence-transformers (e.g. a separate venv); the check runs there in a subprocess.

    GECKO_JAX_TORCH_PYTHON=/path/to/torch-venv/bin/python pytest -m slow tests/models/test_models_backbones_torch.py
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax import Embedder
from gecko_jax.data.tokenize import Tokenizer
from gecko_jax.models import Encoder, load_pretrained

GOLDEN = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "golden"
TORCH_PYTHON = os.environ.get("GECKO_JAX_TORCH_PYTHON")
TEXTS = ["a short text", "another somewhat longer text about encoders", "x", "the the the model model saves"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not TORCH_PYTHON, reason="set GECKO_JAX_TORCH_PYTHON to a Python with torch + "
                                                          "sentence-transformers")]

_CHECK = r"""
import json, sys, warnings
import numpy as np
from transformers import AutoModel
from sentence_transformers import SentenceTransformer
out = {}
for folder in sys.argv[2:]:
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    st = SentenceTransformer(folder, device="cpu")
    emb = st.encode(json.loads(sys.argv[1]), convert_to_numpy=True)
    out[folder] = {"missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
                   "mismatched": [list(map(str, m)) for m in info.get("mismatched_keys", [])],
                   "class": type(model).__name__, "embeddings": np.asarray(emb, np.float64).tolist()}
print("JSON" + json.dumps(out))
"""


def _word_tokenizer(vocab_size: int, specials: dict[str, int], template: str):
    """A word-level tokenizer over ``vocab_size`` ids whose special tokens sit where the model expects them."""
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers, processors

    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = dict(specials)
    for w in words + [f"w{i}" for i in range(vocab_size)]:
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(w, len(vocab))
    unk = next(t for t in specials if "unk" in t.lower())
    backend = Backend(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    single = template.replace("$", "$A")
    backend.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, i) for t, i in specials.items() if t in single])
    return Tokenizer(backend, max_length=32)


def _tiny_folders(tmp_path) -> dict[str, pathlib.Path]:
    from gecko_jax.models import EncoderConfig

    roberta_specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    folders = {}
    for name, template in (("roberta", "<s> $ </s>"), ("xlm_roberta", "<s> $ </s>"), ("mpnet", "<s> $ </s>"),
                           ("gemma3_bidirectional", "<bos> $")):
        cfg, params = load_pretrained(GOLDEN / "tiny" / name)
        specials = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3} if "gemma" in name else roberta_specials
        emb = Embedder.from_params(cfg, params, _word_tokenizer(cfg.vocab_size, specials, template))
        folders[name] = _generic_tokenizer_class(emb.save_pretrained(tmp_path / name), next(iter(specials)))
    cfg = EncoderConfig.tiny(num_layers=1, vocab_size=1000)
    ids = jnp.ones((1, 4), jnp.int32)
    params = Encoder(cfg).init(jax.random.key(0), ids, ids)["params"]
    bert_tok = _word_tokenizer(1000, {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}, "[CLS] $ [SEP]")
    folders["bert"] = _generic_tokenizer_class(
        Embedder.from_params(cfg, params, bert_tok).save_pretrained(tmp_path / "bert"), "[PAD]")
    return folders


def _generic_tokenizer_class(folder: pathlib.Path, pad: str) -> pathlib.Path:
    """The test's word-level tokenizer is no RoBERTa/XLM-R/Gemma tokenizer: tell AutoTokenizer to take it as is."""
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", pad_token=pad)
    cfg_file.write_text(json.dumps(cfg))
    return folder


def test_sentence_transformers_loads_our_folders_without_missing_keys(tmp_path):
    folders = _tiny_folders(tmp_path)
    proc = subprocess.run([TORCH_PYTHON, "-c", _CHECK, json.dumps(TEXTS), *map(str, folders.values())],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("JSON", 1)[1])
    for name, folder in folders.items():
        r = result[str(folder)]
        assert (r["missing"], r["unexpected"], r["mismatched"]) == ([], [], []), (name, r)
        ours = Embedder.from_pretrained(folder).encode(TEXTS)
        theirs = np.asarray(r["embeddings"], np.float32)
        cos = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        print(f"{name}: {r['class']} missing={r['missing']} unexpected={r['unexpected']} "
              f"mismatched={r['mismatched']} min cosine vs gecko_jax={cos.min():.8f}")
        assert cos.min() >= 0.99999, (name, r["class"], cos)
