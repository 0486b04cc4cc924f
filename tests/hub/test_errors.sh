#!/usr/bin/env bash
# Every failure says what happened: gated repo (403 GatedRepo), bad token (401), unknown
# repo (RepoNotFound) vs unknown file (EntryNotFound) vs unknown revision, an HTML page
# instead of a GGUF file, a checksum mismatch (nothing kept), a disk too small for the
# advertised size, a write failing with ENOSPC, no server, bad arguments.
source "$(dirname "$0")/lib.sh"
start_hub

expect_error gated 3 "model 'kwtest/gated' is gated \(HTTP 403 GatedRepo: Access to model kwtest/gated is restricted.*set HF_TOKEN" \
  kwtest/gated g.gguf
HF_TOKEN=hf_bad expect_error badtoken 3 "the hub refused HF_TOKEN \(HTTP 401: Invalid credentials" kwtest/tiny-gguf README.md
expect_error norepo 2 "model 'kwtest/nope' not found on http://127.0.0.1:[0-9]+ \(HTTP 401 RepoNotFound\)" kwtest/nope x.gguf
expect_error norepo_dir 2 "model 'kwtest/nope' not found .*RepoNotFound" kwtest/nope
expect_error nofile 2 "file 'nope.gguf' not found in model 'kwtest/tiny-gguf' at revision 'main' \(HTTP 404\)" \
  kwtest/tiny-gguf nope.gguf
expect_error norev 2 "revision 'v9' not found in model 'kwtest/tiny-gguf' \(HTTP 404\)" \
  kwtest/tiny-gguf README.md --revision v9
expect_error dataset_as_model 2 "model 'kwtest/tiny-data' not found .*--repo-type" kwtest/tiny-data README.md
expect_error noinclude 2 "no file of model 'kwtest/tiny-model' at 'main' matches the include globs \(4 files" \
  kwtest/tiny-model --include '*.gguf'


# broken API answers
expect_error nosha 2 "/api/models/kwtest/nosha/revision/main: no 40-hex \"sha\" in the answer" kwtest/nosha
expect_error badtree 2 "/api/models/kwtest/badtree/tree/$COMMIT\?recursive=true: line 1 column [0-9]+: " kwtest/badtree
expect_error evil 2 "entry [0-9]+ has an unsafe path '../../outside.txt'" kwtest/evil
[ ! -e "$HF_HUB_CACHE/models--kwtest--evil/outside.txt" ] && [ ! -e "$HF_HUB_CACHE/outside.txt" ] || fail "a file escaped the snapshot"

# content errors: nothing is kept, neither the blob nor the .incomplete file
expect_error html 2 "'m.gguf': the server sent an HTML page \(Content-Type 'text/html'" kwtest/html m.gguf
expect_error badsum 2 "checksum mismatch for 'w.gguf': sha256 is [0-9a-f]{64} but the hub's etag is [0-9a-f]{64}; the download was deleted" \
  kwtest/badsum w.gguf
for r in html badsum; do
  left=$(find "$HF_HUB_CACHE/models--kwtest--$r" -path '*/blobs/*' | wc -l)
  [ "$left" = 0 ] || fail "$r: $left files left in blobs/"
  [ ! -e "$HF_HUB_CACHE/models--kwtest--$r/snapshots/$COMMIT" ] || fail "$r: snapshot entry made"
done
ok "html and badsum left no blob behind"

# disk space: an advertised size the disk cannot hold, and a write that fails ENOSPC
expect_error huge 3 "disk full: 'h.gguf' needs 1152921504606846976 more bytes but '.*/blobs' has [0-9]+ free" \
  kwtest/huge h.gguf
if [ -w /dev/full ]; then
  blobs=$HF_HUB_CACHE/models--kwtest--tiny-gguf/blobs
  mkdir -p "$blobs"
  etag=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import fake_hub as f
print(f.File(f.gguf(3, 2_500_000), True).etag)' "$(dirname "$0")")
  ln -s /dev/full "$blobs/$etag.incomplete"
  expect_error enospc 3 "disk full: writing '.*$etag.incomplete' after 0 bytes: No space left on device" \
    kwtest/tiny-gguf tiny-q8.gguf --retries 0
  rm -f "$blobs/$etag.incomplete"
else
  echo "skip: ENOSPC on write (no writable /dev/full)"
fi

# no server at all
stop_hub
expect_error noserver 3 "HEAD http://127.0.0.1:$HUB_PORT/kwtest/tiny-gguf/resolve/main/README.md: (Couldn't connect|Could not connect|Connection refused)" \
  kwtest/tiny-gguf README.md

# arguments
expect_error badname 2 "'not-a-repo' is not a repo id" not-a-repo
expect_error badpath 2 "'../etc/passwd' is not a path inside a repo" kwtest/tiny-gguf ../etc/passwd
expect_error badtype 2 "--repo-type is model or dataset" kwtest/tiny-gguf --repo-type space
echo PASS
