/* retrieve.quest's hook, for the operator and its tests: query-aware page selection
 * (METHODS.md, Quest) as a SELECT kvmethod. */
#ifndef KW_OPS_RETRIEVE_QUEST_H
#define KW_OPS_RETRIEVE_QUEST_H

#include <stdbool.h>

#include "kvweave/budget.h"
#include "kvweave/kvhook.h"

typedef struct kw_quest_opts {
    int page;         /* tokens per Quest page (need not equal the pool's page) */
    int budget;       /* tokens read per query head and layer (whole pages) */
    int min_pages;    /* at least this many pages, the current one included */
    int dense_layers; /* layers [0, dense_layers) read everything */
    bool kv_rows;     /* a GQA group shares one pick (rows per KV head) */
    double ratio;     /* > 0: each sequence's budget is ratio x its prompt tokens, rounded,
                         at least 1 (budget is then unused); in [0, 1] */
} kw_quest_opts;

/* The token budget of a sequence with n_prompt prompt tokens under o (no per-layer
 * budget): o->budget, or round(o->ratio * n_prompt) >= 1 when o->ratio > 0. */
int kw__quest_seq_budget(const kw_quest_opts *o, int n_prompt);

/* A new kvmethod (transfer full) for o; per_layer (nullable, copied) replaces
 * o->budget by its (layer, KV head) token counts. */
int kw__quest_method(const kw_quest_opts *o, const kw_budget *per_layer, kw_kvmethod **out,
                     kw_error *err);
extern const kw_kvhook kw__quest_hook;

#endif
