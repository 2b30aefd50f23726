"""Read and write Hugging Face / sentence-transformers model folders with the safetensors numpy API (no PyTorch).

Layout written by ``save_pretrained`` (what ``SentenceTransformer(dir)`` and ``AutoModel.from_pretrained(dir)`` read)::

    config.json                     Hugging Face config (+ our pooling/projection fields under "gecko_jax")
    model.safetensors               backbone weights, Hugging Face names, Linear weights [out, in] (+ an unused
                                    identity ``pooler.dense`` for families whose HF base class has one)
    modules.json                    sentence-transformers pipeline: Transformer -> Pooling [-> Dense [-> Dense]]
                                    [-> Normalize]
    1_Pooling/config.json           pooling mode
    2_Dense/{config.json,model.safetensors}   only with a projection head (3_Dense too for a two-layer head)

Every file is written to a temporary name and renamed into place, so a reader never sees a half-written file.
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
    dense_dirs: list = dataclasses.field(default_factory=list)  # Dense modules in pipeline order (at most two)
    max_seq_length: int | None = None

    @property
    def dense_dir(self) -> pathlib.Path | None:
        """The last Dense module (the projection to the output width), or None."""
        return self.dense_dirs[-1] if self.dense_dirs else None


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
            if len(layout.dense_dirs) == 2:
                raise ValueError(f"{modules_file}: more than two Dense modules; gecko_jax supports a projection of "
                                 "one or two linear layers")
            dense_cfg = _read_json(sub / "config.json")
            act = dense_cfg.get("activation_function", _IDENTITY)
            if act != _IDENTITY:
                raise ValueError(f"{sub / 'config.json'}: Dense activation {act!r} is not supported; expected "
                                 f"{_IDENTITY} (a linear projection)")
            layout.dense_dirs.append(sub)
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
    """Names of a task model's backbone (``bert.encoder...``, ``model.layers...``) without the prefix; the task
    heads (``cls.*``, ``lm_head.*``) are dropped with it."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return dict(tensors)


