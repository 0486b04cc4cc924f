/* The CPU device engine on a tiny random model: greedy continuations equal the plain
 * reference's; the same prompts as one continuous batch give the same tokens as one by
 * one; seeded sampling does not depend on the batch; teacher forcing returns the
 * reference's log-probs and top-k; stop on eos; admission against the pool and hook
 * reserves. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvweave/engine.h"
#include "runtime_support.h"

#define NP 5
#define NGEN 20

typedef struct sink {
    pthread_mutex_t mu;
    kw_gen_result *res[16];
    int n;
} sink;

typedef struct slot {
    sink *s;
    int i;
} slot;

static void on_done(void *u, kw_gen_result *r)
{
    slot *sl = u;
    pthread_mutex_lock(&sl->s->mu);
    sl->s->res[sl->i] = r;
    sl->s->n++;
    pthread_mutex_unlock(&sl->s->mu);
}

static int32_t prompts[NP][200];
static int plen[NP] = {3, 17, 60, 1, 130};

static void make_prompts(int V)
{
    uint64_t s = 77;
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < plen[i]; j++)
            prompts[i][j] = (int32_t)(rt_rand_u64(&s) % V);
}

static kw_engine *open_engine(const kw_model *m, int max_batch, int chunk, int64_t pages)
{
    kw_engine_opts o = kw_engine_defaults();
    o.max_batch = max_batch;
    o.chunk = chunk;
    o.page_tokens = 8;
    o.n_pages = pages;
    kw_engine *e;
    kw_error err = {0};
    assert_int_equal(kw_engine_open_model(m, &o, &e, &err), 0);
    return e;
}

static void submit(kw_engine *e, slot *sl, int p, const kw_sampling *smp, int max_new)
{
    kw_gen_req r = {.prompt = prompts[p], .n_prompt = plen[p], .max_new = max_new,
                    .ignore_eos = true, .sample = p, .done = on_done, .user = sl};
    if (smp)
        r.sampling = *smp;
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
}

/* all prompts, either one at a time or all at once */
static void run_all(const kw_model *m, bool together, int max_batch, int chunk, int64_t pages,
                    const kw_sampling *smp, sink *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_init(&out->mu, NULL);
    kw_engine *e = open_engine(m, max_batch, chunk, pages);
    slot sl[NP];
    for (int p = 0; p < NP; p++) {
        sl[p] = (slot){out, p};
        submit(e, &sl[p], p, smp, NGEN);
        if (!together)
            kw_engine_wait_idle(e);
    }
    kw_engine_wait_idle(e);
    kw_engine_close(e);
    assert_int_equal(out->n, NP);
    for (int p = 0; p < NP; p++) {
        assert_int_equal(out->res[p]->rc, 0);
        assert_int_equal(out->res[p]->n_gen, NGEN);
    }
}

static void sink_free(sink *s)
{
    for (int i = 0; i < 16; i++)
        kw_gen_result_free(s->res[i]);
    pthread_mutex_destroy(&s->mu);
}

static void test_engine_greedy_matches_reference(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 1);
    make_prompts(c.n_vocab);
    sink s;
    run_all(m, false, 4, 32, 4096, NULL, &s);
    for (int p = 0; p < 2; p++) {
        int n = plen[p];
        int32_t ids[256];
        memcpy(ids, prompts[p], sizeof(int32_t) * n);
        float *lg = malloc(sizeof(float) * (n + NGEN) * c.n_vocab);
        for (int g = 0; g < NGEN; g++) {
            rt_ref_forward(m, ids, n + g, lg, NULL, NULL, 0);
            const float *row = lg + (int64_t)(n + g - 1) * c.n_vocab;
            int b = 0;
            for (int i = 1; i < c.n_vocab; i++)
                b = row[i] > row[b] ? i : b;
            ids[n + g] = b;
            assert_int_equal(s.res[p]->tokens[g], b);
        }
        free(lg);
    }
    assert_true(s.res[0]->ttft_s > 0);
    assert_true(s.res[0]->pages_peak > 0);
    assert_true(s.res[0]->attended_mean > plen[0]);
    sink_free(&s);
    rt_tiny_free(m);
}

