/* The eviction hooks of operators/compress (StreamingLLM, H2O, SnapKV, PyramidKV) on the
 * tiny random model:
 *  - with hand-made probabilities, the kept tokens are the expected ones;
 *  - through the forward pass, every logit equals the plain reference that attends
 *    exactly the tokens the pool still holds (so eviction is real, not a mask), and the
 *    tokens held per layer and KV head after the prompt equal the capacity;
 *  - through the device engine, pages held drop to the capacity's pages, StreamingLLM and
 *    H2O stay bounded while decoding, greedy decoding runs to the end.
 * A spy hook stacked after the EVICT hook records what the pool holds after each step. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compress/evict.h"
#include "kvweave/engine.h"
#include "runtime/forward.h"
#include "runtime_support.h"

#define MAXS 160
#define MAXN 256

/* ---- the spy ---- */

typedef struct spy {
    int n_steps;
    int first[MAXS], ntok[MAXS];
    bool prefill[MAXS];
    int len[MAXS][4][4];
    unsigned char kept[MAXS][4][4][MAXN];
    int64_t pages[MAXS];
    int obs_n_min;
    unsigned char read[MAXS][3][6][MAXN]; /* positions each query head's view read */
} spy;

static int spy_step_end(void *st, kw_sctx *c, const kw_batch *b)
{
    spy *s = st;
    kw_kvseq *kv = b->seqs[0]->kv;
    if (s->n_steps >= MAXS)
        return KW_ELIMIT; /* the engine thread: fail the sequence, not the process */
    int t = s->n_steps++;
    s->first[t] = b->pos[b->tok_first[0]];
    s->ntok[t] = b->tok_n[0];
    s->prefill[t] = b->prefill[0];
    s->pages[t] = kw_kvseq_pages_held(kv);
    memset(s->kept[t], 0, sizeof s->kept[t]);
    for (int l = 0; l < 3; l++)
        for (int h = 0; h < 2; h++) {
            int n = kw_kvseq_len(kv, l, h);
            s->len[t][l][h] = n;
            for (int j = 0; j < n; j++) {
                int32_t pos;
                kw_kvseq_token_f32(kv, l, h, j, NULL, NULL, &pos);
                if (pos >= MAXN)
                    return KW_ELIMIT;
                s->kept[t][l][h][pos] = 1;
            }
        }
    return 0;
}

static int spy_after_attn(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    spy *s = st;
    (void)b;
    if (a->probs && a->probs[0] && (s->obs_n_min == 0 || a->obs_n[0] < s->obs_n_min))
        s->obs_n_min = a->obs_n[0];
    /* what each query head's view read in this step (step_end counts it after) */
    const kw_view *w = a->views[0];
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int t = s->n_steps, H = c->cfg->n_head, g = H / c->cfg->n_head_kv;
    if (t >= MAXS || c->layer >= 3 || H > 6)
        return KW_ELIMIT;
    memset(s->read[t][c->layer], 0, sizeof s->read[t][c->layer]);
    for (int qh = 0; qh < H; qh++) {
        int r = w->per_qhead ? qh : qh / g;
        for (int x = w->row_ptr[r]; x < w->row_ptr[r + 1]; x++) {
            const kw_span *sp = &w->spans[x];
            for (int i = sp->first; i < sp->first + sp->n; i++) {
                int32_t p = mem.pos[sp->pool][(int64_t)sp->page * mem.page_tokens + i];
                if (p < 0 || p >= MAXN)
                    return KW_ELIMIT;
                s->read[t][c->layer][qh][p] = 1;
            }
        }
    }
    return 0;
}

/* rt_keep_fn per query head: what the query's step read (spy_after_attn) */
static int spy_keep_read(void *u, int l, int qh, int qpos, int kpos)
{
    spy *s = u;
    int t = 0;
    while (t + 1 < s->n_steps && s->first[t + 1] <= qpos)
        t++;
    return s->read[t][l][qh][kpos];
}

static const kw_kvhook spy_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                   .roles = KW_ROLE_SELECT, .needs = KW_NEED_OBS_PROBS,
                                   .name = "test.spy", .after_attn = spy_after_attn,
                                   .step_end = spy_step_end};

