/* The hook seam: a SELECT hook that keeps a random subset of tokens per row (per KV
 * head, and per query head), and an EVICT hook that drops a random subset per KV head
 * when the prompt ends, each against the plain reference attending exactly that
 * subset; the stack rules; LSE and observation probabilities handed to after_attn. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels.h"
#include "runtime/forward.h"
#include "runtime_support.h"

static int hkeep(int layer, int head, int pos, int salt)
{
    uint64_t s = ((uint64_t)layer * 1315423911u) ^ ((uint64_t)head << 20) ^ (uint64_t)pos
                 ^ ((uint64_t)salt << 40);
    return rt_rand_u64(&s) % 3 != 0;
}

typedef struct sel_state {
    bool per_qhead;
    int calls;
} sel_state;

static int sel_select(void *st, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    sel_state *s = st;
    s->calls++;
    int g = c->cfg->n_head / c->cfg->n_head_kv;
    int rows = s->per_qhead ? c->cfg->n_head : c->cfg->n_head_kv;
    for (int i = 0; i < b->n_seq; i++) {
        kw_view_reset(out[i], rows, s->per_qhead);
        for (int r = 0; r < rows; r++) {
            kw_view_begin_row(out[i], r);
            int kvh = s->per_qhead ? r / g : r;
            int n = kw_kvseq_len(b->seqs[i]->kv, c->layer, kvh);
            for (int j = 0; j < n; j++) {
                int32_t pos;
                kw_kvseq_token(b->seqs[i]->kv, c->layer, kvh, j, NULL, NULL, &pos);
                if (hkeep(c->layer, r, pos, 1)) {
                    int rc = kw_view_add_token(out[i], b->seqs[i]->kv, c->layer, kvh, j);
                    if (rc < 0)
                        return rc;
                }
            }
        }
    }
    return 0;
}

static const kw_kvhook sel_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                   .roles = KW_ROLE_SELECT, .needs = KW_NEED_HOST_Q,
                                   .name = "test.select", .select = sel_select};

typedef struct ev_state {
    int n_prompt, recent, calls;
    int64_t pages_before, pages_after;
    int lse_seen, probs_seen;
    double probs_sum_err;
} ev_state;

static int ev_prefill_end(void *st, kw_lctx *c, const kw_batch *b)
{
    ev_state *s = st;
    s->calls++;
    for (int i = 0; i < b->n_seq; i++) {
        kw_kvseq *kv = b->seqs[i]->kv;
        if (c->layer == 0)
            s->pages_before = kw_kvseq_pages_held(kv);
        for (int h = 0; h < c->cfg->n_head_kv; h++) {
            int n = kw_kvseq_len(kv, c->layer, h), nk = 0;
            int32_t *keep = malloc(sizeof(int32_t) * n);
            for (int j = 0; j < n; j++) {
                int32_t pos;
                kw_kvseq_token(kv, c->layer, h, j, NULL, NULL, &pos);
                if (pos >= s->n_prompt - s->recent || hkeep(c->layer, h, pos, 2))
                    keep[nk++] = j;
            }
            int rc = kw_kvseq_keep(kv, c->layer, h, keep, nk);
            free(keep);
            if (rc < 0)
                return rc;
        }
        if (c->layer == c->cfg->n_layer - 1)
            s->pages_after = kw_kvseq_pages_held(kv);
    }
    return 0;
}

/* Observation probabilities of a query sum to 1 over its row (all rows here are
 * dense, so every row of a query's group has the same tokens). */
static int ev_after_attn(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    ev_state *s = st;
    if (a->lse)
        s->lse_seen++;
    for (int i = 0; i < b->n_seq; i++) {
        if (!a->probs[i])
            continue;
        s->probs_seen++;
        for (int q = 0; q < a->obs_n[i]; q++)
            for (int h = 0; h < a->n_head; h++) {
                double sum = 0;
                for (int j = 0; j < a->obs_len[i]; j++)
                    sum += a->probs[i][((int64_t)q * a->n_head + h) * a->obs_len[i] + j];
                s->probs_sum_err = fmax(s->probs_sum_err, fabs(sum - 1));
            }
    }
    return 0;
}

static const kw_kvhook ev_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                  .roles = KW_ROLE_EVICT,
                                  .needs = KW_NEED_OBS_PROBS | KW_NEED_LSE,
                                  .name = "test.evict", .on_prefill_end = ev_prefill_end,
                                  .after_attn = ev_after_attn};

typedef struct keepctx {
    int mode; /* 1 select per KV head, 2 per query head, 3 evict */
    int n_prompt, recent;
} keepctx;

