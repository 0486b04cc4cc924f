/* retrieve.quest: the hook's page choice against a brute-force top-k on random keys
 * and queries (as tokens append, and after the table is compacted under it), the dense
 * layers, prefill and the current page; through the engine, a budget that covers the
 * context gives exactly the dense outputs, and a small budget lowers the tokens
 * attended per step while the KV memory stays the same; the operator's outputs. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvweave/budget.h"
#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "op_standin.h"
#include "retrieve/quest.h"
#include "hook_fixture.h"
#include "runtime_support.h"

extern const kw_op kw_op_retrieve_quest;

/* ---- the hook on a pool filled with random K ---- */

static void fill(hook_fx *fx, int n_tok, int32_t pos0)
{
    const kw_model_config *c = &fx->cfg;
    int kd = c->n_head_kv * c->head_dim;
    float *k = malloc(sizeof(float) * (size_t)n_tok * kd);
    float *v = malloc(sizeof(float) * (size_t)n_tok * kd);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok);
    for (int l = 0; l < c->n_layer; l++) {
        for (int64_t i = 0; i < (int64_t)n_tok * kd; i++) {
            k[i] = (float)(rt_rand01(&fx->rs) * 2 - 1) + (i % 3 ? 0.25f : -0.5f);
            v[i] = (float)(rt_rand01(&fx->rs) * 2 - 1);
        }
        for (int t = 0; t < n_tok; t++)
            pos[t] = pos0 + t;
        assert_int_equal(kw_kvseq_append(fx->seq.kv, l, k, v, pos, n_tok), 0);
    }
    free(k), free(v), free(pos);
}

static void fx_open(hook_fx *fx, int pool_page, const kw_quest_opts *o)
{
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    cfg.n_layer = 4;
    cfg.head_dim = 16;
    kw_kvmethod *m;
    kw_error err = {0};
    assert_int_equal(kw__quest_method(o, NULL, &m, &err), 0);
    hfx_open(fx, &cfg, pool_page, 8192, m, 0, 0);
    fx->rs = 0x5eed;
}

/* Brute force: the page score of every page in double from the stored keys; page p
 * other than the last is chosen iff fewer than k - 1 pages beat it (higher score, or
 * equal and lower index). Pages within 1e-4 of the k-th score may go either way
 * (f32 kernel against f64 here). Returns the number of rows checked with selection. */
static int check_layer(hook_fx *fx, int layer, const float *q, const kw_quest_opts *o)
{
    const kw_model_config *c = &fx->cfg;
    int hd = c->head_dim, g = c->n_head / c->n_head_kv, Q = o->page, checked = 0;
    assert_true(fx->w->per_qhead == !o->kv_rows);
    int rows = o->kv_rows ? c->n_head_kv : c->n_head;
    for (int r = 0; r < rows; r++) {
        int kvh = o->kv_rows ? r : r / g, n = kw_kvseq_len(fx->seq.kv, layer, kvh);
        int np = (n + Q - 1) / Q;
        int k = o->budget / Q < o->min_pages ? o->min_pages : o->budget / Q;
        char *got = malloc((size_t)n);
        bool want;
        hfx_row_marks(fx, layer, r, got, n);
        double *sc = malloc(sizeof(double) * (size_t)np);
        for (int p = 0; p < np; p++)
            sc[p] = -INFINITY;
        /* a query head's row: its own bound; a KV head's row: the largest of its group's */
        for (int qh = o->kv_rows ? kvh * g : r; qh < (o->kv_rows ? kvh * g + g : r + 1); qh++)
            for (int p = 0; p < np; p++) {
                double b = 0;
                for (int i = 0; i < hd; i++) {
                    double mn = INFINITY, mx = -INFINITY;
                    for (int j = p * Q; j < n && j < (p + 1) * Q; j++) {
                        float kb[64];
                        assert_int_equal(kw_kvseq_token_f32(fx->seq.kv, layer, kvh, j, kb, NULL,
                                                            NULL), 0);
                        mn = fmin(mn, kb[i]);
                        mx = fmax(mx, kb[i]);
                    }
                    double qi = q[qh * hd + i];
                    b += fmax(qi * mn, qi * mx);
                }
                sc[p] = fmax(sc[p], b);
            }
        double *sorted = malloc(sizeof(double) * (size_t)np);
        int ns = 0;
        for (int p = 0; p < np - 1; p++)
            sorted[ns++] = sc[p];
        for (int a = 0; a < ns; a++) /* descending */
            for (int b = a + 1; b < ns; b++)
                if (sorted[b] > sorted[a]) {
                    double t = sorted[a];
                    sorted[a] = sorted[b];
                    sorted[b] = t;
                }
        for (int p = 0; p < np; p++) {
            if (np <= k || p == np - 1) {
                want = true;
            } else {
                int beat = 0;
                for (int x = 0; x < np - 1; x++)
                    beat += sc[x] > sc[p] || (sc[x] == sc[p] && x < p);
                want = beat < k - 1;
                if (fabs(sc[p] - sorted[k - 2]) < 1e-4 || fabs(sc[p] - sorted[k - 1]) < 1e-4)
                    continue;
            }
            for (int j = p * Q; j < n && j < (p + 1) * Q; j++)
                assert_int_equal(got[j], want);
        }
        checked += np > k;
        free(got), free(sc), free(sorted);
    }
    return checked;
}

