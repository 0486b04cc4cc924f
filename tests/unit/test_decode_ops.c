/* Harness tests of the decode operators on a real CPU engine over a tiny random model,
 * driven through a stand-in of the engine side of op.h (params from a JSON object with
 * the operator's defaults, tasks with inputs and a completion flag). They prove what the
 * operators decide: the generation length rule, the sample carried into the
 * generation, the teacher-forced split. */
#include <math.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "op_standin.h"
#include "runtime_support.h"

extern const kw_op kw_op_decode_greedy, kw_op_decode_teacher_forced, kw_op_decode_fidelity;
extern const kw_op kw_op_score_fidelity, kw_op_score_ppl;

/* ---- helpers ---- */

static kw_model *model;
static kw_model_config cfg;
static kw_engine *engine;

static int setup(void **s)
{
    (void)s;
    cfg = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    model = rt_tiny_model(&cfg, 21);
    kw_engine_opts o = kw_engine_defaults();
    o.page_tokens = 8;
    o.n_pages = 4096;
    o.chunk = 32;
    kw_error err = {0};
    return kw_engine_open_model(model, &o, &engine, &err);
}

static int teardown(void **s)
{
    (void)s;
    engine = kw_engine_close(engine);
    rt_tiny_free(model);
    return 0;
}

static kw_value *tokens_value(int n, int max_new, json_t *sample, json_t *extra)
{
    kw_tokens *t = calloc(1, sizeof *t);
    t->ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        t->ids[i] = (int32_t)((i * 13 + 5) % cfg.n_vocab);
    t->n = n;
    t->max_new = max_new;
    t->sample = sample;
    t->extra = extra;
    return kw_value_tokens(t);
}

/* Runs one task of `op` with `params` on `in` (and `in1` on port 1, nullable); returns
 * the task (free with task_free). */
static kw_task *run_op2(const kw_op *op, json_t *params, kw_value *in, kw_value *in1)
{
    kw_opctx c = {.op = op, .params = params, .engine = engine};
    void *st = calloc(1, op->state_size ? op->state_size : 1);
    kw_error err = {0};
    if (op->init)
        assert_int_equal(op->init(&c, st, &err), 0);
    kw_task *t = malloc(sizeof *t);
    st_task_init(t, 3);
    st_task_set_in(t, 0, in);
    st_task_set_in(t, 1, in1);
    t->rc = st_wait(t, op->run(&c, st, t));
    if (op->fini)
        op->fini(&c, st);
    free(st);
    json_decref(params);
    json_decref(c.records);
    return t;
}

static kw_task *run_op(const kw_op *op, json_t *params, kw_value *in)
{
    return run_op2(op, params, in, NULL);
}

static void task_free(kw_task *t)
{
    st_task_clear(t);
    free(t);
}

static json_t *gen_of(kw_task *t)
{
    if (t->rc < 0)
        fail_msg("task failed (%d): %s", t->rc, t->msg);
    assert_non_null(t->out[0]);
    return kw_value_jsonobj(t->out[0]);
}

/* ---- tests ---- */

/* An explicitly set max_new wins; else the data set's; else the param default (64). */
static void test_greedy_max_new_param_beats_data_set_beats_default(void **s)
{
    (void)s;
    struct { const char *params; int data, want; } cases[] = {
        {"{\"max_new\": 3, \"ignore_eos\": true}", 7, 3},
        {"{\"ignore_eos\": true}", 7, 7},
        {"{\"ignore_eos\": true}", 0, 64},
        {"{\"max_new\": 64, \"ignore_eos\": true}", 5, 64},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kw_task *t = run_op(&kw_op_decode_greedy, json_loads(cases[i].params, 0, NULL),
                            tokens_value(6, cases[i].data, NULL, NULL));
        json_t *g = gen_of(t);
        if (json_integer_value(json_object_get(g, "n_gen")) != cases[i].want)
            fail_msg("case %zu: n_gen %lld, want %d", i,
                     (long long)json_integer_value(json_object_get(g, "n_gen")), cases[i].want);
        assert_null(json_object_get(g, "sample"));
        task_free(t);
    }
}

