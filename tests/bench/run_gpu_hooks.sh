#!/usr/bin/env bash
# On a GPU machine: builds with CUDA, checks the KV hooks on the CUDA forward against the
# CPU (test_hooks_cuda) and the probability kernel (test_cuda_select), runs the budget
# sweep pipeline on the CUDA engine with a SmolLM2-shaped synthetic model, then times the
# methods against full attention at long context on a Llama-3.1-8B-shaped model
# (bench_methods), table last.
# Usage: tests/bench/run_gpu_hooks.sh [OUT_DIR]   (KVWEAVE_DATA: the RULER files)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
mkdir -p "$out"
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
fails=0
for t in kernels/test_cuda_select unit/test_hooks_cuda unit/test_engine_cuda kernels/test_cuda_model; do
  if ./build-gpu/tests/$t > "$out/$(basename $t).txt" 2>&1; then r=ok; else r=FAIL; fails=$((fails+1)); fi
  echo "== $t: $r"; grep -v '^ok  ' "$out/$(basename $t).txt" | tail -n 12
done
if [ -z "${KW_SKIP_SWEEP:-}" ]; then
  small=/tmp/kw-smollm2-shape
  [ -f $small/model.gguf ] || ./build-gpu/kvweave gen model --arch llama --like smollm2-135m \
    --dtype bf16 --seed 1 --out $small > /dev/null
  rm -f "$out/sweep.db"
  ./build-gpu/kvweave run pipelines/sweep_budgets.yaml --device cuda --set model=$small/model.gguf \
    --limit 1 --db "$out/sweep.db" --quiet 2>&1 | tail -n 4 || fails=$((fails+1))
  python3 pipelines/tools/sweep_table.py "$out/sweep.db" > "$out/sweep_table.txt" 2>&1 || true
  tail -n 30 "$out/sweep_table.txt"
fi
big=/tmp/kw-llama8b-shape
[ -f $big/model.gguf ] || ./build-gpu/kvweave gen model --arch llama --like llama-3.1-8b \
  --dtype bf16 --seed 1 --out $big > /dev/null
./build-gpu/tests/bench/bench_methods $big/model.gguf ${KW_BENCH_ARGS:-} | tee "$out/methods.csv"
exit $fails