static float *rand_q(hook_fx *fx)
{
    int n = fx->cfg.n_head * fx->cfg.head_dim;
    float *q = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++)
        q[i] = (float)(rt_rand01(&fx->rs) * 2 - 1);
    return q;
}

static void brute_force_case(int pool_page, int quest_page, int budget, bool kv_rows)
{
    kw_quest_opts o = {.page = quest_page, .budget = budget, .min_pages = 3, .dense_layers = 2,
                       .kv_rows = kv_rows};
    hook_fx fx;
    fx_open(&fx, pool_page, &o);
    fill(&fx, 203, 0);
    int checked = 0;
    for (int step = 0; step < 40; step++) {
        for (int l = 2; l < fx.cfg.n_layer; l++) {
            float *q = rand_q(&fx);
            assert_int_equal(hfx_select(&fx, l, false, q), 0);
            checked += check_layer(&fx, l, q, &o);
            free(q);
        }
        fill(&fx, 1, 203 + step); /* a decode token appends to the last page */
        if (step == 25) {         /* an EVICT hook compacts every table under Quest */
            for (int l = 0; l < fx.cfg.n_layer; l++)
                for (int h = 0; h < fx.cfg.n_head_kv; h++) {
                    int n = kw_kvseq_len(fx.seq.kv, l, h), nk = 0;
                    int32_t *keep = malloc(sizeof(int32_t) * (size_t)n);
                    for (int j = 0; j < n; j++)
                        if (j % 5 != 2)
                            keep[nk++] = j;
                    assert_int_equal(kw_kvseq_keep(fx.seq.kv, l, h, keep, nk), 0);
                    free(keep);
                }
        }
    }
    assert_true(checked > 100);
    assert_true(fx.seq.meta_bytes > 0);
    hfx_close(&fx);
}

static void test_quest_pages_equal_brute_force_top_k(void **s)
{
    (void)s;
    brute_force_case(16, 16, 64, false);  /* pool pages are Quest pages */
    brute_force_case(8, 16, 80, false);   /* a Quest page spans two pool pages */
    brute_force_case(16, 5, 41, false);   /* Quest pages cut pool pages */
    brute_force_case(16, 16, 64, true);   /* a GQA group shares its pick */
}

static void test_quest_dense_layers_prefill_and_current_page(void **s)
{
    (void)s;
    kw_quest_opts o = {.page = 16, .budget = 16, .min_pages = 3, .dense_layers = 2};
    hook_fx fx;
    fx_open(&fx, 16, &o);
    fill(&fx, 300, 0);
    float *q = rand_q(&fx);
    for (int l = 0; l < 2; l++) { /* dense layers: the view is left dense */
        assert_int_equal(hfx_select(&fx, l, false, q), 0);
        assert_false(fx.w->per_qhead);
        assert_int_equal(kw_view_tokens(fx.w), 300 * fx.cfg.n_head_kv);
    }
    assert_int_equal(hfx_select(&fx, 3, true, q), 0); /* prefill: dense */
    assert_false(fx.w->per_qhead);
    assert_int_equal(hfx_select(&fx, 3, false, q), 0);
    assert_true(fx.w->per_qhead);
    char got[300];
    for (int r = 0; r < fx.cfg.n_head; r++) {
        assert_int_equal(kw_view_row_tokens(fx.w, r), 3 * 16 - 4); /* the last page has 12 */
        hfx_row_marks(&fx, 3, r, got, 300);
        for (int j = 288; j < 300; j++)
            assert_true(got[j]);
    }
    free(q);
    hfx_close(&fx);
}