/* a query of step t reads its own step's tokens and what the pool held after step t-1 */
static int spy_keep(void *u, int l, int h, int qpos, int kpos)
{
    spy *s = u;
    int t = 0;
    while (t + 1 < s->n_steps && s->first[t + 1] <= qpos)
        t++;
    if (kpos >= s->first[t])
        return 1;
    return t > 0 && s->kept[t - 1][l][h][kpos];
}

static kw__evict_params *params(kw__evict_kind kind, int capacity)
{
    kw__evict_params *p = calloc(1, sizeof *p);
    p->kind = kind;
    p->capacity = capacity;
    p->window = 8;
    p->kernel = 5;
    p->pooling = KW_POOLING_AVG;
    p->beta = 20;
    p->sink = 4;
    p->prefill_evict = true;
    p->heavy_share = 0.5;
    return p;
}

/* ---- hand-made probabilities, hooks called directly ---- */

typedef struct direct {
    kw_model_config cfg;
    kw_kvpool *pool;
    kw_kvmethod *m;
    void *st;
    kw_seq seq;
    kw_view *w;
} direct;

static void direct_open(direct *d, kw__evict_params *p, int n)
{
    kw_error err = {0};
    d->cfg = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    assert_int_equal(kw_kvpool_new(&d->cfg, &o, &d->pool, &err), 0);
    d->m = kw__evict_method(p);
    assert_int_equal(d->m->state_new(d->m->params, &d->cfg, &d->st, &err), 0);
    d->seq = (kw_seq){.kv = kw_kvseq_new(d->pool), .n_prompt = n, .max_new = 4};
    assert_int_equal(d->m->hook->seq_open(d->st, &d->seq, 0), 0);
    d->w = kw_view_new();
}

static void direct_append(direct *d, int first, int n)
{
    uint64_t s = 5 + (uint64_t)first;
    int kd = d->cfg.n_head_kv * d->cfg.head_dim;
    float *k = malloc(sizeof(float) * n * kd), *v = malloc(sizeof(float) * n * kd);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n * kd; i++)
        k[i] = (float)rt_rand01(&s) - 0.5f, v[i] = (float)rt_rand01(&s) - 0.5f;
    for (int i = 0; i < n; i++)
        pos[i] = first + i;
    for (int l = 0; l < d->cfg.n_layer; l++)
        assert_int_equal(kw_kvseq_append(d->seq.kv, l, k, v, pos, n), 0);
    free(k), free(v), free(pos);
}

/* after_attn then on_prefill_end of layer 0 with the given stats */
static void direct_call(direct *d, bool prefill, int first, int n, const float *probs,
                        int obs_n, const float *step, int layer)
{
    int32_t pos[MAXN];
    for (int i = 0; i < n; i++)
        pos[i] = first + i;
    kw_seq *sq = &d->seq;
    int tf = 0, tn = n;
    bool pre = prefill, last = prefill;
    kw_batch b = {.n_seq = 1, .seqs = &sq, .tok_first = &tf, .tok_n = &tn, .pos = pos,
                  .prefill = &pre, .last_chunk = &last};
    kw_lctx lc = {.layer = layer, .hook_index = 0, .cfg = &d->cfg, .pool = d->pool,
                  .obs_window = 8};
    assert_int_equal(kw_view_dense(d->w, d->seq.kv, layer, false), 0);
    int len = kw_view_row_tokens(d->w, 0);
    const kw_view *vw = d->w;
    kw_attn_stats a = {.n_head = d->cfg.n_head, .probs = &probs, .obs_n = &obs_n,
                       .obs_len = &len, .views = &vw, .step_probs = &step, .step_len = &len};
    assert_int_equal(d->m->hook->after_attn(d->st, &lc, &b, &a), 0);
    if (prefill && d->m->hook->on_prefill_end)
        assert_int_equal(d->m->hook->on_prefill_end(d->st, &lc, &b), 0);
}

