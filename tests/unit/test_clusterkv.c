/* retrieve.clusterkv: k-means against a plain double-precision Lloyd from the same
 * seeded start; the hook's recall on keys planted in two opposite groups (the query's
 * group is read, the other not; the budget by the param or a prompt ratio), the sink
 * and the tokens not yet clustered always read, exactly budget - sink clustered tokens,
 * a budget that covers the context leaving the dense view (and clustering nothing),
 * dense layers and prefill, the windows of generated tokens added to the index (after a
 * step's attention), and a table compacted under the index: the chosen positions it no
 * longer holds go to the rows' wants. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvweave/util.h"
#include "retrieve/clusterkv.h"
#include "hook_fixture.h"
#include "runtime_support.h"

/* ---- k-means ---- */

/* The documented start (k distinct rows by a partial Fisher-Yates shuffle drawn with
 * kw_splitmix64 from seed), then Lloyd rounds in double: cosine assignment, mean update,
 * an empty cluster keeping its centroid. */
static void ref_kmeans(const float *x, int m, int d, int k, int iters, uint64_t seed,
                       int32_t *label, double *cent)
{
    int *idx = malloc(sizeof(int) * (size_t)m), *cnt = malloc(sizeof(int) * (size_t)k);
    double *sum = malloc(sizeof(double) * (size_t)k * d);
    for (int i = 0; i < m; i++)
        idx[i] = i;
    uint64_t s = seed;
    for (int c = 0; c < k; c++) {
        int j = c + (int)(kw_splitmix64(&s) % (uint64_t)(m - c)), t = idx[c];
        idx[c] = idx[j], idx[j] = t;
        for (int e = 0; e < d; e++)
            cent[c * d + e] = x[idx[c] * d + e];
    }
    for (int it = 0; it < iters; it++) {
        for (int i = 0; i < m; i++) {
            double best = -INFINITY, nx = 0;
            for (int e = 0; e < d; e++)
                nx += (double)x[i * d + e] * x[i * d + e];
            for (int c = 0; c < k; c++) {
                double dot = 0, nc = 0;
                for (int e = 0; e < d; e++)
                    dot += x[i * d + e] * cent[c * d + e], nc += cent[c * d + e] * cent[c * d + e];
                double cs = dot / sqrt(nx * nc);
                if (cs > best)
                    best = cs, label[i] = c;
            }
        }
        memset(cnt, 0, sizeof(int) * (size_t)k);
        memset(sum, 0, sizeof(double) * (size_t)k * d);
        for (int i = 0; i < m; i++) {
            cnt[label[i]]++;
            for (int e = 0; e < d; e++)
                sum[label[i] * d + e] += x[i * d + e];
        }
        for (int c = 0; c < k; c++)
            for (int e = 0; cnt[c] && e < d; e++)
                cent[c * d + e] = sum[c * d + e] / cnt[c];
    }
    free(idx), free(cnt), free(sum);
}

/* rows around g random directions (lengths 0.5-2, noise 0.05): clear cosine margins */
static float *planted(int m, int d, int g, uint64_t *rs)
{
    float *dir = malloc(sizeof(float) * (size_t)g * d), *x = malloc(sizeof(float) * (size_t)m * d);
    for (int i = 0; i < g * d; i++)
        dir[i] = (float)(rt_rand01(rs) * 2 - 1);
    for (int i = 0; i < m; i++) {
        int c = (int)(rt_rand01(rs) * g);
        double len = 0.5 + 1.5 * rt_rand01(rs);
        for (int e = 0; e < d; e++)
            x[i * d + e] = (float)(len * dir[c * d + e] + 0.05 * (rt_rand01(rs) * 2 - 1));
    }
    free(dir);
    return x;
}

