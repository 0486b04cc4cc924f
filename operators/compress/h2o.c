/* compress.h2o — H2O: accumulate each token's attention over every query seen (the
 * prompt's and each decode step's), keep the heavy hitters plus a recent window within
 * the capacity, and evict one token per decode step so memory stays bounded. */
#include <stdlib.h>

#include "evict.h"

#define COUNTS "tokens kept per layer and KV head (heavy hitters + recent window) at the end " \
               "of the prompt and after every decode step (generated tokens count: they enter " \
               "the recent window; attention reads the capacity plus the current token)"

static const kw_port ins[] = {{"budget", KW_T_BUDGET, KW_ONCE, KW_PORT_OPTIONAL,
                               "per-layer (per-head) capacities; replaces capacity/ratio"}};
static const kw_port outs[] = {{"method", KW_T_KVMETHOD, KW_ONCE, 0, "the EVICT hook"}};
static const kw_param_spec params[] = {
    {"capacity", KW_PARAM_INT, "0", 0, 1e9, NULL,
     "tokens kept per layer and KV head: " COUNTS "; 0: use ratio"},
    {"ratio", KW_PARAM_FLOAT, "0.2", 0, 1, NULL,
     "capacity = round(ratio x prompt tokens) (H2O's 20%: 10% heavy + 10% recent)"},
    {"heavy_share", KW_PARAM_FLOAT, "0.5", 0, 1, NULL,
     "share of the capacity for heavy hitters; the rest is the recent window"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw__evict_params *p = calloc(1, sizeof *p);
    if (!p)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    p->kind = KW_EVICT_H2O;
    p->heavy_share = kw_param_float(c, "heavy_share");
    return kw__evict_emit(c, t, p, true, 0, COUNTS);
}

const kw_op kw_op_compress_h2o = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.h2o", .version = 1,
    .doc = "H2O eviction: attention accumulated per token over all queries seen (mean over "
           "the KV head's query heads), heavy hitters + recent window kept per layer and KV "
           "head after the prompt and after every decode step (pages freed, memory bounded). "
           "Budget: " COUNTS,
    .lanes = KW_LANE_CPU, .inputs = ins, .n_inputs = 1,
    .outputs = outs, .n_outputs = 1, .params = params,
    .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_EVICT,
};
