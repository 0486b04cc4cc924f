#!/bin/bash
# `kvweave compare RUN --branches` end to end, on a run with method branches made of the
# t.gen / t.judge plug-in operators (tests/pipelines/runops.c; no model): branches named
# and grouped as in a budget sweep, every value and ratio equal to what SQLite holds
# (table, CSV and JSON), --reference and --metrics, and the errors (unknown run, a run
# without branches, unknown metric or reference, misused options). The multi-run compare
# keeps working. Args: libkwrunops.so
set -u
RUNOPS=$1
kw=${KVWEAVE_BIN:?KVWEAVE_BIN must name the kvweave binary}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kw_compare_branches.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export KVWEAVE_HOME=$tmp/home
unset KVWEAVE_DB
db=$tmp/r.db
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# run EXPECTED_RC ARGS...: kvweave with stdout in $tmp/out, stderr in $tmp/err
run() {
  local want=$1; shift
  "$kw" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "kvweave $* exited $rc, expected $want"
    sed 's/^/  stdout: /' "$tmp/out" >&2
    sed 's/^/  stderr: /' "$tmp/err" >&2
  fi
}
has() { grep -qF -- "$2" "$tmp/$1" || { fail "$1 of the last command lacks '$2'"; sed 's/^/  | /' "$tmp/$1" >&2; }; }

# Three branches as gen_sweep.py names them: a decode stage gen_<b> and two scorers of
# one operator, <b> and <b>_x2 (their keys clash: the second's columns are "x2:...").
cat >"$tmp/branches.yaml" <<YAML
name: branches
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 6 } }
stages:
  - { id: gen_full, op: t.gen, in: [dataset] }
  - { id: full, op: t.judge, in: [gen_full] }
  - { id: full_x2, op: t.judge, in: [gen_full], with: { scale: 2 } }
  - { id: gen_a_25, op: t.gen, in: [dataset], with: { keep: 0.25 } }
  - { id: a_25, op: t.judge, in: [gen_a_25] }
  - { id: a_25_x2, op: t.judge, in: [gen_a_25], with: { scale: 2 } }
  - { id: gen_b_50, op: t.gen, in: [dataset], with: { keep: 0.5 } }
  - { id: b_50, op: t.judge, in: [gen_b_50] }
  - { id: b_50_x2, op: t.judge, in: [gen_b_50], with: { scale: 2 } }
YAML
# One decode stage and one scorer: nothing is keyed by stage, so no branches.
cat >"$tmp/single.yaml" <<YAML
name: single
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 3 } }
stages:
  - { id: gen, op: t.gen, in: [dataset], with: { keep: 0.5 } }
  - { id: score, op: t.judge, in: [gen] }
