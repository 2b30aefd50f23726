#!/usr/bin/env bash
# The README's main-job command: set everything up on a fresh machine, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --llm
# The local data mirror when there is one (as on the development machines and CI); without it the datasets are
# downloaded from their public sources into ~/.cache/gecko_jax (see `gecko-jax datasets --help`).
if [ -z "${GECKO_JAX_DATA:-}" ] && [ -d ../shared/data ]; then export GECKO_JAX_DATA="$(cd ../shared/data && pwd)"; fi
exec .venv/bin/gecko-jax quickstart "$@"
