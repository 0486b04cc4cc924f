/* What the selection hooks (retrieve.*) share: the per-layer budget they copy from their
 * input, a sequence's budget from a prompt ratio, their params' head and their state,
 * and the operator side of the budget input and the ratio. */
#ifndef KW_OPS_RETRIEVE_SHARED_H
#define KW_OPS_RETRIEVE_SHARED_H

#include <stdint.h>

#include <stddef.h>

#include "kvweave/budget.h"
#include "kvweave/kvhook.h"
#include "kvweave/model.h"
#include "kvweave/op.h"

/* Per-layer token budgets, (n_layer, n_kv) (tokens NULL: none). */
typedef struct kw_rbudget {
    int32_t *tokens;
    int n_layer, n_kv;
} kw_rbudget;

/* A copy of in (nullable: none); KW_ENOMEM. */
int kw__rbudget_copy(const kw_budget *in, kw_rbudget *out);
/* KW_EINVAL with op's name and both shapes when b was made for another model. */
int kw__rbudget_check(const kw_rbudget *b, const kw_model_config *cfg, const char *op,
                      kw_error *err);
static inline int kw__rbudget_at(const kw_rbudget *b, int layer, int kvh, int otherwise)
{
    return b->tokens ? b->tokens[(int64_t)layer * b->n_kv + kvh] : otherwise;
}

/* budget, or with ratio > 0 round(ratio x n_prompt) (half away from zero), at least 1. */
int kw__ratio_budget(double ratio, int budget, int n_prompt);

/* The first member of a selection hook's params: its name (for errors) and its
 * per-layer budget. */
typedef struct kw_rparams {
    const char *op;
    kw_rbudget b;
} kw_rparams;
/* kw_kvmethod.params_free for params that begin with a kw_rparams. */
void kw__rparams_free(void *params);

/* A new kvmethod of hook (transfer full to *out) with kw__rparams_free, kw__rstate_new
 * and kw__rstate_free; its params (params_size bytes, zeroed, beginning with a
 * kw_rparams) get op and a copy of per_layer (nullable), and *params points at them for
 * the caller to fill the rest. */
int kw__rmethod_new(const kw_kvhook *hook, const char *op, size_t params_size,
                    const kw_budget *per_layer, kw_kvmethod **out, void **params,
                    kw_error *err);

/* A selection hook's state: its params (beginning with a kw_rparams), the model's
 * config, and inv_freq (head_dim / 2): plain RoPE frequencies, for pre-RoPE pools.
 * kw__rstate_new (kw_kvmethod.state_new) checks the params' budget against cfg. */
typedef struct kw_rstate {
    const void *p;
    kw_model_config cfg;
    float *inv_freq;
} kw_rstate;
int kw__rstate_new(const void *params, const kw_model_config *cfg, void **st, kw_error *err);
void kw__rstate_free(void *st);

/* The operator's port 0 and its `ratio` param, for kw__retrieve_budget_in. */
#define KW_RETRIEVE_BUDGET_PORT                                                           \
    {"budget", KW_T_BUDGET, KW_ONCE, KW_PORT_OPTIONAL,                                    \
     "per-layer (per KV head) token budgets; replaces `budget` (e.g. from layer_budget.*)"}
#define KW_RETRIEVE_RATIO_PARAM                                                           \
    {"ratio", KW_PARAM_FLOAT, "0", 0, 1, NULL,                                            \
     "when set > 0: budget = round(ratio x prompt tokens) of each sequence (at least 1), " \
     "same counting (wins over budget; not with a budget input)"}

/* The operator's optional budget input (port 0) and its `ratio` param: *b the input's
 * budget or NULL, *ratio the param when set, else 0. Both set: the task fails (a
 * negative status, already reported). Records budget_source (and budget_ratio). */
int kw__retrieve_budget_in(kw_opctx *c, kw_task *t, const kw_budget **b, double *ratio);

#endif
