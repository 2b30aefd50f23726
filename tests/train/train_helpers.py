"""Shared helpers for tests/train: a tiny local corpus and tiny-model configs.

Imported as ``train_helpers`` (pytest's ``pythonpath`` in pyproject.toml puts tests/train on the path) and as
``tests.train.train_helpers`` inside subprocesses (their working folder is the repository root)."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile

import pytest

TOPICS = ["astronomy", "cooking", "football", "chemistry", "poetry", "banking", "gardening", "music"]


def write_pairs(path: pathlib.Path, n: int = 48, *, negatives: int = 2, task: str | None = "search result",
                prefix: str = "") -> pathlib.Path:
    """``n`` query/positive/negatives records about distinct topics (duplicates of positives appear on purpose)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            rec = {"id": f"{prefix}q{i}", "query": f"{prefix}what does note {i} say about {topic}",
                   "positive": f"note {i} explains {topic} in {i % 5 + 2} short sentences",
                   "negative": [f"note {i + k + 1} is about {TOPICS[(i + k + 1) % len(TOPICS)]}"
                                for k in range(negatives)]}
            if i % 16 == 5:
                rec["positive"] = "a shared passage that several queries point to"
            if task:
                rec["task"] = task
            f.write(json.dumps(rec) + "\n")
    return path


def write_fair(path: pathlib.Path, n: int = 16) -> pathlib.Path:
    with pathlib.Path(path).open("w") as f:
        for i in range(n):
            job = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"id": f"t{i}", "groups": [f"he works in {job}", f"she works in {job}"],
                                "neutral": f"they work in {job}"}) + "\n")
    return pathlib.Path(path)


def contrastive_raw(data_path: pathlib.Path, **top) -> dict:
    """A raw (dict) contrastive config over ``data`` with a tiny random encoder and the MiniLM tokenizer."""
    raw = {
        "trainer": "contrastive", "steps": 4, "seed": 0, "log_every": 1, "progress": False,
        "model": {"tiny": {"num_layers": 1, "hidden_dropout": 0.1, "attention_dropout": 0.1},
                  "tokenizer": "all-MiniLM-L6-v2"},
        "data": {"datasets": [{"path": str(data_path)}], "batch_size": 8, "max_length": 32, "buckets": [16, 32],
                 "hard_negatives": 1, "seed": 3},
        "optimizer": {"learning_rate": 1e-3, "warmup_steps": 1, "schedule": "warmup_cosine"},
        "loss": {"temperature": 0.05, "same_tower": True},
        "checkpoint": {"every_steps": 2, "keep": 3, "export": False},
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def write_config(path: pathlib.Path, raw: dict) -> pathlib.Path:
    pathlib.Path(path).write_text(json.dumps(raw, indent=1))
    return pathlib.Path(path)


def read_metrics(workdir: pathlib.Path) -> list[dict]:
    f = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def losses_by_step(workdir: pathlib.Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(workdir) if "loss" in m}


CACHE_DIR = pathlib.Path(tempfile.gettempdir()) / f"gecko_jax_test_xla_cache_{os.getuid()}"
_FAST = {
    # flax examples' smoke-test habit: both sides of every comparison run under the same setting, and the tiny
    # train step compiles 2-3x faster on the 2-core machine.
    "jax_disable_most_optimizations": True,
    # Many tests (and their subprocesses) compile the very same tiny train step: reuse it across them.
    "jax_compilation_cache_dir": str(CACHE_DIR),
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


def subprocess_env() -> dict:
    """Environment variables that give a subprocess the same fast-compile settings."""
    return {k.upper(): ("1" if v is True else str(v)) for k, v in _FAST.items()}


def fast_compile_code() -> str:
    """Python lines that apply the same settings inside a ``run_multidevice`` script."""
    return "".join(f"jax.config.update({k!r}, {v!r})\n" for k, v in _FAST.items())


@pytest.fixture(autouse=True)
def fast_compiles():
    """Fast compiles for the tiny models (see ``_FAST``); test modules import this autouse fixture by name."""
    with fast_settings():
        yield


@contextlib.contextmanager
def fast_settings():
    """``_FAST`` for the duration of a block (module-scoped fixtures run before the autouse fixture)."""
    import jax

    def read(k):
        try:
            return jax.config.read(k)
        except AttributeError:  # flags with a context manager are read as attributes
            return getattr(jax.config, k)

    previous = {k: read(k) for k in _FAST}
    for k, v in _FAST.items():
        jax.config.update(k, v)
    yield
    for k, v in previous.items():
        jax.config.update(k, v)


ROOT_CONFTEST = pathlib.Path(__file__).resolve().parent.parent / "conftest.py"


@pytest.fixture
def root_conftest(request):
    """tests/conftest.py as the loaded plugin itself (``run_multidevice``, its retry counter and deadlock markers):
    ``from conftest import ...`` would pick whichever conftest.py was imported last (tests/eval has one), and a
    fresh import would keep its own retry counter, which the terminal summary would not see."""
    for plugin in request.config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and pathlib.Path(path).resolve() == ROOT_CONFTEST.resolve():
            return plugin
    pytest.fail(f"{ROOT_CONFTEST} is not loaded as a conftest plugin")