/* The generation carries the tokens' source record as "sample" (the same object). */
static void test_generation_carries_the_sample(void **s)
{
    (void)s;
    json_t *smp = json_pack("{s:s,s:[s]}", "task", "niah_single_1", "outputs", "1234567");
    kw_task *t = run_op(&kw_op_decode_greedy, json_pack("{s:i}", "max_new", 2),
                        tokens_value(4, 0, json_incref(smp), NULL));
    json_t *g = gen_of(t);
    assert_ptr_equal(json_object_get(g, "sample"), smp);
    assert_true(json_equal(json_object_get(g, "sample"), smp));
    task_free(t);
    assert_int_equal(smp->refcount, 1); /* the generation and the tokens let go of it */
    json_decref(smp);
}

/* teacher_forced: prefill P, then `steps` if set, else the data set's max_new, else
 * all the rest; a continuation is capped by steps. */
static void test_teacher_forced_steps_rule(void **s)
{
    (void)s;
    struct { const char *params; int n, data, want; } cases[] = {
        {"{\"prefill\": 10, \"steps\": 4}", 20, 6, 4},
        {"{\"prefill\": 10}", 20, 6, 6},
        {"{\"prefill\": 10}", 20, 0, 10},
        {"{\"steps\": 2}", 8, 0, 2},
        {"{}", 8, 0, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *extra = json_pack("{s:[i,i,i,i,i]}", "continuation", 1, 2, 3, 4, 5);
        kw_task *t = run_op(&kw_op_decode_teacher_forced, json_loads(cases[i].params, 0, NULL),
                            tokens_value(cases[i].n, cases[i].data, NULL, extra));
        json_t *g = gen_of(t);
        if (json_array_size(json_object_get(g, "logprobs")) != (size_t)cases[i].want)
            fail_msg("case %zu: %zu positions, want %d", i,
                     json_array_size(json_object_get(g, "logprobs")), cases[i].want);
        task_free(t);
    }
    kw_task *t = run_op(&kw_op_decode_teacher_forced, json_pack("{s:i}", "prefill", 8),
                        tokens_value(8, 0, NULL, NULL));
    assert_int_equal(t->rc, KW_ERANGE);
    assert_non_null(strstr(t->msg, "prefill 8"));
    task_free(t);
}

/* ---- decode.fidelity -> score.fidelity, score.ppl ---- */

static json_t *score_gen(const kw_op *op, kw_task *gen)
{
    kw_task *t = run_op(op, json_object(), kw_value_ref(gen->out[0]));
    json_t *m = json_incref(gen_of(t));
    task_free(t);
    return m;
}

static double num(json_t *m, const char *k)
{
    json_t *v = json_object_get(m, k);
    if (!json_is_number(v))
        fail_msg("metrics lack '%s'", k);
    return json_number_value(v);
}

/* No KV method: the full branch and the "method" are the same: KL 0, top-1 1, top-5 1,
 * and the two perplexities agree. */
static void test_fidelity_of_full_attention_to_itself_is_perfect(void **s)
{
    (void)s;
    json_t *extra = json_pack("{s:[i,i,i,i,i,i,i,i]}", "continuation", 3, 9, 27, 81, 50, 4, 12, 36);
    kw_task *t = run_op(&kw_op_decode_fidelity, json_object(), tokens_value(40, 0, NULL, extra));
    json_t *g = gen_of(t);
    assert_int_equal(json_array_size(json_object_get(json_object_get(g, "fidelity"), "kl")), 8);
    json_t *f = score_gen(&kw_op_score_fidelity, t), *p = score_gen(&kw_op_score_ppl, t);
    assert_true(num(f, "kl") >= 0 && num(f, "kl") < 1e-6);
    assert_true(num(f, "top1") == 1.0);
    assert_true(num(f, "top5") == 1.0);
    assert_true(num(f, "positions") == 8);
    assert_true(fabs(num(p, "nll") - num(p, "nll_full")) < 1e-5);
    assert_true(num(p, "nll") > 0);
    assert_true(fabs(num(p, "ppl") - exp(num(p, "nll"))) < 1e-9 * num(p, "ppl"));
    json_decref(f), json_decref(p);
    task_free(t);
}

/* A kvmethod that keeps only the last 4 prompt tokens per KV head at prefill end: the
 * method branch departs from the full one (KL > 0 after position 0, which is the
 * prefill's and the same for both); its perplexity is its own, the full one's the
 * reference's. */
static int last4_prefill_end(void *st, kw_lctx *c, const kw_batch *b)
{
    (void)st;
    for (int i = 0; i < b->n_seq; i++)
        for (int h = 0; h < c->cfg->n_head_kv; h++) {
            int n = kw_kvseq_len(b->seqs[i]->kv, c->layer, h);
            int32_t keep[4] = {n - 4, n - 3, n - 2, n - 1};
            int rc = kw_kvseq_keep(b->seqs[i]->kv, c->layer, h, keep, 4);
            if (rc < 0)
                return rc;
        }
    return 0;
}

static const kw_kvhook last4_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                     .roles = KW_ROLE_EVICT, .name = "test.last4",
                                     .on_prefill_end = last4_prefill_end};

