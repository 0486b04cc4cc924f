#!/usr/bin/env bash
# The cache is shared with the real huggingface_hub package, both ways: what kvweave
# pulled, huggingface_hub finds offline (hf_hub_download, snapshot_download,
# try_to_load_from_cache, scan_cache_dir without warnings); what huggingface_hub
# downloaded from the loopback hub, kvweave resolves offline at the same paths.
# Skipped (exit 77) when huggingface_hub is not importable by $KVWEAVE_HF_PYTHON
# (default python3).
source "$(dirname "$0")/lib.sh"
py=${KVWEAVE_HF_PYTHON:-python3}
if ! "$py" -c 'import huggingface_hub' 2>/dev/null; then
  echo "SKIP: huggingface_hub is not installed for $py (pip install huggingface_hub in a venv and set KVWEAVE_HF_PYTHON to its python)"
  exit 77
fi
echo "huggingface_hub $("$py" -c 'import huggingface_hub as h; print(h.__version__)')"
here=$(dirname "$0")
start_hub

# kvweave writes, huggingface_hub reads
run_pull a kwtest/tiny-gguf tiny-q4.gguf --json
[ "$RC" = 0 ] || fail "pull: exit $RC"
run_pull b kwtest/tiny-model --json
[ "$RC" = 0 ] || fail "pull: exit $RC"
run_pull c datasets/kwtest/tiny-data --json
[ "$RC" = 0 ] || fail "pull: exit $RC"
HF_HUB_OFFLINE=1 "$py" "$here/hf_crosscheck.py" read "$T/a.out" "$T/b.out" "$T/c.out" \
  || fail "huggingface_hub does not read kvweave's cache"

# huggingface_hub writes, kvweave reads offline
export HF_HUB_CACHE=$T/cache_hf
"$py" "$here/hf_crosscheck.py" write > "$T/hf.json" 2> "$T/hf.err" || { cat "$T/hf.err"; fail "huggingface_hub download from the loopback hub"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/hf.json" "$1"; }
stop_hub
export HF_HUB_OFFLINE=1
run_pull d kwtest/tiny-gguf tiny-q8.gguf
[ "$RC" = 0 ] && [ "$(cat "$T/d.out")" = "$(field file)" ] || { cat "$T/d.err"; fail "kvweave offline on huggingface_hub's file"; }
run_pull e kwtest/tiny-model --json
[ "$RC" = 0 ] || { cat "$T/e.err"; fail "kvweave offline on huggingface_hub's snapshot"; }
python3 - "$T/e.out" "$(field snapshot)" <<'PY' || fail "snapshot provenance differs"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["local_path"] == sys.argv[2], (j["local_path"], sys.argv[2])
assert [f["path"] for f in j["files"]] == ["config.json", "model.safetensors", "sub/notes.txt", "tokenizer.json"], j["files"]
PY
run_pull f kwtest/tiny-data data/train.jsonl --repo-type dataset
[ "$RC" = 0 ] && [ "$(cat "$T/f.out")" = "$(field dataset)" ] || fail "kvweave offline on huggingface_hub's data set"
ok "kvweave resolves huggingface_hub's downloads offline"
echo PASS