static void test_kmeans_matches_plain_lloyd(void **state)
{
    (void)state;
    uint64_t rs = 7;
    for (int trial = 0; trial < 6; trial++) {
        int d = 4 + (int)(rt_rand01(&rs) * 30), m = 40 + (int)(rt_rand01(&rs) * 300);
        int g = 2 + (int)(rt_rand01(&rs) * 8), k = trial % 2 ? g : 2 * g, iters = 1 + trial * 4;
        float *x = planted(m, d, g, &rs);
        int32_t *lab = malloc(sizeof(int32_t) * (size_t)m), *rlab = malloc(sizeof(int32_t) * (size_t)m);
        float *cent = malloc(sizeof(float) * (size_t)k * d);
        double *rcent = malloc(sizeof(double) * (size_t)k * d);
        uint64_t seed = 1000 + (uint64_t)trial;
        assert_int_equal(kw__ckv_kmeans(x, m, d, k, iters, seed, lab, cent), 0);
        ref_kmeans(x, m, d, k, iters, seed, rlab, rcent);
        for (int i = 0; i < m; i++)
            assert_int_equal(lab[i], rlab[i]);
        double err = 0, mx = 0;
        for (int i = 0; i < k * d; i++)
            err = fmax(err, fabs(cent[i] - rcent[i])), mx = fmax(mx, fabs(rcent[i]));
        if (err > 1e-5 * (1 + mx))
            fail_msg("trial %d: centroid error %g over %g", trial, err, mx);
        free(x), free(lab), free(rlab), free(cent), free(rcent);
    }
    float x[8] = {1, 0, 0, 1, 1, 1, -1, 0};
    int32_t lab[4];
    float cent[8];
    assert_int_equal(kw__ckv_kmeans(x, 4, 2, 5, 3, 1, lab, cent), KW_EINVAL); /* k > m */
    assert_int_equal(kw__ckv_kmeans(x, 4, 2, 2, 0, 1, lab, cent), KW_EINVAL);
}

/* ---- the hook ---- */

/* n tokens in every layer; token j of each KV head has K = +u or -u (the group of
 * sign[j]: j % 3 == 0 is +) plus noise, u the head's own direction */
static void append(hook_fx *fx, int j0, int n)
{
    const kw_model_config *c = &fx->cfg;
    int hd = c->head_dim, kd = c->n_head_kv * hd;
    float *k = malloc(sizeof(float) * (size_t)n * kd), *v = malloc(sizeof(float) * (size_t)n * kd);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n);
    for (int l = 0; l < c->n_layer; l++) {
        for (int t = 0; t < n; t++) {
            float sgn = (j0 + t) % 3 == 0 ? 1.f : -1.f;
            for (int h = 0; h < c->n_head_kv; h++)
                for (int e = 0; e < hd; e++) {
                    float u = (e + h) % 2 ? 1.f : -0.5f;
                    k[(t * c->n_head_kv + h) * hd + e] =
                        sgn * u + 0.1f * (float)(rt_rand01(&fx->rs) * 2 - 1);
                    v[(t * c->n_head_kv + h) * hd + e] = (float)rt_rand01(&fx->rs);
                }
            pos[t] = j0 + t;
        }
        assert_int_equal(kw_kvseq_append(fx->seq.kv, l, k, v, pos, n), 0);
    }
    free(k), free(v), free(pos);
}

static void fx_open(hook_fx *fx, const kw_clusterkv_opts *o, int n_prompt)
{
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    cfg.n_layer = 3;
    cfg.head_dim = 16;
    kw_kvmethod *m;
    kw_error err = {0};
    assert_int_equal(kw__clusterkv_method(o, NULL, &m, &err), 0);
    hfx_open(fx, &cfg, 16, 4096, m, 5, n_prompt);
    fx->rs = 0xc1u;
}

/* queries: heads of KV head 0 along +u, of KV head 1 along -u */
static float *queries(const hook_fx *fx)
{
    int H = fx->cfg.n_head, hd = fx->cfg.head_dim, g = H / fx->cfg.n_head_kv;
    float *q = malloc(sizeof(float) * (size_t)H * hd);
    for (int h = 0; h < H; h++)
        for (int e = 0; e < hd; e++)
            q[h * hd + e] = (h / g == 0 ? 1.f : -1.f) * ((e + h / g) % 2 ? 1.f : -0.5f);
    return q;
}

/* o: a budget of 48 tokens, by the param or as a ratio of the sequence's n_prompt
 * (seq_prompt; the tokens stored are the same either way) */