static void assert_kept(direct *d, int layer, int kvh, const int *want, int n)
{
    int got = kw_kvseq_len(d->seq.kv, layer, kvh);
    if (got != n)
        fail_msg("layer %d head %d holds %d tokens, expected %d", layer, kvh, got, n);
    for (int j = 0; j < n; j++) {
        int32_t pos;
        kw_kvseq_token_f32(d->seq.kv, layer, kvh, j, NULL, NULL, &pos);
        if (pos != want[j])
            fail_msg("layer %d head %d token %d is position %d, expected %d", layer, kvh, j,
                     pos, want[j]);
    }
}

static void direct_close(direct *d)
{
    d->m->hook->seq_close(d->st, &d->seq, 0);
    kw_kvseq_free(d->seq.kv);
    assert_int_equal(kw_kvpool_free_pages(d->pool), kw_kvpool_options(d->pool)->n_pages);
    d->m->state_free(d->st);
    d->m->params_free(d->m->params);
    free(d->m);
    kw_view_free(d->w);
    kw_kvpool_free(d->pool);
}

static void test_snapkv_keeps_pooled_top_tokens_and_window(void **st)
{
    /* 24 prompt tokens, window 4, kernel 3, capacity 7: 3 tokens + the window. KV head 0:
     * query head 1 puts 0.5 on token 9, pooling spreads it to 8..10. KV head 1: all its
     * heads put 0.3 on token 2 and 0.2 on token 15: 1..3 win. Other mass 0.001. */
    kw__evict_params *p = params(KW_EVICT_SNAPKV, 7);
    p->window = 4;
    p->kernel = 3;
    direct d;
    int n = 24, H = 6;
    direct_open(&d, p, n);
    direct_append(&d, 0, n);
    float *probs = malloc(sizeof(float) * 4 * H * n);
    for (int q = 0; q < 4; q++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < n; j++) {
                float v = 0.001f;
                if (h == 1 && j == 9)
                    v = 0.5f;
                if (h >= 3 && j == 2)
                    v = 0.3f;
                if (h >= 3 && j == 15)
                    v = 0.2f;
                probs[((int64_t)q * H + h) * n + j] = v;
            }
    int64_t before = kw_kvseq_pages_held(d.seq.kv);
    direct_call(&d, true, 0, n, probs, 4, NULL, 0);
    int want0[7] = {8, 9, 10, 20, 21, 22, 23}, want1[7] = {1, 2, 3, 20, 21, 22, 23};
    assert_kept(&d, 0, 0, want0, 7);
    assert_kept(&d, 0, 1, want1, 7);
    /* layer 0 went from 6 pages a head to 2: 8 pages freed */
    assert_int_equal(kw_kvseq_pages_held(d.seq.kv), before - 8);
    free(probs);
    direct_close(&d);
}

/* gqa: per_qhead (SnapKV's own selection): 24 prompt tokens, window 4, kernel 1,
 * capacity 6: query head h puts 0.5 on token 2 + 3h and 0.4 on 3 + 3h, so each query
 * head keeps its own two; the pool keeps their union per KV head with the window, and at
 * the next decode step each query head reads its own two, the window and the new token. */