YAML
run 0 run "$tmp/branches.yaml" --db "$db" --quiet
B=$("$kw" query "SELECT uuid FROM runs WHERE pipeline = 'branches'" --format csv --db "$db" | tail -1)
run 0 run "$tmp/single.yaml" --db "$db" --quiet
S=$("$kw" query "SELECT uuid FROM runs WHERE pipeline = 'single'" --format csv --db "$db" | tail -1)
[ ${#B} = 36 ] && [ ${#S} = 36 ] || { echo "FAIL: no runs ($B, $S)"; exit 1; }

# Every value and ratio against SQLite. A column of branch <b> is the run-level value of
# "<stage>/<key>": gen_<b> for mem/ and gen/, <b> for a scorer's key, <b>_x2 for "x2:".
cat >"$tmp/check.py" <<'PY'
import csv, json, math, sqlite3, sys
db, run, what, path = sys.argv[1:5]
ref = sys.argv[5] if len(sys.argv) > 5 else "full"
con = sqlite3.connect(db)
def level(key):
    r = con.execute("SELECT value FROM metrics WHERE run = ? AND sample IS NULL AND key = ? "
                    "ORDER BY step DESC LIMIT 1", (run, key)).fetchone()
    return None if r is None else r[0]
def mean(key):
    return con.execute("SELECT avg(value) FROM metrics WHERE run = ? AND sample IS NOT NULL "
                       "AND key = ?", (run, key)).fetchone()[0]
def key_of(branch, col):
    if col.startswith(("mem/", "gen/")):
        return "gen_%s/%s" % (branch, col)
    if col.startswith("x2:"):
        return "%s_x2/%s" % (branch, col[3:])
    return "%s/%s" % (branch, col)
def close(a, b):
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
def expect(branch, col):
    v, r = level(key_of(branch, col)), level(key_of(ref, col))
    if v is None or not close(v, mean(key_of(branch, col))):
        sys.exit("FAIL: %s: %s is %r at run level, %r over samples" % (branch, col, v, mean(key_of(branch, col))))
    return v, (v / r if r else None)
bad = []
if what == "json":
    out = json.load(open(path))
    if out["run"] != run or out["reference"] != ref:
        sys.exit("FAIL: json run/reference: %s %s" % (out["run"], out["reference"]))
    names = [b["name"] for b in out["branches"]]
    for b in out["branches"]:
        if b["samples"] != 6:
            bad.append("%s: %s samples" % (b["name"], b["samples"]))
        for col in out["metrics"]:
            v, r = expect(b["name"], col)
            if not close(b["values"][col], v):
                bad.append("%s %s: %r, SQLite %r" % (b["name"], col, b["values"][col], v))
            if (r is None) != (b["ratios"][col] is None) or (r is not None and not close(b["ratios"][col], r)):
                bad.append("%s %s ratio: %r, SQLite %r" % (b["name"], col, b["ratios"][col], r))
    print(",".join(names)); print(",".join(out["metrics"]))
else:  # csv: branch, samples, then each metric and "<metric> ratio"
    rows = list(csv.DictReader(open(path)))
    cols = [c for c in rows[0] if c not in ("branch", "samples") and not c.endswith(" ratio")]
    for row in rows:
        for col in cols:
            v, r = expect(row["branch"], col)
            if not close(float(row[col]), v):
                bad.append("%s %s: %s, SQLite %r" % (row["branch"], col, row[col], v))
            got = row[col + " ratio"]
            if (r is None) != (got == "") or (r is not None and abs(float(got) - r) > 1e-8 * abs(r)):
                bad.append("%s %s ratio: %s, SQLite %r" % (row["branch"], col, got, r))
    print(",".join(r["branch"] for r in rows)); print(",".join(cols))
if bad:
    sys.exit("FAIL: " + "; ".join(bad))
PY

# --- JSON: the default metrics, full attention the reference and first ---
run 0 compare "${B:0:8}" --branches --format json --db "$db"
python3 "$tmp/check.py" "$db" "$B" json "$tmp/out" >"$tmp/got" || fail "json values"
[ "$(sed -n 1p "$tmp/got")" = "full,a_25,b_50" ] || fail "json branches: $(sed -n 1p "$tmp/got")"
[ "$(sed -n 2p "$tmp/got")" = "hits,score,x2:hits,x2:score,mem/kv_payload_peak_bytes,mem/pages_peak,mem/attended_mean" ] ||
  fail "json default metrics: $(sed -n 2p "$tmp/got")"
python3 - "$tmp/out" <<'PY' || fail "json stages"
import json, sys
b = json.load(open(sys.argv[1]))["branches"]
assert b[1]["stages"] == ["gen_a_25", "a_25", "a_25_x2"], b[1]["stages"]
PY

# --- CSV: every metric, another reference (given as one of its stages) ---
run 0 compare "$B" --branches --metrics all --reference gen_b_50 --format csv --db "$db"
python3 "$tmp/check.py" "$db" "$B" csv "$tmp/out" b_50 >"$tmp/got" || fail "csv values"
[ "$(sed -n 1p "$tmp/got")" = "b_50,full,a_25" ] || fail "csv: the reference first: $(sed -n 1p "$tmp/got")"
sed -n 2p "$tmp/got" | grep -q "gen/n_prompt" || fail "csv --metrics all lacks gen/n_prompt"

# --- table: what a reader sees, the numbers as SQLite has them ---
run 0 compare "$B" --branches --db "$db"
has out "run $B  branches  FINISHED"
has out "3 branches; ratios to full (gen_full, full, full_x2)"
has out "(2 more metrics: --metrics NAME,PATTERN,... or --metrics all)"
want=$(python3 - "$db" "$B" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
v = lambda k: con.execute("SELECT value FROM metrics WHERE run = ? AND sample IS NULL AND key = ?",
                          (sys.argv[2], k)).fetchone()[0]
s, f = v("a_25/score"), v("full/score")
kv, kvf = v("gen_a_25/mem/kv_payload_peak_bytes"), v("gen_full/mem/kv_payload_peak_bytes")
print("%.6g %.4g %.6g %.4g" % (s, s / f, kv, kv / kvf))
PY
)
read -r s sr kv kvr <<<"$want"
grep -E "^a_25 +6 +[0-9.]+ +[0-9.]+ +$s +$sr " "$tmp/out" >/dev/null ||
  fail "table: the a_25 row should show score $s, ratio $sr: $(grep '^a_25' "$tmp/out")"
grep -E "^a_25 .* $kv +$kvr " "$tmp/out" >/dev/null ||
  fail "table: the a_25 row should show the KV peak $kv, ratio $kvr: $(grep '^a_25' "$tmp/out")"
grep -E "^full +6 .* 104960 +1 " "$tmp/out" >/dev/null || fail "table: full's KV peak, ratio 1"
[ "$(sed -n 4p "$tmp/out" | cut -d' ' -f1)" = branch ] || fail "table: header on line 4"

# --- --metrics: names and patterns, in the order given ---
run 0 compare "$B" --branches --metrics 'mem/*,score' --format json --db "$db"
python3 "$tmp/check.py" "$db" "$B" json "$tmp/out" >"$tmp/got" || fail "json --metrics values"
[ "$(sed -n 2p "$tmp/got")" = "mem/kv_payload_peak_bytes,mem/pages_peak,mem/attended_mean,score" ] ||
  fail "--metrics 'mem/*,score': $(sed -n 2p "$tmp/got")"
run 0 compare "$B" --branches --metrics score --format md --db "$db"
[ "$(sed -n 1p "$tmp/out")" = "| branch | samples | score | score ratio |" ] || fail "md header: $(sed -n 1p "$tmp/out")"
[ "$(wc -l <"$tmp/out")" = 5 ] || fail "md: header, rule and 3 rows"

# --- errors: exit 2 with what went wrong ---
miss=000000; case "$B$S" in *"-$miss"*|"$miss"*) miss=ffffff ;; esac
run 2 compare "$miss" --branches --db "$db"
has err "no run '$miss' in '$db'"
run 2 compare last --branches --db "$tmp/absent.db"
has err "no results database at '$tmp/absent.db'"
run 2 compare "$S" --branches --db "$db"
has err "run ${S:0:8} (single) has no branches"
run 2 compare "$B" --branches --metrics nope --db "$db"
has err "no branch of run ${B:0:8} has a metric 'nope' (its metrics: hits, score, x2:hits"
run 2 compare "$B" --branches --reference c_75 --db "$db"
has err "no branch or stage 'c_75' (branches: full, a_25, b_50)"
run 2 compare "$B" "$S" --branches --db "$db"
has err "--branches shows the branches of one run"
run 2 compare "$B" --reference full --db "$db"
has err "--reference, --metrics and --format go with --branches"
run 2 compare "$B" --branches --format xml --db "$db"
run 2 compare "$B" --branches=yes --db "$db"
run 2 compare --branches --db "$db"

# --- the multi-run compare is as it was ---
run 0 compare "$B" "$S" --db "$db"
has out "[1] $B  branches  FINISHED"
grep -E "^a_25/score +[0-9.]+ +- +-$" "$tmp/out" >/dev/null || fail "compare of two runs: a_25/score row"
run 0 compare --help
has out "--branches"

if [ $fails -gt 0 ]; then
  echo "$fails check(s) failed" >&2
  exit 1
fi
echo "compare_branches: all checks passed"
