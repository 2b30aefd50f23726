"""Read and write Hugging Face / sentence-transformers model folders with the safetensors numpy API (no PyTorch).

Layout written by ``save_pretrained`` (what ``SentenceTransformer(dir)`` and ``AutoModel.from_pretrained(dir)`` read)::

    config.json                     Hugging Face config (+ our pooling/projection fields under "gecko_jax")
    model.safetensors               backbone weights, Hugging Face names, Linear weights [out, in]
    modules.json                    sentence-transformers pipeline: Transformer -> Pooling [-> Dense] [-> Normalize]
    1_Pooling/config.json           pooling mode
    2_Dense/{config.json,model.safetensors}   only with a projection head
    sentence_bert_config.json       max_seq_length
    config_sentence_transformers.json
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from gecko_jax.models.config import EncoderConfig
from gecko_jax.models.registry import get_architecture

_ST = "sentence_transformers.models."
_IDENTITY = "torch.nn.modules.linear.Identity"


@dataclasses.dataclass
class STLayout:
    """What a sentence-transformers ``modules.json`` pipeline says about the encoder."""

    transformer_dir: pathlib.Path
    pooling: str | None = None
    normalize: bool | None = None
    dense_dir: pathlib.Path | None = None
    max_seq_length: int | None = None


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _check_dir(path) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"model path must be a str or os.PathLike, got {type(path).__name__}")
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist (expected a Hugging Face or "
                                "sentence-transformers folder with config.json and model.safetensors)")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; expected a model folder with config.json and model.safetensors")
    return path


def read_st_layout(path) -> STLayout:
    """Parse ``modules.json`` (and the Pooling/Dense/Normalize modules); a plain HF folder gives an empty layout.

    Raises:
      ValueError: a module or pooling mode gecko_jax does not implement (named in the message).
    """
    root = _check_dir(path)
    layout = STLayout(transformer_dir=root)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return layout
    modules = _read_json(modules_file)
    layout.normalize = False
    for i, module in enumerate(modules):
        kind = str(module.get("type", ""))
        sub = root / module.get("path", "")
        short = kind[len(_ST):] if kind.startswith(_ST) else kind
        if short in ("Transformer",):
            layout.transformer_dir = sub
            cfg_file = sub / "sentence_bert_config.json"
            if cfg_file.is_file():
                layout.max_seq_length = _read_json(cfg_file).get("max_seq_length")
        elif short == "Pooling":
            layout.pooling = _pooling_mode(sub / "config.json")
        elif short == "Dense":
            if layout.dense_dir is not None:
                raise ValueError(f"{modules_file}: more than one Dense module; gecko_jax supports one projection")
            dense_cfg = _read_json(sub / "config.json")
            act = dense_cfg.get("activation_function", _IDENTITY)
            if act != _IDENTITY:
                raise ValueError(f"{sub / 'config.json'}: Dense activation {act!r} is not supported; expected "
                                 f"{_IDENTITY} (a linear projection)")
            layout.dense_dir = sub
        elif short == "Normalize":
            layout.normalize = True
        else:
            raise ValueError(f"{modules_file}: module {i} has type {kind!r}; gecko_jax supports Transformer, "
                             "Pooling (mean or cls), Dense (linear) and Normalize")
    return layout


def _pooling_mode(path: pathlib.Path) -> str:
    cfg = _read_json(path)
    mode = cfg.get("pooling_mode")
    if mode is None:
        on = [k[len("pooling_mode_"):] for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
        mode = on[0] if len(on) == 1 else ",".join(on) or "none"
    mode = {"mean_tokens": "mean", "cls_token": "cls"}.get(mode, mode)
    if mode not in ("mean", "cls"):
        raise ValueError(f"{path}: pooling mode {mode!r} is not supported; expected mean_tokens or cls_token")
    return mode


def _load_tensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(_read_json(index)["weight_map"].values())):
            tensors.update(load_file(str(folder / shard)))
        return tensors
    others = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".h5", ".msgpack", ".pt", ".ckpt")]
    hint = (f" Found {', '.join(sorted(others))}: convert it to safetensors first (gecko_jax never imports "
            "PyTorch)." if others else "")
    raise FileNotFoundError(f"no weights in {folder}: expected model.safetensors or model.safetensors.index.json."
                            + hint)


def _strip_prefix(tensors: Mapping[str, np.ndarray], prefixes) -> dict[str, np.ndarray]:
    for prefix in prefixes:
        if any(k.startswith(prefix + "embeddings.") for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return dict(tensors)


def load_pretrained(path, **config_overrides) -> tuple[EncoderConfig, dict]:
    """Load ``(EncoderConfig, params)`` from a Hugging Face or sentence-transformers folder.

    Reads ``config.json`` and ``model.safetensors`` (or a sharded index); with ``modules.json`` present, pooling,
    normalisation and a Dense projection come from the sentence-transformers modules. Tensor names may carry a
    task-model prefix (``bert.``); heads we do not use (``pooler.*``, ``cls.*``) are ignored.

    Args:
      path: model folder.
      **config_overrides: ``EncoderConfig`` fields to override (e.g. ``dtype="bfloat16"``).

    Returns:
      ``(config, params)`` with ``params = {"backbone": ..., ["projection": ...]}`` as float32 jax arrays, ready for
      ``Encoder(config).apply({"params": params}, ...)``.

    Raises:
      FileNotFoundError: missing folder, ``config.json`` or weights. ValueError: unsupported architecture/module,
      or a tensor whose shape disagrees with ``config.json``.
    """
    import jax.numpy as jnp

    layout = read_st_layout(path)
    folder = layout.transformer_dir
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {folder}: expected a Hugging Face model folder")
    hf_cfg = _read_json(folder / "config.json")
    get_architecture(hf_cfg.get("model_type"), source=str(folder / "config.json"),
                     architectures=hf_cfg.get("architectures"))  # fail early, naming the file
    # modules.json, when present, is authoritative for pooling/normalisation/projection (that is what
    # sentence-transformers runs); a plain HF folder uses config.json's "gecko_jax" block or EncoderConfig defaults.
    st_fields: dict[str, Any] = {}
    dense = None
    if (layout.transformer_dir / "config.json").is_file() and (pathlib.Path(path) / "modules.json").is_file():
        st_fields["pooling"] = layout.pooling or "mean"
        st_fields["normalize"] = bool(layout.normalize)
        st_fields["projection_dim"] = None
        if layout.dense_dir is not None:
            dense = _load_tensors(layout.dense_dir)
            if "linear.weight" not in dense:
                raise ValueError(f"{layout.dense_dir}: expected a 'linear.weight' tensor for the Dense projection")
            st_fields["projection_dim"] = int(dense["linear.weight"].shape[0])
            st_fields["projection_bias"] = "linear.bias" in dense
    config = EncoderConfig.from_hf(hf_cfg, **{**st_fields, **config_overrides})
    arch = get_architecture(config.model_type, source=str(folder / "config.json"))
    tensors = _strip_prefix(_load_tensors(folder), arch.hf_prefixes)
    try:
        backbone = arch.params_from_hf(tensors, config)
    except (KeyError, ValueError) as e:
        raise type(e)(f"{folder}: {e.args[0]}") from None
    params: dict[str, Any] = {"backbone": backbone}
    if config.projection_dim is not None:
        if dense is None:
            raise FileNotFoundError(f"{folder / 'config.json'} declares projection_dim={config.projection_dim} but "
                                    "there is no modules.json with a Dense module to hold its weights")
        w = np.asarray(dense["linear.weight"], np.float32)
        if w.shape[1] != config.hidden_size:
            raise ValueError(f"{layout.dense_dir}: Dense in_features {w.shape[1]} != hidden_size {config.hidden_size}")
        params["projection"] = {"kernel": w.T.copy()}
        if config.projection_bias:
            params["projection"]["bias"] = np.asarray(dense["linear.bias"], np.float32)
    import jax

    return config, jax.tree.map(jnp.asarray, params)


def save_pretrained(path, config: EncoderConfig, params: Mapping[str, Any], *, max_seq_length: int | None = None,
                    sentence_transformers: bool = True) -> pathlib.Path:
    """Write ``config.json`` + ``model.safetensors`` (+ the sentence-transformers files) into ``path``.

    Args:
      path: output folder (created; written into a temporary sibling folder and swapped in at the end, so a failure
        leaves the previous folder intact; files of the previous folder that are not rewritten are kept).
      config: the encoder's config.
      params: ``{"backbone": ..., ["projection": ...]}`` as returned by ``load_pretrained`` or training.
      max_seq_length: written to ``sentence_bert_config.json`` (defaults to ``config.max_position_embeddings``).
      sentence_transformers: also write ``modules.json`` and the module folders.

    Returns:
      The folder path.
    """
    if "backbone" not in params:
        raise KeyError(f"params must have a 'backbone' entry (got keys {sorted(params)})")
    if config.projection_dim is not None and not sentence_transformers:
        raise ValueError("a projection head is stored as a sentence-transformers Dense module: "
                         "save with sentence_transformers=True")
    from gecko_jax.fileio import atomic_dir

    with atomic_dir(path) as tmp:  # a crash or a full disk never leaves a half-written model folder at `path`
        _write_folder(tmp, config, params, max_seq_length, sentence_transformers)
    return pathlib.Path(path)


def _write_folder(out: pathlib.Path, config: EncoderConfig, params, max_seq_length, sentence_transformers) -> None:
    from safetensors.numpy import save_file

    arch = get_architecture(config.model_type)
    (out / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
    save_file(arch.params_to_hf(params["backbone"], config), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    if not sentence_transformers:
        return
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST + "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST + "Pooling"}]
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": config.pooling == "cls",
        "pooling_mode_mean_tokens": config.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }, indent=2) + "\n")
    if config.projection_dim is not None:
        idx = len(modules)
        dense_dir = out / f"{idx}_Dense"
        dense_dir.mkdir(exist_ok=True)
        proj = params["projection"]
        tensors = {"linear.weight": np.ascontiguousarray(np.asarray(proj["kernel"], np.float32).T)}
        if config.projection_bias:
            tensors["linear.bias"] = np.asarray(proj["bias"], np.float32)
        save_file(tensors, str(dense_dir / "model.safetensors"), metadata={"format": "pt"})
        (dense_dir / "config.json").write_text(json.dumps({
            "in_features": config.hidden_size, "out_features": config.projection_dim,
            "bias": config.projection_bias, "activation_function": _IDENTITY}, indent=2) + "\n")
        modules.append({"idx": idx, "name": str(idx), "path": dense_dir.name, "type": _ST + "Dense"})
    if config.normalize:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": _ST + "Normalize"})
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(json.dumps({
        "max_seq_length": int(max_seq_length or config.max_position_embeddings), "do_lower_case": False},
        indent=2) + "\n")
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "__version__": {"gecko_jax": _version()}, "prompts": {}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"}, indent=2) + "\n")


def _version() -> str:
    from gecko_jax import __version__

    return __version__