/* Reopens the fixture's sequence as one whose prompt has n_prompt tokens. */
static void fx_reopen(hook_fx *fx, int n_prompt)
{
    fx->m->hook->seq_close(fx->st, &fx->seq, 0);
    fx->seq.n_prompt = n_prompt;
    assert_int_equal(fx->m->hook->seq_open(fx->st, &fx->seq, 0), 0);
}

/* With ratio, a sequence's budget is ratio x its own prompt, fixed when it opens: the
 * same 320 stored tokens are read as 5, 10 or min_pages pages by sequences whose
 * prompts differ, where budget alone (1024) would read them all. */
static void test_quest_ratio_budget_is_a_share_of_each_prompt(void **s)
{
    (void)s;
    kw_quest_opts o = {.page = 16, .budget = 1024, .min_pages = 3, .dense_layers = 2};
    assert_int_equal(kw__quest_seq_budget(&o, 320), 1024);
    o.ratio = 0.25;
    assert_int_equal(kw__quest_seq_budget(&o, 320), 80);
    assert_int_equal(kw__quest_seq_budget(&o, 203), 51); /* 50.75 rounds up */
    assert_int_equal(kw__quest_seq_budget(&o, 202), 51); /* 50.5: half away from zero */
    assert_int_equal(kw__quest_seq_budget(&o, 201), 50);
    assert_int_equal(kw__quest_seq_budget(&o, 1), 1);    /* at least one token */
    static const struct { int n_prompt, tokens; } want[] = {
        {320, 5 * 16},  /* 80 tokens: 5 pages */
        {640, 10 * 16}, /* 160 tokens: 10 pages */
        {100, 3 * 16},  /* 25 tokens: 1 page, min_pages 3 */
        {400, 6 * 16},  /* 100 tokens: 6 whole pages */
    };
    hook_fx fx;
    fx_open(&fx, 16, &o);
    fill(&fx, 320, 0);
    float *q = rand_q(&fx);
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        fx_reopen(&fx, want[i].n_prompt);
        assert_int_equal(hfx_select(&fx, 3, false, q), 0);
        assert_true(fx.w->per_qhead);
        for (int r = 0; r < fx.cfg.n_head; r++)
            assert_int_equal(kw_view_row_tokens(fx.w, r), want[i].tokens);
        assert_int_equal(check_layer(&fx, 3, q, &(kw_quest_opts){.page = 16,
                                     .budget = want[i].tokens, .min_pages = 3}),
                         fx.cfg.n_head);
    }
    hfx_close(&fx);
    /* without ratio the same prompt reads everything: the view stays dense */
    o.ratio = 0;
    fx_open(&fx, 16, &o);
    fill(&fx, 320, 0);
    fx_reopen(&fx, 320);
    assert_int_equal(hfx_select(&fx, 3, false, q), 0);
    assert_false(fx.w->per_qhead);
    free(q);
    hfx_close(&fx);
    kw_kvmethod *m;
    kw_error err = {0};
    o.ratio = 1.5;
    assert_int_equal(kw__quest_method(&o, NULL, &m, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "ratio 1.5"));
}

/* ---- through the engine ---- */

typedef struct sink {
    pthread_mutex_t mu;
    kw_gen_result *res;
} sink;

static void on_done(void *u, kw_gen_result *r)
{
    sink *s = u;
    pthread_mutex_lock(&s->mu);
    s->res = r;
    pthread_mutex_unlock(&s->mu);
}

static kw_gen_result *forced_run(const kw_model *m, const int32_t *ids, int np, int nf,
                                 const kw_quest_opts *o)
{
    kw_engine_opts eo = kw_engine_defaults();
    eo.page_tokens = 8;
    eo.n_pages = 8192;
    eo.chunk = 64;
    kw_engine *e;
    kw_error err = {0};
    assert_int_equal(kw_engine_open_model(m, &eo, &e, &err), 0);
    kw_kvmethod *km = NULL;
    kw_hookstack hs = {0};
    if (o) {
        assert_int_equal(kw__quest_method(o, NULL, &km, &err), 0);
        hs.n = 1;
        hs.hooks[0] = km->hook;
        assert_int_equal(km->state_new(km->params, &m->cfg, &hs.states[0], &err), 0);
    }
    sink s = {.res = NULL};
    pthread_mutex_init(&s.mu, NULL);
    kw_gen_req r = {.prompt = ids, .n_prompt = np, .forced = ids + np, .n_forced = nf,
                    .topk = 5, .hooks = o ? &hs : NULL, .done = on_done, .user = &s};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_close(e);
    if (km) {
        km->state_free(hs.states[0]);
        km->params_free(km->params);
        free(km);
    }
    pthread_mutex_destroy(&s.mu);
    assert_non_null(s.res);
    assert_int_equal(s.res->rc, 0);
    return s.res;
}

