#!/usr/bin/env bash
# On a GPU machine: builds with CUDA, checks the selection and page kernels against the
# CPU references, then times them at 8B shapes and 32k tokens against the copy bandwidth
# measured in the same run. Usage: tests/bench/run_gpu_select.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
mkdir -p "$out"
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
./build-gpu/tests/kernels/test_cuda_select > "$out/test_cuda_select.txt" || {
  grep -v '^ok' "$out/test_cuda_select.txt"; exit 1; }
grep -v '^ok' "$out/test_cuda_select.txt"
./build-gpu/tests/bench/bench_cuda_select | tee "$out/select.csv"
