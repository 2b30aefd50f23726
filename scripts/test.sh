#!/usr/bin/env bash
# The README's test command: set everything up on a fresh machine, check the import contracts (pyproject.toml,
# [tool.importlinter]: layers, data_gen free of gecko_jax/JAX), then run the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --llm
export PYTHONHASHSEED=0
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
