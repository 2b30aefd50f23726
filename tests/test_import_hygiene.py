"""Import boundaries that DESIGN.md promises, checked in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

_HEAVY = ("torch", "jax", "jaxlib", "tensorflow", "flax")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {m.split(".")[0] for m in proc.stdout.split()}


def test_data_gen_imports_no_ml_framework():
    loaded = _modules_after("import data_gen")
    assert "data_gen" in loaded
    assert not loaded & {"torch", "jax", "tensorflow"}, sorted(loaded & set(_HEAVY))


def test_gecko_jax_and_its_cli_import_lazily():
    # `gecko-jax --help` must stay fast: the package and the CLI parser do not pull in jax/flax.
    loaded = _modules_after("import gecko_jax, gecko_jax.cli; gecko_jax.cli.build_parser()")
    assert not loaded & set(_HEAVY), sorted(loaded & set(_HEAVY))
    assert "torch" not in _modules_after("import gecko_jax; gecko_jax.Embedder")


def test_data_gen_scale_modules_import_no_ml_framework():
    # The Beam workers import these; the embedder (gecko_jax, JAX) is built inside a DoFn's setup only when asked.
    pytest.importorskip("apache_beam")
    loaded = _modules_after("import data_gen.beam_fret, data_gen.ann, data_gen.specs, data_gen.scoring")
    assert "apache_beam" in loaded
    assert not loaded & {"torch", "jax", "tensorflow", "gecko_jax"}, sorted(loaded & {*_HEAVY, "gecko_jax"})


def test_no_script_shadows_a_package_it_imports():
    # `python bench/x.py` puts bench/ first on sys.path: a bench/data_gen.py made `import data_gen` inside gecko_jax
    # load the script instead of the package, and every bench script that builds an Embedder failed (issue 21).
    packages = {"gecko_jax", "data_gen", "experiments"}
    for folder in ("bench", "scripts", "experiments"):
        for path in (REPO / folder).rglob("*.py"):
            assert path.stem not in packages, f"{path.relative_to(REPO)} shadows the {path.stem} package"
