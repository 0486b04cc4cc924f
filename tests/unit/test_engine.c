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

#include "gen_sink.h"
#include "kvweave/engine.h"
#include "runtime/sampler.h"
#include "runtime_support.h"

#define NP 5
#define NGEN 20

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

static void submit(kw_engine *e, gen_slot *sl, int p, const kw_sampling *smp, int max_new)
{
    kw_gen_req r = {.prompt = prompts[p], .n_prompt = plen[p], .max_new = max_new,
                    .ignore_eos = true, .sample = p, .done = gen_sink_done, .user = sl};
    if (smp)
        r.sampling = *smp;
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
}

/* all prompts, either one at a time or all at once */
static void run_all(const kw_model *m, bool together, int max_batch, int chunk, int64_t pages,
                    const kw_sampling *smp, gen_sink *out)
{
    gen_sink_init(out);
    kw_engine *e = open_engine(m, max_batch, chunk, pages);
    gen_slot sl[NP];
    for (int p = 0; p < NP; p++) {
        sl[p] = (gen_slot){out, p};
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

static void test_engine_greedy_matches_reference(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 1);
    make_prompts(c.n_vocab);
    gen_sink s;
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
    gen_sink_free(&s);
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
        gen_sink a, b;
        run_all(m, false, 4, 32, 4096, sm, &a);
        run_all(m, true, 3, 16, 4096, sm, &b); /* 5 prompts over 3 slots, small chunks */
        for (int p = 0; p < NP; p++)
            assert_memory_equal(a.res[p]->tokens, b.res[p]->tokens, sizeof(int32_t) * NGEN);
        if (mode == 1) {
            gen_sink g;
            run_all(m, true, 5, 64, 4096, &greedy, &g);
            int differ = 0;
            for (int p = 0; p < NP; p++)
                differ += memcmp(g.res[p]->tokens, a.res[p]->tokens, sizeof(int32_t) * NGEN) != 0;
            assert_true(differ > 0); /* sampling is not greedy */
            gen_sink_free(&g);
        }
        gen_sink_free(&a);
        gen_sink_free(&b);
    }
    rt_tiny_free(m);
}

static void test_engine_small_pool_queues_and_finishes(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&c, 3);
    make_prompts(c.n_vocab);
    gen_sink a, b;
    run_all(m, true, 8, 64, 4096, NULL, &a);
    /* 150 tokens = 19 pages of 8 x 3 layers x 2 heads = 114 pages: one long one at a time */
    run_all(m, true, 8, 64, 130, NULL, &b);
    for (int p = 0; p < NP; p++)
        assert_memory_equal(a.res[p]->tokens, b.res[p]->tokens, sizeof(int32_t) * NGEN);
    /* a sequence that can never fit is refused at submit */
    kw_engine *e = open_engine(m, 8, 64, 20);
    kw_gen_req r = {.prompt = prompts[4], .n_prompt = plen[4], .max_new = 5,
                    .done = gen_sink_done, .user = NULL};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_ELIMIT);
    assert_non_null(strstr(err.msg, "KV pages"));
    int32_t bad = c.n_vocab;
    r.prompt = &bad;
    r.n_prompt = 1;
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_ERANGE);
    kw_engine_close(e);
    gen_sink_free(&a);
    gen_sink_free(&b);
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
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl = {&s, 0};
    kw_gen_req r = {.prompt = ids, .n_prompt = np, .forced = ids + np, .n_forced = nf,
                    .topk = K, .done = gen_sink_done, .user = &sl};
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
    gen_sink_free(&s);
    rt_tiny_free(m);
}

