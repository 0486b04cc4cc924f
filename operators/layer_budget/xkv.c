/* layer_budget.xkv — XKV's per-layer token budgets from calibration stats: the exact
 * greedy of METHODS.md (xkv_alloc.c) on each calibration sample, averaged over the
 * samples and rounded; every head of a layer gets the layer's budget.
 *
 * `ratio` is total_size as a share of the prompt. The budget is a `once` value solved on
 * the calibration samples and reused for every sample (METHODS.md: the allocations are
 * averaged and reused), so the share is taken of the calibration prompts: each
 * calibration sample gets the total of a uniform capacity of ratio x its own prompt
 * (xkv_alloc.h, kw__xkv_ratio_total) and the averaged allocation is the budget of every
 * sample. For a data set of one prompt length (RULER, PG19 windows) that is the share of
 * each prompt; for one of mixed lengths it is the share of the calibration prompts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/budget.h"
#include "kvweave/op.h"
#include "xkv_alloc.h"

static const kw_port ins[] = {
    {"stats", KW_T_STATS, KW_ONCE, 0, "sorted per-head importance per calibration sample "
                                      "(mini_prefill.snap)"},
};
static const kw_port outs[] = {
    {"budget", KW_T_BUDGET, KW_ONCE, 0, "kept prompt tokens per layer (same for each head)"},
};
static const kw_param_spec params[] = {
    {"total_size", KW_PARAM_INT, "0", 0, 1e9, NULL,
     "mode 1: tokens to hand out over all layers (each layer's tokens counted once, not "
     "per head; the window is extra); 0: unset"},
    {"ratio", KW_PARAM_FLOAT, "0", 0, 1, NULL,
     "mode 1 as a share of the prompt, when set > 0 (wins over total_size): each "
     "calibration sample's total_size is n_layer x (round(ratio x its prompt tokens) - "
     "window), the tokens of a uniform capacity of ratio x prompt with the window "
     "included (as compress.* count ratio); prompt tokens = the sample's scored keys + "
     "the stats' window. The averaged allocation is every sample's budget, so for prompts "
     "of mixed lengths it is a share of the calibration prompts"},
    {"set_value", KW_PARAM_FLOAT, "0", 0, 1, NULL,
     "mode 2: stop once the mean over layers of the share of each layer's score that its "
     "kept tokens carry reaches this; 0: unset"},
    {"window", KW_PARAM_INT, "8", 0, 1 << 20, NULL,
     "observation window kept on top of each layer's allocation (XKV: 8)"},
};

static int init(kw_opctx *c, void *st, kw_error *err)
{
    (void)st;
    bool ts = kw_param_int(c, "total_size") > 0 || kw_param_float(c, "ratio") > 0;
    bool sv = kw_param_float(c, "set_value") > 0;
    if (ts == sv)
        return kw_error_set(err, KW_EINVAL, "layer_budget.xkv: set exactly one of total_size "
                            "(or ratio) and set_value (got %s)", ts ? "both" : "neither");
    return 0;
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw_value *v = kw_task_in(t, 0);
    if (!v || strcmp(kw_value_type(v), KW_T_STATS) != 0)
        return kw_task_fail(t, KW_ETYPE, "layer_budget.xkv: input 'stats' is missing");
    const kw_stats *s = kw_value_data(v);
    if (s->n_samples < 1)
        return kw_task_fail(t, KW_EINVAL, "layer_budget.xkv: the stats hold no sample (did "
                            "the calibration phase run on none?)");
    int64_t ts = kw_param_int(c, "total_size");
    double ratio = kw_param_float(c, "ratio");
    kw_xkv_mode mode = ts > 0 || ratio > 0 ? KW_XKV_TOTAL_SIZE : KW_XKV_SET_VALUE;
    double value = ts > 0 ? (double)ts : kw_param_float(c, "set_value");
    int window = (int)kw_param_int(c, "window");
    kw_budget *b = kw_budget_new(s->n_layer, s->n_kv_head, false);
    int32_t *alloc = malloc(sizeof(int32_t) * (size_t)s->n_layer);
    double *values = malloc(sizeof(double) * (size_t)s->n_samples);
    double prompt = 0, total = 0;
    for (int i = 0; values && i < s->n_samples; i++) {
        values[i] = ratio > 0 ? (double)kw__xkv_ratio_total(s, i, ratio, window) : value;
        prompt += (double)kw__xkv_prompt(s, i) / s->n_samples;
        total += values[i] / s->n_samples;
    }
    int rc = b && alloc && values ? kw__xkv_solve_each(s, mode, values, alloc) : KW_ENOMEM;
    free(values);
    if (rc < 0) {
        kw_budget_free(b);
        free(alloc);
        return kw_task_fail(t, rc, "layer_budget.xkv: allocation failed (%s)", kw_strerror(rc));
    }
    char num[96];
    if (ratio > 0) {
        snprintf(num, sizeof num, "%.17g", ratio);
        kw_ctx_record(c, "budget_ratio", num);
        snprintf(num, sizeof num, "%.1f", prompt);
        kw_ctx_record(c, "calibration_prompt_tokens_mean", num);
        snprintf(num, sizeof num, "%.1f", total);
        kw_ctx_record(c, "total_size_mean", num);
    }
    size_t cap = (size_t)s->n_layer * 12 + 1;
    char *txt = malloc(cap);
    int64_t given = 0;
    for (int l = 0, o = 0; l < s->n_layer; l++) {
        kw_budget_set_layer(b, l, alloc[l] + window);
        given += alloc[l];
        if (txt)
            o += snprintf(txt + o, cap - (size_t)o, "%s%d", l ? "," : "", alloc[l]);
    }
    snprintf(num, sizeof num, "%lld over %d samples", (long long)given, s->n_samples);
    kw_ctx_record(c, "allocated_tokens", num);
    if (txt)
        kw_ctx_record(c, "allocation", txt);
    free(txt);
    free(alloc);
    return kw_task_out(t, 0, kw_value_budget(b));
}

const kw_op kw_op_layer_budget_xkv = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "layer_budget.xkv", .version = 1,
    .doc = "XKV per-layer budgets: on each calibration sample, give tokens one at a time to "
           "the layer whose next token adds the most to the share of its score retained "
           "(heads' sorted scores summed), with a heap; exact because the gains are "
           "non-increasing. Modes: total_size (tokens over layers), or the same as ratio "
           "of each calibration sample's prompt (a uniform ratio x prompt capacity per "
           "layer, window included), or set_value (mean retained share). Allocations are "
           "averaged over samples and rounded by largest remainders; the budget is "
           "allocation + window for every head of the layer (prompt tokens kept, window "
           "included; generated tokens not counted), the same for every sample: a ratio is "
           "of the calibration prompts, not of each sample's.",
    .lanes = KW_LANE_CPU, .flags = KW_OP_CACHEABLE,
    .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .init = init, .run = run,
};