def _dense_params(dense_dir: pathlib.Path, in_features: int, bias: bool) -> dict:
    tensors = _load_tensors(dense_dir)
    w = np.asarray(tensors["linear.weight"], np.float32)
    if w.shape[1] != in_features:
        raise ValueError(f"{dense_dir}: Dense in_features {w.shape[1]} != {in_features}, the width it receives")
    out = {"kernel": w.T.copy()}
    if bias:
        if "linear.bias" not in tensors:
            raise ValueError(f"{dense_dir}: expected a 'linear.bias' tensor (the other Dense module has one)")
        out["bias"] = np.asarray(tensors["linear.bias"], np.float32)
    return out


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
    dense_shapes = []
    if (layout.transformer_dir / "config.json").is_file() and (pathlib.Path(path) / "modules.json").is_file():
        st_fields["pooling"] = layout.pooling or "mean"
        st_fields["normalize"] = bool(layout.normalize)
        st_fields["projection_dim"] = None
        st_fields["projection_hidden_dim"] = None
        for dense_dir in layout.dense_dirs:
            from safetensors import safe_open

            weights = dense_dir / "model.safetensors"
            if not weights.is_file():
                raise FileNotFoundError(f"{dense_dir}: expected model.safetensors with the Dense module's weights")
            with safe_open(str(weights), "numpy") as f:
                if "linear.weight" not in f.keys():
                    raise ValueError(f"{weights}: expected a 'linear.weight' tensor for the Dense projection")
                dense_shapes.append((int(f.get_slice("linear.weight").get_shape()[0]), "linear.bias" in f.keys()))
        if dense_shapes:
            st_fields["projection_dim"] = dense_shapes[-1][0]
            st_fields["projection_bias"] = dense_shapes[-1][1]
            if len(dense_shapes) == 2:
                st_fields["projection_hidden_dim"] = dense_shapes[0][0]
                if dense_shapes[0][1] != dense_shapes[1][1]:
                    raise ValueError(f"{layout.dense_dirs[0]} and {layout.dense_dirs[1]}: both Dense modules must "
                                     "have a bias or neither")
    config = EncoderConfig.from_hf(hf_cfg, **{**st_fields, **config_overrides})
    arch = get_architecture(config.model_type, source=str(folder / "config.json"))
    tensors = _strip_prefix(_load_tensors(folder), arch.hf_prefixes)
    try:
        backbone = arch.params_from_hf(tensors, config)
    except (KeyError, ValueError) as e:
        raise type(e)(f"{folder}: {e.args[0]}") from None
    params: dict[str, Any] = {"backbone": backbone}
    if config.projection_dim is not None:
        wanted = 1 + (config.projection_hidden_dim is not None)
        if len(layout.dense_dirs) != wanted:
            raise FileNotFoundError(f"{folder / 'config.json'} declares a projection head of {wanted} layer(s) "
                                    f"(projection_dim={config.projection_dim}, projection_hidden_dim="
                                    f"{config.projection_hidden_dim}) but modules.json lists "
                                    f"{len(layout.dense_dirs)} Dense module(s) to hold its weights")
        width = config.hidden_size
        if config.projection_hidden_dim is not None:
            params["projection_hidden"] = _dense_params(layout.dense_dirs[0], width, config.projection_bias)
            width = config.projection_hidden_dim
        params["projection"] = _dense_params(layout.dense_dirs[-1], width, config.projection_bias)
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
    arch = get_architecture(config.model_type)
    _write_json(out / "config.json", config.to_hf())
    tensors = arch.params_to_hf(params["backbone"], config)
    if arch.hf_pooler:
        tensors["pooler.dense.weight"] = np.eye(config.hidden_size, dtype=np.float32)
        tensors["pooler.dense.bias"] = np.zeros(config.hidden_size, np.float32)
    _save_tensors(tensors, out / "model.safetensors")
    if not sentence_transformers:
        return
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST + "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST + "Pooling"}]
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": config.pooling == "cls",
        "pooling_mode_mean_tokens": config.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    head = []
    if config.projection_hidden_dim is not None:
        head.append(("projection_hidden", config.hidden_size, config.projection_hidden_dim))
    if config.projection_dim is not None:
        head.append(("projection", head[-1][2] if head else config.hidden_size, config.projection_dim))
    for key, n_in, n_out in head:
        idx = len(modules)
        dense_dir = out / f"{idx}_Dense"
        dense_dir.mkdir(exist_ok=True)
        proj = params[key]
        tensors = {"linear.weight": np.ascontiguousarray(np.asarray(proj["kernel"], np.float32).T)}
        if config.projection_bias:
            tensors["linear.bias"] = np.asarray(proj["bias"], np.float32)
        _save_tensors(tensors, dense_dir / "model.safetensors")
        _write_json(dense_dir / "config.json", {"in_features": n_in, "out_features": n_out,
                                                "bias": config.projection_bias, "activation_function": _IDENTITY})
        modules.append({"idx": idx, "name": str(idx), "path": dense_dir.name, "type": _ST + "Dense"})
    if config.normalize:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": _ST + "Normalize"})
    _write_json(out / "modules.json", modules)
    _write_json(out / "sentence_bert_config.json", {
        "max_seq_length": int(max_seq_length or config.max_position_embeddings), "do_lower_case": False})
    _write_json(out / "config_sentence_transformers.json", {
        "__version__": {"gecko_jax": _version()}, "prompts": {}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"})


def _write_json(path: pathlib.Path, obj) -> None:
    from gecko_jax.fileio import write_json

    write_json(path, obj)


def _save_tensors(tensors: Mapping[str, np.ndarray], path: pathlib.Path) -> None:
    """``safetensors`` file with the metadata PyTorch loaders expect (atomic through ``fileio``)."""
    from safetensors.numpy import save

    from gecko_jax.fileio import write_bytes

    write_bytes(path, save(dict(tensors), metadata={"format": "pt"}))


def _version() -> str:
    from gecko_jax import __version__

    return __version__
