#!/bin/sh
# The quickstart pipeline on the real default model, made small (2 samples of 512
# tokens, 8 new tokens): it runs, records two finished samples and a score in [0, 1]
# and each sample's token latencies (median, 90th percentile) and tokens/s;
# with the engine settings of `run:` (pool, batch, chunk) it runs one sequence at a time
# and records them; with int8 KV pages (run.kv_pages, set or swept) the samples finish
# and hold about a quarter of the f32 pages' bytes, and with int4 pages whose K is
# quantized per channel (int4_kchan) less again, alone and under SnapKV's eviction, and
# with pages of 32 tokens or a residual of f32 K rows (run.page_tokens, kv_residual); a
# pool too small for a prompt fails that sample naming the knob.
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
# per sample: the time between tokens (median <= 90th percentile), decode tokens/s (one
# over the mean time between tokens) and prefill tokens/s
"$KVWEAVE_BIN" query --db "$tmp/r.db" --format csv \
    "SELECT sample, group_concat(key || '=' || value, ' ') FROM metrics WHERE sample IS NOT NULL
     AND key IN ('gen/decode_s_p50', 'gen/decode_s_p90', 'gen/decode_s_per_token',
                 'gen/decode_tok_per_s', 'gen/prefill_tok_per_s') GROUP BY sample" \
    | tail -n +2 > "$tmp/lat.csv"
cat "$tmp/lat.csv"
python3 - "$tmp/lat.csv" <<'PY'
import sys
rows = [l.strip().split(",", 1) for l in open(sys.argv[1]) if l.strip()]
assert len(rows) == 2, rows
for _, kv in rows:
    m = {k: float(v) for k, v in (x.split("=") for x in kv.split())}
    assert 0 < m["gen/decode_s_p50"] <= m["gen/decode_s_p90"], m
    assert abs(m["gen/decode_tok_per_s"] * m["gen/decode_s_per_token"] - 1) < 1e-6, m
    assert m["gen/prefill_tok_per_s"] > 0, m
PY
# the run's host <-> device copies are recorded (none on the CPU)
io=$("$KVWEAVE_BIN" query --db "$tmp/r.db" --format csv \
    "SELECT group_concat(key || '=' || value, ' ') FROM (SELECT key, value FROM metrics
     WHERE sample IS NULL AND key IN ('d2h_bytes', 'h2d_bytes') ORDER BY key)" | tail -1)
echo "copies recorded: $io"
[ "$io" = "d2h_bytes=0.0 h2d_bytes=0.0" ]
# and no device memory figure without a device
[ "$("$KVWEAVE_BIN" query --db "$tmp/r.db" --format csv \
    "SELECT count(*) FROM metrics WHERE key = 'device_used_bytes'" | tail -1)" = 0 ]
"$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$tmp/e.db" --quiet \
    --set dataset.n=2 --set dataset.length=512 --set dataset.max_new=8 \
    --set run.max_batch=1 --set run.pool_mb=64 --set run.chunk=128
got=$("$KVWEAVE_BIN" query --db "$tmp/e.db" --format csv \
    "SELECT group_concat(key || '=' || value, ' ') FROM (SELECT key, value FROM params
     WHERE key IN ('run.pool_mb', 'run.max_batch', 'run.chunk') ORDER BY key)" | tail -1)
echo "engine settings recorded: $got"
[ "$got" = "run.chunk=128 run.max_batch=1 run.pool_mb=64" ]
ok=$("$KVWEAVE_BIN" query --db "$tmp/e.db" --format csv \
    "SELECT count(*) FROM samples WHERE status = 'FINISHED'" | tail -1)
[ "$ok" = 2 ]
"$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$tmp/q.db" --quiet \
    --set dataset.n=2 --set dataset.length=512 --set dataset.max_new=8 --set run.kv_pages=int8
