/* What the selection hooks share (shared.h). */
#include "shared.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/kvhook.h"

int kw__rbudget_copy(const kw_budget *in, kw_rbudget *out)
{
    *out = (kw_rbudget){0};
    if (!in)
        return 0;
    size_t n = (size_t)in->n_layer * in->n_kv_head;
    if (!(out->tokens = malloc(sizeof(int32_t) * n)))
        return KW_ENOMEM;
    memcpy(out->tokens, in->tokens, sizeof(int32_t) * n);
    out->n_layer = in->n_layer;
    out->n_kv = in->n_kv_head;
    return 0;
}

int kw__rbudget_check(const kw_rbudget *b, const kw_model_config *cfg, const char *op,
                      kw_error *err)
{
    if (b->tokens && (b->n_layer != cfg->n_layer || b->n_kv != cfg->n_head_kv))
        return kw_error_set(err, KW_EINVAL, "%s: budget made for %d layers x %d KV heads, "
                            "the model has %d x %d", op, b->n_layer, b->n_kv, cfg->n_layer,
                            cfg->n_head_kv);
    return 0;
}

int kw__ratio_budget(double ratio, int budget, int n_prompt)
{
    if (!(ratio > 0))
        return budget;
    double b = round(ratio * n_prompt);
    return b < 1 ? 1 : b > INT_MAX ? INT_MAX : (int)b;
}

void kw__rparams_free(void *params)
{
    kw_rparams *p = params;
    if (p)
        free(p->b.tokens);
    free(p);
}

int kw__rmethod_new(const kw_kvhook *hook, const char *op, size_t params_size,
                    const kw_budget *per_layer, kw_kvmethod **out, void **params,
                    kw_error *err)
{
    *out = NULL;
    *params = NULL;
    kw_rparams *p = calloc(1, params_size);
    kw_kvmethod *m = calloc(1, sizeof *m);
    if (!p || !m || kw__rbudget_copy(per_layer, &p->b) < 0) {
        kw__rparams_free(p);
        free(m);
        return kw_error_set(err, KW_ENOMEM, "%s: out of memory", op);
    }
    p->op = op;
    *m = (kw_kvmethod){.hook = hook, .params = p, .params_free = kw__rparams_free,
                       .state_new = kw__rstate_new, .state_free = kw__rstate_free};
    *out = m;
    *params = p;
    return 0;
}

int kw__rstate_new(const void *params, const kw_model_config *cfg, void **out, kw_error *err)
{
    const kw_rparams *p = params;
    int rc = kw__rbudget_check(&p->b, cfg, p->op, err);
    if (rc < 0)
        return rc;
    kw_rstate *st = calloc(1, sizeof *st);
    if (st)
        st->inv_freq = malloc(sizeof(float) * (size_t)(cfg->head_dim / 2 + 1));
    if (!st || !st->inv_freq) {
        free(st);
        return kw_error_set(err, KW_ENOMEM, "%s: out of memory", p->op);
    }
    st->p = params;
    st->cfg = *cfg;
    kw_rope_inv_freq(cfg, st->inv_freq);
    *out = st;
    return 0;
}

void kw__rstate_free(void *pst)
{
    kw_rstate *st = pst;
    if (st)
        free(st->inv_freq);
    free(st);
}

int kw__retrieve_budget_in(kw_opctx *c, kw_task *t, const kw_budget **b, double *ratio)
{
    kw_value *bv = kw_task_in(t, 0);
    bool rs = kw_param_is_set(c, "ratio");
    *b = NULL;
    *ratio = 0;
    if (bv) {
        if (strcmp(kw_value_type(bv), KW_T_BUDGET) != 0)
            return kw_task_fail(t, KW_ETYPE, "%s: input 'budget' is a '%s'", kw_ctx_stage(c),
                                kw_value_type(bv));
        if (rs)
            return kw_task_fail(t, KW_EINVAL, "%s: a budget input and 'ratio' are both set; "
                                "the budget decides the tokens read, leave ratio unset",
                                kw_ctx_stage(c));
        *b = kw_value_data(bv);
    }
    if (rs) /* a ratio > 0 set in the pipeline (or by --set) wins over budget */
        *ratio = kw_param_float(c, "ratio");
    char buf[64];
    if (*b) {
        kw_ctx_record(c, "budget_source", "budget input (per layer, per KV head)");
    } else if (*ratio > 0) {
        kw_ctx_record(c, "budget_source", "ratio");
        snprintf(buf, sizeof buf, "%.17g", *ratio);
        kw_ctx_record(c, "budget_ratio", buf);
    } else {
        kw_ctx_record(c, "budget_source", "param");
    }
    return 0;
}
