#!/usr/bin/env bash
# On a GPU machine: builds with CUDA, checks the CUDA kernels against the CPU references,
# then times decode attention over views and causal prefill attention beside PyTorch
# SDPA (same GPU, same run), and ends with a prefill table side by side.
# Usage: tests/bench/run_gpu.sh [MAX_CTX] [OUT_DIR]   (MAX_CTX: decode, default 131072;
# PREFILL_MAX_CTX, default 32768, and PEAK_TFLOPS, default 800, in the environment)
set -euo pipefail
cd "$(dirname "$0")/../.."
max_ctx=${1:-131072}
out=${2:-bench-out}
prefill_ctx=${PREFILL_MAX_CTX:-32768}
peak=${PEAK_TFLOPS:-800}
mkdir -p "$out"
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
./build-gpu/tests/kernels/test_cuda_kernels | tail -1
./build-gpu/tests/kernels/test_cuda_attn | tail -1
./build-gpu/tests/kernels/test_cuda_model | grep -E '^FAIL|prefill|failure'
./build-gpu/tests/bench/bench_cuda_attn "$max_ctx" | tee "$out/attn_view.csv"
bw=$(grep copy_bandwidth "$out/attn_view.csv" | cut -d, -f2)
./build-gpu/tests/bench/bench_cuda_prefill "$prefill_ctx" "$peak" | tee "$out/prefill.csv"
: > "$out/sdpa_prefill.csv"
if python3 -c 'import torch' 2>/dev/null; then
  python3 tests/bench/bench_sdpa.py "$max_ctx" "$bw" | tee "$out/sdpa.csv"
  python3 tests/bench/bench_sdpa.py prefill "$prefill_ctx" "$peak" | tee "$out/sdpa_prefill.csv"
else
  echo "PyTorch not installed: no SDPA peer numbers"
fi
# side by side: kvweave (table and span views; kvw_cudnn: cuDNN's fused attention, which
# the engine's dense prefill steps use where cuDNN loads; where the default is the wgmma
# kernel, kvw_mma: the mma.sync kernel forced, kvw_cpasync: K/V copied by cp.async, not
# TMA) against the fastest SDPA view, per context; ratio: the engine's choice (cuDNN where
# it ran, else the table view) over SDPA
echo
echo "causal prefill attention, 32/8 heads, head_dim 128, q tokens = ctx (TFLOP/s)"
printf '%8s %10s %10s %10s %10s %11s %10s %8s %8s\n' ctx kvw_table kvw_cudnn kvw_spans kvw_mma \
  kvw_cpasync sdpa ratio pct_peak
awk -F, -v peak="$peak" '
  FNR == NR { if ($1 == "prefill_attn" && $5 != "failed") { kv[$2, $4] = $7; ctx[$4] = 1 } next }
  $1 == "sdpa_prefill" && (!($4 in sd) || $7 + 0 > sd[$4] + 0) { sd[$4] = $7 }
  END {
    for (c in ctx) {
      t = kv["table", c]; s = (c in sd) ? sd[c] : ""
      cu = (("table_cudnn", c) in kv) ? kv["table_cudnn", c] : ""
      best = cu != "" ? cu : t
      m = (("table_mma", c) in kv) ? sprintf("%.1f", kv["table_mma", c]) : "-"
      cp = (("table_cpasync", c) in kv) ? sprintf("%.1f", kv["table_cpasync", c]) : "-"
      printf "%8d %10.1f %10s %10.1f %10s %11s %10s %8s %7.1f%%\n", c, t,
             cu == "" ? "-" : sprintf("%.1f", cu), kv["spans", c], m, cp,
             s == "" ? "-" : sprintf("%.1f", s),
             s == "" ? "-" : sprintf("%.2f", best / s),
             100 * best / peak
    }
  }' "$out/prefill.csv" "$out/sdpa_prefill.csv" | sort -n
# decode attention side by side: the engine's dense view (table mode) and the 25% views
# against SDPA over the dense KV and PyTorch's gather-then-SDPA of the same 25% of tokens
# (ms per call; % of the measured copy bandwidth; speedup = SDPA dense ms / this ms); and
# the dense view over int8 pages (kvw_int8: its % is of its own bytes, about half;
# vs_bf16 = bf16 table ms / int8 ms)
echo
echo "decode attention over views, 32/8 heads, head_dim 128, bf16 pages and int8 ones (ms, % of copy bandwidth)"
printf '%5s %7s %15s %15s %7s %15s %8s %15s %8s %15s %7s\n' batch ctx kvw_dense sdpa_dense \
  ratio kvw_tokens25 vs_dense sdpa_gather25 vs_dense kvw_int8 vs_bf16
awk -F, '
  FNR == NR { if ($1 == "attn_view") { ms[$2, $3, $4] = $5; pc[$2, $3, $4] = $8; key[$3 " " $4] = 1 } next }
  $1 == "sdpa_dense" { sd[$3, $4] = $5; sp[$3, $4] = $8 }
  $1 == "sdpa_gather" { sg[$3, $4] = $5 }
  END {
    for (k in key) {
      split(k, a, " "); b = a[1]; c = a[2]; d = sd[b, c]
      i8 = ms["table_i8", b, c]
      printf "%5d %7d %8.4f %5.1f%% %8s %5s%% %7s %8.4f %5.1f%% %8s %15s %8s %8s %5s%% %7s\n",
             b, c, ms["table", b, c], pc["table", b, c], d == "" ? "-" : d,
             d == "" ? "-" : sp[b, c], d == "" ? "-" : sprintf("%.2f", d / ms["table", b, c]),
             ms["tokens25", b, c], pc["tokens25", b, c],
             d == "" ? "-" : sprintf("%.2fx", d / ms["tokens25", b, c]),
             sg[b, c] == "" ? "-" : sg[b, c],
             sg[b, c] == "" || d == "" ? "-" : sprintf("%.2fx", d / sg[b, c]),
             i8 == "" ? "-" : i8, i8 == "" ? "-" : sprintf("%.1f", pc["table_i8", b, c]),
             i8 == "" ? "-" : sprintf("%.2fx", ms["table", b, c] / i8)
    }
  }' "$out/attn_view.csv" "$out/sdpa.csv" | sort -n -k1,1 -k2,2