static void test_engine_batch_equals_one_by_one(void **st)
{
    kw_model_config c = rt_tiny_config(1, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&c, 2);
    make_prompts(c.n_vocab);
    kw_sampling greedy = {0}, hot = {.temperature = 0.9f, .top_p = 0.9f, .seed = 1234};
    for (int mode = 0; mode < 2; mode++) {
        const kw_sampling *sm = mode ? &hot : &greedy;
        sink a, b;
        run_all(m, false, 4, 32, 4096, sm, &a);
        run_all(m, true, 3, 16, 4096, sm, &b); /* 5 prompts over 3 slots, small chunks */
        for (int p = 0; p < NP; p++)
            assert_memory_equal(a.res[p]->tokens, b.res[p]->tokens, sizeof(int32_t) * NGEN);
        if (mode == 1) {
            sink g;
            run_all(m, true, 5, 64, 4096, &greedy, &g);
            int differ = 0;
            for (int p = 0; p < NP; p++)
                differ += memcmp(g.res[p]->tokens, a.res[p]->tokens, sizeof(int32_t) * NGEN) != 0;
            assert_true(differ > 0); /* sampling is not greedy */
            sink_free(&g);
        }
        sink_free(&a);
        sink_free(&b);
    }
    rt_tiny_free(m);
}

static void test_engine_small_pool_queues_and_finishes(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&c, 3);
    make_prompts(c.n_vocab);
    sink a, b;
    run_all(m, true, 8, 64, 4096, NULL, &a);
    /* 150 tokens = 19 pages of 8 x 3 layers x 2 heads = 114 pages: one long one at a time */
    run_all(m, true, 8, 64, 130, NULL, &b);
    for (int p = 0; p < NP; p++)
        assert_memory_equal(a.res[p]->tokens, b.res[p]->tokens, sizeof(int32_t) * NGEN);
    /* a sequence that can never fit is refused at submit */
    kw_engine *e = open_engine(m, 8, 64, 20);
    kw_gen_req r = {.prompt = prompts[4], .n_prompt = plen[4], .max_new = 5,
                    .done = on_done, .user = NULL};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_ELIMIT);
    assert_non_null(strstr(err.msg, "KV pages"));
    int32_t bad = c.n_vocab;
    r.prompt = &bad;
    r.n_prompt = 1;
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_ERANGE);
    kw_engine_close(e);
    sink_free(&a);
    sink_free(&b);
    rt_tiny_free(m);
}

static void test_engine_teacher_forcing_logprobs(void **st)
{
    kw_model_config c = rt_tiny_config(1, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&c, 4);
    make_prompts(c.n_vocab);
    int np = plen[2], nf = 9, K = 5;
    int32_t ids[128];
    memcpy(ids, prompts[2], sizeof(int32_t) * np);
    for (int i = 0; i < nf; i++)
        ids[np + i] = (i * 7 + 3) % c.n_vocab;
    kw_engine *e = open_engine(m, 4, 16, 4096);
    sink s = {0};
    pthread_mutex_init(&s.mu, NULL);
    slot sl = {&s, 0};
    kw_gen_req r = {.prompt = ids, .n_prompt = np, .forced = ids + np, .n_forced = nf,
                    .topk = K, .done = on_done, .user = &sl};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_close(e);
    kw_gen_result *res = s.res[0];
    assert_int_equal(res->rc, 0);
    assert_int_equal(res->n_gen, nf);
    float *lg = malloc(sizeof(float) * (np + nf) * c.n_vocab);
    rt_ref_forward(m, ids, np + nf, lg, NULL, NULL, 0);
    for (int i = 0; i < nf; i++) {
        const float *row = lg + (int64_t)(np + i - 1) * c.n_vocab;
        double mx = row[0], sum = 0;
        for (int v = 1; v < c.n_vocab; v++)
            mx = fmax(mx, row[v]);
        for (int v = 0; v < c.n_vocab; v++)
            sum += exp(row[v] - mx);
        double lse = mx + log(sum);
        assert_int_equal(res->tokens[i], ids[np + i]);
        assert_true(fabs(res->logprobs[i] - (row[ids[np + i]] - lse)) < 1e-4);
        for (int k = 0; k < K; k++) {
            int id = res->topk_ids[i * K + k];
            assert_true(fabs(res->topk_lp[i * K + k] - (row[id] - lse)) < 1e-4);
            if (k)
                assert_true(res->topk_lp[i * K + k] <= res->topk_lp[i * K + k - 1]);
        }
        int best = 0;
        for (int v = 1; v < c.n_vocab; v++)
            best = row[v] > row[best] ? v : best;
        assert_int_equal(res->topk_ids[i * K], best);
    }
    free(lg);
    sink_free(&s);
    rt_tiny_free(m);
}

