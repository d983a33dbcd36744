#!/usr/bin/env bash
# The GPU checks of the speed issue, as one script (about 3-4 minutes on one H200):
#   1. loss: ours vs the reference loop, forward + backward, the four settings;
#   2. step breakdown and peak memory of the CIFAR-10 W-MSE 2 recipe (ResNet-18,
#      batch 512, bf16) on CIFAR-shaped noise;
#   3. one epoch of 50,000 CIFAR-shaped images with `wmse train`'s step (target:
#      at most 8 s) against the reference-style PIL pipeline.
# Usage: bash benchmarks/gpu_check.sh [python]   (SMOKE=1 runs tiny settings on the CPU
# to check the script itself.)
set -euo pipefail
PYTHON=${1:-.venv/bin/python}
cd "$(dirname "$0")/.."
if [[ "${SMOKE:-0}" == 1 ]]; then
    DEVICE=cpu; MODEL=(--width 8 --batch-size 256); STEPS=2; EPOCH=(); WORKERS=(1)
else
    DEVICE=cuda; MODEL=(); STEPS=30; EPOCH=(--epoch); WORKERS=(8 15)
fi
"$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true

echo "== 1. loss forward + backward: ours vs reference loop"
"$PYTHON" benchmarks/loss_speed.py --device "$DEVICE" --repeats "$STEPS"

echo "== 2. step breakdown: cifar10-wmse2 recipe on CIFAR-shaped noise"
"$PYTHON" -m wmse bench --preset cifar10-wmse2 --dataset synthetic-cifar \
    --device "$DEVICE" --steps "$STEPS" --warmup 5 "${MODEL[@]}"

echo "== 3. one epoch: ours vs the reference-style pipeline"
"$PYTHON" benchmarks/pipeline_speed.py --preset cifar10-wmse2 \
    --dataset synthetic-cifar --device "$DEVICE" --steps "$STEPS" --warmup 5 \
    --workers "${WORKERS[@]}" "${EPOCH[@]}" "${MODEL[@]}"