ok=$("$KVWEAVE_BIN" query --db "$tmp/q.db" --format csv \
    "SELECT count(*) || ' ' || (SELECT value FROM params WHERE key = 'run.kv_pages')
     FROM samples WHERE status = 'FINISHED'" | tail -1)
echo "int8 pages: finished, setting recorded: $ok"
[ "$ok" = "2 int8" ]
# a row of K or V: head_dim + 4 bytes (int8 values and a scale) against 4 x head_dim (f32)
payload() {
    "$KVWEAVE_BIN" query --db "$1" --format csv "SELECT value FROM metrics
        WHERE sample IS NULL AND key = 'mem/kv_payload_peak_bytes'" | tail -1
}
f32=$(payload "$tmp/r.db") i8=$(payload "$tmp/q.db")
echo "KV payload peak: f32 pages $f32 bytes, int8 pages $i8"
python3 -c "import sys; r=float(sys.argv[2])/float(sys.argv[1]); sys.exit(0 if 0.2 < r < 0.3 else 1)" \
    "$f32" "$i8"
# KIVI's layout (K per channel, V per token): int4 codes with their scales and minima, and
# the f32 K rows of each table's last, unfilled page; under a quarter of f32's payload,
# less than int8's, the setting recorded and the answers scored
"$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$tmp/k4.db" --quiet \
    --set dataset.n=2 --set dataset.length=512 --set dataset.max_new=8 --set run.kv_pages=int4_kchan
ok=$("$KVWEAVE_BIN" query --db "$tmp/k4.db" --format csv \
    "SELECT count(*) || ' ' || (SELECT value FROM params WHERE key = 'run.kv_pages')
     FROM samples WHERE status = 'FINISHED'" | tail -1)
[ "$ok" = "2 int4_kchan" ]
k4=$(payload "$tmp/k4.db")
echo "int4_kchan pages: KV payload peak $k4 bytes; score $("$KVWEAVE_BIN" query --db "$tmp/k4.db" \
    --format csv "SELECT value FROM metrics WHERE sample IS NULL AND key = 'score'" | tail -1)"
python3 -c "import sys; f,i8,k4=map(float,sys.argv[1:]); sys.exit(0 if k4 < 0.25 * f and k4 < i8 else 1)" \
    "$f32" "$i8" "$k4"
# int4_kchan pages with a run setting ($2=$3, more settings after): both samples finish
# and the setting is recorded; prints the KV payload peak
kchan_run() {
    db=$1 key=$2 val=$3
    shift 3
    "$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$db" --quiet --set dataset.n=2 \
        --set dataset.length=512 --set dataset.max_new=8 --set run.kv_pages=int4_kchan \
        --set "run.$key=$val" "$@" >&2
    ok=$("$KVWEAVE_BIN" query --db "$db" --format csv "SELECT count(*) || ' ' ||
        (SELECT value FROM params WHERE key = 'run.$key') FROM samples
        WHERE status = 'FINISHED'" | tail -1)
    [ "$ok" = "2 $val" ]
    payload "$db"
}
# KIVI's group of 32 tokens (run.page_tokens): the per-channel parameters cost half as
# much a token, so the payload is smaller again
k32=$(kchan_run "$tmp/k32.db" page_tokens 32)
echo "int4_kchan pages of 32 tokens: KV payload peak $k32 bytes"
# KIVI's residual (run.kv_residual): the latest 128 tokens keep K f32, so it grows
kr=$(kchan_run "$tmp/kr.db" kv_residual 128 --set run.page_tokens=32)
echo "int4_kchan pages of 32 tokens, residual 128: KV payload peak $kr bytes"
python3 -c "import sys; k4,k32,kr=map(float,sys.argv[1:]); sys.exit(0 if k32 < 0.95 * k4 < kr else 1)" \
    "$k4" "$k32" "$kr"
# and under a method that evicts (SnapKV compacts the tables: the pages it refills are
# quantized again)
"$KVWEAVE_BIN" run pipelines/snapkv_ruler.yaml --db "$tmp/s4.db" --quiet \
    --set dataset.n=2 --set dataset.length=512 --set gen.max_new=8 --limit 2 \
    --set evict.capacity=128 --set run.kv_pages=int4_kchan
ok=$("$KVWEAVE_BIN" query --db "$tmp/s4.db" --format csv \
    "SELECT count(*) FROM samples WHERE status = 'FINISHED'" | tail -1)
[ "$ok" = 2 ]
# a sweep over the page type: each cell's engine takes its own (not the first cell's)
sed 's/^run: .*/&\nsweep: { run.kv_pages: [float, int8] }/' pipelines/quickstart.yaml > "$tmp/sweep.yaml"
"$KVWEAVE_BIN" run "$tmp/sweep.yaml" --db "$tmp/w.db" --quiet \
    --set dataset.n=1 --set dataset.length=512 --set dataset.max_new=8
cells=$("$KVWEAVE_BIN" query --db "$tmp/w.db" --format csv "SELECT group_concat(v, ' ') FROM
    (SELECT r.cell_label || '=' || CAST(m.value AS INTEGER) AS v FROM runs r JOIN metrics m
     ON m.run = r.uuid WHERE m.sample IS NULL AND m.key = 'mem/kv_payload_peak_bytes'
     ORDER BY r.cell_label)" | tail -1)
echo "sweep cells, KV payload peak: $cells"
python3 - "$cells" <<'PY'
import sys
c = dict(x.rsplit("=", 1) for x in sys.argv[1].split())
r = int(c["run.kv_pages=int8"]) / int(c["run.kv_pages=float"])
sys.exit(0 if 0.2 < r < 0.3 else "int8 cell's KV payload is %.3f of the float cell's" % r)
PY
"$KVWEAVE_BIN" run pipelines/quickstart.yaml --db "$tmp/s.db" --set dataset.n=1 \
    --set dataset.length=512 --set run.pool_mb=1 --quiet > "$tmp/small.txt" 2>&1 || true
cat "$tmp/small.txt"
grep -q "the pool has .*run.pool_mb" "$tmp/small.txt"
