#!/usr/bin/env bash
# On a GPU machine: kvweave against Hugging Face transformers on the same synthetic
# weights (Llama-3.1-8B widths and heads; LAYERS shortens the stack, 0 = all 32):
# transformers (f32, on the GPU) writes a golden with hf_compare.py, then test_golden
# checks kvweave's CPU engine (relative L2 1e-3, identical greedy tokens) and its CUDA
# engine (bf16: relative L2 2e-2, greedy continuations counted) against it.
# Usage: tests/bench/run_gpu_hf.sh [OUT_DIR] [LIKE] [LAYERS]
# Needs torch, transformers, accelerate and gguf importable by python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
like=${2:-llama-3.1-8b}
layers=${3:-2}
mkdir -p "$out"
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
m=${KW_HF_MODEL_DIR:-/tmp/kw-hf-$like-$layers}
[ -f "$m/model.gguf" ] || ./build-gpu/kvweave gen model --arch llama --like "$like" \
  --dtype bf16 --seed 1 --layers "$layers" --out "$m" > /dev/null
python3 tests/bench/hf_compare.py "$m/model.gguf" "$m/golden" --device cuda --dtype f32 \
  --lens ${KW_HF_LENS:-7,100,700} ${KW_HF_ARGS:-} | tee "$out/hf.txt"
fails=0
for dev in ${KW_HF_DEVICES:-cpu cuda}; do
  if KVWEAVE_GOLDEN_MODEL="$m/model.gguf" KVWEAVE_GOLDEN_PREFIX="$m/golden" \
     KVWEAVE_GOLDEN_DEVICE=$dev ./build-gpu/tests/unit/test_golden_smollm2 > "$out/golden_$dev.txt" 2>&1
  then r=ok; else r=FAIL; fails=$((fails + 1)); fi
  echo "== kvweave $dev vs transformers: $r"
  grep -E "golden logits|greedy \(|first differing|relative L2|FAILED" "$out/golden_$dev.txt" || true
done
exit $fails
