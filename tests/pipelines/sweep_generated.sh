#!/bin/sh
# pipelines/sweep_budgets.yaml and sweep_budgets_pg19.yaml are what
# pipelines/tools/gen_sweep.py writes, and both validate.
set -eu
src=${KVWEAVE_SRC:?KVWEAVE_SRC must name the source tree}
kw=${KVWEAVE_BIN:?KVWEAVE_BIN must name the kvweave binary}
python3 "$src/pipelines/tools/gen_sweep.py" --check --out-dir "$src/pipelines"
for f in sweep_budgets.yaml sweep_budgets_pg19.yaml; do
    "$kw" validate "$src/pipelines/$f"
done
echo PASS
