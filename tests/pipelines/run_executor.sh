#!/bin/bash
# `kvweave run` end to end on the t.* plug-in operators (tests/pipelines/runops.c) and
# the template operator built as a plug-in: results, calibration subset and cache,
# failed samples, interrupted and resumed runs, bad input, limits, sweeps.
# Args: libkwrunops.so libkwupper.so
set -u
RUNOPS=$1 UPPER=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/runexec.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export KVWEAVE_HOME="$tmp/home"
db="$tmp/r.db"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
q() { "$KVWEAVE_BIN" query --db "$db" --format csv "$1" | tail -n +2; }
kv() { "$KVWEAVE_BIN" run "$@" --db "$db" --quiet; }

cat > "$tmp/calib.yaml" <<YAML
name: calib
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 20 } }
calibration: { sample_ratio: 0.5, seed: 7 }
stages:
  - { id: sum, op: t.sum, in: [dataset] }
  - { id: score, op: t.score, in: [dataset, sum] }
YAML

# 1. a run with a calibration phase: 20 samples, the score uses the subset's mean
kv "$tmp/calib.yaml" > "$tmp/out1" 2>&1; rc=$?
[ $rc = 0 ] || { fail "calib run exit $rc"; cat "$tmp/out1"; }
run1=$(q "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC LIMIT 1")
n=$(q "SELECT count(*) FROM samples WHERE run = '$run1' AND status = 'FINISHED'")
[ "$n" = 20 ] || fail "expected 20 finished samples, got $n"
ncal=$(q "SELECT value FROM params WHERE run = '$run1' AND key = 'calibration.samples'")
art=$(q "SELECT count(*) FROM artifacts WHERE run = '$run1' AND name = 'calib/sum.stats'")
[ "$art" = 1 ] || fail "the calibration output is not recorded as an artifact ($art)"
# the subset is a seeded draw: neither all nor none of the 20, and the recorded mean
# score equals sum(x)/20 / (1 + subset mean) computed from the artifact
blob=$(q "SELECT path FROM artifacts WHERE run = '$run1' AND name = 'calib/sum.stats'")
python3 - "$blob" "$ncal" "$(q "SELECT value FROM metrics WHERE run = '$run1' AND sample IS NULL AND key = 'score'")" <<'PY' || fail "calibration numbers"
import json, sys
a = json.load(open(sys.argv[1]))["value"]
ncal, score = int(sys.argv[2]), float(sys.argv[3])
assert a["n"] == ncal == len(a["xs"]), (a, ncal)
assert 0 < ncal < 20, ncal
assert a["sum"] == sum(a["xs"])
mean = a["sum"] / a["n"]
want = sum(x / (1 + mean) for x in range(20)) / 20
assert abs(score - want) < 1e-9, (score, want)
print("calibration: %d of 20 samples, mean %.3f, score %.6f" % (ncal, mean, score))
PY

# 2. the same pipeline again: calibration comes from the cache, same score
kv "$tmp/calib.yaml" > /dev/null 2>&1 || fail "second calib run"
run2=$(q "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC LIMIT 1")
[ "$run2" != "$run1" ] || fail "no second run"
c=$(q "SELECT value FROM params WHERE run = '$run2' AND key = 'calibration'")
[ "$c" = cached ] || fail "second run did not use the cached calibration ($c)"
s1=$(q "SELECT value FROM metrics WHERE run = '$run1' AND sample IS NULL AND key = 'score'")
s2=$(q "SELECT value FROM metrics WHERE run = '$run2' AND sample IS NULL AND key = 'score'")
[ "$s1" = "$s2" ] || fail "cached calibration changed the score ($s1 vs $s2)"
# another calibration seed draws another subset (not from the cache)
kv "$tmp/calib.yaml" --set calibration.seed=8 > /dev/null 2>&1 || fail "seed 8 run"
run3=$(q "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC LIMIT 1")
c=$(q "SELECT count(*) FROM params WHERE run = '$run3' AND key = 'calibration'")
[ "$c" = 0 ] || fail "another seed must recompute the calibration"

# 3. a failing sample fails alone: exit 1, its row FAILED with the stage and message
kv "$tmp/calib.yaml" --set score.fail_x=3 > "$tmp/out3" 2>&1; rc=$?
[ $rc = 1 ] || fail "a failed sample must give exit 1, got $rc"
grep -q "sample 3 failed: score (t.score): x = 3 is refused" "$tmp/out3" || fail "failure line: $(cat "$tmp/out3")"
run4=$(q "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC LIMIT 1")
st=$(q "SELECT status || ' ' || error FROM samples WHERE run = '$run4' AND idx = 3")
case "$st" in "FAILED score (t.score): x = 3 is refused"*) ;; *) fail "sample 3 row: $st" ;; esac
n=$(q "SELECT count(*) FROM samples WHERE run = '$run4' AND status = 'FINISHED'")
[ "$n" = 19 ] || fail "the other 19 samples must finish ($n)"

