/* The part of the compress.* eviction operators that reads their parameters: capacity
 * or ratio, or a budget input, checked and recorded; the kvmethod goes to output 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"

int kw__evict_emit(kw_opctx *c, kw_task *t, kw__evict_params *p, bool has_budget_port,
                   int default_capacity, const char *counts)
{
    kw_value *bv = has_budget_port ? kw_task_in(t, 0) : NULL;
    bool rs = kw_param_is_set(c, "ratio"), cs = kw_param_is_set(c, "capacity");
    char buf[64];
    int rc = 0;
    if (bv && strcmp(kw_value_type(bv), KW_T_BUDGET) != 0)
        rc = kw_task_fail(t, KW_ETYPE, "%s: the budget input is a '%s' value", kw_ctx_stage(c),
                          kw_value_type(bv));
    else if (bv && (rs || cs))
        rc = kw_task_fail(t, KW_EINVAL, "%s: a budget input and '%s' are both set; the budget "
                          "decides the capacity, leave capacity and ratio unset",
                          kw_ctx_stage(c), rs ? "ratio" : "capacity");
    else if (rs && cs)
        rc = kw_task_fail(t, KW_EINVAL, "%s: set capacity or ratio, not both", kw_ctx_stage(c));
    if (rc < 0) {
        free(p);
        return rc;
    }
    p->capacity = (int)kw_param_int(c, "capacity");
    p->ratio = kw_param_float(c, "ratio");
    if (rs)
        p->capacity = 0;
    else if (p->capacity > 0)
        p->ratio = 0;
    else if (!cs && default_capacity > 0)
        p->capacity = default_capacity, p->ratio = 0;
    if (!bv && p->capacity <= 0 && p->ratio <= 0) {
        free(p);
        return kw_task_fail(t, KW_EINVAL, "%s: capacity and ratio are both 0: nothing to keep",
                            kw_ctx_stage(c));
    }
    if (bv) {
        const kw_budget *b = kw_value_data(bv);
        p->budget = kw_value_ref(bv);
        kw_ctx_record(c, "budget_source", "input");
        snprintf(buf, sizeof buf, "%lld", (long long)kw_budget_total(b));
        kw_ctx_record(c, "budget_total_tokens", buf);
        kw_ctx_record(c, "budget_per_head", b->per_head ? "true" : "false");
    } else if (p->ratio > 0) {
        kw_ctx_record(c, "budget_source", "ratio");
        snprintf(buf, sizeof buf, "%.17g", p->ratio);
        kw_ctx_record(c, "budget_ratio", buf);
    } else {
        kw_ctx_record(c, "budget_source", "capacity");
        snprintf(buf, sizeof buf, "%d", p->capacity);
        kw_ctx_record(c, "budget_capacity", buf);
    }
    kw_ctx_record(c, "budget_counts", counts);
    kw_kvmethod *m = kw__evict_method(p);
    if (!m)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    kw_value *v = kw_value_kvmethod(m);
    if (!v)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    return kw_task_out(t, 0, v);
}
