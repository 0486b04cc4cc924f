#!/bin/sh
# The quickstart pipeline on the real default model, made small (2 samples of 512
# tokens, 8 new tokens): it runs, records two finished samples and a score in [0, 1].
set -eu
home=${KVWEAVE_HOME:-$HOME/.cache/kvweave}
if [ ! -f "$home/models/smollm2-135m-instruct.gguf" ]; then
    echo "SKIP: the default model is not fetched (run ./setup.sh)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$KVWEAVE_SRC"
"$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$tmp/r.db" --quiet \
    --set dataset.n=2 --set dataset.length=512 --set dataset.max_new=8
ok=$("$KVWEAVE_BIN" query --db "$tmp/r.db" --format csv \
    "SELECT count(*) FROM samples WHERE status = 'FINISHED'" | tail -1)
score=$("$KVWEAVE_BIN" query --db "$tmp/r.db" --format csv \
    "SELECT value FROM metrics WHERE sample IS NULL AND key = 'score'" | tail -1)
echo "finished=$ok score=$score"
[ "$ok" = 2 ]
python3 -c "import sys; s=float(sys.argv[1]); sys.exit(0 if 0 <= s <= 1 else 1)" "$score"
