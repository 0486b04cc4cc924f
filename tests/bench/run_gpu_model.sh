#!/usr/bin/env bash
# On a GPU machine: builds with CUDA, checks the CUDA kernels and the CUDA engine against
# the CPU, generates a Llama-3.1-8B-shaped model with random bf16 weights, times the CUDA
# engine's prefill and decode (bench_model) and the same shapes in plain PyTorch and in
# Hugging Face transformers (when importable), and prints a side-by-side table last.
# Usage: tests/bench/run_gpu_model.sh [OUT_DIR] [LIKE] [LAYERS]
# (environment: KW_BENCH_CTX, KW_BENCH_BATCH, KW_BENCH_SKIP_TESTS, KW_BENCH_MODEL_DIR, and
# KW_BENCH_PREFILL_KERNELS: prefill attention kernels to time beside the default)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
like=${2:-llama-3.1-8b}
layers=${3:-0}
ctx=${KW_BENCH_CTX:-2048,8192,32768}
batch=${KW_BENCH_BATCH:-1,8}
prefill_kernels=${KW_BENCH_PREFILL_KERNELS:-}
mkdir -p "$out"
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
model_dir=${KW_BENCH_MODEL_DIR:-/tmp/kw-bench-model}
check_dir=$model_dir-2l # the engine check on LIKE's widths and heads, 2 layers
if [ -z "${KW_BENCH_SKIP_TESTS:-}" ]; then
  ./build-gpu/tests/kernels/test_cuda_model | tail -1
  ./build-gpu/tests/kernels/test_cuda_gemv | tail -1
  ./build-gpu/tests/unit/test_engine_cuda | tee "$out/engine_cuda.txt" | grep -v '^model'
  # head_dim 128 for the Llama and Qwen shapes: prefill runs the wgmma kernel
  [ -f "$check_dir/model.gguf" ] || ./build-gpu/kvweave gen model --arch llama --like "$like" \
    --dtype bf16 --seed 1 --layers 2 --out "$check_dir" > /dev/null
  KW_CUDA_TEST_MODEL="$check_dir/model.gguf" ./build-gpu/tests/unit/test_engine_cuda \
    | tee "$out/engine_cuda_$like.txt" | grep -v '^model'
fi
if [ ! -f "$model_dir/model.gguf" ]; then
  ./build-gpu/kvweave gen model --arch llama --like "$like" --dtype bf16 --seed 1 \
    --layers "$layers" --out "$model_dir"
fi
./build-gpu/kvweave bench model "$model_dir/model.gguf" --ctx "$ctx" --batch "$batch" \
  | tee "$out/kvweave.csv"
# other prefill attention kernels (KVWEAVE_CUDA_PREFILL; KW_BENCH_PREFILL_KERNELS=mma for
# example): the engine check on LIKE's 2-layer model with each, then its prefill at batch
# 1 (rows prefill_K)
for k in ${prefill_kernels//,/ }; do
  if [ -z "${KW_BENCH_SKIP_TESTS:-}" ]; then
    if KVWEAVE_CUDA_PREFILL=$k KW_CUDA_TEST_MODEL="$check_dir/model.gguf" \
        ./build-gpu/tests/unit/test_engine_cuda \
        > "$out/engine_cuda_$k.txt" 2>&1; then
      echo "engine check, prefill kernel $k: $(tail -1 "$out/engine_cuda_$k.txt")"
    else
      echo "engine check, prefill kernel $k: FAILED"
      tail -20 "$out/engine_cuda_$k.txt"
    fi
  fi
  KVWEAVE_CUDA_PREFILL=$k ./build-gpu/kvweave bench model "$model_dir/model.gguf" \
    --ctx "$ctx" --batch 1 --steps 1 | grep '^prefill,' | sed "s/^prefill,/prefill_$k,/" \
    | tee "$out/kvweave_prefill_$k.csv"
done
if python3 -c 'import torch' 2>/dev/null; then
  read -r L E H KV FF V < <(python3 - "$like" "$layers" <<'PY'
import sys
shapes = {"llama-3.1-8b": (32, 4096, 32, 8, 14336, 128256),
          "qwen2.5-7b": (28, 3584, 28, 4, 18944, 152064),
          "smollm2-135m": (30, 576, 9, 3, 1536, 49152)}
s = list(shapes[sys.argv[1]])
if int(sys.argv[2]) > 0:
    s[0] = int(sys.argv[2])
print(*s)
PY
)
  python3 tests/bench/bench_model_torch.py --layers "$L" --dim "$E" --heads "$H" --kv "$KV" \
    --ff "$FF" --vocab "$V" --ctx "$ctx" --batch "$batch" | tee "$out/torch.csv"
  : > "$out/hf.csv"
  if python3 -c 'import transformers' 2>/dev/null; then  # batch 1 only
    python3 tests/bench/bench_hf.py --layers "$L" --dim "$E" --heads "$H" --kv "$KV" \
      --ff "$FF" --vocab "$V" --ctx "$ctx" | tee "$out/hf.csv"
  fi
  python3 - "$out/kvweave.csv" "$out/torch.csv" "$out/hf.csv" <<'PY'
import sys
def load(p):
    r = {}
    for line in open(p):
        f = line.strip().split(",")
        if len(f) >= 5 and f[0] in ("prefill", "decode"):
            r[(f[0], int(f[1]), int(f[2]))] = float(f[4]), f
    return r
k, t, h = (load(p) for p in sys.argv[1:4])
nan = float("nan")
print("\n(tok/s; ratio = kvweave / peer; floor: bytes / copy bandwidth or FLOPs / peak)")
print("kind     batch   ctx   kvweave   torch  ratio  transformers  ratio  floor ms  % of floor")
for key in sorted(k):
    kv, f = k[key]
    tv = t.get(key, (nan,))[0]
    hv = h.get(key, (nan,))[0]
    print(f"{key[0]:8} {key[1]:5} {key[2]:6} {kv:9.1f} {tv:7.1f} {kv / tv:6.2f} {hv:13.1f}"
          f" {kv / hv:6.2f} {float(f[5]):9.2f} {float(f[6]):9.1f}%")
PY
else
  echo "PyTorch not installed: no peer numbers"
fi
