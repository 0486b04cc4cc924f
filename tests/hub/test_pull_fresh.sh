#!/usr/bin/env bash
# A fresh pull from the loopback hub: a single GGUF file, a whole model directory (tree
# API over several pages), --include, a data set, a renamed repo (relative redirect), a
# gated repo with a token (sent to the hub, never to the cdn), a tag, and a second pull
# that reuses the cache. Checks the cache layout huggingface_hub uses.
source "$(dirname "$0")/lib.sh"
start_hub
repo=$HF_HUB_CACHE/models--kwtest--tiny-gguf

# single GGUF file
run_pull gguf kwtest/tiny-gguf tiny-q4.gguf
[ "$RC" = 0 ] || { cat "$T/gguf.err"; fail "pull of tiny-q4.gguf: exit $RC"; }
want=$repo/snapshots/$COMMIT/tiny-q4.gguf
[ "$(cat "$T/gguf.out")" = "$want" ] || fail "printed '$(cat "$T/gguf.out")', expected '$want'"
[ -L "$want" ] || fail "$want is not a symlink"
sha=$(sha256_of "$want")
[ "$(readlink "$want")" = "../../blobs/$sha" ] || fail "link target $(readlink "$want") is not ../../blobs/$sha"
[ "$(head -c 4 "$want")" = GGUF ] || fail "the blob does not start with GGUF"
[ "$(cat "$repo/refs/main")" = "$COMMIT" ] || fail "refs/main holds '$(cat "$repo/refs/main")'"
[ "$(wc -c < "$repo/refs/main")" = 40 ] || fail "refs/main is not exactly the 40-hex commit"
[ -f "$HF_HUB_CACHE/.locks/models--kwtest--tiny-gguf/$sha.lock" ] || fail "no lock file for the blob"
! ls "$repo/blobs/"*.incomplete 2>/dev/null || fail ".incomplete left behind"
grep -q "pull: \[1/1\] tiny-q4.gguf: 1.5 MB done" "$T/gguf.err" || fail "no progress line: $(cat "$T/gguf.err")"
ok "single GGUF file: $want -> blobs/$sha"

# the same file again: no new transfer from the cdn
before=$(count_requests cdn "$sha" GET)
run_pull again kwtest/tiny-gguf tiny-q4.gguf
[ "$RC" = 0 ] && [ "$(cat "$T/again.out")" = "$want" ] || fail "second pull: exit $RC"
[ "$(count_requests cdn "$sha" GET)" = "$before" ] || fail "the second pull downloaded again"
grep -q "in the cache" "$T/again.err" || fail "the second pull does not say it used the cache"
ok "second pull reuses the blob"

# a whole model directory (the tree API answers 3 entries a page)
run_pull dir kwtest/tiny-model --json
[ "$RC" = 0 ] || { cat "$T/dir.err"; fail "pull of the model directory: exit $RC"; }
snap=$HF_HUB_CACHE/models--kwtest--tiny-model/snapshots/$COMMIT
for f in config.json tokenizer.json model.safetensors sub/notes.txt; do
  [ -L "$snap/$f" ] && [ -s "$snap/$f" ] || fail "$snap/$f missing or not a link"