static int ref_keep(void *u, int layer, int head, int qpos, int kpos)
{
    keepctx *k = u;
    if (k->mode == 3)
        return qpos < k->n_prompt || kpos >= k->n_prompt - k->recent || hkeep(layer, head, kpos, 2);
    return hkeep(layer, head, kpos, 1);
}

static void run_mode(int mode, int qwen, bool pre_rope)
{
    kw_model_config cfg = rt_tiny_config(qwen, qwen ? KW_ROPE_HALF : KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&cfg, 11);
    kw_fwd *f;
    kw_kvpool *pool;
    kw_error err = {0};
    assert_int_equal(kw__fwd_new(m, 256, &f, &err), 0);
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    o.pre_rope = pre_rope;
    assert_int_equal(kw_kvpool_new(&cfg, &o, &pool, &err), 0);
    sel_state ss = {.per_qhead = mode == 2};
    ev_state es = {.n_prompt = 50, .recent = 5};
    kw_hookstack hs = {.n = 1, .hooks = {mode == 3 ? &ev_hook : &sel_hook},
                       .states = {mode == 3 ? (void *)&es : (void *)&ss}};
    assert_int_equal(kw_hookstack_check(&hs, &err), 0);
    const kw_hookstack *hsp = &hs;
    uint64_t s = 3;
    int n = 64, np = 50, ch = 13, V = cfg.n_vocab;
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(rt_rand_u64(&s) % V);
    float *got = malloc(sizeof(float) * n * V), *ref = malloc(sizeof(float) * n * V);
    kw_seq seq = {.kv = kw_kvseq_new(pool)};
    kw_seq *sp = &seq;
    rt_drive(f, pool, 1, &sp, &hsp, &ids, &n, &np, NULL, &ch, &got);
    keepctx kc = {.mode = mode, .n_prompt = np, .recent = 5};
    rt_ref_forward(m, ids, n, ref, ref_keep, &kc, mode == 2);
    for (int t = 0; t < n; t++) {
        double e = rt_rel_l2(got + (int64_t)t * V, ref + (int64_t)t * V, V);
        if (e > 1e-4)
            fail_msg("mode %d position %d: relative L2 %g", mode, t, e);
    }
    /* and the subset really changes the result: the full reference differs */
    float *full = malloc(sizeof(float) * n * V);
    rt_ref_forward(m, ids, n, full, NULL, NULL, 0);
    assert_true(rt_rel_l2(got + (int64_t)(n - 1) * V, full + (int64_t)(n - 1) * V, V) > 1e-3);
    if (mode == 3) {
        assert_int_equal(es.calls, cfg.n_layer);
        assert_true(es.pages_after < es.pages_before); /* eviction freed pages */
        assert_int_equal(es.probs_seen, cfg.n_layer);
        assert_true(es.lse_seen > 0);
        assert_true(es.probs_sum_err < 1e-4);
    } else {
        assert_int_equal(ss.calls, cfg.n_layer * (4 + (n - np)));
    }
    kw_kvseq_free(seq.kv);
    assert_int_equal(kw_kvpool_free_pages(pool), o.n_pages);
    free(ids), free(got), free(ref), free(full);
    kw__fwd_free(f);
    kw_kvpool_free(pool);
    rt_tiny_free(m);
}

static void test_hooks_select_random_subset_per_kv_head(void **st)
{
    run_mode(1, 0, false);
    run_mode(1, 1, true);
}

static void test_hooks_select_random_subset_per_query_head(void **st)
{
    run_mode(2, 1, false);
    run_mode(2, 0, true);
}

static void test_hooks_evict_random_subset_frees_pages(void **st)
{
    run_mode(3, 0, false);
    run_mode(3, 1, true);
}

/* KW_NEED_STEP_PROBS against a plain reference: a hook copies the step's queries in
 * select (leaving the dense view) and, in after_attn, recomputes every query's softmax
 * over the stored (post-RoPE) keys in double and sums it per key. */
typedef struct sp_state {
    float *q;      /* (n_tok, n_head, head_dim) copy of the step's queries */
    int steps_seen, decode_seen;
    double max_err, max_norm_err;
} sp_state;

static int sp_select(void *st, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    sp_state *s = st;
    int last = b->tok_first[b->n_seq - 1] + b->tok_n[b->n_seq - 1];
    size_t n = (size_t)last * c->cfg->n_head * c->cfg->head_dim;
    free(s->q);
    s->q = malloc(n * sizeof(float));
    memcpy(s->q, q, n * sizeof(float));
    return 0;
}

