/* Harness tests of the compress.* eviction operators through a stand-in of the engine
 * side of op.h: what kvmethod each emits from its parameters or a budget input, what it
 * records (what a budget counts), and what it refuses. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "compress/evict.h"
#include "op_standin.h"

extern const kw_op kw_op_compress_streaming, kw_op_compress_h2o, kw_op_compress_snapkv,
    kw_op_compress_pyramidkv;

/* runs op with params (JSON text) and an optional budget; the kvmethod's params or NULL */
static const kw__evict_params *run_op(const kw_op *op, const char *params, kw_value *budget,
                                      kw_opctx *c, kw_task *t, int want_rc)
{
    *c = (kw_opctx){.op = op, .params = json_loads(params, 0, NULL), .records = json_object()};
    st_task_init(t, 0);
    st_task_set_in(t, 0, kw_value_ref(budget));
    int rc = op->run(c, NULL, t);
    if (rc != want_rc)
        fail_msg("%s %s: rc %d, expected %d (%s)", op->name, params, rc, want_rc, t->msg);
    if (rc < 0)
        return NULL;
    assert_string_equal(kw_value_type(t->out[0]), KW_T_KVMETHOD);
    const kw_kvmethod *m = kw_value_data(t->out[0]);
    assert_string_equal(m->hook->name, op->name);
    assert_true(m->hook->roles & KW_ROLE_EVICT);
    /* what the graph checks stacks with: the roles any hook the operator makes may hold
     * (SnapKV and PyramidKV SELECT too with gqa: per_qhead) */
    assert_true((m->hook->roles & ~op->kv_roles) == 0);
    assert_true(((op->kv_roles ^ m->hook->roles) & ~KW_ROLE_SELECT) == 0);
    assert_non_null(json_object_get(c->records, "budget_counts"));
    return m->params;
}

static void done(kw_opctx *c, kw_task *t)
{
    json_decref(c->params);
    json_decref(c->records);
    st_task_clear(t);
}

static void test_defaults_are_the_publications(void **s)
{
    kw_opctx c;
    kw_task t;
    const kw__evict_params *p = run_op(&kw_op_compress_snapkv, "{}", NULL, &c, &t, 0);
    assert_int_equal(p->capacity, 2048);
    assert_int_equal(p->window, 32);
    assert_int_equal(p->kernel, 5);
    assert_int_equal(p->pooling, KW_POOLING_AVG);
    assert_string_equal(json_string_value(json_object_get(c.records, "budget_source")),
                        "capacity");
    assert_true(((const kw_kvmethod *)kw_value_data(t.out[0]))->hook->needs & KW_NEED_OBS_PROBS);
    done(&c, &t);
    p = run_op(&kw_op_compress_pyramidkv, "{}", NULL, &c, &t, 0);
    assert_true(p->beta == 20 && p->capacity == 2048 && p->window == 32);
    done(&c, &t);
    p = run_op(&kw_op_compress_streaming, "{}", NULL, &c, &t, 0);
    assert_int_equal(p->sink, 4);
    assert_int_equal(p->capacity, 2004);
    assert_true(p->prefill_evict);
    done(&c, &t);
    p = run_op(&kw_op_compress_h2o, "{}", NULL, &c, &t, 0);
    assert_true(p->ratio == 0.2 && p->capacity == 0 && p->heavy_share == 0.5);
    assert_true(((const kw_kvmethod *)kw_value_data(t.out[0]))->hook->needs & KW_NEED_STEP_PROBS);
    assert_string_equal(json_string_value(json_object_get(c.records, "budget_source")), "ratio");
    done(&c, &t);
}

static void test_ratio_wins_when_set_and_budget_input_is_held(void **s)
{
    kw_opctx c;
    kw_task t;
    const kw__evict_params *p = run_op(&kw_op_compress_snapkv, "{\"ratio\": 0.1}", NULL, &c,
                                       &t, 0);
    assert_true(p->ratio == 0.1 && p->capacity == 0);
    done(&c, &t);
    /* a pipeline naming a capacity, swept with --set ratio */
    p = run_op(&kw_op_compress_snapkv, "{\"ratio\": 0.25, \"capacity\": 2048}", NULL, &c, &t, 0);
    assert_true(p->ratio == 0.25 && p->capacity == 0);
    done(&c, &t);
    p = run_op(&kw_op_compress_streaming, "{\"ratio\": 0.5}", NULL, &c, &t, 0);
    assert_true(p->ratio == 0.5 && p->capacity == 0);
    done(&c, &t);
    p = run_op(&kw_op_compress_h2o, "{\"capacity\": 300}", NULL, &c, &t, 0);
    assert_true(p->ratio == 0 && p->capacity == 300);
    done(&c, &t);
    kw_budget *b = kw_budget_new(30, 3, false);
    kw_budget_set_layer(b, 4, 100);
    kw_value *bv = kw_value_budget(b);
    p = run_op(&kw_op_compress_streaming, "{}", bv, &c, &t, 0);
    assert_ptr_equal(p->budget, bv);
    assert_string_equal(json_string_value(json_object_get(c.records, "budget_total_tokens")),
                        "300");
    done(&c, &t); /* the method's reference goes with it */
    kw_value_unref(bv);
}

static void test_contradictory_or_empty_budgets_are_refused(void **s)
{
    kw_opctx c;
    kw_task t;
    kw_value *bv = kw_value_budget(kw_budget_new(2, 2, false));
    run_op(&kw_op_compress_h2o, "{\"ratio\": 0.3}", bv, &c, &t, KW_EINVAL);
    assert_non_null(strstr(t.msg, "budget input and 'ratio'"));
    done(&c, &t);
    kw_value_unref(bv);
    run_op(&kw_op_compress_h2o, "{\"ratio\": 0}", NULL, &c, &t, KW_EINVAL);
    assert_non_null(strstr(t.msg, "nothing to keep"));
    done(&c, &t);
    /* a budget for another model fails when the engine makes the hook's state */
    kw_value *b2 = kw_value_budget(kw_budget_new(2, 2, false));
    run_op(&kw_op_compress_snapkv, "{}", b2, &c, &t, 0);
    const kw_kvmethod *m = kw_value_data(t.out[0]);
    kw_model_config cfg = {.n_layer = 30, .n_head = 9, .n_head_kv = 3, .head_dim = 64};
    void *st = NULL;
    kw_error err = {0};
    assert_int_equal(m->state_new(m->params, &cfg, &st, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "2 layers x 2 KV heads, the model has 30 x 3"));
    done(&c, &t);
    kw_value_unref(b2);
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_defaults_are_the_publications),
        cmocka_unit_test(test_ratio_wins_when_set_and_budget_input_is_held),
        cmocka_unit_test(test_contradictory_or_empty_budgets_are_refused),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
