/* The view attention kernel against its plain reference on random shapes and data:
 * dense views, random token subsets per KV head and per query head, temporary-pool
 * spans, pre-RoPE storage, chunked prefill (causal by position), long rows that take
 * the split-K path, int8 pages, and scores far apart (a softmax close to one-hot, where
 * most exponentials underflow to 0). Error bound: max |kernel - ref| <= 2e-5 * (1 + max |ref|). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(void) { return (float)(urand() * 2 - 1); }
static int irand(int lo, int hi) { return lo + (int)(urand() * (hi - lo + 1)); }

static kw_kvdtype g_dtype = KW_KV_F32; /* page type of the fixtures' pools */
static float g_qamp = 2.f;             /* queries are uniform in [-g_qamp, g_qamp] */
static double g_tol = 2e-5;            /* max error over (1 + max |output|) */

typedef struct fixture {
    kw_model_config cfg;
    kw_kvpool *pool;
    int n_seq;
    kw_kvseq *seq[4];
    int len[4];   /* stored tokens */
    int nq[4];    /* query tokens (the last nq stored positions) */
} fixture;

static void make(fixture *f, int n_seq, int n_head, int n_kv, int hd, int P, bool pre_rope,
                 int min_len, int max_len, int max_q)
{
    memset(f, 0, sizeof *f);
    f->cfg.n_layer = 1;
    f->cfg.n_head = n_head;
    f->cfg.n_head_kv = n_kv;
    f->cfg.head_dim = hd;
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = P;
    o.n_pages = 16 + n_seq * n_kv * (max_len / P + 2);
    o.n_tmp_pages = 4 * 16 + 8;
    o.pre_rope = pre_rope;
    o.dtype = g_dtype;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(&f->cfg, &o, &f->pool, &err), 0);
    f->n_seq = n_seq;
    for (int i = 0; i < n_seq; i++) {
        int n = irand(min_len, max_len);
        f->len[i] = n;
        f->nq[i] = irand(1, n < max_q ? n : max_q);
        f->seq[i] = kw_kvseq_new(f->pool);
        float *k = malloc(sizeof(float) * n * n_kv * hd), *v = malloc(sizeof(float) * n * n_kv * hd);
        int32_t *pos = malloc(sizeof(int32_t) * n);
        for (int j = 0; j < n * n_kv * hd; j++)
            k[j] = frand(), v[j] = frand();
        for (int j = 0; j < n; j++)
            pos[j] = j;
        /* append in two chunks to cross page boundaries mid-page */
        int c = n / 3;
        assert_int_equal(kw_kvseq_append(f->seq[i], 0, k, v, pos, c), 0);
        assert_int_equal(kw_kvseq_append(f->seq[i], 0, k + (size_t)c * n_kv * hd,
                                         v + (size_t)c * n_kv * hd, pos + c, n - c), 0);
        free(k), free(v), free(pos);
    }
}

static void unmake(fixture *f)
{
    for (int i = 0; i < f->n_seq; i++)
        kw_kvseq_free(f->seq[i]);
    kw_kvpool_free(f->pool);
}

/* mode 0 dense, 1 random tokens per KV head, 2 random tokens per query head,
 * 3 random tokens + one temporary page per row */
static void build_views(fixture *f, int mode, kw_view **w)
{
    for (int i = 0; i < f->n_seq; i++) {
        w[i] = kw_view_new();
        if (mode == 0) {
            assert_int_equal(kw_view_dense(w[i], f->seq[i], 0, false), 0);
            continue;
        }
        bool pq = mode == 2;
        int rows = pq ? f->cfg.n_head : f->cfg.n_head_kv, g = f->cfg.n_head / f->cfg.n_head_kv;
        kw_view_reset(w[i], rows, pq);
        for (int r = 0; r < rows; r++) {
            kw_view_begin_row(w[i], r);
            int kvh = pq ? r / g : r;
            for (int j = 0; j < f->len[i]; j++)
                if (urand() < 0.4 || j == f->len[i] - 1)
                    assert_int_equal(kw_view_add_token(w[i], f->seq[i], 0, kvh, j), 0);
            if (mode == 3) {
                int32_t pg, *pos;
                assert_int_equal(kw_kvpool_tmp_alloc(f->pool, &pg), 0);
                float *d = kw_kvpool_tmp_page(f->pool, pg, &pos);
                int P = kw_kvpool_options(f->pool)->page_tokens, hd = f->cfg.head_dim;
                for (int s = 0; s < P; s++) {
                    pos[s] = irand(0, f->len[i] - 1);
                    for (int x = 0; x < hd; x++)
                        d[s * hd + x] = frand(), d[(P + s) * hd + x] = frand();
                }
                assert_int_equal(kw_view_add(w[i], KW_POOL_TMP, pg, 1, P - 1), 0);
            }
        }
    }
}

