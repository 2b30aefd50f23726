#!/usr/bin/env bash
# The README's test command: set everything up on a fresh machine, then run the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --llm
export PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
