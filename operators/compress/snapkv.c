/* compress.snapkv — SnapKV: after the prompt, keep per KV head the observation window
 * and the prompt tokens the window's queries attend to most (pooled scores), freeing the
 * pages of the rest. Defaults are SnapKV's code defaults (METHODS.md). */
#include <stdlib.h>
#include <string.h>

#include "evict.h"

#define COUNTS "prompt tokens kept per layer and KV head, the observation window included " \
               "(at least the window is kept); generated tokens are not counted and all stay"

static const kw_port ins[] = {{"budget", KW_T_BUDGET, KW_ONCE, KW_PORT_OPTIONAL,
                               "per-layer (per-head) capacities; replaces capacity/ratio"}};
static const kw_port outs[] = {{"method", KW_T_KVMETHOD, KW_ONCE, 0, "the EVICT hook"}};
static const kw_param_spec params[] = {
    {"capacity", KW_PARAM_INT, "2048", 1, 1e9, NULL,
     "tokens kept per layer and KV head: " COUNTS},
    {"ratio", KW_PARAM_FLOAT, "0", 0, 1, NULL,
     "when set > 0: capacity = round(ratio x prompt tokens), same counting (wins over "
     "capacity)"},
    {"window", KW_PARAM_INT, "32", 1, 4096, NULL,
     "observation window: the last prompt queries that score, always kept (at most the "
     "engine's obs_window)"},
    {"kernel", KW_PARAM_INT, "5", 1, 255, NULL, "1-D pooling kernel over the scores"},
    {"pooling", KW_PARAM_ENUM, "avg", 0, 0, "avg|max", "pooling: avg (SnapKV) or max"},
    {"gqa", KW_PARAM_ENUM, "mean", 0, 0, "mean|per_qhead",
     "mean: the scores of a KV head's query heads averaged, one selection per KV head; "
     "per_qhead: each query head keeps its own top tokens (the pool keeps their union, "
     "each query head reads its own: more memory, the same tokens attended)"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw__evict_params *p = calloc(1, sizeof *p);
    if (!p)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    p->kind = KW_EVICT_SNAPKV;
    p->window = (int)kw_param_int(c, "window");
    p->kernel = (int)kw_param_int(c, "kernel");
    p->pooling = strcmp(kw_param_str(c, "pooling"), "max") ? KW_POOLING_AVG : KW_POOLING_MAX;
    p->per_qhead = !strcmp(kw_param_str(c, "gqa"), "per_qhead");
    return kw__evict_emit(c, t, p, true, 0, COUNTS);
}

const kw_op kw_op_compress_snapkv = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.snapkv", .version = 1,
    .doc = "SnapKV eviction after prefill: per KV head, the observation window's attention "
           "(summed over its queries, averaged over the group's query heads), pooled; top "
           "(capacity - window) tokens plus the window kept, pages freed. gqa: per_qhead "
           "keeps each query head's own top tokens (SnapKV's own way, which repeats KV "
           "heads): the pool keeps their union, each query head reads its own. "
           "Budget: " COUNTS,
    .lanes = KW_LANE_CPU, .inputs = ins, .n_inputs = 1,
    .outputs = outs, .n_outputs = 1, .params = params,
    .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_EVICT | KW_ROLE_SELECT, /* SELECT with gqa: per_qhead */
};