static void test_snapkv_per_query_head(void **st)
{
    (void)st;
    kw__evict_params *p = params(KW_EVICT_SNAPKV, 6);
    p->window = 4;
    p->kernel = 1;
    p->per_qhead = true;
    direct d;
    int n = 24, H = 6;
    direct_open(&d, p, n);
    assert_true(d.m->hook->roles & KW_ROLE_SELECT);
    direct_append(&d, 0, n);
    float *probs = malloc(sizeof(float) * 4 * H * n);
    for (int q = 0; q < 4; q++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < n; j++)
                probs[((int64_t)q * H + h) * n + j] =
                    j == 2 + 3 * h ? 0.5f : j == 3 + 3 * h ? 0.4f : 0.001f;
    direct_call(&d, true, 0, n, probs, 4, NULL, 0);
    int want0[10] = {2, 3, 5, 6, 8, 9, 20, 21, 22, 23};
    int want1[10] = {11, 12, 14, 15, 17, 18, 20, 21, 22, 23};
    assert_kept(&d, 0, 0, want0, 10);
    assert_kept(&d, 0, 1, want1, 10);
    /* a decode step at position 24: the views per query head */
    direct_append(&d, n, 1);
    int32_t pos = n;
    kw_seq *sq = &d.seq;
    int tf = 0, tn = 1;
    bool pre = false, last = false;
    kw_batch b = {.n_seq = 1, .seqs = &sq, .tok_first = &tf, .tok_n = &tn, .pos = &pos,
                  .prefill = &pre, .last_chunk = &last};
    kw_lctx lc = {.layer = 0, .hook_index = 0, .cfg = &d.cfg, .pool = d.pool, .obs_window = 8};
    assert_int_equal(kw_view_dense(d.w, d.seq.kv, 0, false), 0);
    kw_view *out[1] = {d.w};
    assert_int_equal(d.m->hook->select(d.st, &lc, &b, NULL, out), 0);
    assert_true(d.w->per_qhead);
    assert_int_equal(d.w->n_rows, H);
    kw_kvmem mem = kw_kvpool_mem(d.pool);
    for (int h = 0; h < H; h++) {
        int32_t got[16];
        int m = 0;
        for (int x = d.w->row_ptr[h]; x < d.w->row_ptr[h + 1]; x++)
            for (int i = d.w->spans[x].first; i < d.w->spans[x].first + d.w->spans[x].n; i++)
                got[m++] = mem.pos[KW_POOL_MAIN][(int64_t)d.w->spans[x].page * 4 + i];
        int32_t want[7] = {2 + 3 * h, 3 + 3 * h, 20, 21, 22, 23, 24};
        assert_int_equal(m, 7);
        assert_memory_equal(got, want, sizeof want);
    }
    free(probs);
    direct_close(&d);
}

static void test_h2o_keeps_heavy_hitters_and_evicts_the_lightest_each_decode_step(void **st)
{
    kw__evict_params *p = params(KW_EVICT_H2O, 6); /* 3 heavy + 3 recent */
    direct d;
    int n = 12, H = 6;
    direct_open(&d, p, n);
    direct_append(&d, 0, n);
    float step[6 * 12];
    for (int h = 0; h < H; h++)
        for (int j = 0; j < n; j++)
            step[h * n + j] = j == 1 ? 0.5f : j == 4 ? 0.4f : j == 6 ? 0.3f : j == 8 ? 0.2f : 0.01f;
    direct_call(&d, true, 0, n, NULL, 0, step, 0);
    int want[6] = {1, 4, 6, 9, 10, 11};
    assert_kept(&d, 0, 0, want, 6);
    assert_kept(&d, 0, 1, want, 6);
    /* a decode step at position 12 that attends to position 9 heavily: position 6 (0.3)
     * is now the lightest outside the recent window {10, 11, 12} */
    direct_append(&d, 12, 1);
    float dec[6 * 7];
    for (int h = 0; h < H; h++)
        for (int j = 0; j < 7; j++)
            dec[h * 7 + j] = j == 3 ? 0.9f : 0.01f;
    direct_call(&d, false, 12, 1, NULL, 0, dec, 0);
    int want2[6] = {1, 4, 9, 10, 11, 12};
    assert_kept(&d, 0, 0, want2, 6);
    direct_close(&d);
}

static void test_streaming_keeps_sink_and_recent_while_decoding(void **st)
{
    kw__evict_params *p = params(KW_EVICT_STREAMING, 6);
    p->sink = 2;
    direct d;
    direct_open(&d, p, 20);
    direct_append(&d, 0, 20);
    direct_call(&d, true, 0, 20, NULL, 0, NULL, 1);
    int want[6] = {0, 1, 16, 17, 18, 19};
    assert_kept(&d, 1, 0, want, 6);
    assert_kept(&d, 1, 1, want, 6);
    assert_int_equal(kw_kvseq_len(d.seq.kv, 0, 0), 20); /* other layers: their own calls */
    direct_append(&d, 20, 1);
    direct_call(&d, false, 20, 1, NULL, 0, NULL, 1);
    int want2[6] = {0, 1, 17, 18, 19, 20};
    assert_kept(&d, 1, 1, want2, 6);
    direct_close(&d);
}