static void test_engine_stops_on_eos(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 5);
    make_prompts(c.n_vocab);
    sink a;
    run_all(m, true, 8, 64, 4096, NULL, &a);
    /* two eos ids: the generation must stop at the first of either */
    int32_t eos = a.res[1]->tokens[6];
    m->cfg.eos_ids[0] = 0;
    m->cfg.eos_ids[1] = eos;
    m->cfg.n_eos = 2;
    kw_engine *e = open_engine(m, 8, 64, 4096);
    sink s = {0};
    pthread_mutex_init(&s.mu, NULL);
    slot sl = {&s, 0};
    kw_gen_req r = {.prompt = prompts[1], .n_prompt = plen[1], .max_new = NGEN,
                    .done = on_done, .user = &sl};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_close(e);
    int stop = 0;
    while (a.res[1]->tokens[stop] != eos && a.res[1]->tokens[stop] != 0)
        stop++;
    assert_true(s.res[0]->stopped_eos);
    assert_int_equal(s.res[0]->n_gen, stop + 1);
    sink_free(&s);
    sink_free(&a);
    rt_tiny_free(m);
}

static int greedy_reserve(void *st, const kw_seqshape *s, kw_memclaim *out)
{
    out->pages = *(int64_t *)st;
    return 0;
}

static void test_engine_uses_hook_reserve(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 6);
    make_prompts(c.n_vocab);
    kw_kvhook h = {.size = sizeof h, .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
                   .name = "test.reserve", .reserve = greedy_reserve};
    int64_t claim = 1000;
    kw_hookstack hs = {.n = 1, .hooks = {&h}, .states = {&claim}};
    kw_engine *e = open_engine(m, 8, 64, 500);
    kw_gen_req r = {.prompt = prompts[0], .n_prompt = plen[0], .max_new = 2, .hooks = &hs,
                    .done = on_done};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_ELIMIT);
    claim = 100;
    sink s = {0};
    pthread_mutex_init(&s.mu, NULL);
    slot sl = {&s, 0};
    r.user = &sl;
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    assert_int_equal(s.res[0]->rc, 0);
    assert_int_equal(s.res[0]->n_gen, 2);
    kw_engine_close(e);
    sink_free(&s);
    rt_tiny_free(m);
}

/* A hook that claims too little: the sequence fails with a clear error when the pool
 * runs out, its pages come back, and the engine goes on with the next one. */
static void test_engine_underclaimed_sequence_fails_cleanly(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 7);
    make_prompts(c.n_vocab);
    kw_kvhook h = {.size = sizeof h, .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
                   .name = "test.underclaim", .reserve = greedy_reserve};
    int64_t claim = 5;
    kw_hookstack hs = {.n = 1, .hooks = {&h}, .states = {&claim}};
    kw_engine *e = open_engine(m, 8, 64, 40);
    sink s = {0};
    pthread_mutex_init(&s.mu, NULL);
    slot sl[2] = {{&s, 0}, {&s, 1}};
    kw_gen_req r = {.prompt = prompts[4], .n_prompt = plen[4], .max_new = 4, .hooks = &hs,
                    .done = on_done, .user = &sl[0]};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    r.prompt = prompts[0];
    r.n_prompt = plen[0];
    r.hooks = NULL;
    r.user = &sl[1];
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_stats es;
    kw_engine_get_stats(e, &es);
    kw_engine_close(e);
    assert_int_equal(s.res[0]->rc, KW_ELIMIT);
    assert_non_null(strstr(s.res[0]->error, "KV pool is full"));
    assert_int_equal(s.res[1]->rc, 0);
    assert_int_equal(s.res[1]->n_gen, 4);
    assert_true(es.steps > 0);
    sink_free(&s);
    rt_tiny_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_greedy_matches_reference),
        cmocka_unit_test(test_engine_batch_equals_one_by_one),
        cmocka_unit_test(test_engine_small_pool_queues_and_finishes),
        cmocka_unit_test(test_engine_teacher_forcing_logprobs),
        cmocka_unit_test(test_engine_stops_on_eos),
        cmocka_unit_test(test_engine_uses_hook_reserve),
        cmocka_unit_test(test_engine_underclaimed_sequence_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