# 4. bad input: exit 2, and nothing recorded (runs unchanged)
before=$(q "SELECT count(*) FROM runs")
kv "$tmp/calib.yaml" --set score.nope=1 > "$tmp/out4" 2>&1; rc=$?
[ $rc = 2 ] || fail "unknown param must exit 2, got $rc"
kv "$tmp/calib.yaml" --set dataset.n=0 > "$tmp/out4b" 2>&1; rc=$?
[ $rc = 2 ] || fail "a stage init failure must exit 2, got $rc"
grep -q "calib.yaml:3:.*stage 'dataset' (t.count).*n = 0 is refused" "$tmp/out4b" || fail "init message: $(cat "$tmp/out4b")"
sed 's/^plugins.*/plugins: [\/nonexistent\/lib.so]/' "$tmp/calib.yaml" > "$tmp/badplug.yaml"
kv "$tmp/badplug.yaml" > /dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "a missing plug-in must exit 2, got $rc"
printf 'name: m\nmodel: no-such-model-xyz\ndataset: { op: t.count }\nplugins: [%s]\nstages:\n  - { id: s, op: t.score }\n' "$RUNOPS" > "$tmp/nomodel.yaml"
kv "$tmp/nomodel.yaml" > "$tmp/out4c" 2>&1; rc=$?
[ $rc = 2 ] || fail "a missing model must exit 2, got $rc: $(cat "$tmp/out4c")"
after=$(q "SELECT count(*) FROM runs")
[ "$before" = "$after" ] || fail "bad input recorded runs ($before -> $after)"

# 5. a source that fails mid-way: exit 2, the run FAILED, samples before it kept
kv "$tmp/calib.yaml" --set dataset.fail_at=15 --set calibration.n=3 > "$tmp/out5" 2>&1; rc=$?
[ $rc = 2 ] || fail "source failure must exit 2, got $rc"
run5=$(q "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC LIMIT 1")
s=$(q "SELECT status FROM runs WHERE uuid = '$run5'")
[ "$s" = FAILED ] || fail "run after a source failure: $s"
grep -q "record 15 is broken" "$tmp/out5" || fail "source failure message: $(cat "$tmp/out5")"

# 6. --limit, and an interrupted run resumed: every sample once, in one run
kv "$tmp/calib.yaml" --limit 4 > /dev/null 2>&1 || fail "--limit run"
r=$(q "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC LIMIT 1")
n=$(q "SELECT count(*) FROM samples WHERE run = '$r'")
[ "$n" = 4 ] || fail "--limit 4 gave $n samples"
cat > "$tmp/slow.yaml" <<YAML
name: slow
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 40 } }
stages:
  - { id: score, op: t.score, in: [dataset], with: { sleep_ms: 100 } }
YAML
"$KVWEAVE_BIN" run "$tmp/slow.yaml" --db "$db" --quiet --threads 2 --inflight 2 > "$tmp/out6" 2>&1 &
pid=$!
sleep 1.2
kill -INT $pid
wait $pid; rc=$?
[ $rc = 130 ] || fail "interrupted run exit $rc"
grep -q "stopping: no new samples" "$tmp/out6" || fail "no stopping message: $(cat "$tmp/out6")"
r6=$(q "SELECT uuid FROM runs WHERE pipeline = 'slow'")
s=$(q "SELECT status FROM runs WHERE uuid = '$r6'")
[ "$s" = KILLED ] || fail "interrupted run status $s"
done1=$(q "SELECT count(*) FROM samples WHERE run = '$r6'")
{ [ "$done1" -gt 0 ] && [ "$done1" -lt 40 ]; } || fail "interrupted run kept $done1 samples"
kv "$tmp/slow.yaml" --resume --threads 2 > /dev/null 2>&1 || fail "resume"
n=$(q "SELECT count(*) FROM runs WHERE pipeline = 'slow'")
[ "$n" = 1 ] || fail "resume made a new run ($n runs)"
n=$(q "SELECT count(*) FROM samples WHERE run = '$r6' AND status = 'FINISHED'")
[ "$n" = 40 ] || fail "after resume $n of 40 samples"
m=$(q "SELECT printf('%.4f', value) FROM metrics WHERE run = '$r6' AND sample IS NULL AND key = 'x'")
[ "$m" = 19.5000 ] || fail "the resumed run's mean of x is $m, want 19.5"
echo "resume: $done1 samples before the interrupt, 40 after"
# a second interrupt quits at once: the run stays RUNNING, and --resume finishes it
# (samples of 1.5 s: the first two are still running at the second interrupt)
sed -e 's/^name: slow/name: slow2/' -e 's/n: 40/n: 4/' -e 's/sleep_ms: 100/sleep_ms: 1500/' \
    "$tmp/slow.yaml" > "$tmp/slow2.yaml"
"$KVWEAVE_BIN" run "$tmp/slow2.yaml" --db "$db" --quiet --threads 2 --inflight 2 \
    > "$tmp/out6b" 2>&1 &
