#!/usr/bin/env bash
# End to end: a results store built through the C API (results_fixture), then the result
# commands on it: runs, show, compare, query (read-only), export (csv, json, md), db
# merge (idempotent), and the broken databases (text file, newer schema, truncated,
# missing). usage: results_cli.sh FIXTURE_BINARY   (KVWEAVE_BIN: the kvweave binary)
set -u
fixture=$1
kw=${KVWEAVE_BIN:?KVWEAVE_BIN must name the kvweave binary}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kw_results_cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export KVWEAVE_HOME=$tmp/home
unset KVWEAVE_DB
fails=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# run EXPECTED_RC ARGS...: runs kvweave; stdout in $tmp/out, stderr in $tmp/err
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
lacks() { if grep -qF -- "$2" "$tmp/$1"; then fail "$1 of the last command has '$2'"; fi; }
line_has() { grep -F -- "$1" "$tmp/out" | grep -qF -- "$2" || fail "no line with '$1' and '$2' in: $(cat "$tmp/out")"; }

db=$tmp/results.db
"$fixture" main "$db" >"$tmp/uuids" || { echo "FAIL: fixture"; exit 1; }
A=$(sed -n 1p "$tmp/uuids"); B=$(sed -n 2p "$tmp/uuids"); C=$(sed -n 3p "$tmp/uuids")
a=${A:0:8}; b=${B:0:8}; c=${C:0:8}
export KVWEAVE_DB=$db

# --- runs: newest first, samples ok/failed, filters ---
run 0 runs
[ "$(wc -l <"$tmp/out")" = 4 ] || fail "runs: expected a header and 3 lines"
sed -n 2p "$tmp/out" | grep -q "$c" || fail "runs: the newest run (C) is not first"
line_has "$a" "FINISHED" ; line_has "$a" "10.0s"
grep -F "$a" "$tmp/out" | grep -Eq "ruler-niah +3 +1 +2023-11-14 22:13:20" ||
  fail "runs: A should show 3 ok, 1 failed, started 2023-11-14 22:13:20"
line_has "$b" "sel.budget=512"; line_has "$c" "RUNNING"
run 0 runs --limit 1
[ "$(wc -l <"$tmp/out")" = 2 ] || fail "runs --limit 1: expected one run"
run 0 runs --pipeline other --db "$db"
has out "$c"; lacks out "$a"
run 2 runs --limit x

# --- show: provenance, params, scores, stages, lanes, overlap ---
run 0 show "$a"
has out "run $A"
for k in kw_version git_commit host cpu model_sha256 dataset_sha256 "seed            42"; do
  has out "$k"
done
line_has "sel.budget" "256"
line_has "niah_single_1" "0.8"; line_has "niah_multikey_1" "0.6"
line_has "tokens_per_s" "120"
line_has "latency_s" "1.5"
grep -E "^  gen +gpu +4 +8.000 +0.500 +3.0 MiB" "$tmp/out" >/dev/null || fail "show: stage row of gen"
grep -E "^  cpu +7 +7.000" "$tmp/out" >/dev/null || fail "show: cpu lane sums tok and score"
has out "overlap 1.50 (lane busy 15.0s / wall 10.0s"
run 0 show "$a" --yaml
[ "$(cat "$tmp/out")" = "$(printf 'name: x\nstages: []')" ] || fail "show --yaml: $(cat "$tmp/out")"
run 0 show "${B:0:6}"
has out "overlap 3.25 (recorded"
run 0 show last
has out "run $C"; has out "still running"
run 2 show abcde
has err "at least 6 hex digits"
miss=000000; case "$A$B$C" in *"-$miss"*|"$miss"*) miss=ffffff ;; esac
run 2 show "$miss"
has err "no run '$miss'"
run 2 show

# --- compare: one row per metric, ratios to the first run, params that differ ---
run 0 compare "$a" "$b"
has out "[1] $A"; has out "[2] $B"
grep -E "^score/niah_single_1 +0.8 +0.9 +1.125$" "$tmp/out" >/dev/null || fail "compare: single_1 row"
grep -E "^score/niah_multikey_1 +0.6 +0.3 +0.5$" "$tmp/out" >/dev/null || fail "compare: multikey_1 row"
grep -E "^overlap +- +3.25 +-$" "$tmp/out" >/dev/null || fail "compare: a metric only B has"
grep -E "^sel.budget +256 +512$" "$tmp/out" >/dev/null || fail "compare: params that differ"
lacks out "gen.max_new_tokens"

# --- query: read-only, formats ---
run 0 query "SELECT pipeline, count(*) AS n FROM runs GROUP BY pipeline ORDER BY pipeline"
grep -E "^ruler-niah +2$" "$tmp/out" >/dev/null || fail "query: table"
has out "(2 rows)"
run 0 query "SELECT pipeline, count(*) AS n FROM runs GROUP BY pipeline ORDER BY pipeline" --format csv
[ "$(cat "$tmp/out")" = "$(printf 'pipeline,n\nother,1\nruler-niah,2')" ] || fail "query csv: $(cat "$tmp/out")"
run 0 query "SELECT count(*) AS n, 0.5 AS r, NULL AS z FROM runs" --format json
has out '{"n":3,"r":0.5,"z":null}'
run 0 query "SELECT pipeline, count(*) AS n FROM runs GROUP BY pipeline ORDER BY pipeline" --format jsonl
[ "$(cat "$tmp/out")" = "$(printf '%s\n%s' '{"pipeline":"other","n":1}' '{"pipeline":"ruler-niah","n":2}')" ] ||
  fail "query jsonl: $(cat "$tmp/out")"