static void test_pyramid_schedule_decreases_linearly_with_the_same_total(void **st)
{
    /* SmolLM2's 30 layers, capacity 2048, window 32, 4096-token prompt */
    int sum = 0;
    for (int l = 0; l < 30; l++) {
        int k = kw__pyramid_keep(2048, 32, 20, 30, 4096, l);
        if (l > 0)
            assert_int_equal(kw__pyramid_keep(2048, 32, 20, 30, 4096, l - 1) - k, 132);
        sum += k;
    }
    assert_int_equal(kw__pyramid_keep(2048, 32, 20, 30, 4096, 0), 3932 + 32);
    assert_int_equal(kw__pyramid_keep(2048, 32, 20, 30, 4096, 29), 104 + 32);
    assert_true(fabs(sum / 30.0 - 2048) < 0.01 * 2048);
    /* capped by the prompt: 600 tokens, max = 568, min = 2 * 480 - 568 = 392 */
    assert_int_equal(kw__pyramid_keep(512, 32, 20, 30, 600, 0), 568 + 32);
    assert_int_equal(kw__pyramid_keep(512, 32, 20, 30, 600, 29), 568 - 29 * 6 + 32);
    /* ratio and budget resolve before the schedule */
    kw__evict_params *p = params(KW_EVICT_PYRAMID, 0);
    p->ratio = 0.25;
    p->window = 32;
    assert_int_equal(kw__evict_capacity(p, NULL, 30, 4096, 0, 0),
                     kw__pyramid_keep(1024, 32, 20, 30, 4096, 0));
    assert_int_equal(kw__evict_capacity(p, NULL, 30, 100, 5, 0), 32); /* 25 < the window */
    p->ratio = 0;
    p->capacity = 2048;
    assert_int_equal(kw__evict_capacity(p, NULL, 30, 1000, 5, 0), 2048); /* fits: all kept */
    kw_budget *b = kw_budget_new(30, 3, true);
    b->tokens[7 * 3 + 2] = 77;
    p->kind = KW_EVICT_SNAPKV;
    assert_int_equal(kw__evict_capacity(p, b, 30, 4096, 7, 2), 77);
    kw_budget_free(b);
    free(p);
}

/* ---- through the forward pass, against the plain reference ---- */

typedef struct fwd_case {
    kw__evict_kind kind;
    int capacity, n, n_prompt, chunk;
    int sink;
    bool qwen;
    const kw_budget *budget;
    bool per_qhead; /* SnapKV/PyramidKV gqa: per_qhead; the reference keeps per query head
                       what each view read */
} fwd_case;

