#!/usr/bin/env bash
# Train on one host with several GPUs: ONE process drives all of them (no --distributed); the batch is split over
# the GPUs and XLA all-reduces the gradients over NVLink. Run from the repository root:
#
#   pip install -e '.[gpu]'                     # jax with CUDA 12
#   CONFIG=experiments/configs/gecko_finetune_minilm.json WORKDIR=runs/ft1 bash scripts/launch/gpu_host.sh
#
# Settings worth knowing: --set model.dtype=bfloat16 (params and Adam moments stay float32); data.batch_size is
# global and must divide by the GPU count; sharding.fsdp=N splits params + optimizer state over N GPUs when they do
# not fit (bench/fsdp_memory.py prints the bytes per device for each choice); data.pack_length=128 for short text.
# Attention: model.attention_impl "auto" (the default) runs cuDNN flash attention in bf16 when attention dropout is 0
# (--set model.dropout=0.0; with dropout it falls back to the dense kernel, one log line); "dense" pins the old path.
#
# Throughput to expect, from BENCHMARKS.md (one NVIDIA H200, bf16, BERT-base-sized encoder, seq 128; measured on one
# chip, the per-chip figure for N chips assumes the all-reduce hides behind the backward pass, not measured):
#   256 pairs/step: 8.38 steps/s = ~2,150 pairs/s per H200 (29% MFU);
#   with data.pack_length=128 on STS-B-length text: 45.7 steps/s = ~11,700 pairs/s per H200.
set -euo pipefail
: "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec gecko-jax train --config "$CONFIG" --workdir "$WORKDIR" --set model.dtype=bfloat16 "$@"
