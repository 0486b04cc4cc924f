/* compress.streaming — StreamingLLM: keep the first `sink` tokens and the most recent
 * ones, evicting the rest during the prompt and at every decode step, so the KV held
 * stays bounded however long the sequence gets. */
#include <stdlib.h>

#include "evict.h"

#define COUNTS "tokens kept per layer and KV head, sink included, at the end of the prompt " \
               "and after every decode step (generated tokens count: they enter the recent " \
               "window; attention reads the capacity plus the current token)"

static const kw_port ins[] = {{"budget", KW_T_BUDGET, KW_ONCE, KW_PORT_OPTIONAL,
                               "per-layer (per-head) capacities; replaces capacity/ratio"}};
static const kw_port outs[] = {{"method", KW_T_KVMETHOD, KW_ONCE, 0, "the EVICT hook"}};
static const kw_param_spec params[] = {
    {"sink", KW_PARAM_INT, "4", 0, 1e6, NULL, "first tokens always kept (attention sinks)"},
    {"recent", KW_PARAM_INT, "2000", 0, 1e9, NULL,
     "recent tokens kept when capacity and ratio are unset (capacity = sink + recent)"},
    {"capacity", KW_PARAM_INT, "0", 0, 1e9, NULL,
     "tokens kept per layer and KV head: " COUNTS "; 0: sink + recent"},
    {"ratio", KW_PARAM_FLOAT, "0", 0, 1, NULL,
     "when set > 0: capacity = round(ratio x prompt tokens), same counting (wins over "
     "capacity)"},
    {"prefill_evict", KW_PARAM_BOOL, "true", 0, 0, NULL,
     "also evict after each prompt chunk (memory bounded by capacity + chunk during the "
     "prompt; a chunk's queries then see the sink, the recent tokens and their own chunk)"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw__evict_params *p = calloc(1, sizeof *p);
    if (!p)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    p->kind = KW_EVICT_STREAMING;
    p->sink = (int)kw_param_int(c, "sink");
    p->prefill_evict = kw_param_bool(c, "prefill_evict");
    return kw__evict_emit(c, t, p, true, p->sink + (int)kw_param_int(c, "recent"), COUNTS);
}

const kw_op kw_op_compress_streaming = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.streaming", .version = 1,
    .doc = "StreamingLLM eviction: the first sink tokens plus the most recent ones per layer "
           "and KV head, evicted after every prompt chunk and every decode step (pages freed, "
           "memory bounded). Budget: " COUNTS,
    .lanes = KW_LANE_CPU, .inputs = ins, .n_inputs = 1,
    .outputs = outs, .n_outputs = 1, .params = params,
    .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_EVICT,
};