static void test_engine_stops_on_eos(void **st)
{
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 5);
    make_prompts(c.n_vocab);
    gen_sink a;
    run_all(m, true, 8, 64, 4096, NULL, &a);
    /* two eos ids: the generation must stop at the first of either */
    int32_t eos = a.res[1]->tokens[6];
    m->cfg.eos_ids[0] = 0;
    m->cfg.eos_ids[1] = eos;
    m->cfg.n_eos = 2;
    kw_engine *e = open_engine(m, 8, 64, 4096);
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl = {&s, 0};
    kw_gen_req r = {.prompt = prompts[1], .n_prompt = plen[1], .max_new = NGEN,
                    .done = gen_sink_done, .user = &sl};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_close(e);
    int stop = 0;
    while (a.res[1]->tokens[stop] != eos && a.res[1]->tokens[stop] != 0)
        stop++;
    assert_true(s.res[0]->stopped_eos);
    assert_int_equal(s.res[0]->n_gen, stop + 1);
    gen_sink_free(&s);
    gen_sink_free(&a);
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
                    .done = gen_sink_done};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_ELIMIT);
    claim = 100;
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl = {&s, 0};
    r.user = &sl;
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    assert_int_equal(s.res[0]->rc, 0);
    assert_int_equal(s.res[0]->n_gen, 2);
    kw_engine_close(e);
    gen_sink_free(&s);
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
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl[2] = {{&s, 0}, {&s, 1}};
    kw_gen_req r = {.prompt = prompts[4], .n_prompt = plen[4], .max_new = 4, .hooks = &hs,
                    .done = gen_sink_done, .user = &sl[0]};
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
    gen_sink_free(&s);
    rt_tiny_free(m);
}

/* ---- fidelity: a full-attention reference branch beside the sequence ---- */

typedef struct halfkeep { int n_prompt; } halfkeep;

static int half_keep(void *u, int layer, int head, int qpos, int kpos)
{
    (void)layer, (void)head;
    const halfkeep *k = u;
    return qpos < k->n_prompt || kpos >= k->n_prompt || kpos < k->n_prompt / 2 ||
           kpos >= k->n_prompt - 3;
}

/* A plain double-precision fidelity of two logit rows (the definition, written out). */
static void plain_fidelity(const float *f, const float *m, int V, double *kl, int *t1, int *t5)
{
    double mf = -1e300, mm = -1e300, sf = 0, sm = 0;
    for (int v = 0; v < V; v++) {
        mf = fmax(mf, f[v]);
        mm = fmax(mm, m[v]);
    }
    for (int v = 0; v < V; v++) {
        sf += exp(f[v] - mf);
        sm += exp(m[v] - mm);
    }
    *kl = 0;
    int af = 0, am = 0;
    for (int v = 0; v < V; v++) {
        double pf = exp(f[v] - mf) / sf, lpm = m[v] - mm - log(sm);
        *kl += pf * (log(pf) - lpm);
        af = f[v] > f[af] ? v : af;
        am = m[v] > m[am] ? v : am;
    }
    int above = 0;
    for (int v = 0; v < V; v++)
        above += m[v] > m[af] || (m[v] == m[af] && v < af);
    *t1 = af == am;
    *t5 = above < 5;
}

static kw_gen_result *run_reference(const kw_model *m, const int32_t *ids, int np, int nf,
                                    const kw_hookstack *hs, int chunk, int mode)
{
    kw_engine *e = open_engine(m, 4, chunk, 4096);
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl = {&s, 0};
    kw_gen_req r = {.prompt = ids, .n_prompt = np, .forced = ids + np, .n_forced = nf,
                    .hooks = hs, .reference = mode, .done = gen_sink_done, .user = &sl};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    /* a plain sequence beside it in the same batch */
    gen_slot sl2 = {&s, 1};
    kw_gen_req r2 = {.prompt = ids, .n_prompt = np, .max_new = 3, .ignore_eos = true,
                     .done = gen_sink_done, .user = &sl2};
    assert_int_equal(kw_engine_submit(e, &r2, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_stats es;
    kw_engine_get_stats(e, &es);
    kw_engine_close(e);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.res[1]->rc, 0);
    kw_gen_result_free(s.res[1]);
    pthread_mutex_destroy(&s.mu);
    /* a shared reference branch is not prefilled; its own prefill is one more */
    assert_int_equal(es.prefill_tokens, (mode == KW_REF_OWN ? 3 : 2) * np);
    return s.res[0];
}

/* Without a method, the branch and the sequence are the same model on the same KV: KL 0,
 * top-1 and top-5 always, equal log-probs. */
static void test_engine_reference_branch_of_full_attention_agrees(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 12);
    make_prompts(c.n_vocab);
    int np = plen[2], nf = 12;
    int32_t ids[128];
    memcpy(ids, prompts[2], sizeof(int32_t) * np);
    for (int i = 0; i < nf; i++)
        ids[np + i] = (i * 11 + 5) % c.n_vocab;
    kw_gen_result *r = run_reference(m, ids, np, nf, NULL, 16, KW_REF_SHARED);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->n_gen, nf);
    assert_non_null(r->ref_kl);
    for (int i = 0; i < nf; i++) {
        assert_true(r->ref_kl[i] >= 0 && r->ref_kl[i] < 1e-6);
        assert_int_equal(r->ref_top1[i], 1);
        assert_int_equal(r->ref_top5[i], 1);
        assert_true(fabs(r->ref_logprobs[i] - r->logprobs[i]) < 1e-5);
    }
    kw_gen_result_free(r);
    rt_tiny_free(m);
}