static void run_forward(const fwd_case *fc, spy *sp)
{
    kw_model_config cfg = rt_tiny_config(fc->qwen, fc->qwen ? KW_ROPE_HALF : KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&cfg, 21);
    kw_fwd *f;
    kw_kvpool *pool;
    kw_error err = {0};
    assert_int_equal(kw__fwd_new(m, 256, &f, &err), 0);
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    o.pre_rope = fc->qwen;
    assert_int_equal(kw_kvpool_new(&cfg, &o, &pool, &err), 0);
    kw__evict_params *p = params(fc->kind, fc->capacity);
    p->sink = fc->sink;
    p->per_qhead = fc->per_qhead;
    if (fc->budget)
        p->budget = kw_value_budget((kw_budget *)fc->budget);
    kw_kvmethod *meth = kw__evict_method(p);
    void *st;
    assert_int_equal(meth->state_new(meth->params, &cfg, &st, &err), 0);
    memset(sp, 0, sizeof *sp);
    kw_hookstack hs = {.n = 2, .hooks = {meth->hook, &spy_hook}, .states = {st, sp}};
    assert_int_equal(kw_hookstack_check(&hs, &err), 0);
    const kw_hookstack *hsp = &hs;
    int n = fc->n, np = fc->n_prompt, ch = fc->chunk, V = cfg.n_vocab;
    uint64_t s = 17;
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(rt_rand_u64(&s) % V);
    float *got = malloc(sizeof(float) * n * V), *ref = malloc(sizeof(float) * n * V);
    kw_seq seq = {.kv = kw_kvseq_new(pool), .n_prompt = np, .max_new = n - np};
    assert_int_equal(meth->hook->seq_open(st, &seq, 0), 0);
    kw_seq *sq = &seq;
    rt_drive(f, pool, 1, &sq, &hsp, &ids, &n, &np, NULL, &ch, &got);
    if (fc->per_qhead)
        rt_ref_forward(m, ids, n, ref, spy_keep_read, sp, 1);
    else
        rt_ref_forward(m, ids, n, ref, spy_keep, sp, 0);
    for (int t = 0; t < n; t++) {
        double e = rt_rel_l2(got + (int64_t)t * V, ref + (int64_t)t * V, V);
        if (e > 1e-4)
            fail_msg("kind %d position %d: relative L2 %g to the reference over the kept "
                     "tokens", fc->kind, t, e);
    }
    rt_ref_forward(m, ids, n, ref, NULL, NULL, 0); /* eviction changed the result */
    assert_true(rt_rel_l2(got + (int64_t)(n - 1) * V, ref + (int64_t)(n - 1) * V, V) > 1e-4);
    meth->hook->seq_close(st, &seq, 0);
    kw_kvseq_free(seq.kv);
    assert_int_equal(kw_kvpool_free_pages(pool), o.n_pages);
    meth->state_free(st);
    meth->params_free(meth->params);
    free(meth);
    free(ids), free(got), free(ref);
    kw__fwd_free(f);
    kw_kvpool_free(pool);
    rt_tiny_free(m);
}

static int last_prefill_step(const spy *sp)
{
    int t = 0;
    while (t + 1 < sp->n_steps && sp->prefill[t + 1])
        t++;
    return t;
}

static void test_snapkv_through_forward_matches_reference_over_kept_tokens(void **st)
{
    static spy sp;
    for (int qwen = 0; qwen < 2; qwen++) {
        fwd_case fc = {KW_EVICT_SNAPKV, 20, 70, 60, 25, 4, qwen, NULL, false};
        run_forward(&fc, &sp);
        int t = last_prefill_step(&sp);
        assert_int_equal(sp.obs_n_min, 8);
        for (int l = 0; l < 3; l++)
            for (int h = 0; h < 2; h++) {
                assert_int_equal(sp.len[t][l][h], 20);
                for (int j = 52; j < 60; j++) /* the window */
                    assert_true(sp.kept[t][l][h][j]);
                assert_int_equal(sp.len[sp.n_steps - 1][l][h], 20 + 10); /* + generated */
            }
        assert_int_equal(sp.pages[t], 3 * 2 * 5);
    }
}

/* gqa: per_qhead through the forward pass: the logits equal a reference in which each
 * query head attends to exactly what its view read (its own picks, the window, the
 * generated tokens), and a view reads fewer tokens than its KV head holds */
static void test_snapkv_per_query_head_through_forward_matches_reference(void **st)
{
    static spy sp;
    for (int qwen = 0; qwen < 2; qwen++) {
        fwd_case fc = {KW_EVICT_SNAPKV, 20, 70, 60, 25, 4, qwen, NULL, true};
        run_forward(&fc, &sp);
        int t = sp.n_steps - 1, fewer = 0;
        for (int l = 0; l < 3; l++)
            for (int qh = 0; qh < 6; qh++) {
                int nr = 0;
                for (int j = 0; j < MAXN; j++)
                    nr += sp.read[t][l][qh][j];
                assert_int_equal(nr, 20 + 10); /* the capacity and the generated tokens */
                fewer += nr < sp.len[t][l][qh / 3];
            }
        assert_true(fewer > 0);
    }
}

static void test_pyramidkv_through_forward_keeps_its_layer_schedule(void **st)
{
    static spy sp;
    fwd_case fc = {KW_EVICT_PYRAMID, 24, 70, 60, 60, 4, false, NULL, false};
    run_forward(&fc, &sp);
    int t = last_prefill_step(&sp);
    for (int l = 0; l < 3; l++)
        for (int h = 0; h < 2; h++)
            assert_int_equal(sp.len[t][l][h], kw__pyramid_keep(24, 8, 20, 3, 60, l));
    assert_true(sp.len[t][0][0] > sp.len[t][2][0]);
}

