#!/usr/bin/env bash
# On a GPU machine: builds with CUDA, checks the KV hooks on the CUDA forward against the
# CPU (test_hooks_cuda) and the probability kernel (test_cuda_select), runs the budget
# sweep pipeline on the CUDA engine with a SmolLM2-shaped synthetic model, then times the
# methods against full attention at long context on a Llama-3.1-8B-shaped model
# (bench_methods), table last; KVStar and DeltaKV run as pipelines on both engines and
# in a second bench_methods call.
# Usage: tests/bench/run_gpu_hooks.sh [OUT_DIR]   (KVWEAVE_DATA: the RULER files)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
mkdir -p "$out"
rm -f "$out"/hooks_*.txt
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled
ninja -C build-gpu
fails=0
# test_hooks_cuda's CPU side dominates its time (over 5 minutes in one process on a
# 16-core machine): its cases run as parallel processes of 2 threads each (about a
# minute), one page type and case name each ('+delta': the three stacked before DeltaKV)
cases="spy streaming h2o snapkv pyramidkv quest clusterkv omnikv kvstar deltakv +delta"
for dt in bf16 int8; do for c in $cases; do echo "$dt $c"; done; done |
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1 xargs -P 8 -L 1 sh -c \
    './build-gpu/tests/unit/test_hooks_cuda "$0" "$1" > "'"$out"'/hooks_$0_$1.txt" 2>&1 ||
     echo "FAIL test_hooks_cuda $0 $1" >> "'"$out"'/hooks_failed.txt"'
if [ -s "$out/hooks_failed.txt" ]; then r=FAIL; fails=$((fails+1)); else r=ok; fi
echo "== unit/test_hooks_cuda: $r"
cat "$out"/hooks_*.txt | grep -v '^ok: \|worst single\|^ok  ' | tail -n 30
for t in kernels/test_cuda_select unit/test_engine_cuda kernels/test_cuda_model; do
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
  # KVStar, DeltaKV and the selections over DeltaKV (OmniKV, ClusterKV, KVStar's) on both
  # engines, two short RULER samples each (budgets under the 1024 tokens, so that they
  # choose): every sample must finish, with the methods' memory figures beside each other
  for p in kvstar_ruler deltakv_ruler omnikv_deltakv_ruler clusterkv_deltakv_ruler \
           kvstar_deltakv_ruler; do
    extra=""
    [ $p = omnikv_deltakv_ruler ] && extra="--set sel.keep_tokens=256"
    [ $p = clusterkv_deltakv_ruler ] && extra="--set sel.budget=256 --set sel.clusters=64"
    [ $p = kvstar_deltakv_ruler ] && extra="--set sel.block=64"
    for d in cpu cuda; do
      rm -f "$out/$p-$d.db"
      ./build-gpu/kvweave run pipelines/$p.yaml --device $d --set model=$small/model.gguf \
        --set dataset.n=2 --set dataset.length=1024 --set gen.max_new=24 $extra \
        --set gen.ignore_eos=true --limit 2 --db "$out/$p-$d.db" --quiet 2>&1 | tail -n 2 \
        || fails=$((fails+1))
      echo "$p $d: $(./build-gpu/kvweave query --db "$out/$p-$d.db" --format csv \
        "SELECT group_concat(key || '=' || value, ' ') FROM metrics WHERE sample IS NULL AND
         key IN ('mem/kv_payload_peak_bytes', 'mem/held_peak_bytes', 'mem/load_bytes',
                 'mem/store_bytes', 'mem/rebuilt_tokens', 'mem/rebuilt_tokens_full',
                 'device_used_bytes')" \
        | tail -n 1); finished $(./build-gpu/kvweave query \
        --db "$out/$p-$d.db" --format csv "SELECT count(*) FROM samples WHERE status =
        'FINISHED'" | tail -n 1) of 2"
    done
  done
fi
big=/tmp/kw-llama8b-shape
[ -f $big/model.gguf ] || ./build-gpu/kvweave gen model --arch llama --like llama-3.1-8b \
  --dtype bf16 --seed 1 --out $big > /dev/null
./build-gpu/tests/bench/bench_methods $big/model.gguf ${KW_BENCH_ARGS:-} | tee "$out/methods.csv"
# KVStar and DeltaKV (host work every few steps or every step): batch 1, fewer steps
./build-gpu/tests/bench/bench_methods $big/model.gguf --batch 1 --steps 8 \
  --methods full,kvstar,deltakv ${KW_BENCH_ARGS:-} | tee "$out/methods_offload.csv"
exit $fails