static void test_fidelity_sees_an_eviction(void **s)
{
    (void)s;
    kw_kvmethod *km = calloc(1, sizeof *km);
    km->hook = &last4_hook;
    kw_value *method = kw_value_kvmethod(km);
    json_t *extra = json_pack("{s:[i,i,i,i,i,i]}", "continuation", 3, 9, 27, 81, 50, 4);
    kw_task *t = run_op2(&kw_op_decode_fidelity, json_object(), tokens_value(40, 0, NULL, extra),
                         method);
    json_t *fid = json_object_get(gen_of(t), "fidelity");
    assert_true(json_real_value(json_array_get(json_object_get(fid, "kl"), 0)) < 1e-6);
    double later = 0;
    for (size_t i = 1; i < 6; i++)
        later += json_real_value(json_array_get(json_object_get(fid, "kl"), i));
    assert_true(later > 1e-4);
    json_t *f = score_gen(&kw_op_score_fidelity, t), *p = score_gen(&kw_op_score_ppl, t);
    assert_true(num(f, "kl") > 0);
    assert_true(num(f, "top1") >= 0 && num(f, "top1") <= 1);
    assert_true(num(f, "top5") >= num(f, "top1"));
    /* the full branch's perplexity is decode.teacher_forced's without the method */
    kw_task *tf = run_op(&kw_op_decode_teacher_forced, json_object(),
                         tokens_value(40, 0, NULL,
                                      json_pack("{s:[i,i,i,i,i,i]}", "continuation", 3, 9, 27,
                                                81, 50, 4)));
    json_t *pf = score_gen(&kw_op_score_ppl, tf);
    assert_true(fabs(num(p, "nll_full") - num(pf, "nll")) < 1e-5);
    assert_true(fabs(num(p, "nll") - num(pf, "nll")) > 1e-6);
    json_decref(f), json_decref(p), json_decref(pf);
    task_free(tf);
    task_free(t);
}

/* A method that drops prompt tokens after each prompt chunk but the last (the engine
 * here prefills 32 tokens a step): the shared reference is refused with a message that
 * names reference_prefill, and reference_prefill: own gives the exact full branch. */
static const kw_kvhook chunkdrop_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                         .roles = KW_ROLE_EVICT, .name = "test.chunkdrop",
                                         .after_attn = rt_drop_oldest_after_chunk};

static void test_fidelity_reference_prefill_own_for_prefill_time_methods(void **s)
{
    (void)s;
    for (int own = 0; own < 2; own++) {
        kw_kvmethod *km = calloc(1, sizeof *km);
        km->hook = &chunkdrop_hook;
        json_t *extra = json_pack("{s:[i,i,i,i]}", "continuation", 3, 9, 27, 81);
        kw_task *t = run_op2(&kw_op_decode_fidelity,
                             json_pack("{s:s}", "reference_prefill", own ? "own" : "shared"),
                             tokens_value(40, 0, NULL, extra), kw_value_kvmethod(km));
        if (!own) {
            assert_int_equal(t->rc, KW_ERANGE);
            assert_non_null(strstr(t->msg, "reference_prefill: own"));
            task_free(t);
            continue;
        }
        json_t *p = score_gen(&kw_op_score_ppl, t);
        kw_task *tf = run_op(&kw_op_decode_teacher_forced, json_object(),
                             tokens_value(40, 0, NULL,
                                          json_pack("{s:[i,i,i,i]}", "continuation", 3, 9, 27, 81)));
        json_t *pf = score_gen(&kw_op_score_ppl, tf);
        assert_true(fabs(num(p, "nll_full") - num(pf, "nll")) < 1e-5);
        json_decref(p), json_decref(pf);
        task_free(tf);
        task_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_max_new_param_beats_data_set_beats_default),
        cmocka_unit_test(test_generation_carries_the_sample),
        cmocka_unit_test(test_teacher_forced_steps_rule),
        cmocka_unit_test(test_fidelity_of_full_attention_to_itself_is_perfect),
        cmocka_unit_test(test_fidelity_sees_an_eviction),
        cmocka_unit_test(test_fidelity_reference_prefill_own_for_prefill_time_methods),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