pid=$!
sleep 0.6
kill -INT $pid
sleep 0.1
kill -INT $pid
wait $pid; rc=$?
[ $rc = 130 ] || fail "twice-interrupted run exit $rc"
s=$(q "SELECT status FROM runs WHERE pipeline = 'slow2'")
[ "$s" = RUNNING ] || fail "twice-interrupted run status $s"
kv "$tmp/slow2.yaml" --resume --threads 2 > /dev/null 2>&1 || fail "resume after two interrupts"
n=$(q "SELECT count(*) FROM samples s JOIN runs r ON r.uuid = s.run
       WHERE r.pipeline = 'slow2' AND s.status = 'FINISHED'")
[ "$n" = 4 ] || fail "after two interrupts and resume: $n of 4 samples"

# 7. a sweep: a parent run and one child run per cell
cat > "$tmp/sweep.yaml" <<YAML
name: sweep
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 5 } }
stages:
  - { id: score, op: t.score, in: [dataset] }
sweep: { dataset.n: [2, 3] }
YAML
kv "$tmp/sweep.yaml" > /dev/null 2>&1 || fail "sweep run"
p=$(q "SELECT uuid FROM runs WHERE pipeline = 'sweep' AND parent IS NULL")
n=$(q "SELECT group_concat(c, '-') FROM (SELECT count(s.idx) AS c FROM runs r LEFT JOIN samples s ON s.run = r.uuid WHERE r.parent = '$p' GROUP BY r.uuid ORDER BY c)")
[ "$n" = "2-3" ] || fail "sweep cells have $n samples"

# 8. the template operator as a plug-in, loaded without rebuilding kvweave
cat > "$tmp/upper.yaml" <<YAML
name: upper
plugins: [$UPPER]
dataset: { op: dataset.jsonl, with: { path: $tmp/d.jsonl } }
stages:
  - { id: up, op: plugin.upper, in: [dataset], with: { field: text, times: 2 } }
YAML
printf '{"text": "ab"}\n{"text": "c"}\n' > "$tmp/d.jsonl"
"$KVWEAVE_BIN" ops describe plugin.upper > /dev/null 2>&1 && fail "plugin.upper is built in?"
kv "$tmp/upper.yaml" > "$tmp/out8" 2>&1 || fail "plug-in run: $(cat "$tmp/out8")"
n=$(q "SELECT count(*) FROM samples s JOIN runs r ON r.uuid = s.run WHERE r.pipeline = 'upper' AND s.status = 'FINISHED'")
[ "$n" = 2 ] || fail "plug-in run finished $n samples"

# 9. ops describe: known and unknown names
"$KVWEAVE_BIN" ops describe score.ruler | grep -q "string_match" || fail "ops describe score.ruler"
"$KVWEAVE_BIN" ops describe score.rulr > "$tmp/out9" 2>&1; rc=$?
[ $rc = 2 ] || fail "ops describe of an unknown name exit $rc"
grep -q "did you mean 'score.ruler'" "$tmp/out9" || fail "no suggestion: $(cat "$tmp/out9")"

# 9b. two scorers in one pipeline: their metrics are kept apart as "<stage>/<key>"
cat > "$tmp/two.yaml" <<YAML
name: two
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 4 } }
stages:
  - { id: a, op: t.score, in: [dataset] }
  - { id: b, op: t.score, in: [dataset], with: { fail_x: 99 } }
YAML
kv "$tmp/two.yaml" > /dev/null 2>&1 || fail "two-scorer run"
r=$(q "SELECT uuid FROM runs WHERE pipeline = 'two'")
k=$(q "SELECT group_concat(key, ' ') FROM (SELECT DISTINCT key FROM metrics WHERE run = '$r' AND sample IS NOT NULL ORDER BY key)")
[ "$k" = "a/score a/x b/score b/x" ] || fail "two scorers' keys: $k"

# 10. overlap: io, cpu and an asynchronous device stage, 30 ms each per sample; the
# wall time must be well under the sum of the stages' busy time (the lanes overlap)
cat > "$tmp/overlap.yaml" <<YAML
name: overlap
plugins: [$RUNOPS]
dataset: { op: t.count, with: { n: 30 } }
stages:
  - { id: io, op: t.io, in: [dataset], with: { ms: 30 } }
  - { id: cpu, op: t.cpu, in: [io], with: { ms: 30 } }
  - { id: gpu, op: t.gpu, in: [cpu], with: { ms: 30 } }
YAML
kv "$tmp/overlap.yaml" --threads 1 > /dev/null 2>&1 || fail "overlap run"
r=$(q "SELECT uuid FROM runs WHERE pipeline = 'overlap'")
sum=$(q "SELECT sum(busy_s) FROM stages WHERE run = '$r' AND stage IN ('io', 'cpu')")
wall=$(q "SELECT value FROM metrics WHERE run = '$r' AND sample IS NULL AND key = 'wall_s'")
python3 - "$sum" "$wall" <<'PY' || fail "no overlap"
import sys
busy, wall = float(sys.argv[1]) + 30 * 0.030, float(sys.argv[2])  # + the device's own time
print("overlap: stages busy %.2f s in all, wall %.2f s, wall/sum %.2f" % (busy, wall, wall / busy))
assert wall < 0.7 * busy, (wall, busy)
PY

[ $fails = 0 ] && echo "run executor: all checks passed"
exit $((fails > 0))
