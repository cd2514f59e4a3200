#!/usr/bin/env bash
# The GPU measurements in one go, with the full MedGemma 4B architecture and random weights in
# bfloat16. First issue 21's: the test split's stages measured and projected
# (bench_test_split.py: answers at both answer lengths and orders, maps by every method,
# faithfulness; about 5 minutes on an H100, bounded at 8). With ALL=1, then the inference and
# Grad-CAM benches of issues 5 and 6 (about 5 minutes more; their results are in RESULTS.md).
# The machine's start is not included. Needs a CUDA machine with torch and transformers; the
# project itself is read from src/.
# Usage: bench/gpu_check.sh OUT_DIR   (one log per bench in OUT_DIR; results go to RESULTS.md)
# MODEL=tiny DEVICE=cpu IMAGES=1 bench/gpu_check.sh OUT_DIR tries the script itself on a CPU.
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
# Each bench is bounded, and runs whatever became of the one before; each prints as it goes, so a
# bench cut short by its bound keeps what it measured.
failed=0
images=${IMAGES:-16}
per_batch=$((images < 8 ? images : 8))
timeout 480 "$python" bench/bench_test_split.py --model "$model" --device "$device" \
    --images "$images" --images-per-batch "$per_batch" --json "$out/test-split.json" 2>&1 \
    | tee "$out/test-split.txt" || failed=1
if [[ ${ALL:-0} == 1 ]]; then
    timeout 300 "$python" bench/bench_inference.py --model "$model" --device "$device" --alone 6 \
        --repeats 3 --write-rounds 2 --images-per-batch 1 2 4 8 2>&1 | tee "$out/inference.txt" \
        || failed=1
    timeout 180 "$python" bench/bench_inference.py --model "$model" --device "$device" --alone 2 \
        --repeats 2 --write-rounds 1 --images-per-batch 1 4 --question-first 2>&1 \
        | tee "$out/inference-question-first.txt" || failed=1
    timeout 180 "$python" bench/bench_gradcam.py --model "$model" --device "$device" --repeats 3 \
        2>&1 | tee "$out/gradcam.txt" || failed=1
fi
exit "$failed"
