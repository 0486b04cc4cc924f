#!/bin/sh
# retrieve.kvstar on the real default model, made small (2 samples of 512 tokens, blocks
# of 32 tokens so that 13 of the 16 whole blocks are middle ones, 24 new tokens so that a
# decode vote is swapped in at step 17): the pool holds less than with every middle
# block kept (sparse_ratio 1, which leaves the prompt whole), every whole block went to
# the store (blocks the prompts share, once), a vote read only the blocks it added, the
# store's files are gone after the run; with persist they stay, and a second run of the
# same prompts writes none of them;
# stacked first, a SELECT hook after it reads less, and one before it is refused; over
# int8 pages it runs and swaps blocks.
set -eu
home=${KVWEAVE_HOME:-$HOME/.cache/kvweave}
if [ ! -f "$home/models/smollm2-135m-instruct.gguf" ]; then
    echo "SKIP: the default model is not fetched (run ./setup.sh)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$KVWEAVE_SRC"
small="--set dataset.n=2 --set dataset.length=512 --set gen.max_new=24 --set gen.ignore_eos=true
  --set kv.block=32 --set kv.store=$tmp/store --quiet"
q() { "$KVWEAVE_BIN" query --db "$1" --format csv "$2" | tail -1; }
metric() { q "$1" "SELECT value FROM metrics WHERE sample IS NULL AND key = '$2'"; }
finished() { [ "$(q "$1" "SELECT count(*) FROM samples WHERE status = 'FINISHED'")" = 2 ]; }
dat() { find "$tmp/store" -name '*.dat' 2>/dev/null | wc -l; }

"$KVWEAVE_BIN" run pipelines/kvstar_ruler.yaml --db "$tmp/all.db" $small --set kv.sparse_ratio=1
"$KVWEAVE_BIN" run pipelines/kvstar_ruler.yaml --db "$tmp/k.db" $small
finished "$tmp/all.db"
finished "$tmp/k.db"
all=$(metric "$tmp/all.db" mem/kv_payload_mean_bytes)
kv=$(metric "$tmp/k.db" mem/kv_payload_mean_bytes)
stored=$(metric "$tmp/k.db" mem/store_bytes)
loaded=$(metric "$tmp/k.db" mem/load_bytes)
full=$(metric "$tmp/k.db" mem/load_bytes_full)
n_prompt=$(metric "$tmp/k.db" gen/n_prompt)
echo "kvstar: kv payload mean $all (all blocks) -> $kv bytes; stored $stored, loaded $loaded of $full bytes; prompt $n_prompt tokens"
python3 - "$all" "$kv" "$stored" "$loaded" "$full" "$n_prompt" <<'PY'
import sys
a, k, stored, loaded, full, n = map(float, sys.argv[1:])
assert k < 0.75 * a, (k, a)
# whole blocks of 32 tokens x 30 layers x (K + V) x 3 KV heads x 64 x 4 bytes, at most;
# blocks the two prompts share (the template, the haystack's start) are written once
assert 0 < stored <= (int(n) // 32 + 1) * 30 * 49152, stored
assert 0 < full and loaded <= full, (loaded, full)
PY
[ "$(dat)" = 0 ]
# persist: the files stay, and a second run of the same prompts writes none
"$KVWEAVE_BIN" run pipelines/kvstar_ruler.yaml --db "$tmp/p1.db" $small --set kv.persist=true
"$KVWEAVE_BIN" run pipelines/kvstar_ruler.yaml --db "$tmp/p2.db" $small --set kv.persist=true
finished "$tmp/p2.db"
[ "$(dat)" -gt 0 ]
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) == 0 < float(sys.argv[2]) else 1)" \
    "$(metric "$tmp/p2.db" mem/store_bytes)" "$(metric "$tmp/p1.db" mem/store_bytes)"
[ "$(metric "$tmp/p2.db" score)" = "$(metric "$tmp/p1.db" score)" ]
# stacked before a SELECT hook, KVStar chooses among what it keeps (Quest reads less); a
# SELECT hook before it fails the sample with the order to use
cat > "$tmp/stack.yaml" <<'YAML'
name: kvstar-quest
model: smollm2-135m-instruct
dataset: { op: dataset.ruler, with: { task: niah_single_1, length: 512, n: 1, seed: 42 } }
stages:
  - { id: tok, op: tokenize.chat }
  - { id: kv, op: retrieve.kvstar, with: { block: 32 } }
  - { id: sel, op: retrieve.quest, with: { budget: 64 } }
  - { id: gen, op: decode.greedy, in: [tok, kv, sel], with: { max_new: 24, ignore_eos: true } }
  - { id: score, op: score.ruler, in: [gen, dataset] }
run: { device: cpu, seed: 1 }
YAML
"$KVWEAVE_BIN" run "$tmp/stack.yaml" --db "$tmp/s1.db" --quiet
[ "$(q "$tmp/s1.db" "SELECT count(*) FROM samples WHERE status = 'FINISHED'")" = 1 ]
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" \
    "$(metric "$tmp/s1.db" mem/attended_mean)" "$(metric "$tmp/k.db" mem/attended_mean)"
sed 's/in: \[tok, kv, sel\]/in: [tok, sel, kv]/' "$tmp/stack.yaml" > "$tmp/rev.yaml"
if "$KVWEAVE_BIN" run "$tmp/rev.yaml" --db "$tmp/s2.db" --quiet 2> "$tmp/err"; then exit 1; fi
grep -q "put retrieve.kvstar first" "$tmp/err"
# over int8 pages (METHODS.md: any method + KV quantization): blocks go out as f32 and
# come back quantized again; a vote still swaps blocks in
"$KVWEAVE_BIN" run pipelines/kvstar_ruler.yaml --db "$tmp/i8.db" $small --set run.kv_pages=int8
finished "$tmp/i8.db"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$(metric "$tmp/i8.db" mem/load_bytes_full)"
