#!/usr/bin/env bash
# Interrupted transfers: the cdn drops the connection half-way through a file. With no
# retries the pull fails saying so and keeps blobs/<etag>.incomplete; the next pull
# resumes it with Range + If-Range and the blob verifies. With retries (the default)
# one pull recovers by itself.
source "$(dirname "$0")/lib.sh"
start_hub
repo=$HF_HUB_CACHE/models--kwtest--cut

expect_error cut 3 "transfer of 'big.gguf' interrupted after [0-9]+ of 3000000 bytes.*run again to resume" \
  kwtest/cut big.gguf --retries 0
inc=$(ls "$repo"/blobs/*.incomplete)
have=$(stat -c %s "$inc")
[ "$have" -gt 0 ] && [ "$have" -lt 3000000 ] || fail "the .incomplete blob has $have bytes"
[ ! -e "$repo/snapshots/$COMMIT/big.gguf" ] || fail "a snapshot link exists for a partial blob"
ok "cut after $have bytes, kept in $(basename "$inc")"

run_pull resume kwtest/cut big.gguf --retries 0
[ "$RC" = 0 ] || { cat "$T/resume.err"; fail "resumed pull: exit $RC"; }
etag=$(basename "$inc" .incomplete)
[ "$(sha256_of "$(cat "$T/resume.out")")" = "$etag" ] || fail "the resumed blob does not hash to its etag"
[ ! -e "$inc" ] || fail ".incomplete still there"
python3 - "$T/requests.log" "$have" "$etag" <<'PY' || fail "the second request was not a ranged GET from byte $have"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if '"cdn"' in l]
gets = [r for r in rs if r["method"] == "GET"]
assert len(gets) == 2, gets
assert gets[0]["range"] is None, gets[0]
assert gets[1]["range"] == "bytes=%s-" % sys.argv[2], gets[1]
assert gets[1]["if_range"] == '"%s"' % sys.argv[3], gets[1]
PY
ok "resumed with Range: bytes=$have- and If-Range; sha256 verified"

# default retries: one command recovers from the cut
stop_hub
start_hub
HF_HUB_CACHE=$T/cache2 run_pull auto kwtest/cut big.gguf
[ "$RC" = 0 ] || { cat "$T/auto.err"; fail "pull with retries: exit $RC"; }
[ "$(count_requests cdn /blobs/ GET)" = 2 ] || fail "expected a cut GET and one resumed GET"
[ "$(sha256_of "$(cat "$T/auto.out")")" = "$etag" ] || fail "auto-resumed blob hash"
ok "one pull with retries recovers from the cut"
echo PASS
