#!/bin/sh
# The budget sweep of issue 6 in one command: RULER niah at 4k (sweep_budgets.yaml), then
# PG19 fidelity (sweep_budgets_pg19.yaml), each one `kvweave run` with the options given
# here (--limit, --db, --device, --quiet...; --set only for params both files have), into
# one results store. `kvweave compare RUN --branches` then shows each run's branches
# (method x budget) with ratios to full attention; pipelines/tools/sweep_table.py joins
# both runs into one table.
# The two data sets need two pipelines (a pipeline has one data set).
#
#   pipelines/sweep_budgets.sh --limit 1 --db sweep.db
#
# KVWEAVE_BIN: the kvweave binary (default ./build/kvweave); SWEEP_DIR: where the two
# YAML files are (default: this folder; the small end-to-end test writes its own).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
kw=${KVWEAVE_BIN:-./build/kvweave}
dir=${SWEEP_DIR:-$here}
rc=0
"$kw" run "$dir/sweep_budgets.yaml" "$@" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"
rc2=0
"$kw" run "$dir/sweep_budgets_pg19.yaml" "$@" || rc2=$?
[ "$rc2" -le 1 ] || exit "$rc2"
[ "$rc" -eq 0 ] && [ "$rc2" -eq 0 ]