done
[ "$(readlink "$snap/sub/notes.txt")" = "../../../blobs/$(python3 -c '
import hashlib,sys; d=open(sys.argv[1],"rb").read(); print(hashlib.sha1(b"blob %d\0"%len(d)+d).hexdigest())' "$snap/sub/notes.txt")" ] \
  || fail "nested small file is not linked to ../../../blobs/<git sha1>: $(readlink "$snap/sub/notes.txt")"
[ "$(count_requests hub "tree/$COMMIT" GET)" -ge 2 ] || fail "the tree listing was not paged"
python3 - "$T/dir.out" "$snap" <<'PY' || fail "--json provenance is wrong"
import hashlib, json, os, sys
j = json.load(open(sys.argv[1]))
assert j["repo"] == "kwtest/tiny-model" and j["commit"] == "0123456789abcdef0123456789abcdef01234567", j
assert j["local_path"] == sys.argv[2], j["local_path"]
assert [f["path"] for f in j["files"]] == ["config.json", "model.safetensors", "sub/notes.txt", "tokenizer.json"]
st = [f for f in j["files"] if f["path"] == "model.safetensors"][0]
assert st["etag"] == hashlib.sha256(open(os.path.join(sys.argv[2], "model.safetensors"), "rb").read()).hexdigest()
assert st["size"] == 300078
PY
ok "model directory: 4 files, tree paged, provenance names commit and hashes"

# --include on a fresh cache
HF_HUB_CACHE=$T/cache2 run_pull inc kwtest/tiny-model --include '*.json'
[ "$RC" = 0 ] || { cat "$T/inc.err"; fail "--include pull: exit $RC"; }
got=$(cd "$T/cache2/models--kwtest--tiny-model/snapshots/$COMMIT" && find . -type l | sort | tr '\n' ' ')
[ "$got" = "./config.json ./tokenizer.json " ] || fail "--include '*.json' fetched: $got"
ok "--include '*.json' fetched only: $got"

# a data set: datasets/ in URLs, datasets-- in the cache
run_pull ds datasets/kwtest/tiny-data
[ "$RC" = 0 ] || { cat "$T/ds.err"; fail "data set pull: exit $RC"; }
[ -s "$HF_HUB_CACHE/datasets--kwtest--tiny-data/snapshots/$COMMIT/data/train.jsonl" ] || fail "data set file missing"
[ "$(count_requests hub /datasets/kwtest/tiny-data/resolve/)" -ge 2 ] || fail "no /datasets/ resolve URL"
[ "$(count_requests hub /api/datasets/kwtest/tiny-data/tree/)" -ge 1 ] || fail "no /api/datasets tree URL"
run_pull ds2 kwtest/tiny-data README.md --repo-type dataset
[ "$RC" = 0 ] || fail "--repo-type dataset: exit $RC"
ok "data set pulled into datasets--kwtest--tiny-data"

# a renamed repo: the hub answers a relative 307
run_pull moved kwtest/moved config.json
[ "$RC" = 0 ] || { cat "$T/moved.err"; fail "relative redirect: exit $RC"; }
cmp -s "$(cat "$T/moved.out")" "$snap/config.json" || fail "relative redirect gave other bytes"
ok "relative redirect followed"

# gated repo with a token: the hub sees it, the cdn never does
HF_TOKEN=hf_granted run_pull gated kwtest/gated g.gguf
[ "$RC" = 0 ] || { cat "$T/gated.err"; fail "gated pull with a token: exit $RC"; }
python3 - "$T/requests.log" <<'PY' || fail "the token leaked to the cdn or did not reach the hub"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
hub = [r for r in rs if r["role"] == "hub" and "kwtest/gated" in r["path"]]
cdn = [r for r in rs if r["role"] == "cdn" and "gated" in r["path"]]
assert hub and all(r["auth"] == "Bearer hf_granted" for r in hub), hub
assert cdn and all(r["auth"] is None for r in cdn), cdn
PY
ok "token sent to the hub only"

# the token file `hf auth login` writes ($HF_HOME/token) when HF_TOKEN is not set
mkdir -p "$T/hfhome"
printf 'hf_granted\n' > "$T/hfhome/token"
saved=$HF_TOKEN_PATH
unset HF_TOKEN_PATH
HF_HOME=$T/hfhome HF_HUB_CACHE=$T/cache3 run_pull tokfile kwtest/gated g.gguf
[ "$RC" = 0 ] || { cat "$T/tokfile.err"; fail "gated pull with \$HF_HOME/token: exit $RC"; }
export HF_TOKEN_PATH=$T/hfhome/token
HF_HUB_CACHE=$T/cache4 run_pull tokpath kwtest/gated g.gguf
[ "$RC" = 0 ] || { cat "$T/tokpath.err"; fail "gated pull with \$HF_TOKEN_PATH: exit $RC"; }
export HF_TOKEN_PATH=$saved
ok "token read from \$HF_HOME/token and \$HF_TOKEN_PATH"

# a tag: refs/v1.0 names the commit
run_pull tag kwtest/tiny-gguf README.md --revision v1.0
[ "$RC" = 0 ] && [ "$(cat "$repo/refs/v1.0")" = "$COMMIT" ] || fail "refs/v1.0 not written"
run_pull spec "hf://kwtest/tiny-gguf@v1.0/README.md"
[ "$RC" = 0 ] && [ "$(cat "$T/spec.out")" = "$repo/snapshots/$COMMIT/README.md" ] || fail "hf:// name with @revision"
ok "tag and hf://ORG/NAME@REV/PATH"
echo "PASS"
