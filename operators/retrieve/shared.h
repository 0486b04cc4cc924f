/* What the selection hooks (retrieve.*) share: the per-layer budget they copy from their
 * input, a sequence's budget from a prompt ratio, and the operator side of the budget
 * input and the ratio. */
#ifndef KW_OPS_RETRIEVE_SHARED_H
#define KW_OPS_RETRIEVE_SHARED_H

#include <stdint.h>

#include "kvweave/budget.h"
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

/* The operator's optional budget input (port 0) and its `ratio` param: *b the input's
 * budget or NULL, *ratio the param when set, else 0. Both set: the task fails (a
 * negative status, already reported). Records budget_source (and budget_ratio). */
int kw__retrieve_budget_in(kw_opctx *c, kw_task *t, const kw_budget **b, double *ratio);

#endif
