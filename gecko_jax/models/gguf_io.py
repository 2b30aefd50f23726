"""Gemma 3 weights and tokenizer from a GGUF file (llama.cpp's format), without PyTorch.

    config, params = load_gguf("gemma-3-270m-q4_k_m.gguf")             # bidirectional encoder, float32 params
    folder = convert_gguf("gemma-3-270m-q4_k_m.gguf", "runs/gemma270m")  # HF + sentence-transformers folder
    emb = Embedder.from_pretrained("gemma-3-270m")                       # the shipped GGUF, converted once

Tensors are dequantised with the ``gguf`` package (``pip install gecko-jax[gguf]``) to float32, renamed to
``Gemma3TextModel`` names and handed to ``gemma3.params_from_hf``; llama.cpp stores every Gemma norm weight as
``1 + w``, Hugging Face (and we) store ``w``, so norms get ``- 1``. Linear weights come out ``[out, in]`` already
(no Q/K permutation for Gemma). The config comes from the GGUF metadata (``gemma3.*`` keys); what the file does not
say takes Gemma 3's defaults: sliding-window pattern 5 local + 1 global, local RoPE theta 10,000,
``query_pre_attn_scalar`` = head_dim (hidden/heads for the 27B, as llama.cpp does). The tokenizer is rebuilt from
the GGUF vocabulary by transformers' GGUF tokenizer converter (its torch-free part) with ``<bos>`` prepended as
llama.cpp does (``tokenizer.ggml.add_bos_token``).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

import numpy as np

_ARCH = "gemma3"
# GGUF tensor name (per block, after "blk.N.") -> (Gemma3TextModel name, norm stored as 1 + w)
_BLOCK = {
    "attn_q": ("self_attn.q_proj", False), "attn_k": ("self_attn.k_proj", False),
    "attn_v": ("self_attn.v_proj", False), "attn_output": ("self_attn.o_proj", False),
    "attn_q_norm": ("self_attn.q_norm", True), "attn_k_norm": ("self_attn.k_norm", True),
    "attn_norm": ("input_layernorm", True), "post_attention_norm": ("post_attention_layernorm", True),
    "ffn_norm": ("pre_feedforward_layernorm", True), "post_ffw_norm": ("post_feedforward_layernorm", True),
    "ffn_gate": ("mlp.gate_proj", False), "ffn_up": ("mlp.up_proj", False), "ffn_down": ("mlp.down_proj", False),
}
_GLOBAL = {"token_embd": ("embed_tokens", False), "output_norm": ("norm", True)}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def _reader(path):
    try:
        import gguf
    except ImportError:
        raise ImportError("reading GGUF files needs the 'gguf' package: pip install 'gecko-jax[gguf]' "
                          "(or pip install gguf)") from None
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        return gguf, gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/struct errors on a truncated or foreign file
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _strings(reader, key) -> list[str] | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


def _numbers(reader, key) -> list | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return np.concatenate([np.asarray(field.parts[i]) for i in field.data]).tolist()


def hf_config_from_gguf(path, *, causal: bool = False) -> dict:
    """A ``Gemma3TextModel`` ``config.json`` dict from a GGUF file's metadata.

    Raises:
      ValueError: not a Gemma 3 file, or a required metadata key is missing (named with the file).
    """
    _, reader = _reader(path)
    return _hf_config(reader, path, causal=causal)


def _hf_config(reader, path, *, causal: bool) -> dict:
    arch = _field(reader, "general.architecture")
    if arch != _ARCH:
        raise ValueError(f"{path}: general.architecture is {arch!r}; gecko_jax reads 'gemma3' GGUF files")

    def need(key):
        value = _field(reader, f"{_ARCH}.{key}")
        if value is None:
            raise ValueError(f"{path}: metadata key '{_ARCH}.{key}' is missing")
        return value

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(_field(reader, f"{_ARCH}.attention.key_length", hidden // heads))
    size = str(_field(reader, "general.size_label", "") or "")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise ValueError(f"{path}: tensor 'token_embd.weight' is missing")
    vocab = int(embd.shape[-1]) if tokens is None else len(tokens.data)
    hf = {
        "architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")), "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, f"{_ARCH}.attention.head_count_kv", heads)), "head_dim": head_dim,
        "max_position_embeddings": int(_field(reader, f"{_ARCH}.context_length", 32768)),
        "rms_norm_eps": float(_field(reader, f"{_ARCH}.attention.layer_norm_rms_epsilon", 1e-6)),
        "sliding_window": int(need("attention.sliding_window")), "sliding_window_pattern": 6,
        # llama.cpp: the 27B scales scores by 1/sqrt(hidden/heads), the others by 1/sqrt(head_dim)
        "query_pre_attn_scalar": hidden // heads if size.upper() == "27B" else head_dim,
        "rope_theta": float(_field(reader, f"{_ARCH}.rope.freq_base", 1_000_000.0)), "rope_local_base_freq": 10_000.0,
        "use_bidirectional_attention": not causal, "hidden_activation": "gelu_pytorch_tanh",
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id", 0)),
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id", 2)),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id", 1)),
        "tie_word_embeddings": True, "attention_dropout": 0.0,
    }
    scaling = _field(reader, f"{_ARCH}.rope.scaling.type")
    if scaling not in (None, "none"):
        hf["rope_scaling"] = {"rope_type": scaling, "factor": float(_field(reader, f"{_ARCH}.rope.scaling.factor", 1))}
    return hf


def read_gguf_tensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a Gemma 3 GGUF, dequantised to float32 under ``Gemma3TextModel`` names (norms as ``w``).

    Raises:
      ValueError: a tensor this mapping does not know (named with the file).
    """
    gguf, reader = _reader(path)
    return _tensors(gguf, reader, path)


