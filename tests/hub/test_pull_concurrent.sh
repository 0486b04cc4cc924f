#!/usr/bin/env bash
# Two processes pull the same file at the same time from a slow cdn: the blob lock lets
# one download while the other waits, then finds the blob; both print the same path, the
# cdn sends the file once and the blob verifies. Then two whole-repo pulls at once.
source "$(dirname "$0")/lib.sh"
start_hub --slow

"$KVWEAVE_BIN" pull kwtest/tiny-gguf tiny-q8.gguf > "$T/a.out" 2> "$T/a.err" & pa=$!
"$KVWEAVE_BIN" pull kwtest/tiny-gguf tiny-q8.gguf > "$T/b.out" 2> "$T/b.err" & pb=$!
ra=0; rb=0
wait "$pa" || ra=$?
wait "$pb" || rb=$?
[ "$ra" = 0 ] && [ "$rb" = 0 ] || { cat "$T/a.err" "$T/b.err"; fail "exits $ra and $rb"; }
[ "$(cat "$T/a.out")" = "$(cat "$T/b.out")" ] || fail "the two pulls printed different paths"
f=$(cat "$T/a.out")
etag=$(basename "$(readlink "$f")")
[ "$(sha256_of "$f")" = "$etag" ] || fail "the blob does not hash to its etag"
n=$(count_requests cdn "/blobs/$etag" GET)
[ "$n" = 1 ] || fail "the cdn sent the file $n times"
[ "$(count_requests hub tiny-q8.gguf HEAD)" = 2 ] || fail "expected both processes to ask the hub"
ls "$HF_HUB_CACHE"/models--kwtest--tiny-gguf/blobs/ | grep -q incomplete && fail ".incomplete left"
grep -q "in the cache" "$T/a.err" "$T/b.err" || fail "neither pull waited for the other"
ok "two concurrent pulls, one transfer, same verified blob"

# two whole-repo pulls at once
"$KVWEAVE_BIN" pull kwtest/tiny-model > "$T/c.out" 2> "$T/c.err" & pc=$!
"$KVWEAVE_BIN" pull kwtest/tiny-model > "$T/d.out" 2> "$T/d.err" & pd=$!
rc=0; rd=0
wait "$pc" || rc=$?
wait "$pd" || rd=$?
[ "$rc" = 0 ] && [ "$rd" = 0 ] || { cat "$T/c.err" "$T/d.err"; fail "repo pulls: exits $rc and $rd"; }
snap=$(cat "$T/c.out")
for x in config.json tokenizer.json model.safetensors sub/notes.txt; do [ -s "$snap/$x" ] || fail "$x missing"; done
st=$(basename "$(readlink "$snap/model.safetensors")")
[ "$(count_requests cdn "/blobs/$st" GET)" = 1 ] || fail "model.safetensors sent more than once"
ok "two concurrent repo pulls"
echo PASS
