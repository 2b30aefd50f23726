"""Package-level checks for gecko_jax.losses: import isolation, public API, runnable docstring examples."""
from __future__ import annotations

import doctest
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULES = ["contrastive", "matryoshka", "debiasing", "smoothing", "gamblers"]


def test_imports_only_jax_optax_numpy():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import gecko_jax.losses as L\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
        "('flax', 'transformers', 'orbax', 'tensorflow', 'tensorflow_datasets', 'torch', 'tokenizers') "
        "or m.startswith(('gecko_jax.models', 'gecko_jax.train', 'gecko_jax.data', 'gecko_jax.eval', "
        "'gecko_jax.embedder')))\n"
        "assert not bad, bad\n"
        "assert {'jax', 'optax', 'numpy'} <= new, new\n"
        "print('ok', len(L.__all__))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok")


def test_public_api_is_reexported():
    import gecko_jax.losses as L

    for name in L.__all__:
        assert callable(getattr(L, name)), name
    for name in ["gecko_contrastive", "matryoshka", "truncate", "content_conditional_debiasing", "cced",
                 "smoothed_cross_entropy", "forward_corrected_cross_entropy", "optimal_smoothing",
                 "agnostic_smoothing", "p_to_epsilon", "epsilon_to_p", "gamblers", "auto_payoff",
                 "gamblers_stop_threshold", "gamblers_predict"]:
        assert name in L.__all__, name


@pytest.mark.parametrize("module", [f"gecko_jax.losses.{m}" for m in MODULES] + ["gecko_jax.data.noise"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