static void recall_case(const kw_clusterkv_opts *op, int seq_prompt)
{
    kw_clusterkv_opts o = *op;
    hook_fx fx;
    fx_open(&fx, &o, seq_prompt);
    o.budget = 48;
    int n_prompt = 8 + 120; /* 40 of the 120 clustered tokens are in the + group */
    append(&fx, 0, n_prompt); /* the prompt, indexed after its attention */
    float *q = queries(&fx);
    int g = fx.cfg.n_head / fx.cfg.n_head_kv, n = n_prompt + 1;
    char *got = malloc((size_t)n + 64);
    int64_t meta0 = fx.seq.meta_bytes;
    for (int l = 0; l < fx.cfg.n_layer; l++)
        assert_int_equal(hfx_after_attn(&fx, l, false, NULL, 0), 0);
    assert_true(fx.seq.meta_bytes > meta0);
    append(&fx, n_prompt, 1); /* the first decode token */
    /* prefill and the dense layer: the dense view stays */
    assert_int_equal(hfx_select(&fx, 2, true, q), 0);
    assert_false(fx.w->per_qhead);
    assert_int_equal(hfx_select(&fx, 0, false, q), 0);
    assert_false(fx.w->per_qhead);
    assert_int_equal(hfx_select(&fx, 1, false, q), 0);
    assert_true(fx.w->per_qhead);
    assert_int_equal(fx.w->n_rows, fx.cfg.n_head);
    assert_int_equal(fx.w->n_want, 0); /* the pool holds every token */
    for (int r = 0; r < fx.cfg.n_head; r++) {
        int total = hfx_row_marks(&fx, 1, r, got, n), plus = r / g == 0;
        assert_int_equal(total, o.sink + (o.budget - o.sink) + 1);
        for (int j = 0; j < o.sink; j++)
            assert_int_equal(got[j], 1);
        assert_int_equal(got[n - 1], 1); /* the current token: not clustered */
        /* heads along +u read the + group, heads along -u 40 tokens of the - group */
        for (int j = o.sink; j < n - 1; j++)
            if ((j % 3 == 0) != plus)
                assert_int_equal(got[j], 0);
        if (plus)
            for (int j = o.sink; j < n - 1; j++)
                assert_int_equal(got[j], j % 3 == 0);
    }
    /* generated tokens: read until a window of 32 is clustered, then recalled by cluster */
    assert_int_equal(hfx_after_attn(&fx, 1, false, NULL, 0), 0); /* 1 of 32: nothing */
    append(&fx, n, 31);
    n += 31;
    assert_int_equal(hfx_select(&fx, 1, false, q), 0);
    for (int r = 0; r < fx.cfg.n_head; r++) {
        assert_int_equal(hfx_row_marks(&fx, 1, r, got, n), o.budget + 32);
        for (int j = n_prompt; j < n; j++)
            assert_int_equal(got[j], 1);
    }
    int64_t meta1 = fx.seq.meta_bytes;
    assert_int_equal(hfx_after_attn(&fx, 1, false, NULL, 0), 0);
    int hd = fx.cfg.head_dim;
    /* one window of 32 indexed into 2 clusters (a centroid and a count each, a member
     * number and a position per token), for each of the 2 KV heads */
    assert_int_equal(fx.seq.meta_bytes - meta1,
                     2 * (2 * (hd * (int64_t)sizeof(float) + 4) + 32 * 8));
    append(&fx, n, 1);
    n += 1;
    assert_int_equal(hfx_select(&fx, 1, false, q), 0);
    for (int r = 0; r < fx.cfg.n_head; r++) {
        assert_int_equal(hfx_row_marks(&fx, 1, r, got, n), o.budget + 1);
        assert_int_equal(got[n - 1], 1);
    }
    /* a table compacted under the index (the odd positions below 128 dropped): the index
     * goes by position, so KV head 0's rows read the chosen tokens still stored and want
     * the others (a MATERIALIZE hook that held them would rebuild them), as many */
    int32_t keep[256];
    int nk = 0;
    for (int j = 0; j < n; j++)
        if (j >= 128 || j % 2 == 0)
            keep[nk++] = j;
    assert_int_equal(kw_kvseq_keep(fx.seq.kv, 1, 0, keep, nk), 0);
    assert_int_equal(hfx_select(&fx, 1, false, q), 0);
    assert_true(fx.w->want_by_row);
    for (int r = 0; r < g; r++) {
        int a, b, reads = hfx_row_marks(&fx, 1, r, got, nk);
        kw_view_wanted(fx.w, r, &a, &b);
        assert_true(b > a);
        assert_int_equal(reads + (b - a), o.budget + 1);
        assert_int_equal(got[nk - 1], 1); /* the current token */
        for (int x = a; x < b; x++) {
            int32_t p = fx.w->want_pos[x];
            assert_true(p % 2 == 1 && p < 128);
            assert_true(x == a || p > fx.w->want_pos[x - 1]);
        }
    }
    for (int r = g; r < fx.cfg.n_head; r++) { /* KV head 1 kept everything */
        int a, b;
        kw_view_wanted(fx.w, r, &a, &b);
        assert_int_equal(b - a, 0);
        assert_int_equal(hfx_row_marks(&fx, 1, r, got, n), o.budget + 1);
    }
    free(q), free(got);
    hfx_close(&fx);
}

