# Shared set-up of the hub tests: a private cache, the loopback hub, checks.
# Sourced by tests/hub/test_*.sh; needs KVWEAVE_BIN and KVWEAVE_SRC (tests/meson.build).
set -euo pipefail
: "${KVWEAVE_BIN:?KVWEAVE_BIN is not set}" "${KVWEAVE_SRC:?KVWEAVE_SRC is not set}"
T=$(mktemp -d "${TMPDIR:-/tmp}/kwhub.XXXXXX")
HUB_PID=
COMMIT=0123456789abcdef0123456789abcdef01234567
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_HOME \
      HUGGINGFACE_HUB_CACHE HF_TOKEN_PATH
export HF_TOKEN_PATH=$T/no-token  # never a user's real token
export HF_HUB_CACHE=$T/cache

cleanup() {
  if [ -n "$HUB_PID" ]; then kill "$HUB_PID" 2>/dev/null || true; wait "$HUB_PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# start_hub [--slow]: the fake hub on 127.0.0.1, HF_ENDPOINT pointing at it.
start_hub() {
  rm -f "$T/ports" "$T/requests.log"
  python3 "$KVWEAVE_SRC/tests/hub/fake_hub.py" "$T" --lifetime 110 "$@" &
  HUB_PID=$!
  for _ in $(seq 300); do [ -s "$T/ports" ] && break; sleep 0.1; done
  [ -s "$T/ports" ] || fail "the fake hub did not start"
  read -r HUB_PORT CDN_PORT < "$T/ports"
  export HF_ENDPOINT="http://127.0.0.1:$HUB_PORT"
}

stop_hub() {
  kill "$HUB_PID" 2>/dev/null || true
  wait "$HUB_PID" 2>/dev/null || true
  HUB_PID=
}

# run_pull NAME ARGS...: runs kvweave pull, stdout in $T/NAME.out, stderr in
# $T/NAME.err, exit status in $RC.
run_pull() {
  local name=$1; shift
  set +e
  "$KVWEAVE_BIN" pull "$@" > "$T/$name.out" 2> "$T/$name.err"
  RC=$?
  set -e
}

# expect_error NAME RC PATTERN ARGS...: the pull fails with RC and stderr matches PATTERN.
expect_error() {
  local name=$1 want=$2 pat=$3; shift 3
  run_pull "$name" "$@"
  [ "$RC" = "$want" ] || { cat "$T/$name.err" >&2; fail "$name: exit $RC, expected $want"; }
  grep -Eq -- "$pat" "$T/$name.err" || { cat "$T/$name.err" >&2; fail "$name: stderr lacks /$pat/"; }
  ok "$name: exit $RC, $(head -c 300 "$T/$name.err")"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
# requests to ROLE (hub|cdn) whose path contains SUBSTR, optional METHOD
count_requests() {
  python3 - "$T/requests.log" "$@" <<'PY'
import json, sys
log, role, sub = sys.argv[1:4]
method = sys.argv[4] if len(sys.argv) > 4 else None
n = 0
try:
    for line in open(log):
        r = json.loads(line)
        if r["role"] == role and sub in r["path"] and (method is None or r["method"] == method):
            n += 1
except FileNotFoundError:
    pass
print(n)
PY
}
