#!/usr/bin/env bash
# End to end: pipelines/fidelity_pg19.yaml on the default model at small sizes (2 windows,
# prefill 128, 8 forced steps). As shipped it compares full attention with itself, so
# every per-sample metric has a known value: kl < 1e-6, top1 = top5 = 1, nll = nll_full,
# ppl = exp(nll) in a sane range. Skips (77) without the model, the text or the executor.
set -euo pipefail
kw=${KVWEAVE_BIN:?KVWEAVE_BIN must name the kvweave binary}
src=${KVWEAVE_SRC:?KVWEAVE_SRC must name the source tree}
model=${KVWEAVE_HOME:-$HOME/.cache/kvweave}/models/smollm2-135m-instruct.gguf
text=${KVWEAVE_DATA:-$src/../shared/data}/text/pg19_frank_merriwell_down_south.txt
[ -f "$model" ] || { echo "skip: $model is absent (setup.sh fetches it)"; exit 77; }
[ -f "$text" ] || { echo "skip: $text is absent (set KVWEAVE_DATA)"; exit 77; }
run_help=$("$kw" run --help 2>&1 || true)
if [[ $run_help == *"not built yet"* ]]; then
  echo "skip: kvweave run is not built in this tree"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kw_fidelity.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db=$tmp/runs.db

set +e
"$kw" run "$src/pipelines/fidelity_pg19.yaml" --set dataset.n=2 --set dataset.prefill=128 \
  --set dataset.steps=8 --db "$db" > "$tmp/out" 2> "$tmp/err"
rc=$?
set -e
[ "$rc" = 0 ] || { cat "$tmp/out" "$tmp/err" >&2; echo "FAIL: run exited $rc" >&2; exit 1; }

"$kw" query "SELECT key, count(*), min(value), max(value) FROM metrics WHERE sample IS NOT NULL
             GROUP BY key ORDER BY key" --format csv --db "$db" > "$tmp/m.csv"
cat "$tmp/m.csv"
python3 - "$tmp/m.csv" <<'PY'
import csv, math, sys
rows = {r[0]: (int(r[1]), float(r[2]), float(r[3])) for r in list(csv.reader(open(sys.argv[1])))[1:]}
def need(key, lo, hi):
    if key not in rows:
        sys.exit("FAIL: no per-sample metric %r (have %s)" % (key, sorted(rows)))
    n, a, b = rows[key]
    if n != 2 or a < lo or b > hi:
        sys.exit("FAIL: %s: %d samples in [%g, %g], expected 2 in [%g, %g]" % (key, n, a, b, lo, hi))
need("kl", 0.0, 1e-6)
need("top1", 1.0, 1.0)
need("top5", 1.0, 1.0)
need("positions", 8, 8)
need("nll", 0.05, 12.0)          # SmolLM2 on English prose: a few nats at most
need("ppl", math.exp(0.05), math.exp(12.0))
n_a, lo_a, hi_a = rows["nll"]
n_b, lo_b, hi_b = rows["nll_full"]
if abs(lo_a - lo_b) > 1e-4 or abs(hi_a - hi_b) > 1e-4:
    sys.exit("FAIL: full attention against itself: nll %g..%g, nll_full %g..%g" % (lo_a, hi_a, lo_b, hi_b))
print("ok: fidelity of full attention to itself: kl < 1e-6, top1 = top5 = 1, nll = nll_full")
PY

# pipelines/ppl_pg19.yaml (decode.teacher_forced, no branch) on the same windows gives
# the same per-sample nll
set +e
"$kw" run "$src/pipelines/ppl_pg19.yaml" --set dataset.n=2 --set dataset.prefill=128 \
  --set dataset.steps=8 --db "$db" > "$tmp/out2" 2> "$tmp/err2"
rc=$?
set -e
[ "$rc" = 0 ] || { cat "$tmp/out2" "$tmp/err2" >&2; echo "FAIL: ppl run exited $rc" >&2; exit 1; }
"$kw" query "SELECT r.pipeline, m.sample, m.value FROM metrics m JOIN runs r ON r.uuid = m.run
             WHERE m.key = 'nll' AND m.sample IS NOT NULL ORDER BY m.sample, r.pipeline" \
  --format csv --db "$db" > "$tmp/nll.csv"
python3 - "$tmp/nll.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
by = {}
for pipe, smp, v in rows:
    by.setdefault(smp, {})[pipe] = float(v)
if len(by) != 2 or any(len(v) != 2 for v in by.values()):
    sys.exit("FAIL: expected nll of 2 samples from both pipelines, got %s" % rows)
for smp, v in by.items():
    a, b = v["fidelity-pg19"], v["ppl-pg19"]
    if abs(a - b) > 1e-4:
        sys.exit("FAIL: sample %s: nll %g (fidelity) vs %g (teacher_forced)" % (smp, a, b))
print("ok: decode.teacher_forced and decode.fidelity agree on nll")
PY
echo PASS