static void test_quest_budget_covering_context_is_dense_and_small_budget_reads_less(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    c.n_layer = 5;
    kw_model *m = rt_tiny_model(&c, 21);
    int np = 400, nf = 24;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(np + nf));
    uint64_t rs = 99;
    for (int i = 0; i < np + nf; i++)
        ids[i] = (int32_t)(rt_rand_u64(&rs) % c.n_vocab);
    kw_gen_result *dense = forced_run(m, ids, np, nf, NULL);
    kw_quest_opts big = {.page = 16, .budget = np + nf + 16, .min_pages = 3, .dense_layers = 2};
    kw_gen_result *full = forced_run(m, ids, np, nf, &big);
    assert_memory_equal(full->logprobs, dense->logprobs, sizeof(float) * nf);
    assert_memory_equal(full->topk_lp, dense->topk_lp, sizeof(float) * nf * 5);
    assert_memory_equal(full->topk_ids, dense->topk_ids, sizeof(int32_t) * nf * 5);
    kw_quest_opts small = {.page = 16, .budget = 64, .min_pages = 3, .dense_layers = 2};
    kw_gen_result *sel = forced_run(m, ids, np, nf, &small);
    /* summed over KV heads: layers 0-1 read ~np + t tokens, layers 2-4 four pages of 16
       (the current one partial) */
    double want = c.n_head_kv * (2.0 * (np + nf / 2.0) + 3.0 * 56) / 5;
    print_message("attended_mean: dense %.1f, quest budget %d %.1f, quest budget 64 %.1f; "
                  "kv payload peak %lld vs %lld bytes, quest metadata %lld bytes\n",
                  dense->attended_mean, big.budget, full->attended_mean, sel->attended_mean,
                  (long long)dense->kv_payload_peak, (long long)sel->kv_payload_peak,
                  (long long)sel->meta_bytes);
    assert_true(fabs(full->attended_mean - dense->attended_mean) < 1e-9);
    assert_true(sel->attended_mean < 0.7 * dense->attended_mean);
    assert_true(fabs(sel->attended_mean - want) < 16 * c.n_head_kv);
    assert_int_equal(sel->kv_payload_peak, dense->kv_payload_peak); /* no memory saved */
    assert_int_equal(sel->pages_peak, dense->pages_peak);
    assert_true(sel->meta_bytes > 0);
    double diff = 0;
    for (int i = 0; i < nf; i++)
        diff += fabs(sel->logprobs[i] - dense->logprobs[i]);
    assert_true(diff > 0); /* it really read fewer tokens */
    /* a GQA group sharing its pick reads as many tokens per KV head */
    kw_quest_opts grp = small;
    grp.kv_rows = true;
    kw_gen_result *kvr = forced_run(m, ids, np, nf, &grp);
    assert_true(fabs(kvr->attended_mean - sel->attended_mean) < 1e-9);
    assert_int_equal(kvr->kv_payload_peak, dense->kv_payload_peak);
    for (int i = 0; i < nf; i++)
        assert_true(isfinite(kvr->logprobs[i]) && kvr->logprobs[i] <= 0);
    kw_gen_result_free(kvr);
    kw_gen_result_free(dense), kw_gen_result_free(full), kw_gen_result_free(sel);
    free(ids);
    rt_tiny_free(m);
}

/* ---- the operator ---- */