static void test_streaming_through_forward_stays_bounded(void **st)
{
    static spy sp;
    fwd_case fc = {KW_EVICT_STREAMING, 12, 80, 50, 16, 3, true, NULL, false};
    run_forward(&fc, &sp);
    for (int t = 0; t < sp.n_steps; t++)
        for (int l = 0; l < 3; l++)
            for (int h = 0; h < 2; h++) {
                assert_true(sp.len[t][l][h] <= 12);
                for (int j = 0; j < 3; j++)
                    assert_true(sp.kept[t][l][h][j]); /* the sink */
            }
    assert_true(sp.n_steps == 4 + 30);
    assert_int_equal(sp.pages[sp.n_steps - 1], 3 * 2 * 3);
}

static void test_h2o_through_forward_stays_bounded_with_per_head_budget(void **st)
{
    static spy sp;
    kw_budget *b = kw_budget_new(3, 2, true);
    int caps[6] = {10, 14, 8, 12, 16, 6};
    memcpy(b->tokens, caps, sizeof caps);
    fwd_case fc = {KW_EVICT_H2O, 0, 75, 45, 20, 0, false, b, false};
    run_forward(&fc, &sp);
    int t0 = last_prefill_step(&sp);
    for (int t = t0; t < sp.n_steps; t++)
        for (int l = 0; l < 3; l++)
            for (int h = 0; h < 2; h++)
                assert_int_equal(sp.len[t][l][h], caps[l * 2 + h]);
}

/* ---- through the device engine ---- */

typedef struct done_box {
    pthread_mutex_t mu;
    kw_gen_result *r;
} done_box;

static void on_done(void *u, kw_gen_result *r)
{
    done_box *d = u;
    pthread_mutex_lock(&d->mu);
    d->r = r;
    pthread_mutex_unlock(&d->mu);
}

static kw_gen_result *engine_run(const kw_model *m, kw__evict_params *p, int n_prompt,
                                 int max_new, spy *sp, int64_t *claim_pages)
{
    kw_engine_opts o = kw_engine_defaults();
    o.page_tokens = 8;
    o.n_pages = 4096;
    o.chunk = 64;
    kw_engine *e;
    kw_error err = {0};
    assert_int_equal(kw_engine_open_model(m, &o, &e, &err), 0);
    kw_kvmethod *meth = p ? kw__evict_method(p) : NULL;
    void *st = NULL;
    if (meth)
        assert_int_equal(meth->state_new(meth->params, &m->cfg, &st, &err), 0);
    memset(sp, 0, sizeof *sp);
    kw_hookstack hs = {.n = meth ? 2 : 1, .hooks = {meth ? meth->hook : &spy_hook, &spy_hook},
                       .states = {meth ? st : (void *)sp, sp}};
    if (meth && claim_pages) {
        kw_seqshape sh = {.cfg = &m->cfg, .page_tokens = 8, .n_prompt = n_prompt,
                          .max_new = max_new};
        kw_memclaim mc;
        meth->hook->reserve(st, &sh, &mc);
        *claim_pages = mc.pages;
    }
    int32_t ids[200];
    uint64_t s = 99;
    for (int i = 0; i < n_prompt; i++)
        ids[i] = (int32_t)(rt_rand_u64(&s) % m->cfg.n_vocab);
    done_box box = {.mu = PTHREAD_MUTEX_INITIALIZER};
    kw_gen_req r = {.prompt = ids, .n_prompt = n_prompt, .max_new = max_new,
                    .ignore_eos = true, .hooks = &hs, .done = on_done, .user = &box};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_close(e);
    if (meth) {
        meth->state_free(st);
        meth->params_free(meth->params);
        free(meth);
    }
    assert_non_null(box.r);
    if (box.r->rc != 0)
        fail_msg("generation failed: %s", box.r->error);
    return box.r;
}

