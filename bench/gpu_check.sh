#!/usr/bin/env bash
# The GPU measurements in one go: the full MedGemma 4B architecture with random weights, in
# bfloat16, inference with capture (42 questions per image; image first, then question first)
# and batched Grad-CAM. About 5 minutes on an H100, the machine's start not included.
# Needs a CUDA machine with torch and transformers; the project itself is read from src/.
# Usage: bench/gpu_check.sh OUT_DIR   (one log per bench in OUT_DIR; results go to RESULTS.md)
# MODEL=tiny DEVICE=cpu bench/gpu_check.sh OUT_DIR tries the script itself on a CPU.
set -euo pipefail
out=${1:?usage: bench/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
model=${MODEL:-medgemma-4b}
device=${DEVICE:-cuda}

: >"$out/gpu.txt"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
# The capture hooks into transformers' internals: measure with the version the project pins.
pinned=$(sed -n 's/^transformers==//p' requirements.lock)
"$python" - "$pinned" <<'PY' | tee -a "$out/gpu.txt"
import sys

import torch
import transformers

print("torch", torch.__version__, "transformers", transformers.__version__)
if transformers.__version__ != sys.argv[1]:
    sys.exit(f"the project pins transformers {sys.argv[1]} (requirements.lock): install it first")
PY
# Each bench is bounded, and runs whatever became of the one before.
failed=0
timeout 300 "$python" bench/bench_inference.py --model "$model" --device "$device" --alone 6 \
    --repeats 3 --write-rounds 2 --images-per-batch 1 2 4 8 2>&1 | tee "$out/inference.txt" \
    || failed=1
timeout 180 "$python" bench/bench_inference.py --model "$model" --device "$device" --alone 2 \
    --repeats 2 --write-rounds 1 --images-per-batch 1 4 --question-first 2>&1 \
    | tee "$out/inference-question-first.txt" || failed=1
timeout 180 "$python" bench/bench_gradcam.py --model "$model" --device "$device" --repeats 3 \
    2>&1 | tee "$out/gradcam.txt" || failed=1
exit "$failed"