static int sp_after_attn(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    sp_state *s = st;
    const kw_model_config *cf = c->cfg;
    int H = cf->n_head, g = H / cf->n_head_kv, hd = cf->head_dim;
    for (int i = 0; i < b->n_seq; i++) {
        assert_non_null(a->step_probs);
        const float *sp = a->step_probs[i];
        assert_non_null(sp);
        s->steps_seen++;
        s->decode_seen += !b->prefill[i];
        for (int h = 0; h < H; h++) {
            int kvh = h / g, n = kw_kvseq_len(b->seqs[i]->kv, c->layer, kvh);
            assert_int_equal(a->step_len[i], n);
            double *acc = calloc((size_t)n, sizeof(double)), *sc = malloc(sizeof(double) * n);
            double total = 0;
            for (int t = b->tok_first[i]; t < b->tok_first[i] + b->tok_n[i]; t++) {
                const float *q = s->q + ((int64_t)t * H + h) * hd;
                double mx = -INFINITY, z = 0;
                for (int j = 0; j < n; j++) {
                    const float *k;
                    int32_t pos;
                    float kr[64];
                    kw_kvseq_token(b->seqs[i]->kv, c->layer, kvh, j, &k, NULL, &pos);
                    if (kw_kvpool_options(c->pool)->pre_rope) { /* rotate at read */
                        float inv[32];
                        kw_rope_inv_freq(cf, inv);
                        memcpy(kr, k, sizeof(float) * hd);
                        kw_ref_rope(kr, &pos, 1, 1, hd, inv, cf->rope_layout);
                        k = kr;
                    }
                    double d = 0;
                    for (int x = 0; x < hd; x++)
                        d += (double)q[x] * k[x];
                    sc[j] = pos <= b->pos[t] ? d / sqrt((double)hd) : -INFINITY;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j < n; j++)
                    z += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                for (int j = 0; j < n; j++)
                    acc[j] += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx) / z;
            }
            for (int j = 0; j < n; j++) {
                s->max_err = fmax(s->max_err, fabs(acc[j] - sp[(int64_t)h * n + j]));
                total += sp[(int64_t)h * n + j];
            }
            /* each query's probabilities sum to 1 */
            s->max_norm_err = fmax(s->max_norm_err, fabs(total - b->tok_n[i]));
            free(acc), free(sc);
        }
    }
    return 0;
}

static const kw_kvhook sp_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                  .roles = KW_ROLE_SELECT,
                                  .needs = KW_NEED_STEP_PROBS | KW_NEED_HOST_Q,
                                  .name = "test.step_probs", .select = sp_select,
                                  .after_attn = sp_after_attn};

/* One sequence of n tokens (np of prompt, chunks of ch, seeded ids) through the CPU
 * forward with stack hs, on a pool of 4-token pages (pre_rope: K stored before RoPE). */
static void drive_one(const kw_model *m, const kw_model_config *cfg, bool pre_rope,
                      const kw_hookstack *hs, int n, int np, int ch, uint64_t seed)
{
    kw_fwd *f;
    kw_kvpool *pool;
    kw_error err = {0};
    assert_int_equal(kw__fwd_new(m, 256, &f, &err), 0);
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    o.pre_rope = pre_rope;
    assert_int_equal(kw_kvpool_new(cfg, &o, &pool, &err), 0);
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(rt_rand_u64(&seed) % cfg->n_vocab);
    float *got = malloc(sizeof(float) * n * cfg->n_vocab);
    kw_seq seq = {.kv = kw_kvseq_new(pool)};
    kw_seq *sq = &seq;
    rt_drive(f, pool, 1, &sq, &hs, &ids, &n, &np, NULL, &ch, &got);
    kw_kvseq_free(seq.kv);
    free(ids), free(got);
    kw__fwd_free(f);
    kw_kvpool_free(pool);
}

static void step_probs_case(bool pre_rope)
{
    kw_model_config cfg = rt_tiny_config(pre_rope, pre_rope ? KW_ROPE_HALF : KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&cfg, 5);
    sp_state ss = {0};
    kw_hookstack hs = {.n = 1, .hooks = {&sp_hook}, .states = {&ss}};
    int n = 40, np = 30;
    drive_one(m, &cfg, pre_rope, &hs, n, np, 11, 9);
    assert_int_equal(ss.steps_seen, cfg.n_layer * (3 + (n - np)));
    assert_int_equal(ss.decode_seen, cfg.n_layer * (n - np));
    if (ss.max_err > 1e-5 || ss.max_norm_err > 1e-4)
        fail_msg("step probabilities: max error %g, normalization error %g", ss.max_err,
                 ss.max_norm_err);
    free(ss.q);
    rt_tiny_free(m);
}

