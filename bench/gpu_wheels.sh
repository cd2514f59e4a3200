#!/usr/bin/env bash
# The packages the lent GPU machine's image lacks, or holds in another version than the project
# pins (its Python 3.12 has torch and most of the stack; bench/RESULTS.md "The test split on one
# GPU"), downloaded here as wheels into .whl/ (ignored by git), for the device call to carry and
# install before bench/gpu_check.sh. Versions come from requirements.lock. huggingface_hub stays
# the image's (transformers accepts it; the pinned one needs httpx2, which the image lacks).
set -euo pipefail
cd "$(dirname "$0")/.."
pins=()
for name in transformers captum pydicom; do
    pins+=("$(grep -i "^$name==" requirements.lock)")
done
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
ls .whl
