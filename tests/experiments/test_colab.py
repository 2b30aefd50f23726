"""experiments/gecko/colab.ipynb: valid nbformat-4 JSON, and its code cells (shell/magic lines skipped) run on CPU.

The run trains a tiny random encoder for 20 steps and evaluates a toy retrieval: ~12 s of CPU (about 15-20 s wall
on an idle 2-core box; more under load), in a subprocess so the notebook's globals and JAX state stay out of the
test process.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "experiments" / "gecko" / "colab.ipynb"


def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def test_notebook_is_nbformat4():
    nb = _notebook()
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int) and isinstance(nb["metadata"], dict)
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert kinds[0] == "markdown" and kinds.count("code") >= 4
    for c in nb["cells"]:
        assert c["cell_type"] in ("markdown", "code") and isinstance(c["metadata"], dict)
        assert isinstance(c["source"], list) and all(isinstance(s, str) for s in c["source"])
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None  # shipped without outputs
    install = "".join(nb["cells"][1]["source"])
    assert "pip install" in install and all(l.startswith("#") for l in install.splitlines() if l.strip())
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for name in ("Embedder", "losses.gecko_contrastive", "train.create_state", "train.make_step"):
        assert name in code


def code_of(nb: dict) -> str:
    """The notebook's code cells as one script, without ``!`` / ``%`` lines (shell and magics)."""
    parts = []
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            parts.append("".join(l for l in c["source"] if not l.lstrip().startswith(("!", "%"))))
    return "\n\n".join(parts) + "\n"


@pytest.mark.timeout(600)
def test_notebook_runs_on_cpu(tmp_path):
    script = tmp_path / "colab.py"
    script.write_text(code_of(_notebook()))
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="true",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"COLAB_OK toy recall@1 before=([\d.]+) after=([\d.]+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    before, after = float(m.group(1)), float(m.group(2))
    assert after > before and after >= 0.75  # 20 steps on 12 pairs: the toy task is learnt
    losses = [float(x) for x in re.findall(r"loss ([\d.]+)", proc.stdout)]
    assert len(losses) >= 2 and losses[-1] < losses[0]