/* With an eviction at prefill end, the sequence follows the evicted reference model and
 * the branch the full one; KL, top-1, top-5 and the full log-probs equal the plain
 * definition on the plain reference forward passes. Chunked prefill (chunk 16 < prompt). */
static void test_engine_reference_branch_measures_an_eviction(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(1, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&c, 13);
    make_prompts(c.n_vocab);
    int np = plen[2], nf = 10, V = c.n_vocab;
    int32_t ids[128];
    memcpy(ids, prompts[2], sizeof(int32_t) * np);
    for (int i = 0; i < nf; i++)
        ids[np + i] = (i * 7 + 3) % V;
    kw_kvhook h = {.size = sizeof h, .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT,
                   .name = "test.half", .on_prefill_end = rt_keep_half_at_prefill_end};
    kw_hookstack hs = {.n = 1, .hooks = {&h}, .states = {NULL}};
    for (int mode = KW_REF_SHARED; mode <= KW_REF_OWN; mode++) {
        kw_gen_result *r = run_reference(m, ids, np, nf, &hs, 16, mode);
        assert_int_equal(r->rc, 0);
        float *full = malloc(sizeof(float) * (np + nf) * V), *ev = malloc(sizeof(float) * (np + nf) * V);
        rt_ref_forward(m, ids, np + nf, full, NULL, NULL, 0);
        halfkeep hk = {np};
        rt_ref_forward(m, ids, np + nf, ev, half_keep, &hk, 0);
        double kl_sum = 0;
        int n_t1 = 0;
        for (int i = 0; i < nf; i++) {
            const float *f = full + (int64_t)(np + i - 1) * V, *e = ev + (int64_t)(np + i - 1) * V;
            double kl;
            int t1, t5;
            plain_fidelity(f, e, V, &kl, &t1, &t5);
            if (fabs(r->ref_kl[i] - kl) > 1e-4 + 1e-3 * kl)
                fail_msg("position %d: KL %g, the definition gives %g", i, r->ref_kl[i], kl);
            assert_int_equal(r->ref_top1[i], t1);
            assert_int_equal(r->ref_top5[i], t5);
            double mx = f[0], s = 0;
            for (int v = 1; v < V; v++)
                mx = fmax(mx, f[v]);
            for (int v = 0; v < V; v++)
                s += exp(f[v] - mx);
            assert_true(fabs(r->ref_logprobs[i] - (f[ids[np + i]] - mx - log(s))) < 1e-4);
            kl_sum += kl;
            n_t1 += t1;
        }
        assert_true(r->ref_kl[0] < 1e-6); /* position 0 is the prefill's, full for both */
        assert_true(kl_sum > 1e-4);        /* the eviction did change something */
        (void)n_t1;
        free(full);
        free(ev);
        kw_gen_result_free(r);
    }
    rt_tiny_free(m);
}

/* A method that drops prompt tokens during chunked prefill: a shared reference would not
 * be full attention, so the sequence fails saying so; with its own prefill the branch is
 * exactly the plain full-attention forward pass. */
