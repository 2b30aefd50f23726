#!/usr/bin/env bash
# Several hosts without a scheduler JAX recognises: start this on every host with its own RANK (0 .. N-1); HEAD is
# host 0's address and PORT a free port there, the same on every host.
#
#   host 0:  HEAD=10.0.0.1 N=2 RANK=0 CONFIG=... WORKDIR=gs://bucket/run bash scripts/launch/multinode_manual.sh
#   host 1:  HEAD=10.0.0.1 N=2 RANK=1 CONFIG=... WORKDIR=gs://bucket/run bash scripts/launch/multinode_manual.sh
#
# Each process drives all GPUs of its host and reads only its share of every batch. The WORKDIR must be shared
# (a gs:// bucket or a network filesystem). tests/train/test_train_distributed.py runs exactly this on 127.0.0.1
# with 2 and 4 CPU processes.
set -euo pipefail
: "${HEAD:?}" "${N:?}" "${RANK:?}" "${CONFIG:?}" "${WORKDIR:?}"
PORT=${PORT:-12355}
exec gecko-jax train --config "$CONFIG" --workdir "$WORKDIR" --distributed \
  --coordinator "$HEAD:$PORT" --num-processes "$N" --process-id "$RANK" "$@"