def _tensors(gguf, reader, path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        m = _BLOCK_RE.match(t.name)
        if m and m.group(2) in _BLOCK:
            name, is_norm = _BLOCK[m.group(2)]
            name = f"layers.{m.group(1)}.{name}"
        elif t.name.endswith(".weight") and t.name[:-7] in _GLOBAL:
            name, is_norm = _GLOBAL[t.name[:-7]]
        elif t.name in ("output.weight", "rope_freqs.weight"):
            continue  # an untied LM head / precomputed RoPE factors: not part of the encoder
        else:
            raise ValueError(f"{path}: tensor {t.name!r} has no Gemma 3 mapping in gecko_jax.models.gguf_io")
        value = np.asarray(gguf.dequantize(t.data, t.tensor_type), dtype=np.float32)
        value = value.reshape([int(n) for n in reversed(t.shape)])  # ggml's ne is [in, out]: [out, in] here
        out[f"{name}.weight"] = value - 1.0 if is_norm else value
    return out


def load_gguf(path, *, causal: bool = False, **config_overrides):
    """``(EncoderConfig, params)`` of a Gemma 3 GGUF: ``params = {"backbone": ...}`` (float32 jax arrays).

    Args:
      path: the ``.gguf`` file.
      causal: keep the LM's causal attention (default: bidirectional, the encoder setting).
      **config_overrides: ``EncoderConfig`` fields (e.g. ``dtype="bfloat16"``, ``pooling="mean"``).
    """
    import jax
    import jax.numpy as jnp

    from gecko_jax.models.config import EncoderConfig
    from gecko_jax.models.gemma3 import params_from_hf

    gguf, reader = _reader(path)
    config = EncoderConfig.from_hf(_hf_config(reader, path, causal=causal), **config_overrides)
    try:
        backbone = params_from_hf(_tensors(gguf, reader, path), config)
    except (KeyError, ValueError) as e:
        raise type(e)(f"{path}: {e.args[0]}") from None
    return config, {"backbone": jax.tree.map(jnp.asarray, backbone)}


def tokenizer_from_gguf(path):
    """A ``tokenizers.Tokenizer`` rebuilt from the GGUF vocabulary (BOS/EOS added as the file's flags say).

    Uses transformers' GGUF tokenizer converter (its torch-free half); the ids equal llama.cpp's and
    transformers' ``AutoTokenizer(gguf_file=...)`` on the reference prompts (tests/models).
    """
    from tokenizers import processors

    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    except ImportError:  # transformers 4.x
        from transformers.integrations.ggml import convert_gguf_tokenizer

    _, reader = _reader(path)
    spec = {
        "tokenizer_type": _field(reader, "tokenizer.ggml.model"), "pre_tokenizer_type": _field(reader, "tokenizer.ggml.pre"),
        "tokens": _strings(reader, "tokenizer.ggml.tokens"),
        "scores": _numbers(reader, "tokenizer.ggml.scores"),
        "token_type": _numbers(reader, "tokenizer.ggml.token_type"),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "unk_token_id": _field(reader, "tokenizer.ggml.unknown_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
        "add_prefix_space": _field(reader, "tokenizer.ggml.add_space_prefix"),
    }
    if spec["tokens"] is None:
        raise ValueError(f"{path}: no tokenizer.ggml.tokens vocabulary in the file")
    spec = {k: v for k, v in spec.items() if v is not None}
    backend, _ = convert_gguf_tokenizer(_field(reader, "general.architecture"), spec)
    tokens = spec["tokens"]
    bos = tokens[spec["bos_token_id"]] if _field(reader, "tokenizer.ggml.add_bos_token", True) else None
    eos = tokens[spec["eos_token_id"]] if _field(reader, "tokenizer.ggml.add_eos_token", False) else None
    single = " ".join(s for s in (bos and f"{bos}:0", "$A:0", eos and f"{eos}:0") if s)
    pair = " ".join(s for s in (single, "$B:1", eos and f"{eos}:1") if s)
    special = [(t, tokens.index(t)) for t in (bos, eos) if t is not None]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
    return backend


def convert_gguf(path, out_dir, *, causal: bool = False, max_seq_length: int = 2048, **config_overrides):
    """Write a Hugging Face + sentence-transformers folder (mean pooling, normalised) for a Gemma 3 GGUF.

    The folder loads with ``Embedder.from_pretrained`` / ``load_pretrained`` and, with PyTorch, with
    ``SentenceTransformer`` and ``AutoModel`` (``Gemma3TextModel``). Written into a temporary sibling folder and
    renamed, so an interrupted conversion leaves nothing half-written behind.

    Args:
      path: the ``.gguf`` file.
      out_dir: folder to create (must not exist).
      causal: keep causal attention (``use_bidirectional_attention: false``).
      max_seq_length: the sentence-transformers truncation length written to the folder.
    """
    import shutil

    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.models.hf_io import save_pretrained

    out = pathlib.Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists; convert_gguf writes a new folder")
    config, params = load_gguf(path, causal=causal, **config_overrides)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(tmp, config, params, max_seq_length=max_seq_length)
    del params
    tokenizer = Tokenizer(tokenizer_from_gguf(path), max_length=max_seq_length)
    tokenizer.save_pretrained(tmp)
    _patch_json(tmp / "tokenizer_config.json", {"tokenizer_class": "GemmaTokenizerFast", "bos_token": "<bos>",
                                                 "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                                                 "add_bos_token": True, "add_eos_token": False})
    _patch_json(tmp / "config.json", {"gecko_jax_source": {"gguf": pathlib.Path(path).name}})
    os.replace(tmp, out)
    return out


def _patch_json(path: pathlib.Path, fields: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(fields)
    path.write_text(json.dumps(data, indent=2) + "\n")


def cache_dir() -> pathlib.Path:
    """Where converted models live: ``$GECKO_JAX_CACHE/models`` or ``~/.cache/gecko_jax/models``."""
    base = os.environ.get("GECKO_JAX_CACHE")
    return (pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "gecko_jax") / "models"


def cached_conversion(path, *, causal: bool = False) -> pathlib.Path:
    """``convert_gguf`` once per (file size + name, mode) into ``cache_dir()``; later calls return the folder."""
    path = pathlib.Path(path)
    key = f"{path.stem}-{path.stat().st_size}-{'causal' if causal else 'bidirectional'}"
    folder = cache_dir() / key
    if (folder / "modules.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        return convert_gguf(path, folder, causal=causal)
    except FileExistsError:  # another process finished first
        return folder
