"""The wheel runs anywhere: build it, install it into a fresh virtualenv in a temporary folder outside the
repository, and run the CLI there with only the data mirror (``GECKO_JAX_DATA``) and package data.

No network for the install: the fresh venv sees the dependencies already installed in the running interpreter's
site-packages through a ``.pth`` file over a folder of links (every entry except gecko-jax's own editable install),
and pip installs the wheel with ``--no-index`` after checking those dependencies. The build uses the installed
setuptools when it can make wheels, else pip's isolated build (setuptools + wheel from the configured index).
Slow (minutes): ``-m slow``.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import DATA, REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]  # a tiny quickstart: minutes, more under load

_SKIP_TREE = {".git", ".venv", "runs", "workdirs", "build", "dist", "__pycache__", ".pytest_cache", ".cache"}


def _run(cmd, *, env, cwd, timeout=1800):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _build_flags() -> list[str]:
    """Build with the installed setuptools when it can make wheels (no network); otherwise let pip's isolated build
    get setuptools and wheel from the configured package index (the only network use, and only then)."""
    try:
        import setuptools

        native = tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= (70, 1)
    except ImportError:
        return []
    try:
        import wheel  # noqa: F401
    except ImportError:
        if not native:
            return []
    return ["--no-build-isolation", "--no-index"]


def _deps_dir(dest: pathlib.Path) -> pathlib.Path:
    """Links to everything in this interpreter's site-packages except gecko-jax's own (editable) install."""
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    for entry in site.iterdir():
        low = entry.name.lower()
        if "gecko_jax" in low or "gecko-jax" in low or entry.suffix == ".pth" or low in ("gecko_jax", "data_gen"):
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


def test_wheel_in_a_fresh_venv_runs_quickstart_and_eval(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"no data mirror at {DATA}")
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # 1. build the wheel from a copy of the working tree (the build writes build/ and *.egg-info beside the sources)
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=lambda d, names: [n for n in names if n in _SKIP_TREE or n.endswith(".pyc")])
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_flags(), "-w", str(tmp_path / "dist"), str(src)],
         env=base_env, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("gecko_jax-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "gecko_jax/configs/quickstart_minilm.json" in names and "data_gen/assets/scifact_demo.jsonl" in names
    assert "gecko_jax/assets/fret_quickstart.jsonl" in names  # the shipped recipe trains on it (no --fret needed)
    shipped = {f"gecko_jax/assets/reference/{f.name}" for f in (REPO / "gecko_jax" / "assets" / "reference").iterdir()}
    assert any(n.endswith(".npy") for n in shipped) and shipped <= set(names)  # the base-model references, vectors too
    assert not [n for n in names if n.startswith(("tests/", "experiments/"))]
    # 2. a fresh venv outside the repository; dependencies come from this interpreter's site-packages
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], env=base_env, cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   env=base_env, cwd=tmp_path).stdout.strip()
    (pathlib.Path(purelib) / "zz_gecko_test_deps.pth").write_text(str(_deps_dir(tmp_path / "deps")) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-index", "--no-build-isolation", str(wheel)], env=base_env,
         cwd=tmp_path)
    # 3. run it from a folder outside the repository, with the data mirror only
    work = tmp_path / "work"
    work.mkdir()
    env = dict(base_env, PATH=f"{venv / 'bin'}{os.pathsep}{base_env.get('PATH', '')}", GECKO_JAX_DATA=str(DATA),
               GECKO_JAX_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               JAX_PLATFORMS="cpu")
    where = _run([str(py), "-c", "import gecko_jax, data_gen; print(gecko_jax.__file__); print(data_gen.__file__)"],
                 env=env, cwd=work).stdout.split()
    assert all(pathlib.Path(p).is_relative_to(venv) for p in where), where      # the wheel's code, not the repo's
    _run([str(venv / "bin" / "gecko-jax"), "quickstart", "--tiny", "--llm", "fake", "--workdir", str(work / "qs"),
          "--no-progress"], env=env, cwd=work)
    res = json.loads((work / "qs" / "quickstart_results.json").read_text())
    assert res["train"]["steps"] == 2 and "scifact" in res["table_md"]
    _run([str(venv / "bin" / "gecko-jax"), "eval", "--model", "all-MiniLM-L6-v2", "--tasks", "stsb", "--out",
          str(work / "ev")], env=env, cwd=work)
    ev = json.loads((work / "ev" / "results.json").read_text())
    assert 70.0 < next(iter(ev["tasks"]["stsb"].values()))["main_score"] < 95.0
