#!/usr/bin/env bash
# The training path's GPU checks as one prepared command for a lent GPU machine. Needs torch
# with CUDA and this repository (no Ray or MLflow): run from the repository root.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default: outputs/bench/gpu
#
# 1. throughput and MFU (executed and architecture FLOPs) of ytmt-ucs at the paper's scale
#    (width 64, 224x224, batch 64): fp32 eager vs bf16 + channels_last + torch.compile, with
#    and without fused streams, and compile's max-autotune mode (no CUDA graphs);
# 2. a profile of the compiled step: the top kernels, the share of device time in
#    convolution/matmul kernels, and a gzipped Chrome trace.
# Meant to fit one 10-minute call on an H200 (most of it compiling; not yet run on a GPU);
# every line also goes to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/bench/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
python bench/bench_train.py --gpu --batch 64 --modes eager,compile,fused --warmup 3 --iters 10 \
  2>&1 | tee "$out/train_b64.txt"
python bench/bench_train.py --gpu --batch 64 --modes eager,compile --warmup 3 --iters 10 \
  --compile-mode max-autotune-no-cudagraphs 2>&1 | tee "$out/train_b64_autotune.txt"
python bench/bench_train.py --gpu --batch 64 --modes compile --warmup 2 --iters 3 \
  --profile "$out" --profile-steps 2 2>&1 | tee "$out/profile_b64.txt"
