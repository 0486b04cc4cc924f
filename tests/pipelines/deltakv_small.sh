#!/bin/sh
# compress.deltakv_fit and compress.deltakv on the real default model, made small (the
# fit on 1 calibration sample of 10, then 2 samples of 512 tokens, 8 new tokens): with a
# recent window covering the prompt nothing is encoded (full attention); with a lossless
# basis (all 384 values) the answers are full attention's; with the pipeline's 128 int8
# values the pool's payload plus what the hook holds is under half of full attention's
# KV, the fit keeps most of the residuals' energy, and the temporary pool was used; int4
# latents hold less (both widths set: exit 2); over
# int8 pages the pool holds less again; stacked after OmniKV (omnikv_deltakv_ruler.yaml) it
# rebuilds fewer tokens than it holds, and attention reads what OmniKV alone reads, and
# so after ClusterKV (clusterkv_deltakv_ruler.yaml) against ClusterKV alone and after
# KVStar's selection (kvstar_deltakv_ruler.yaml) against that selection alone; a
# trained compressor loaded from safetensors (compress.deltakv_load; an identity pair
# shared by every layer, written here) gives full attention's answers, and a missing
# file stops the run with exit 2 and the path.
set -eu
home=${KVWEAVE_HOME:-$HOME/.cache/kvweave}
if [ ! -f "$home/models/smollm2-135m-instruct.gguf" ]; then
    echo "SKIP: the default model is not fetched (run ./setup.sh)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dk.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$KVWEAVE_SRC"
small="--set dataset.n=10 --set dataset.length=512 --set dataset.max_new=8 --limit 2 --quiet"
q() { "$KVWEAVE_BIN" query --db "$1" --format csv "$2" | tail -1; }
metric() { q "$1" "SELECT value FROM metrics WHERE sample IS NULL AND key = '$2'"; }
answers() { "$KVWEAVE_BIN" query --db "$1" --format csv "SELECT prediction FROM samples ORDER BY idx"; }
finished() { # every sample of each run named finished
    for db; do [ "$(q "$tmp/$db.db" "SELECT count(*) FROM samples WHERE status = 'FINISHED'")" = 2 ]; done
}

"$KVWEAVE_BIN" run pipelines/deltakv_ruler.yaml --db "$tmp/full.db" $small --set kv.recent=100000
"$KVWEAVE_BIN" run pipelines/deltakv_ruler.yaml --db "$tmp/exact.db" $small --set fit.latent=384 \
    --set kv.latent_int8=false
"$KVWEAVE_BIN" run pipelines/deltakv_ruler.yaml --db "$tmp/dk.db" $small
finished full exact dk
[ "$(q "$tmp/full.db" "SELECT count(*) FROM metrics WHERE key = 'mem/held_peak_bytes'")" = 0 ]
[ "$(answers "$tmp/exact.db")" = "$(answers "$tmp/full.db")" ]
full=$(metric "$tmp/full.db" mem/kv_payload_peak_bytes)
pool=$(metric "$tmp/dk.db" mem/kv_payload_peak_bytes)
held=$(metric "$tmp/dk.db" mem/held_peak_bytes)
tmpb=$(metric "$tmp/dk.db" mem/tmp_bytes_peak)
kept=$(q "$tmp/dk.db" "SELECT value FROM params WHERE key = 'fit.energy_kept'")
echo "deltakv: full KV peak $full bytes -> pool $pool + held $held bytes; energy kept $kept; temporary pool peak $tmpb bytes"
python3 - "$full" "$pool" "$held" "$kept" "$tmpb" <<'PY'
import sys
full, pool, held, kept, tmpb = map(float, sys.argv[1:])
assert pool + held < 0.5 * full, (pool, held, full)
assert kept > 0.95 and tmpb > 0, (kept, tmpb)
PY
# int4 latents (two a byte): less held than int8's, the samples answered; both set: exit 2
"$KVWEAVE_BIN" run pipelines/deltakv_ruler.yaml --db "$tmp/d4.db" $small \
    --set kv.latent_int8=false --set kv.latent_int4=true
finished d4
held4=$(metric "$tmp/d4.db" mem/held_peak_bytes)
echo "deltakv int4 latents: held $held4 bytes (int8: $held)"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$held4" "$held"
rc=0
"$KVWEAVE_BIN" run pipelines/deltakv_ruler.yaml --db "$tmp/bad.db" $small \
    --set kv.latent_int4=true 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] && grep -q "latent_int8 and latent_int4 are both set" "$tmp/err"
