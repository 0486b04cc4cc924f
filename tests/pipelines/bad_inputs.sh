#!/bin/sh
# `kvweave validate` on each broken pipeline of bad/: exit code 2 and a message with the
# place (file:line:col) or the numbers. Operators come from the fake-operator plug-in.
set -u
BIN=${KVWEAVE_BIN:?} SRC=${KVWEAVE_SRC:?} BUILD=${KVWEAVE_BUILD:?}
BAD=$SRC/tests/pipelines/bad
export KVWEAVE_PLUGIN_PATH=$BUILD/tests/unit/libkwtestops.so
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0

# check NAME WANT_RC WANT_TEXT -- ARGS...
check() {
    name=$1 want_rc=$2 want=$3
    shift 4
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ "$rc" -ne "$want_rc" ] || ! grep -qF -- "$want" "$TMP/out" "$TMP/err"; then
        echo "FAIL $name: exit $rc (want $want_rc), want text: $want"
        sed 's/^/  | /' "$TMP/out" "$TMP/err"
        fails=$((fails + 1))
    else
        echo "ok   $name: $(cat "$TMP/err" "$TMP/out" | head -1 | cut -c1-160)"
    fi
}

bad() { check "$1" 2 "$2" -- validate "$BAD/$1.yaml"; }

bad unknown_op "unknown_op.yaml:4:20: stage 'tok': unknown operator 'test.tokk' (did you mean 'test.tok'?)"
bad unknown_param "unknown_param.yaml:6:13: stage 'tok' (test.tok): unknown param 'systen' (did you mean 'system'?)"
bad wrong_type "wrong_type.yaml:4:47: stage 'tok' (test.tok): param 'add_bos' wants true or false, got 'yes' (YAML 1.2"
bad out_of_range "out_of_range.yaml:6:58: stage 'gen' (test.gen): param 'max_new' 5000 is out of range [1, 4096]"
bad missing_input "missing_input.yaml:5:5: stage 'probe' (test.probe): required input 'in' (tokens, each) is not wired"
bad port_type "port_type.yaml:5:39: stage 'score' (test.score): no free input port takes what 'tok' (test.tok) gives; it gives 'out' (tokens, each), test.score takes 'gen' (generation, each)"
bad cycle "cycle.yaml:4:5: the pipeline has a cycle: a -> b -> c -> a"
bad each_for_once "each_for_once.yaml:8:39: stage 'evict' (test.evict): input 'budget' needs a once value, but 'perbudget' gives budget for each sample; reduce it first"
bad duplicate_id "duplicate_id.yaml:5:5: duplicate stage id 'tok' (first at line 4)"
bad empty "empty.yaml: empty pipeline"
bad not_yaml "not_yaml.yaml:3:5: not valid YAML: did not find expected ',' or '}'"
bad bomb_aliases "bomb_aliases.yaml:1:45: document too large: more than 262144 nodes (after alias expansion)"
bad bomb_depth "bomb_depth.yaml:2:72: nesting too deep: more than 64 levels"
bad sweep_value "sweep_value.yaml:7:32: stage 'gen' (test.gen): param 'max_new' 0 is out of range [1, 4096] (in sweep cell 2: gen.max_new=0)"
bad two_evict "two_evict.yaml:11:5: stage 'gen' (decode.greedy): kv methods 'snap' (compress.snapkv, EVICT+SELECT) and 'h2o' (compress.h2o, EVICT) both EVICT; a stack of kv methods holds at most one EVICT"
bad engine_setting "engine_setting.yaml:7:32: run.max_batch: 100 is out of range [0, 64]"
bad kv_pages "kv_pages.yaml:7:31: run.kv_pages: must be one of float|int8|int8_kchan|int4_kchan, got 'fp16'"
bad page_tokens "page_tokens.yaml:7:34: run.page_tokens: 8192 is out of range [0, 4096]"
bad kv_residual "kv_residual.yaml:7:34: run.kv_residual: 64 tokens of f32 K need pages that quantize K per channel (run.kv_pages: int8_kchan or int4_kchan), not 'int8'"

# `kvweave run` refuses the same stack before it opens the store: no run row, no file
check run_two_evict 2 "two_evict.yaml:11:5: stage 'gen' (decode.greedy): kv methods 'snap'" -- run "$BAD/two_evict.yaml" --db "$TMP/two_evict.db" --quiet
if [ -e "$TMP/two_evict.db" ]; then
    echo "FAIL run_two_evict: the results store was created"
    fails=$((fails + 1))
fi

# plugins: are relative to the pipeline's directory
cp "$BAD/plugin_abi.yaml" "$TMP/"
ln -s "$BUILD/tests/unit/libkwtestops_abi.so" "$TMP/libkwtestops_abi.so"
check plugin_abi 2 "plugin_abi.yaml:3:11: plug-in 'libkwtestops_abi.so': plug-in '$TMP/libkwtestops_abi.so' was built for operator ABI 2, this kvweave has ABI 1" -- validate "$TMP/plugin_abi.yaml"
KVWEAVE_PLUGIN_PATH=$BUILD/tests/unit/libkwtestops_abi.so \
    check plugin_abi_env 2 "KVWEAVE_PLUGIN_PATH: plug-in '$BUILD/tests/unit/libkwtestops_abi.so' was built for operator ABI 2, this kvweave has ABI 1" -- validate "$SRC/tests/pipelines/good/calib.yaml"

GOOD=$SRC/tests/pipelines/good/calib.yaml
check set_bad_type 2 "--set gen.max_new: stage 'gen' (test.gen): param 'max_new' wants an int, got 'abc'" -- validate "$GOOD" --set gen.max_new=abc
check set_unknown_stage 2 "cannot set 'gne.max_new': no stage has this id (did you mean 'gen'?)" -- validate "$GOOD" --set gne.max_new=3
check missing_file 2 "cannot open '$BAD/nope.yaml'" -- validate "$BAD/nope.yaml"
check usage 2 "which pipeline?" -- validate
check good 0 "ok: calib-demo (7 stages, 6 cells)" -- validate "$GOOD"
check good_set 0 "ok: calib-demo (7 stages, 3 cells)" -- validate "$GOOD" --set gen.max_new=8
check plan 0 "phase calibration (4 stages; samples: ratio 0.25, seed 7)" -- plan "$GOOD" --cell 5
check plan_cell 0 "cell gen.max_new=32,evict.capacity=256" -- plan "$GOOD" --cell 5
check plan_no_cell 2 "--cell 6: the sweep has 6 cells" -- plan "$GOOD" --cell 6

# kvweave gen model (also spelled gen-model): bad arguments, then a one-layer model
check gen_model_like 2 "unknown --like 'nope' (known: smollm2-135m, llama-3.1-8b, qwen2.5-7b)" -- gen model --like nope --out "$TMP/gm"
check gen_model_dtype 2 "--dtype wants bf16, f16 or f32, got 'q4'" -- gen model --like smollm2-135m --dtype q4 --out "$TMP/gm"
check gen_model_layers 2 "--layers wants a non-negative integer, got '-3'" -- gen model --like smollm2-135m --layers -3 --out "$TMP/gm"
check gen_model_usage 2 "usage: kvweave gen model" -- gen-model
check gen_model_alias 0 "wrote $TMP/gm/model.gguf (smollm2-135m, 1 layer, bf16" -- gen-model --like smollm2-135m --layers 1 --out "$TMP/gm"

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
echo "all bad inputs rejected with exit 2 and a clear message"