static void test_engine_reference_branch_own_prefill_for_prefill_time_methods(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 15);
    make_prompts(c.n_vocab);
    int np = plen[2], nf = 6, V = c.n_vocab;
    int32_t ids[128];
    memcpy(ids, prompts[2], sizeof(int32_t) * np);
    for (int i = 0; i < nf; i++)
        ids[np + i] = (i * 5 + 1) % V;
    kw_kvhook h = {.size = sizeof h, .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT,
                   .name = "test.chunkdrop", .after_attn = rt_drop_oldest_after_chunk};
    kw_hookstack hs = {.n = 1, .hooks = {&h}, .states = {NULL}};
    kw_gen_result *r = run_reference(m, ids, np, nf, &hs, 16, KW_REF_SHARED);
    assert_int_equal(r->rc, KW_ERANGE);
    assert_non_null(strstr(r->error, "own"));
    kw_gen_result_free(r);
    r = run_reference(m, ids, np, nf, &hs, 16, KW_REF_OWN);
    assert_int_equal(r->rc, 0);
    float *full = malloc(sizeof(float) * (np + nf) * V);
    rt_ref_forward(m, ids, np + nf, full, NULL, NULL, 0);
    double kl_sum = 0;
    for (int i = 0; i < nf; i++) {
        const float *f = full + (int64_t)(np + i - 1) * V;
        double mx = f[0], sum = 0;
        for (int v = 1; v < V; v++)
            mx = fmax(mx, f[v]);
        for (int v = 0; v < V; v++)
            sum += exp(f[v] - mx);
        if (fabs(r->ref_logprobs[i] - (f[ids[np + i]] - mx - log(sum))) > 1e-4)
            fail_msg("position %d: full log-prob %g, the plain forward gives %g", i,
                     r->ref_logprobs[i], f[ids[np + i]] - mx - log(sum));
        kl_sum += r->ref_kl[i];
    }
    assert_true(r->ref_kl[0] > 0); /* the method's prefill differed already */
    assert_true(kl_sum > 1e-4);
    free(full);
    kw_gen_result_free(r);
    rt_tiny_free(m);
}

static void test_engine_reference_branch_needs_teacher_forcing(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 14);
    make_prompts(c.n_vocab);
    kw_engine *e = open_engine(m, 4, 16, 4096);
    kw_gen_req r = {.prompt = prompts[1], .n_prompt = plen[1], .max_new = 4, .reference = true,
                    .done = gen_sink_done};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "teacher forcing"));
    kw_engine_close(e);
    rt_tiny_free(m);
}

/* The fidelity of one position on a 3-token vocabulary, by hand: p_full = (1/2, 1/4,
 * 1/4), p_method = (1/4, 1/2, 1/4): KL = 1/2 ln 2 - 1/4 ln 2 = ln(2)/4; the argmaxes
 * differ; full's argmax (token 0) is second in the method's ranking, so within the top 5.
 * Shifting logits by a constant changes nothing; equal rows give KL 0. */
static void test_fidelity_by_hand_on_a_tiny_vocabulary(void **st)
{
    (void)st;
    float full[3] = {logf(0.5f), logf(0.25f), logf(0.25f)};
    float meth[3] = {logf(0.25f) + 7.f, logf(0.5f) + 7.f, logf(0.25f) + 7.f};
    float kl;
    uint8_t t1, t5;
    kw__fidelity(full, meth, 3, &kl, &t1, &t5);
    assert_true(fabs(kl - log(2.0) / 4) < 1e-6);
    assert_int_equal(t1, 0);
    assert_int_equal(t5, 1);
    kw__fidelity(full, full, 3, &kl, &t1, &t5);
    assert_true(kl == 0.f);
    assert_int_equal(t1, 1);
    /* top-5 over 8 tokens: full's argmax is token 6; the method ranks 5 tokens above it
     * (two of them tied with it at a lower index), so it is sixth: not contained */
    float f8[8] = {0, 0, 0, 0, 0, 0, 5, 0};
    float m8[8] = {3, 3, 3, 2, 2, 1, 2, 0};
    kw__fidelity(f8, m8, 8, &kl, &t1, &t5);
    assert_int_equal(t1, 0);
    assert_int_equal(t5, 0);
    m8[3] = 1; /* now fifth */
    kw__fidelity(f8, m8, 8, &kl, &t1, &t5);
    assert_int_equal(t5, 1);
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
        cmocka_unit_test(test_fidelity_by_hand_on_a_tiny_vocabulary),
        cmocka_unit_test(test_engine_reference_branch_of_full_attention_agrees),
        cmocka_unit_test(test_engine_reference_branch_measures_an_eviction),
        cmocka_unit_test(test_engine_reference_branch_needs_teacher_forcing),
        cmocka_unit_test(test_engine_reference_branch_own_prefill_for_prefill_time_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