static void test_step_probs_match_plain_softmax_in_prefill_chunks_and_decode(void **st)
{
    step_probs_case(false);
    step_probs_case(true); /* K stored before RoPE, rotated at read */
}

/* probs_at: a hook that needs decode probabilities at layer 1 only gets them there, at
 * every decode step, and no layer computes them for it elsewhere (after_attn sees NULL);
 * one without probs_at gets them at every layer. */
typedef struct at_state {
    int want_layer; /* -1: every layer (no probs_at) */
    int seen[3], missing[3];
} at_state;

static bool at_probs_at(void *stp, int layer) { return layer == ((at_state *)stp)->want_layer; }

static int at_after(void *stp, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    at_state *st = stp;
    if (b->prefill[0])
        return 0;
    if (a->step_probs && a->step_probs[0])
        st->seen[c->layer]++;
    else
        st->missing[c->layer]++;
    return 0;
}

static void test_probs_only_at_the_layers_a_hook_wants(void **state)
{
    (void)state;
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&cfg, 6);
    assert_int_equal(cfg.n_layer, 3);
    for (int k = 0; k < 2; k++) {
        at_state as = {.want_layer = k ? 1 : -1};
        kw_kvhook h = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                       .roles = KW_ROLE_SELECT, .needs = KW_NEED_DECODE_PROBS,
                       .name = "test.probs_at", .after_attn = at_after,
                       .probs_at = k ? at_probs_at : NULL};
        kw_hookstack hs = {.n = 1, .hooks = {&h}, .states = {&as}};
        int n = 30, np = 20;
        drive_one(m, &cfg, false, &hs, n, np, 8, 4);
        for (int l = 0; l < 3; l++) {
            bool want = k == 0 || l == 1;
            assert_int_equal(as.seen[l], want ? n - np : 0);
            assert_int_equal(as.missing[l], want ? 0 : n - np);
        }
    }
    rt_tiny_free(m);
}

static void test_hookstack_rules(void **st)
{
    kw_error err = {0};
    kw_hookstack two_evict = {.n = 3, .hooks = {&ev_hook, &sel_hook, &ev_hook}};
    assert_int_equal(kw_hookstack_check(&two_evict, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "hooks 0 'test.evict' and 2 'test.evict' both EVICT"));
    kw_hookstack ok = {.n = 3, .hooks = {&ev_hook, &sel_hook, &sel_hook}};
    assert_int_equal(kw_hookstack_check(&ok, &err), 0);
    assert_int_equal(kw_hookstack_needs(&ok),
                     KW_NEED_OBS_PROBS | KW_NEED_LSE | KW_NEED_HOST_Q);
    /* the rule itself, as the graph builder also applies it: EVICT before STORE */
    uint32_t roles[] = {KW_ROLE_SELECT, KW_ROLE_STORE, KW_ROLE_EVICT | KW_ROLE_SELECT,
                        KW_ROLE_STORE, KW_ROLE_EVICT};
    int first = -1, second = -1;
    assert_int_equal(kw_kvroles_conflict(roles, 5, &first, &second), KW_ROLE_EVICT);
    assert_int_equal(first, 2);
    assert_int_equal(second, 4);
    assert_int_equal(kw_kvroles_conflict(roles, 4, &first, &second), KW_ROLE_STORE);
    assert_int_equal(first, 1);
    assert_int_equal(second, 3);
    assert_int_equal(kw_kvroles_conflict(roles, 3, NULL, NULL), 0);
    char txt[32];
    assert_string_equal(kw_kvroles_text(roles[2], txt, sizeof txt), "EVICT+SELECT");
    assert_string_equal(kw_kvroles_text(0, txt, sizeof txt), "none");
    kw_kvhook bad = sel_hook;
    bad.abi = 99;
    kw_hookstack b = {.n = 1, .hooks = {&bad}};
    assert_int_equal(kw_hookstack_check(&b, &err), KW_EABI);
    kw_hookstack none = {.n = 0};
    assert_int_equal(kw_hookstack_check(&none, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hooks_select_random_subset_per_kv_head),
        cmocka_unit_test(test_hooks_select_random_subset_per_query_head),
        cmocka_unit_test(test_hooks_evict_random_subset_frees_pages),
        cmocka_unit_test(test_step_probs_match_plain_softmax_in_prefill_chunks_and_decode),
        cmocka_unit_test(test_probs_only_at_the_layers_a_hook_wants),
        cmocka_unit_test(test_hookstack_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
