#!/usr/bin/env bash
# On a GPU machine, with a real model (a GGUF path; default the SmolLM2 GGUF): the CUDA
# engine and every KV method against the CPU on its weights, then the quickstart, RULER
# at 4k (every task) and both budget sweeps (RULER niah, PG19 fidelity) on the GPU, with
# the sweep table last. Needs build-gpu (tests/bench/run_gpu_hooks.sh builds it) and
# KVWEAVE_DATA with ruler/ and text/.
# Usage: tests/bench/run_gpu_real.sh MODEL.gguf [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
m=$1
out=${2:-bench-out}
mkdir -p "$out"
kv=./build-gpu/kvweave
KW_CUDA_TEST_MODEL=$m ./build-gpu/tests/unit/test_engine_cuda > "$out/real_engine.txt" 2>&1
echo "== engine on $m: exit $?"; grep -v '^model' "$out/real_engine.txt"
KW_CUDA_TEST_MODEL=$m ./build-gpu/tests/unit/test_hooks_cuda > "$out/real_hooks.txt" 2>&1
echo "== hooks on $m: exit $?"; cat "$out/real_hooks.txt"
db=$out/real.db
rm -f "$db"
for p in quickstart ruler_4k sweep_budgets sweep_budgets_pg19; do
  set=()
  [ $p = ruler_4k ] && set=(--set dataset.n=5)
  echo "== $p"
  $kv run pipelines/$p.yaml --device cuda --set model="$m" "${set[@]}" --db "$db" --quiet 2>&1 \
    | tail -n 16
done
python3 pipelines/tools/sweep_table.py "$db"
