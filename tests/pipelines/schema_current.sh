#!/bin/sh
# schemas/pipeline.schema.json must be what `kvweave schema` writes from the operator
# tables (regenerate: ./build/kvweave schema --out schemas/pipeline.schema.json).
set -eu
tmp=$(mktemp "${TMPDIR:-/tmp}/schema.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"$KVWEAVE_BIN" schema --out "$tmp"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$tmp"
if ! cmp -s "$tmp" "$KVWEAVE_SRC/schemas/pipeline.schema.json"; then
    echo "schemas/pipeline.schema.json is stale; regenerate it with:" >&2
    echo "  ./build/kvweave schema --out schemas/pipeline.schema.json" >&2
    diff "$KVWEAVE_SRC/schemas/pipeline.schema.json" "$tmp" | head -20 >&2 || true
    exit 1
fi
echo "schema ok"