static void run_case(fixture *f, int mode, bool with_lse)
{
    kw_view *w[4];
    build_views(f, mode, w);
    int off[5] = {0};
    for (int i = 0; i < f->n_seq; i++)
        off[i + 1] = off[i] + f->nq[i];
    int nt = off[f->n_seq], H = f->cfg.n_head, hd = f->cfg.head_dim;
    float *q = malloc(sizeof(float) * nt * H * hd), *o1 = malloc(sizeof(float) * nt * H * hd),
          *o2 = malloc(sizeof(float) * nt * H * hd), *l1 = malloc(sizeof(float) * nt * H),
          *l2 = malloc(sizeof(float) * nt * H);
    int32_t *qp = malloc(sizeof(int32_t) * nt);
    for (int j = 0; j < nt * H * hd; j++)
        q[j] = g_qamp * frand();
    for (int i = 0; i < f->n_seq; i++)
        for (int t = off[i]; t < off[i + 1]; t++)
            qp[t] = f->len[i] - f->nq[i] + (t - off[i]);
    float inv[256];
    for (int x = 0; x < hd / 2; x++)
        inv[x] = powf(10000.f, -2.f * x / hd);
    kw_attn_args a = {.mem = kw_kvpool_mem(f->pool), .n_seq = f->n_seq,
                      .views = (const kw_view *const *)w, .tok_off = off, .q = q,
                      .q_pos = qp, .n_head = H, .n_kv = f->cfg.n_head_kv,
                      .scale = 1.f / sqrtf((float)hd),
                      .inv_freq = kw_kvpool_options(f->pool)->pre_rope ? inv : NULL,
                      .layout = mode % 2 ? KW_ROPE_INTERLEAVED : KW_ROPE_HALF,
                      .out = o1, .lse = with_lse ? l1 : NULL};
    assert_int_equal(kw_k_attn_view(KW_BK_CPU, NULL, &a), 0);
    a.out = o2;
    a.lse = with_lse ? l2 : NULL;
    kw_ref_attn_view(&a);
    double mx = 0, err = 0;
    for (int j = 0; j < nt * H * hd; j++) {
        mx = fmax(mx, fabs(o2[j]));
        err = fmax(err, fabs(o1[j] - o2[j]));
    }
    assert_true(mx > 1e-3); /* not a trivial output */
    if (err > g_tol * (1 + mx))
        fail_msg("mode %d: max error %g over max %g", mode, err, mx);
    if (with_lse)
        for (int j = 0; j < nt * H; j++)
            if (fabs(l1[j] - l2[j]) > 2e-5 * (1 + fabs(l2[j])))
                fail_msg("lse %d: %g vs %g", j, l1[j], l2[j]);
    for (int i = 0; i < f->n_seq; i++)
        kw_view_free(w[i]);
    kw_kvpool_tmp_reset(f->pool);
    free(q), free(o1), free(o2), free(l1), free(l2), free(qp);
}

static void test_attention_random_shapes_all_view_kinds(void **state)
{
    for (int rep = 0; rep < 12; rep++) {
        int n_kv = irand(1, 4), g = irand(1, 4), hd = 2 * irand(2, 40);
        int P = irand(1, 3) == 1 ? 16 : irand(2, 33);
        fixture f;
        make(&f, irand(1, 4), n_kv * g, n_kv, hd, P, rep % 3 == 0, 1, 90, 12);
        for (int mode = 0; mode < 4; mode++)
            run_case(&f, mode, mode != 1);
        unmake(&f);
    }
}

static void test_attention_long_rows_split_k(void **state)
{
    for (int rep = 0; rep < 3; rep++) {
        fixture f;
        make(&f, irand(1, 2), 9, 3, 64, 16, rep == 1, 600, 2100, rep == 2 ? 20 : 1);
        for (int mode = 0; mode < 3; mode++)
            run_case(&f, mode, true);
        unmake(&f);
    }
}

static void test_attention_chunked_prefill_is_causal(void **state)
{
    fixture f;
    make(&f, 3, 8, 2, 32, 16, false, 100, 300, 100);
    run_case(&f, 0, true);
    unmake(&f);
}

/* quantized pages (main pool: int8 rows, int8 and int4 with K per channel, full pages
 * and the open last one) beside f32 temporary pages: the reference reads the rows
 * dequantized, the kernel's decode reads the codes in place (scales taken out of the
 * sums) */
static void test_attention_int8_pages(void **state)
{
    const kw_kvdtype dts[] = {KW_KV_I8, KW_KV_I8K, KW_KV_I4K};
    for (int d = 0; d < 3; d++) {
        g_dtype = dts[d];
        for (int rep = 0; rep < 6; rep++) {
            int n_kv = irand(1, 3), g = irand(1, 4), hd = 2 * irand(2, 40);
            fixture f;
            make(&f, irand(1, 3), n_kv * g, n_kv, hd, irand(2, 20), rep % 2 == 0, 1, 400, 6);
            for (int mode = 0; mode < 4; mode++)
                run_case(&f, mode, true);
            unmake(&f);
        }
    }
    g_dtype = KW_KV_F32;
}

/* queries 200x larger: scaled scores spread over hundreds, so that most weights are
 * exp(x) with x far below -87 (0 in floats), and a chunk's maximum can rise far above
 * the running one (rescaling by a factor that underflows) */
static void test_attention_peaked_scores(void **state)
{
    /* scores of hundreds: an f32 score's rounding (about 1e-5 of it) moves a weight by
     * about 1e-4 relative, which the double reference does not have */
    g_qamp = 400.f, g_tol = 5e-4;
    for (int rep = 0; rep < 4; rep++) {
        int n_kv = irand(1, 3), g = irand(1, 4), hd = 8 * irand(2, 10);
        fixture f;
        make(&f, irand(1, 3), n_kv * g, n_kv, hd, 16, rep == 1, 50, 700, 40);
        for (int mode = 0; mode < 3; mode++)
            run_case(&f, mode, true);
        unmake(&f);
    }
    g_qamp = 2.f, g_tol = 2e-5;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_random_shapes_all_view_kinds),
        cmocka_unit_test(test_attention_long_rows_split_k),
        cmocka_unit_test(test_attention_chunked_prefill_is_causal),
        cmocka_unit_test(test_attention_int8_pages),
        cmocka_unit_test(test_attention_peaked_scores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
