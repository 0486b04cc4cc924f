#!/bin/sh
# End to end: the budget sweep made small, in one command (pipelines/sweep_budgets.sh):
# both pipelines written by pipelines/tools/gen_sweep.py with every method at budgets of
# 10% and 50%, 1 sample, RULER at 512 tokens with 4 new tokens, PG19 with 448 prompt and
# 4 forced tokens. Checks: every branch recorded its metrics (RULER score, memory,
# PG19 kl / top1 / ppl); the full-attention branch is its own reference (kl 0, top-1 1,
# ppl = ppl_full) and every branch's reference perplexity is full attention's; branches
# whose methods act only at the prompt's end took the shared prefill, H2O and
# StreamingLLM (per-chunk eviction) prefilled on their own; `kvweave compare RUN
# --branches` finds the same branches and figures in each run. Skips (77) without the
# model.
set -eu
kw=${KVWEAVE_BIN:?KVWEAVE_BIN must name the kvweave binary}
src=${KVWEAVE_SRC:?KVWEAVE_SRC must name the source tree}
home=${KVWEAVE_HOME:-$HOME/.cache/kvweave}
[ -f "$home/models/smollm2-135m-instruct.gguf" ] || { echo "skip: the default model is not fetched (./setup.sh)"; exit 77; }
[ -f "${KVWEAVE_DATA:-$src/../shared/data}/text/pg19_frank_merriwell_down_south.txt" ] || { echo "skip: no PG19 text (set KVWEAVE_DATA)"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kw_sweep.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 "$src/pipelines/tools/gen_sweep.py" --out-dir "$tmp" --budgets 0.1,0.5 \
    --ruler-length 512 --ruler-max-new 4 --ruler-n 1 --pg19-prefill 448 --pg19-steps 4 \
    --pg19-n 1
KVWEAVE_BIN=$kw SWEEP_DIR=$tmp "$src/pipelines/sweep_budgets.sh" --limit 1 --quiet \
    --set calibration.n=1 --db "$tmp/runs.db"
python3 "$src/pipelines/tools/sweep_table.py" "$tmp/runs.db"
python3 "$src/pipelines/tools/sweep_table.py" "$tmp/runs.db" --csv > "$tmp/t.csv"
python3 - "$tmp/t.csv" <<'PY'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
want = {"full"} | {"%s_%d" % (m, b) for m in
        ("streaming", "h2o", "snapkv", "pyramidkv", "quest", "clusterkv", "omnikv", "xkv")
        for b in (10, 50)}
got = {r["method"] if r["method"] == "full" else "%s_%s" % (r["method"], r["budget"][:-1])
       for r in rows}
if got != want:
    sys.exit("FAIL: branches %s, expected %s" % (sorted(got), sorted(want)))
full = next(r for r in rows if r["method"] == "full")
for r in rows:
    name = "%s %s" % (r["method"], r["budget"])
    missing = [k for k, v in r.items() if v == "-"]
    if missing:
        sys.exit("FAIL: %s recorded no %s" % (name, missing))
    f = {k: float(v) for k, v in r.items() if k not in ("method", "budget")}
    if not (0 <= f["ruler"] <= 1 and f["pages_mean"] > 0 and f["attended"] > 0):
        sys.exit("FAIL: %s: implausible RULER figures %s" % (name, r))
    if not (f["pg19_kl"] >= 0 and 0 <= f["pg19_top1"] <= 1 and 1 < f["pg19_ppl"] < 1e6):
        sys.exit("FAIL: %s: implausible PG19 figures %s" % (name, r))
    # each branch's reference is full attention: its perplexity is the full branch's
    if abs(f["pg19_ppl_full"] - float(full["pg19_ppl"])) > 1e-3 * float(full["pg19_ppl"]):
        sys.exit("FAIL: %s: reference ppl %g, full attention's %s" % (name, f["pg19_ppl_full"], full["pg19_ppl"]))
    own = r["method"] in ("streaming", "h2o")
    if (f["shared_prefill"] == 0) != own:
        sys.exit("FAIL: %s took %g prompt tokens from the shared prefill" % (name, f["shared_prefill"]))
    if r["method"] in ("streaming", "h2o", "snapkv", "pyramidkv", "xkv") and f["pages_mean"] >= float(full["pages_mean"]):
        sys.exit("FAIL: %s holds as many pages as full attention" % name)
    if r["method"] in ("quest", "clusterkv", "omnikv") and f["attended"] >= float(full["attended"]):
        sys.exit("FAIL: %s attends as many tokens as full attention" % name)
if not (float(full["pg19_kl"]) < 1e-6 and float(full["pg19_top1"]) == 1
        and abs(float(full["pg19_ppl"]) - float(full["pg19_ppl_full"])) < 1e-6 * float(full["pg19_ppl"])):
    sys.exit("FAIL: full attention against itself: %s" % full)
print("ok: %d branches with their metrics; full attention is every branch's reference" % len(rows))
PY
# The same branches through `kvweave compare RUN --branches`, each run on its own: the
# branch names and the figures agree with sweep_table.py's (which reads SQLite itself).
for p in ruler:score,mem/pages_mean,mem/attended_mean pg19:kl,top1,ppl; do
  run=$("$kw" query "SELECT uuid FROM runs WHERE pipeline = 'sweep-budgets-${p%%:*}' ORDER BY start_time DESC LIMIT 1" --format csv --db "$tmp/runs.db" | tail -1)
  "$kw" compare "$run" --branches --metrics "${p#*:}" --format csv --db "$tmp/runs.db" > "$tmp/${p%%:*}.csv" ||
    { echo "FAIL: compare $run --branches"; exit 1; }
done
python3 - "$tmp/t.csv" "$tmp/ruler.csv" "$tmp/pg19.csv" <<'PY'
import csv, sys
table = {(r["method"] if r["method"] == "full" else "%s_%s" % (r["method"], r["budget"][:-1])): r
         for r in csv.DictReader(open(sys.argv[1]))}
pairs = {sys.argv[2]: [("score", "ruler"), ("mem/pages_mean", "pages_mean"), ("mem/attended_mean", "attended")],
         sys.argv[3]: [("kl", "pg19_kl"), ("top1", "pg19_top1"), ("ppl", "pg19_ppl")]}
for path, cols in pairs.items():
    rows = list(csv.DictReader(open(path)))
    if [r["branch"] for r in rows][0] != "full" or {r["branch"] for r in rows} != set(table):
        sys.exit("FAIL: compare --branches gives %s, sweep_table.py %s" % ([r["branch"] for r in rows], sorted(table)))
    for r in rows:
        for mine, theirs in cols:
            a, b = float(r[mine]), float(table[r["branch"]][theirs])
            if abs(a - b) > 1e-3 * max(abs(b), 1e-9) + 1e-12:
                sys.exit("FAIL: %s %s: compare says %g, sweep_table.py %g" % (r["branch"], mine, a, b))
            if r[mine + " ratio"] and abs(float(r[mine + " ratio"]) * float(rows[0][mine]) - a) > 1e-6 * max(abs(a), 1e-9):
                sys.exit("FAIL: %s %s: ratio %s to full's %s" % (r["branch"], mine, r[mine + " ratio"], rows[0][mine]))
print("ok: compare --branches agrees with sweep_table.py on %d branches" % len(table))
PY
echo PASS