static void test_engine_memory_drops_to_the_capacity_and_decoding_runs(void **st)
{
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&cfg, 4);
    static spy sp;
    /* 150-token prompt in chunks of 64: the engine makes the last chunk >= obs_window */
    kw_gen_result *full = engine_run(m, NULL, 150, 20, &sp, NULL);
    int64_t full_pages = sp.pages[last_prefill_step(&sp)];
    assert_int_equal(full_pages, 3 * 2 * 19);
    kw_gen_result_free(full);

    kw__evict_params *p = params(KW_EVICT_SNAPKV, 40);
    p->window = 32;
    int64_t claim = 0;
    kw_gen_result *r = engine_run(m, p, 150, 20, &sp, &claim);
    int t = last_prefill_step(&sp);
    assert_int_equal(sp.obs_n_min, 32);
    assert_int_equal(sp.pages[t], 3 * 2 * 5); /* 40 tokens = 5 pages of 8 per table */
    assert_int_equal(r->n_gen, 20);
    assert_int_equal(sp.len[sp.n_steps - 1][0][0], 40 + 19);
    assert_int_equal(claim, 3 * 2 * 19); /* the prompt is resident before eviction */
    kw_gen_result_free(r);
    {   /* a short prompt under a large capacity grows while decoding, up to the capacity */
        kw__evict_params *q = params(KW_EVICT_STREAMING, 100);
        kw_kvmethod *mm = kw__evict_method(q);
        void *ms;
        kw_error e2 = {0};
        assert_int_equal(mm->state_new(mm->params, &cfg, &ms, &e2), 0);
        kw_seqshape sh = {.cfg = &cfg, .page_tokens = 8, .n_prompt = 30, .max_new = 200};
        kw_memclaim mc;
        assert_int_equal(mm->hook->reserve(ms, &sh, &mc), 0);
        assert_int_equal(mc.pages, 3 * 2 * 13); /* 101 tokens */
        sh.max_new = 20;
        assert_int_equal(mm->hook->reserve(ms, &sh, &mc), 0);
        assert_int_equal(mc.pages, 3 * 2 * 7); /* 50 tokens */
        mm->state_free(ms);
        mm->params_free(mm->params);
        free(mm);
    }

    p = params(KW_EVICT_STREAMING, 24);
    r = engine_run(m, p, 150, 40, &sp, NULL);
    for (int k = 0; k < sp.n_steps; k++)
        assert_true(sp.pages[k] <= 3 * 2 * 3);
    assert_int_equal(r->n_gen, 40);
    assert_true(r->pages_peak <= 3 * 2 * 3);
    kw_gen_result_free(r);

    p = params(KW_EVICT_H2O, 0);
    p->ratio = 0.2; /* 30 tokens of 150 */
    r = engine_run(m, p, 150, 40, &sp, NULL);
    for (int k = last_prefill_step(&sp); k < sp.n_steps; k++)
        assert_int_equal(sp.len[k][2][1], 30);
    assert_int_equal(r->n_gen, 40);
    assert_int_equal(r->kv_payload_mean > 0, 1);
    kw_gen_result_free(r);
    rt_tiny_free(m);
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_snapkv_keeps_pooled_top_tokens_and_window),
        cmocka_unit_test(test_snapkv_per_query_head),
        cmocka_unit_test(test_h2o_keeps_heavy_hitters_and_evicts_the_lightest_each_decode_step),
        cmocka_unit_test(test_streaming_keeps_sink_and_recent_while_decoding),
        cmocka_unit_test(test_pyramid_schedule_decreases_linearly_with_the_same_total),
        cmocka_unit_test(test_snapkv_through_forward_matches_reference_over_kept_tokens),
        cmocka_unit_test(test_snapkv_per_query_head_through_forward_matches_reference),
        cmocka_unit_test(test_pyramidkv_through_forward_keeps_its_layer_schedule),
        cmocka_unit_test(test_streaming_through_forward_stays_bounded),
        cmocka_unit_test(test_h2o_through_forward_stays_bounded_with_per_head_budget),
        cmocka_unit_test(test_engine_memory_drops_to_the_capacity_and_decoding_runs),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