static void test_recall_by_cluster(void **state)
{
    (void)state;
    kw_clusterkv_opts o = {.budget = 8 + 40, .sink = 8, .clusters = 6, .iters = 10,
                           .window = 32, .window_clusters = 2, .dense_layers = 1};
    recall_case(&o, 0);
    o.budget = 1; /* unused: 0.3 x a prompt of 160 tokens */
    o.ratio = 0.3;
    recall_case(&o, 160);
}

static void test_budget_covering_the_context_keeps_the_dense_view(void **state)
{
    (void)state;
    kw_clusterkv_opts o = {.budget = 200, .sink = 4, .clusters = 5, .iters = 3,
                           .window = 100, .window_clusters = 2, .dense_layers = 0};
    hook_fx fx;
    fx_open(&fx, &o, 0);
    append(&fx, 0, 150);
    float *q = queries(&fx);
    for (int l = 0; l < fx.cfg.n_layer; l++) {
        assert_int_equal(hfx_after_attn(&fx, l, false, NULL, 0), 0);
        assert_int_equal(hfx_select(&fx, l, false, q), 0);
        assert_false(fx.w->per_qhead);
        assert_int_equal(kw_view_tokens(fx.w), 150 * fx.cfg.n_head_kv);
    }
    assert_int_equal(fx.seq.meta_bytes, 0); /* nothing clustered: nothing to recall */
    free(q);
    hfx_close(&fx);
}

/* A budget under the sink (4 against 8): the sink and the tokens not clustered yet are
 * read, no clustered one; a prompt not past the sink clusters nothing. */
static void test_budget_under_the_sink(void **state)
{
    (void)state;
    kw_clusterkv_opts o = {.budget = 4, .sink = 8, .clusters = 3, .iters = 3, .window = 100,
                           .window_clusters = 2, .dense_layers = 0};
    hook_fx fx;
    fx_open(&fx, &o, 0);
    float *q = queries(&fx);
    char got[64];
    append(&fx, 0, 6); /* shorter than the sink */
    assert_int_equal(hfx_after_attn(&fx, 0, false, NULL, 0), 0);
    assert_int_equal(fx.seq.meta_bytes, 0);
    append(&fx, 6, 14); /* 20 stored: 12 past the sink get clustered */
    assert_int_equal(hfx_after_attn(&fx, 0, false, NULL, 0), 0);
    assert_true(fx.seq.meta_bytes > 0);
    append(&fx, 20, 1);
    assert_int_equal(hfx_select(&fx, 0, false, q), 0);
    assert_true(fx.w->per_qhead);
    for (int r = 0; r < fx.cfg.n_head; r++) {
        assert_int_equal(hfx_row_marks(&fx, 0, r, got, 21), 8 + 1);
        for (int j = 0; j < 21; j++)
            assert_int_equal(got[j], j < 8 || j == 20);
    }
    free(q);
    hfx_close(&fx);
}

static void test_bad_options_are_refused(void **state)
{
    (void)state;
    kw_clusterkv_opts o = {.budget = 100, .sink = 4, .clusters = 0, .iters = 3, .window = 10,
                           .window_clusters = 2};
    kw_kvmethod *m = NULL;
    kw_error err = {0};
    assert_int_equal(kw__clusterkv_method(&o, NULL, &m, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "clusters 0"));
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans_matches_plain_lloyd),
        cmocka_unit_test(test_recall_by_cluster),
        cmocka_unit_test(test_budget_covering_the_context_keeps_the_dense_view),
        cmocka_unit_test(test_budget_under_the_sink),
        cmocka_unit_test(test_bad_options_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
