#!/bin/sh
# The four eviction pipelines (StreamingLLM, H2O, SnapKV, PyramidKV) on the real default
# model, made small (1 sample of 512 tokens, 8 new tokens, capacities of about a quarter
# of the prompt): each run finishes its sample, and each holds fewer KV pages on average
# than full attention on the same sample.
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