# over int8 pages (METHODS.md: any method + KV quantization): the sinks and the window
# are int8 in the pool, the rebuilt tokens f32 in the temporary pool
"$KVWEAVE_BIN" run pipelines/deltakv_ruler.yaml --db "$tmp/i8.db" $small --set run.kv_pages=int8
finished i8
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" \
    "$(metric "$tmp/i8.db" mem/kv_payload_peak_bytes)" "$pool"
# A selection over DeltaKV (run $1.db) against the selection alone ($2.db): DeltaKV
# rebuilds under 80% of what it holds, attention reads as many tokens (within 1%), and
# the pool and what DeltaKV holds stay under half of full attention's KV.
over_delta() {
    finished "$1" "$2"
    rb=$(metric "$tmp/$1.db" mem/rebuilt_tokens)
    rbf=$(metric "$tmp/$1.db" mem/rebuilt_tokens_full)
    echo "$3 + deltakv: rebuilt $rb of $rbf held tokens; attended $(metric "$tmp/$1.db" mem/attended_mean) ($3 alone $(metric "$tmp/$2.db" mem/attended_mean))"
    python3 - "$rb" "$rbf" "$(metric "$tmp/$1.db" mem/attended_mean)" \
        "$(metric "$tmp/$2.db" mem/attended_mean)" "$(metric "$tmp/$1.db" mem/kv_payload_peak_bytes)" \
        "$(metric "$tmp/$1.db" mem/held_peak_bytes)" "$full" <<'PY'
import sys
rb, rbf, att, att_alone, pool, held, full = map(float, sys.argv[1:])
assert 0 < rb < 0.8 * rbf, (rb, rbf)
assert abs(att - att_alone) <= 0.01 * att_alone, (att, att_alone)
assert pool + held < 0.5 * full, (pool, held, full)
PY
}
# OmniKV + DeltaKV: the observation layers read everything, the others the 64 chosen
# tokens with the sink and the recent ones, and DeltaKV rebuilds only the chosen
"$KVWEAVE_BIN" run pipelines/omnikv_deltakv_ruler.yaml --db "$tmp/od.db" $small --set sel.keep_tokens=64
"$KVWEAVE_BIN" run pipelines/omnikv_ruler.yaml --db "$tmp/o.db" $small --set sel.keep_tokens=64
over_delta od o omnikv
# ClusterKV + DeltaKV: each query head reads the sink, 112 recalled tokens and the ones
# not clustered yet, and DeltaKV rebuilds only the chosen
ckv="--set sel.budget=128 --set sel.clusters=32"
"$KVWEAVE_BIN" run pipelines/clusterkv_deltakv_ruler.yaml --db "$tmp/cd.db" $small $ckv
"$KVWEAVE_BIN" run pipelines/clusterkv_ruler.yaml --db "$tmp/c.db" $small $ckv
over_delta cd c clusterkv
# KVStar's selection over DeltaKV: blocks of 32, a quarter of the middle ones read (with
# DeltaKV's window over the whole prompt it holds nothing: the selection alone)
ks="--set sel.block=32"
"$KVWEAVE_BIN" run pipelines/kvstar_deltakv_ruler.yaml --db "$tmp/kd.db" $small $ks
"$KVWEAVE_BIN" run pipelines/kvstar_deltakv_ruler.yaml --db "$tmp/k.db" $small $ks --set kv.recent=100000
over_delta kd k "kvstar selection"
# a trained compressor from safetensors: identity down and up (lossless), shared
python3 - "$tmp/eye.safetensors" <<'PY'
import array, json, struct, sys
D = 384
eye = array.array('f', [0.0] * (D * D))
for i in range(D):
    eye[i * D + i] = 1.0
b = eye.tobytes()
hdr = {n: {"dtype": "F32", "shape": [D, D], "data_offsets": [k * len(b), (k + 1) * len(b)]}
       for k, n in enumerate(["compress_down.weight", "compress_up.weight"])}
js = json.dumps(hdr).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(js)) + js + b + b)
PY
"$KVWEAVE_BIN" run pipelines/deltakv_trained_ruler.yaml --db "$tmp/tr.db" $small \
    --set fit.path="$tmp/eye.safetensors" --set kv.latent_int8=false
finished tr
[ "$(answers "$tmp/tr.db")" = "$(answers "$tmp/full.db")" ]
rc=0
"$KVWEAVE_BIN" run pipelines/deltakv_trained_ruler.yaml --db "$tmp/tr.db" $small \
    --set fit.path="$tmp/none.safetensors" 2> "$tmp/err.txt" || rc=$?
[ "$rc" = 2 ] && grep -q "none.safetensors: no such file" "$tmp/err.txt"
