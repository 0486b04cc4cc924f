#!/bin/sh
# Bounded libFuzzer run of the pipeline parser + graph build: `run_fuzz.sh [SECONDS]`.
# Uses $KVWEAVE_BUILD/tests/fuzz/fuzz_pipeline when the build was configured with
# CC=clang -Dfuzz=true; otherwise compiles the target with clang into a temporary
# directory. New inputs go to a scratch corpus; the committed corpus is only read.
# Skips (exit 77) when clang or libFuzzer is missing. Exit 1 on a crash, leak or timeout.
set -eu
SECS=${1:-60}
SRC=${KVWEAVE_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
CORPUS=$SRC/tests/fuzz/corpus/pipeline
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

BIN=${KVWEAVE_BUILD:+$KVWEAVE_BUILD/tests/fuzz/fuzz_pipeline}
if [ -z "${BIN:-}" ] || [ ! -x "$BIN" ]; then
    command -v clang >/dev/null 2>&1 || { echo "clang not found: skipped"; exit 77; }
    BIN=$WORK/fuzz_pipeline
    printf '#define KW_VERSION "fuzz"\n#define KW_HAVE_CUDA 0\n' \
        >"$WORK/kw_config.h"
    E=$SRC/engine
    # shellcheck disable=SC2086
    clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
        -I"$WORK" -I"$E/include" -I"$E" \
        "$SRC/tests/fuzz/fuzz_pipeline.c" "$E/registry.c" "$E/yamltree.c" "$E/pipeline.c" \
        "$E/ptype.c" "$E/graph.c" "$E/plan.c" "$E/status.c" "$E/util.c" "$E/value.c" \
        "$E/budget.c" "$E/kvroles.c" "$E/stats.c" \
        -lyaml -ljansson -lcrypto -ldl -lm -o "$BIN" 2>"$WORK/cc.log" || {
        cat "$WORK/cc.log"
        grep -q "fuzzer" "$WORK/cc.log" && { echo "libFuzzer not available: skipped"; exit 77; }
        exit 1
    }
fi
mkdir -p "$WORK/corpus" "$WORK/artifacts"
echo "fuzzing for ${SECS}s with $BIN"
if ! "$BIN" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="$WORK/artifacts/" -print_final_stats=1 \
    -dict="$SRC/tests/fuzz/pipeline.dict" \
    "$WORK/corpus" "$CORPUS" >"$WORK/log" 2>&1; then
    tail -60 "$WORK/log"
    for f in "$WORK"/artifacts/*; do
        [ -f "$f" ] && { echo "--- $f"; od -c "$f" | head -20; }
    done
    exit 1
fi
grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:" "$WORK/log" | tail -4
echo "no crash in ${SECS}s; $(ls "$WORK/corpus" | wc -l) new corpus inputs (not kept)"
