/* layer_budget.uniform and layer_budget.pyramid — budgets from the model's shape alone:
 * the same capacity in every layer, or PyramidKV's linear schedule. */
#include <stdio.h>

#include "kvweave/budget.h"
#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "xkv_alloc.h"

static const kw_port outs[] = {
    {"budget", KW_T_BUDGET, KW_ONCE, 0, "kept prompt tokens per layer (same for each head)"},
};

static const kw_param_spec uparams[] = {
    {"capacity", KW_PARAM_INT, "2048", 1, 1e9, NULL,
     "prompt tokens kept per layer and KV head, the window included"},
};

static const kw_param_spec pparams[] = {
    {"capacity", KW_PARAM_INT, "2048", 1, 1e9, NULL,
     "mean prompt tokens kept per layer and KV head, the window included"},
    {"window", KW_PARAM_INT, "32", 0, 1 << 20, NULL, "observation window (kept in every layer)"},
    {"beta", KW_PARAM_FLOAT, "20", 1, 1e6, NULL, "the last layer keeps (capacity - window) / beta"},
    {"prompt", KW_PARAM_INT, "0", 0, 1e9, NULL,
     "cap the first layer at this many prompt tokens before the window (0: no cap; the "
     "consumer keeps at most the prompt anyway)"},
};

static int shape(kw_opctx *c, kw_task *t, const kw_model_config **cfg)
{
    kw_engine *e = kw_ctx_engine(c);
    const kw_model *m = e ? kw_engine_model(e) : NULL;
    if (!m)
        return kw_task_fail(t, KW_ENOTFOUND, "%s: needs the model's shape and no model is "
                            "loaded", kw_ctx_stage(c));
    *cfg = &m->cfg;
    return 0;
}

static int urun(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    const kw_model_config *cfg = NULL;
    int rc = shape(c, t, &cfg);
    if (rc < 0)
        return rc;
    kw_budget *b = kw_budget_new(cfg->n_layer, cfg->n_head_kv, false);
    if (!b)
        return kw_task_fail(t, KW_ENOMEM, "layer_budget.uniform: out of memory");
    for (int l = 0; l < cfg->n_layer; l++)
        kw_budget_set_layer(b, l, (int32_t)kw_param_int(c, "capacity"));
    return kw_task_out(t, 0, kw_value_budget(b));
}

/* PyramidKV (METHODS.md): B = capacity - window, min = B / beta, max = 2B - min (capped
 * by the prompt), layer i keeps max - i (max - min) / (L - 1) plus the window. Integer
 * division as the original (floor of each term). */
int kw__pyramid_layer(int64_t capacity, int window, double beta, int64_t prompt, int L,
                      int layer)
{
    int64_t B = capacity - window > 0 ? capacity - window : 0;
    int64_t mn = (int64_t)(B / beta), mx = 2 * B - mn;
    if (prompt > 0 && mx > prompt)
        mx = prompt;
    if (L < 2)
        return (int)(B + window);
    int64_t k = mx - (int64_t)layer * (mx - mn) / (L - 1);
    return (int)(k + window);
}

static int prun(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    const kw_model_config *cfg = NULL;
    int rc = shape(c, t, &cfg);
    if (rc < 0)
        return rc;
    kw_budget *b = kw_budget_new(cfg->n_layer, cfg->n_head_kv, false);
    if (!b)
        return kw_task_fail(t, KW_ENOMEM, "layer_budget.pyramid: out of memory");
    for (int l = 0; l < cfg->n_layer; l++)
        kw_budget_set_layer(b, l, kw__pyramid_layer(kw_param_int(c, "capacity"),
                                                    (int)kw_param_int(c, "window"),
                                                    kw_param_float(c, "beta"),
                                                    kw_param_int(c, "prompt"), cfg->n_layer, l));
    return kw_task_out(t, 0, kw_value_budget(b));
}

const kw_op kw_op_layer_budget_uniform = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "layer_budget.uniform", .version = 1,
    .doc = "the same budget in every layer and KV head (prompt tokens kept, window "
           "included; generated tokens not counted)",
    .lanes = KW_LANE_CPU, .flags = KW_OP_CACHEABLE | KW_OP_NEEDS_MODEL,
    .outputs = outs, .n_outputs = 1, .params = uparams,
    .n_params = sizeof uparams / sizeof *uparams, .run = urun,
};

const kw_op kw_op_layer_budget_pyramid = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "layer_budget.pyramid", .version = 1,
    .doc = "PyramidKV's schedule: budgets fall linearly from 2B - B/beta in the first layer "
           "to B/beta in the last (B = capacity - window), plus the window; the same total "
           "as uniform B when the first layer is not capped by the prompt. Counts prompt "
           "tokens kept, window included.",
    .lanes = KW_LANE_CPU, .flags = KW_OP_CACHEABLE | KW_OP_NEEDS_MODEL,
    .outputs = outs, .n_outputs = 1, .params = pparams,
    .n_params = sizeof pparams / sizeof *pparams, .run = prun,
};