static void test_quest_op_makes_a_select_kvmethod_and_takes_a_budget(void **st)
{
    (void)st;
    kw_opctx c = {.op = &kw_op_retrieve_quest, .params = json_pack("{s:i}", "budget", 256)};
    kw_task t;
    st_task_init(&t, -1);
    assert_int_equal(kw_op_retrieve_quest.run(&c, NULL, &t), 0);
    assert_string_equal(kw_value_type(t.out[0]), KW_T_KVMETHOD);
    const kw_kvmethod *m = kw_value_data(t.out[0]);
    assert_ptr_equal(m->hook, &kw__quest_hook);
    assert_int_equal(m->hook->roles, KW_ROLE_SELECT);
    assert_int_equal(kw_op_retrieve_quest.kv_roles, m->hook->roles); /* the graph's check */
    assert_non_null(strstr(json_string_value(json_object_get(c.records, "kv_memory")),
                           "unchanged"));
    assert_non_null(strstr(kw_op_retrieve_quest.doc, "Saves no KV memory"));
    st_task_clear(&t);

    /* a per-layer budget of the wrong shape is refused when the state is made */
    kw_budget *b = kw_budget_new(7, 2, false);
    kw_budget_set_layer(b, 3, 48);
    st_task_init(&t, -1);
    t.in[0][0] = kw_value_budget(b);
    t.n_in[0] = 1;
    assert_int_equal(kw_op_retrieve_quest.run(&c, NULL, &t), 0);
    m = kw_value_data(t.out[0]);
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    void *hs = NULL;
    kw_error err = {0};
    assert_int_equal(m->state_new(m->params, &cfg, &hs, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "7 layers x 2 KV heads, the model has 3 x 2"));
    st_task_clear(&t);
    json_decref(c.params);
    json_decref(c.records);

    /* ratio wins over budget and is recorded; with a budget input it is refused */
    c = (kw_opctx){.op = &kw_op_retrieve_quest,
                   .params = json_pack("{s:i,s:f}", "budget", 256, "ratio", 0.1)};
    st_task_init(&t, -1);
    assert_int_equal(kw_op_retrieve_quest.run(&c, NULL, &t), 0);
    assert_string_equal(json_string_value(json_object_get(c.records, "budget_source")), "ratio");
    assert_string_equal(json_string_value(json_object_get(c.records, "budget_ratio")),
                        "0.10000000000000001");
    st_task_clear(&t);
    st_task_init(&t, -1);
    t.in[0][0] = kw_value_budget(kw_budget_new(3, 2, false));
    t.n_in[0] = 1;
    assert_int_equal(kw_op_retrieve_quest.run(&c, NULL, &t), KW_EINVAL);
    assert_non_null(strstr(t.msg, "a budget input and 'ratio' are both set"));
    st_task_clear(&t);
    json_decref(c.params);
    json_decref(c.records);
}

/* With a per-layer budget, each layer reads its own number of pages. */
static void test_quest_per_layer_budget_sets_pages_per_layer(void **s)
{
    (void)s;
    kw_quest_opts o = {.page = 16, .budget = 1024, .min_pages = 3, .dense_layers = 2};
    hook_fx fx;
    fx_open(&fx, 16, &o);
    kw_budget *b = kw_budget_new(fx.cfg.n_layer, fx.cfg.n_head_kv, true);
    kw_budget_set_layer(b, 2, 80);  /* 5 pages */
    kw_budget_set_layer(b, 3, 128); /* 8 pages, head 1: 3 pages (min_pages) */
    b->tokens[3 * fx.cfg.n_head_kv + 1] = 10;
    kw_kvmethod *m;
    kw_error err = {0};
    assert_int_equal(kw__quest_method(&o, b, &m, &err), 0);
    kw_budget_free(b);
    fx.m->hook->seq_close(fx.st, &fx.seq, 0);
    fx.m->state_free(fx.st);
    fx.m->params_free(fx.m->params);
    free(fx.m);
    fx.m = m;
    assert_int_equal(m->state_new(m->params, &fx.cfg, &fx.st, &err), 0);
    assert_int_equal(m->hook->seq_open(fx.st, &fx.seq, 0), 0);
    fill(&fx, 320, 0);
    float *q = rand_q(&fx);
    int g = fx.cfg.n_head / fx.cfg.n_head_kv;
    assert_int_equal(hfx_select(&fx, 2, false, q), 0);
    for (int r = 0; r < fx.cfg.n_head; r++)
        assert_int_equal(kw_view_row_tokens(fx.w, r), 5 * 16);
    assert_int_equal(hfx_select(&fx, 3, false, q), 0);
    for (int r = 0; r < fx.cfg.n_head; r++)
        assert_int_equal(kw_view_row_tokens(fx.w, r), (r / g == 0 ? 8 : 3) * 16);
    free(q);
    hfx_close(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quest_pages_equal_brute_force_top_k),
        cmocka_unit_test(test_quest_dense_layers_prefill_and_current_page),
        cmocka_unit_test(test_quest_ratio_budget_is_a_share_of_each_prompt),
        cmocka_unit_test(test_quest_budget_covering_context_is_dense_and_small_budget_reads_less),
        cmocka_unit_test(test_quest_op_makes_a_select_kvmethod_and_takes_a_budget),
        cmocka_unit_test(test_quest_per_layer_budget_sets_pages_per_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
