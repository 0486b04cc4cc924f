/* compress.pyramidkv — PyramidKV: SnapKV's selection with per-layer capacities that
 * decrease linearly from the first layer to the last (beta schedule, METHODS.md), the
 * same total as a uniform capacity. */
#include <stdlib.h>
#include <string.h>

#include "evict.h"

#define COUNTS "average prompt tokens kept per layer and KV head over the layers, the " \
               "observation window included; layer l keeps its scheduled share plus the " \
               "window; generated tokens are not counted and all stay"

static const kw_port outs[] = {{"method", KW_T_KVMETHOD, KW_ONCE, 0, "the EVICT hook"}};
static const kw_param_spec params[] = {
    {"capacity", KW_PARAM_INT, "2048", 1, 1e9, NULL,
     "uniform capacity the schedule redistributes: " COUNTS},
    {"ratio", KW_PARAM_FLOAT, "0", 0, 1, NULL,
     "when set > 0: capacity = round(ratio x prompt tokens), same counting (wins over "
     "capacity)"},
    {"window", KW_PARAM_INT, "32", 1, 4096, NULL, "observation window, always kept"},
    {"kernel", KW_PARAM_INT, "5", 1, 255, NULL, "1-D pooling kernel over the scores"},
    {"pooling", KW_PARAM_ENUM, "avg", 0, 0, "avg|max", "pooling: avg or max"},
    {"gqa", KW_PARAM_ENUM, "mean", 0, 0, "mean|per_qhead",
     "mean: the scores of a KV head's query heads averaged, one selection per KV head; "
     "per_qhead: each query head keeps its own top tokens (the pool keeps their union, "
     "each query head reads its own: more memory, the same tokens attended)"},
    {"beta", KW_PARAM_FLOAT, "20", 1, 1e6, NULL,
     "the last layer keeps (capacity - window) / beta tokens besides the window"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw__evict_params *p = calloc(1, sizeof *p);
    if (!p)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    p->kind = KW_EVICT_PYRAMID;
    p->window = (int)kw_param_int(c, "window");
    p->kernel = (int)kw_param_int(c, "kernel");
    p->pooling = strcmp(kw_param_str(c, "pooling"), "max") ? KW_POOLING_AVG : KW_POOLING_MAX;
    p->per_qhead = !strcmp(kw_param_str(c, "gqa"), "per_qhead");
    p->beta = kw_param_float(c, "beta");
    return kw__evict_emit(c, t, p, false, 0, COUNTS);
}

const kw_op kw_op_compress_pyramidkv = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.pyramidkv", .version = 1,
    .doc = "PyramidKV eviction after prefill: SnapKV scoring and selection per KV head with "
           "capacities decreasing linearly over the layers (beta schedule; no eviction when "
           "the prompt fits the capacity); pages freed. For external per-layer budgets use "
           "compress.snapkv with a budget input. gqa: per_qhead selects per query head "
           "(SnapKV's own way), the pool keeping their union. Budget: " COUNTS,
    .lanes = KW_LANE_CPU, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_EVICT | KW_ROLE_SELECT, /* SELECT with gqa: per_qhead */
};
