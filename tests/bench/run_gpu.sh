#!/usr/bin/env bash
# On a GPU machine: builds with CUDA, checks the CUDA kernels against the CPU references,
# then times decode attention over views beside PyTorch SDPA (same GPU, same run).
# Usage: tests/bench/run_gpu.sh [MAX_CTX] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
max_ctx=${1:-131072}
out=${2:-bench-out}
mkdir -p "$out"
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
./build-gpu/tests/kernels/test_cuda_kernels | tail -1
./build-gpu/tests/kernels/test_cuda_attn | tail -1
./build-gpu/tests/bench/bench_cuda_attn "$max_ctx" | tee "$out/attn_view.csv"
bw=$(grep copy_bandwidth "$out/attn_view.csv" | cut -d, -f2)
if python3 -c 'import torch' 2>/dev/null; then
  python3 tests/bench/bench_sdpa.py "$max_ctx" "$bw" | tee "$out/sdpa.csv"
else
  echo "PyTorch not installed: no SDPA peer numbers"
fi
