#!/usr/bin/env bash
# Offline resolution: HF_HUB_OFFLINE=1 (or --offline) reads only refs/ and snapshots/,
# with errors naming what is missing; a cached name resolves with the hub gone; without
# the offline flag an unreachable hub falls back to the cached copy.
source "$(dirname "$0")/lib.sh"

HF_HUB_OFFLINE=1 expect_error empty 2 "offline \(HF_HUB_OFFLINE\): file 'tiny-q4.gguf' of model 'kwtest/tiny-gguf' at revision 'main' is not in the hub cache \(no .*/models--kwtest--tiny-gguf/refs/main\)" \
  kwtest/tiny-gguf tiny-q4.gguf
HF_HUB_OFFLINE=1 expect_error empty_dir 2 "offline \(HF_HUB_OFFLINE\): model 'kwtest/tiny-model' at revision 'main' is not in the hub cache" \
  kwtest/tiny-model
[ ! -e "$T/requests.log" ] || fail "offline mode made a request"

start_hub
run_pull online kwtest/tiny-gguf tiny-q4.gguf
[ "$RC" = 0 ] || fail "online pull: exit $RC"
run_pull online_dir kwtest/tiny-model
[ "$RC" = 0 ] || fail "online repo pull: exit $RC"
stop_hub
n_before=$(wc -l < "$T/requests.log")

for how in env flag; do
  if [ $how = env ]; then export HF_HUB_OFFLINE=1; extra=; else unset HF_HUB_OFFLINE; extra=--offline; fi
  run_pull off_$how kwtest/tiny-gguf tiny-q4.gguf $extra
  [ "$RC" = 0 ] && [ "$(cat "$T/off_$how.out")" = "$(cat "$T/online.out")" ] || { cat "$T/off_$how.err"; fail "offline ($how) file: exit $RC"; }
  run_pull offdir_$how kwtest/tiny-model $extra --json
  [ "$RC" = 0 ] || { cat "$T/offdir_$how.err"; fail "offline ($how) repo: exit $RC"; }
  grep -q "\"commit\":\"$COMMIT\"" "$T/offdir_$how.out" || fail "offline provenance lacks the commit"
  grep -q '"path":"model.safetensors","etag":"[0-9a-f]\{64\}"' "$T/offdir_$how.out" || fail "offline provenance lacks file hashes"
  expect_error miss_$how 2 "offline \(HF_HUB_OFFLINE\): file 'tiny-q8.gguf' of model 'kwtest/tiny-gguf' at revision 'main' is not in the hub cache \(no .*/snapshots/$COMMIT/tiny-q8.gguf\)" \
    kwtest/tiny-gguf tiny-q8.gguf $extra
  expect_error missrev_$how 2 "no .*/models--kwtest--tiny-gguf/refs/v1.0" kwtest/tiny-gguf tiny-q4.gguf --revision v1.0 $extra
  run_pull bycommit_$how "kwtest/tiny-gguf@$COMMIT/tiny-q4.gguf" $extra
  [ "$RC" = 0 ] || fail "offline by commit: exit $RC"
  expect_error missinc_$how 2 "no cached file of 'kwtest/tiny-model' matches the include globs" kwtest/tiny-model --include '*.gguf' $extra
  ok "offline via $how"
done
unset HF_HUB_OFFLINE

# online mode, hub down: the cached copy is used
run_pull down kwtest/tiny-gguf tiny-q4.gguf
[ "$RC" = 0 ] && [ "$(cat "$T/down.out")" = "$(cat "$T/online.out")" ] || { cat "$T/down.err"; fail "hub down fallback: exit $RC"; }
expect_error down_miss 3 "Couldn't connect" kwtest/tiny-gguf tiny-q8.gguf
[ "$(wc -l < "$T/requests.log")" = "$n_before" ] || fail "requests reached a stopped hub?"
ok "hub down: cached file served, missing file fails clearly"
echo PASS