run 2 query "DELETE FROM runs"
has err "read-only"
run 2 query "UPDATE runs SET status = 'KILLED'"
run 2 query "SELEC 1"
run 0 query "SELECT count(*) FROM runs WHERE status = 'FINISHED'" --format csv
[ "$(tail -1 "$tmp/out")" = 2 ] || fail "query: a refused write changed rows"

# --- export: per-sample rows with one column per per-sample metric ---
run 0 export "$a" --format csv
head -1 "$tmp/out" | grep -qx "run,idx,sample_id,status,prediction,answers,error,latency_s,score/niah_single_1" ||
  fail "export csv header: $(head -1 "$tmp/out")"
has out "$A,1,niah-1,FINISHED,\"a, comma\",\"[\"\"42\"\"]\",,1.5,0.0"
has out "$A,3,niah-3,FAILED,,\"[\"\"42\"\"]\",sequence over budget,,"
has out "\"say \"\"hi\"\""
if command -v python3 >/dev/null; then
  python3 - "$tmp/out" <<'EOF' || fail "export csv does not parse back"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='')))
assert len(rows) == 4, len(rows)
assert rows[2]['prediction'] == 'say "hi"\nbye', rows[2]['prediction']
assert rows[0]['latency_s'] == '0.5' and rows[3]['status'] == 'FAILED'
EOF
  run 0 export --format jsonl -o "$tmp/all.jsonl"
  python3 - "$tmp/all.jsonl" <<'EOF' || fail "export jsonl: one object a line"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 7 and all(isinstance(r['answers'], list) for r in rows), rows[:1]
EOF
  run 0 export --format json -o "$tmp/all.json"
  python3 - "$tmp/all.json" "$A" <<'EOF' || fail "export json"
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 7, len(rows)  # every run: A 4, B 2, C 1
a = [r for r in rows if r['run'] == sys.argv[2]]
assert a[0]['answers'] == ['42'] and a[1]['score/niah_single_1'] == 0.0, a[:2]
assert a[3]['prediction'] is None and a[3]['error'] == 'sequence over budget'
EOF
fi
run 0 export "$b" --format md
[ "$(sed -n 2p "$tmp/out")" = "| --- | --- | --- | --- | --- | --- | --- | --- |" ] || fail "export md rule"
[ "$(wc -l <"$tmp/out")" = 4 ] || fail "export md: header, rule and 2 rows"
run 2 export --format xml

# --- db merge: copies what DEST lacks, twice is once ---
"$fixture" shard "$tmp/s1.db" 3 >/dev/null && "$fixture" shard "$tmp/s2.db" 2 >/dev/null || fail "shards"
for pass in 1 2; do
  run 0 db merge "$tmp/merged.db" "$tmp/s1.db" "$tmp/s2.db"
  if [ $pass = 1 ]; then has out "s1.db: 1 added"; else has out "s1.db: 0 added, 0 updated, 1 already"; fi
done
run 0 query "SELECT count(*) || '/' || (SELECT count(*) FROM samples) FROM runs" --format csv --db "$tmp/merged.db"
[ "$(tail -1 "$tmp/out")" = "2/5" ] || fail "merge: expected 2 runs and 5 samples, got $(tail -1 "$tmp/out")"
run 0 db merge "$tmp/s1.db" --db "$db"
run 0 runs --db "$db" --limit 0
[ "$(wc -l <"$tmp/out")" = 5 ] || fail "merge --db: expected 4 runs"

# --- broken databases: clear message, exit 2, the file unchanged ---
echo "not a database, just notes" >"$tmp/notes.txt"
cp "$tmp/notes.txt" "$tmp/notes.orig"
for cmd in runs "show last" "query SELECT\ 1" export; do
  eval run 2 $cmd --db "$tmp/notes.txt"
  has err "'$tmp/notes.txt' is not a SQLite database"
done
run 2 db merge "$tmp/merged.db" "$tmp/notes.txt"
has err "notes.txt"
cmp -s "$tmp/notes.txt" "$tmp/notes.orig" || fail "the text file was changed"
read -r have newer < <("$fixture" newer "$tmp/newer.db")
cp "$tmp/newer.db" "$tmp/newer.orig"
run 2 runs --db "$tmp/newer.db"
has err "schema version $newer, newer than the $have this kvweave"
run 2 db merge "$tmp/newer.db" "$tmp/s1.db"
cmp -s "$tmp/newer.db" "$tmp/newer.orig" || fail "the newer database was changed"
cp "$db" "$tmp/trunc.db"
size=$(wc -c <"$tmp/trunc.db")
head -c $((size / 2)) "$db" >"$tmp/trunc.db"
run 2 runs --db "$tmp/trunc.db"
has err "is truncated"
run 2 runs --db "$tmp/absent.db"
has err "no results database at '$tmp/absent.db'"
[ ! -e "$tmp/absent.db" ] || fail "a read-only command created the database"

# --- colors: never with NO_COLOR or when not a terminal ---
esc=$(printf '\033')
NO_COLOR=1 "$kw" show "$a" >"$tmp/out" 2>&1
lacks out "$esc"
"$kw" runs >"$tmp/out" 2>&1  # a pipe: no colors
lacks out "$esc"
if command -v script >/dev/null && script -qec true /dev/null >/dev/null 2>&1; then
  env -u NO_COLOR script -qec "$kw runs --db $db" /dev/null >"$tmp/out" 2>&1
  has out "$esc"
  NO_COLOR=1 script -qec "$kw runs --db $db" /dev/null >"$tmp/out" 2>&1
  lacks out "$esc"
fi

if [ $fails -gt 0 ]; then
  echo "$fails check(s) failed" >&2
  exit 1
fi
echo "results_cli: all checks passed"
