#!/usr/bin/env bash
# The README's main-job command: set everything up on a fresh machine, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --llm
exec .venv/bin/gecko-jax quickstart "$@"
