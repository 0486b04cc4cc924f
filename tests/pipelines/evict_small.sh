#!/bin/sh
# The four eviction pipelines (StreamingLLM, H2O, SnapKV, PyramidKV) on the real default
# model, made small (1 sample of 512 tokens, 8 new tokens, capacities of about a quarter
# of the prompt): each run finishes its sample, and each holds fewer KV pages on average
# than full attention on the same sample; SnapKV selecting per query head holds more
# than per KV head and reads about as many tokens.
set -eu
home=${KVWEAVE_HOME:-$HOME/.cache/kvweave}
if [ ! -f "$home/models/smollm2-135m-instruct.gguf" ]; then
    echo "SKIP: the default model is not fetched (run ./setup.sh)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ev.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$KVWEAVE_SRC"
small="--set dataset.n=1 --set dataset.length=512 --set dataset.max_new=8 --quiet"
pages() { # mean pages held by the run's one sample
    "$KVWEAVE_BIN" query --db "$1" --format csv \
        "SELECT value FROM metrics WHERE sample IS NOT NULL AND key = 'mem/pages_mean'" | tail -1
}
"$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$tmp/full.db" $small
full=$(pages "$tmp/full.db")
for cell in "snapkv --set evict.capacity=128" "pyramidkv --set evict.capacity=128" \
            "streaming --set evict.recent=124" "h2o"; do
    set -- $cell
    name=$1
    shift
    "$KVWEAVE_BIN" run "pipelines/${name}_ruler.yaml" --db "$tmp/$name.db" $small "$@"
    ok=$("$KVWEAVE_BIN" query --db "$tmp/$name.db" --format csv \
        "SELECT count(*) FROM samples WHERE status = 'FINISHED'" | tail -1)
    p=$(pages "$tmp/$name.db")
    echo "$name: finished=$ok pages_mean=$p (full attention $full)"
    [ "$ok" = 1 ]
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$p" "$full"
done
# SnapKV selecting per query head (gqa: per_qhead): the pool keeps the union of a KV
# head's query heads' picks, so more pages than the mean's but fewer than full
# attention's, and attention reads about as many tokens (within 2%: the answers, and so
# their lengths, may differ)
"$KVWEAVE_BIN" run pipelines/snapkv_ruler.yaml --db "$tmp/qh.db" $small --set evict.capacity=128 \
    --set evict.gqa=per_qhead
att() {
    "$KVWEAVE_BIN" query --db "$1" --format csv \
        "SELECT value FROM metrics WHERE sample IS NULL AND key = 'mem/attended_mean'" | tail -1
}
echo "snapkv per_qhead: pages_mean=$(pages "$tmp/qh.db") (mean $(pages "$tmp/snapkv.db")); attended $(att "$tmp/qh.db") (mean $(att "$tmp/snapkv.db"))"
python3 -c "import sys; q,m,f,aq,am=map(float,sys.argv[1:]); sys.exit(0 if m < q < f and abs(aq - am) <= 0.02 * am else 1)" \
    "$(pages "$tmp/qh.db")" "$(pages "$tmp/snapkv.db")" "$full" "$(att "$tmp/qh.db")" "$(att "$tmp/snapkv.db")"
