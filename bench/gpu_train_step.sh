#!/usr/bin/env bash
# Issue #4's accelerator check: contrastive train-step steps/s and MFU for a BERT-base-sized encoder (random weights,
# the MiniLM tokenizer) on one GPU. Run from the repo root on a machine with jax[cuda] (or TPU jax) installed:
#   TOK=<tokenizer folder> DATA=<sts-train.csv> PEAK=<dense bf16 TFLOP/s of the chip> bash bench/gpu_train_step.sh
# PEAK defaults to 989 (H100/H200 SXM datasheet, dense bf16). MFU = model FLOPs (6N + 12LHS per token slot) / time / PEAK.
#
# Issue #19's fused-attention before/after (bfloat16, batch 256, seq 128, attention dropout 0 on both sides: the
# fused kernel has none) runs after that, one line per kernel:
#   bash bench/gpu_train_step.sh --fused-only                      # dense, then cudnn and xla (padded), cudnn packed
#   bash bench/gpu_train_step.sh --fused-only --attention cudnn    # one kernel only
set -u
FUSED_ONLY=0; ATTN=(dense cudnn xla)
while [ $# -gt 0 ]; do
  case "$1" in
    --fused-only) FUSED_ONLY=1; shift ;;
    --attention) ATTN=("$2"); shift 2 ;;
    *) echo "usage: bash bench/gpu_train_step.sh [--fused-only] [--attention dense|xla|cudnn|auto]" >&2; exit 2 ;;
  esac
done
TOK=${TOK:-all-MiniLM-L6-v2}; DATA=${DATA:-../shared/data/stsb/sts-train.csv}; PEAK=${PEAK:-989}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
$PY -c "import gecko_jax.train, gecko_jax.eval, gecko_jax.embedder; print('gecko_jax imports ok')"
common=(--model bert-base --seq 128 --steps 10 --peak-tflops "$PEAK" --model-path "$TOK" --data "$DATA")
if [ "$FUSED_ONLY" = 0 ]; then
  $PY bench/train_step.py "${common[@]}" --dtype bfloat16 --batch 64 128 256
  $PY bench/train_step.py "${common[@]}" --dtype float32 --batch 128
  $PY bench/train_step.py "${common[@]}" --dtype bfloat16 --batch 256 --pack
fi
for a in "${ATTN[@]}"; do
  $PY bench/train_step.py "${common[@]}" --dtype bfloat16 --batch 256 --attention "$a" --attention-dropout 0
done
for a in "${ATTN[@]}"; do
  [ "$a" = dense ] || [ "$a" = cudnn ] || continue  # packed rows: a [B, 1, L, L] mask (no segment ids in jax.nn)
  $PY bench/train_step.py "${common[@]}" --dtype bfloat16 --batch 256 --pack --attention "$a" --attention-dropout 0
done
