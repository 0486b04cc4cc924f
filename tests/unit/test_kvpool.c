/* Paged KV pool: append, fork sharing, copy on write, eviction compaction, views. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvweave/kvpool.h"
#include "mirror_device.h"

static kw_model_config small_cfg(void)
{
    kw_model_config c = {0};
    c.n_layer = 2;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.head_dim = 8;
    return c;
}

/* A pool of n_pages pages of 4 tokens for small_cfg(). */
static kw_kvpool *small_pool(const kw_model_config *c, int n_pages)
{
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    o.n_pages = n_pages;
    kw_kvpool *p;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(c, &o, &p, &err), 0);
    return p;
}

static float val(int layer, int h, int pos, int i, int which)
{
    return (float)(layer * 1000 + h * 100 + pos) + 0.01f * i + 0.5f * which + 0.25f;
}

static void fill(const kw_model_config *c, int layer, int p0, int n, float *k, float *v,
                 int32_t *pos)
{
    for (int t = 0; t < n; t++) {
        pos[t] = p0 + t;
        for (int h = 0; h < c->n_head_kv; h++)
            for (int i = 0; i < c->head_dim; i++) {
                k[(t * c->n_head_kv + h) * c->head_dim + i] = val(layer, h, p0 + t, i, 0);
                v[(t * c->n_head_kv + h) * c->head_dim + i] = val(layer, h, p0 + t, i, 1);
            }
    }
}

static void append(kw_kvseq *s, const kw_model_config *c, int p0, int n)
{
    float *k = malloc(sizeof(float) * n * c->n_head_kv * c->head_dim);
    float *v = malloc(sizeof(float) * n * c->n_head_kv * c->head_dim);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    for (int l = 0; l < c->n_layer; l++) {
        fill(c, l, p0, n, k, v, pos);
        assert_int_equal(kw_kvseq_append(s, l, k, v, pos, n), 0);
    }
    free(k), free(v), free(pos);
}

/* token j of (l, h) holds position want_pos and its values */
static void check_token(const kw_kvseq *s, const kw_model_config *c, int l, int h, int j,
                        int want_pos)
{
    const float *k, *v;
    int32_t pos;
    assert_int_equal(kw_kvseq_token(s, l, h, j, &k, &v, &pos), 0);
    assert_int_equal(pos, want_pos);
    for (int i = 0; i < c->head_dim; i++) {
        assert_true(k[i] == val(l, h, want_pos, i, 0));
        assert_true(v[i] == val(l, h, want_pos, i, 1));
    }
}

static void test_kvpool_append_spans_pages(void **state)
{
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 64);
    kw_kvseq *s = kw_kvseq_new(p);
    append(s, &c, 0, 3);
    append(s, &c, 3, 7); /* 10 tokens: 3 pages per table */
    assert_int_equal(kw_kvseq_pages_held(s), 3 * 2 * 2);
    assert_int_equal(kw_kvpool_free_pages(p), 64 - 12);
    for (int l = 0; l < 2; l++)
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 10; j++)
                check_token(s, &c, l, h, j, j);
    s = kw_kvseq_free(s);
    assert_int_equal(kw_kvpool_free_pages(p), 64);
    p = kw_kvpool_free(p);
}

static void test_kvpool_full_pool_refuses(void **state)
{
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 4); /* one page per (layer, head) */
    kw_kvseq *s = kw_kvseq_new(p);
    append(s, &c, 0, 4);
    float k[64] = {1}, v[64] = {1};
    int32_t pos[1] = {4};
    assert_int_equal(kw_kvseq_append(s, 0, k, v, pos, 1), KW_ELIMIT);
    assert_int_equal(kw_kvseq_len(s, 0, 0), 4);
    kw_kvseq_free(s);
    kw_kvpool_free(p);
}

static void test_kvpool_fork_shares_full_pages_copies_partial(void **state)
{
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 64);
    kw_kvseq *a = kw_kvseq_new(p);
    append(a, &c, 0, 10); /* 2 full + 1 partial page per table */
    int64_t before = kw_kvpool_free_pages(p);
    kw_kvseq *b = kw_kvseq_fork(a);
    assert_non_null(b);
    assert_int_equal(before - kw_kvpool_free_pages(p), 4); /* one copy per table */
    int na, nb;
    const int32_t *pa = kw_kvseq_pages(a, 1, 1, &na), *pb = kw_kvseq_pages(b, 1, 1, &nb);
    assert_int_equal(na, 3);
    assert_int_equal(nb, 3);
    assert_int_equal(pa[0], pb[0]);
    assert_int_equal(pa[1], pb[1]);
    assert_int_not_equal(pa[2], pb[2]);
    /* divergent continuations: a gets positions 10.., b gets 100.. */
    append(a, &c, 10, 5);
    append(b, &c, 100, 3);
    for (int l = 0; l < 2; l++)
        for (int h = 0; h < 2; h++) {
            for (int j = 0; j < 15; j++)
                check_token(a, &c, l, h, j, j);
            for (int j = 0; j < 10; j++)
                check_token(b, &c, l, h, j, j);
            for (int j = 10; j < 13; j++)
                check_token(b, &c, l, h, j, 100 + j - 10);
        }
    /* evicting in b copies the shared pages it writes and leaves a alone */
    int32_t keep[] = {1, 5, 6, 11};
    assert_int_equal(kw_kvseq_keep(b, 0, 1, keep, 4), 0);
    assert_int_equal(kw_kvseq_len(b, 0, 1), 4);
    check_token(b, &c, 0, 1, 0, 1);
    check_token(b, &c, 0, 1, 1, 5);
    check_token(b, &c, 0, 1, 3, 101);
    for (int j = 0; j < 15; j++)
        check_token(a, &c, 0, 1, j, j);
    a = kw_kvseq_free(a);
    b = kw_kvseq_free(b);
    assert_int_equal(kw_kvpool_free_pages(p), 64);
    kw_kvpool_free(p);
}

/* share_layer: one layer's tables of an empty sequence take the source's pages (only
 * the partial page is copied); an eviction in the source afterwards leaves the sharer's
 * tokens alone; a second share into a filled layer is refused. */
static void test_kvpool_share_layer_forks_one_layer_before_eviction(void **state)
{
    (void)state;
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 64);
    kw_kvseq *a = kw_kvseq_new(p), *b = kw_kvseq_new(p);
    append(a, &c, 0, 10);
    int64_t before = kw_kvpool_free_pages(p);
    assert_int_equal(kw_kvseq_share_layer(b, a, 1), 0);
    assert_int_equal(before - kw_kvpool_free_pages(p), 2); /* a partial copy per KV head */
    assert_int_equal(kw_kvseq_len(b, 0, 0), 0);
    assert_int_equal(kw_kvseq_len(b, 1, 1), 10);
    int na, nb;
    const int32_t *pa = kw_kvseq_pages(a, 1, 0, &na), *pb = kw_kvseq_pages(b, 1, 0, &nb);
    assert_int_equal(nb, 3);
    assert_int_equal(pa[0], pb[0]);
    assert_int_not_equal(pa[2], pb[2]);
    int32_t keep[] = {0, 9};
    for (int h = 0; h < 2; h++)
        assert_int_equal(kw_kvseq_keep(a, 1, h, keep, 2), 0);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 10; j++)
            check_token(b, &c, 1, h, j, j);
    check_token(a, &c, 1, 0, 1, 9);
    assert_int_equal(kw_kvseq_share_layer(b, a, 1), KW_EINVAL);
    assert_int_equal(kw_kvseq_share_layer(b, a, 7), KW_EINVAL);
    a = kw_kvseq_free(a);
    b = kw_kvseq_free(b);
    assert_int_equal(kw_kvpool_free_pages(p), 64);
    kw_kvpool_free(p);
}

static void test_kvpool_keep_frees_pages(void **state)
{
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 64);
    kw_kvseq *s = kw_kvseq_new(p);
    append(s, &c, 0, 16);
    int64_t f0 = kw_kvpool_free_pages(p);
    int32_t keep[] = {0, 3, 9, 15, 14};
    assert_int_equal(kw_kvseq_keep(s, 1, 0, keep, 5), KW_EINVAL); /* not increasing */
    assert_int_equal(kw_kvseq_keep(s, 1, 0, keep, 4), 0);
    assert_int_equal(kw_kvpool_free_pages(p) - f0, 3);
    check_token(s, &c, 1, 0, 2, 9);
    check_token(s, &c, 1, 0, 3, 15);
    /* appending after eviction goes on in the packed table */
    append(s, &c, 16, 1);
    check_token(s, &c, 1, 0, 4, 16);
    kw_kvseq_free(s);
    kw_kvpool_free(p);
}

/* Want lists (kvpool.h): shared by every row, or per row (rows non-decreasing, positions
 * increasing within a row); the two kinds do not mix; kw_view_reset clears them. */
static void test_view_wants(void **state)
{
    (void)state;
    kw_view *w = kw_view_new();
    assert_non_null(w);
    assert_int_equal(kw_view_reset(w, 4, true), 0);
    int a, b;
    for (int32_t p = 0; p < 100; p++) /* past the first capacity */
        assert_int_equal(kw_view_want(w, 3 * p), 0);
    kw_view_wanted(w, 2, &a, &b);
    assert_int_equal(a, 0);
    assert_int_equal(b, 100);
    assert_int_equal(kw_view_want_row(w, 0, 500), KW_EINVAL); /* shared wants already */
    assert_int_equal(kw_view_reset(w, 4, true), 0);
    assert_int_equal(w->n_want, 0);
    /* row 0: 70 positions; row 1: none; row 2: 5; row 3: 1 */
    for (int32_t p = 0; p < 70; p++)
        assert_int_equal(kw_view_want_row(w, 0, 2 * p + 1), 0);
    for (int32_t p = 0; p < 5; p++)
        assert_int_equal(kw_view_want_row(w, 2, 10 + p), 0);
    assert_int_equal(kw_view_want_row(w, 2, 14), KW_EINVAL); /* not increasing */
    assert_int_equal(kw_view_want_row(w, 1, 99), KW_EINVAL); /* a row back */
    assert_int_equal(kw_view_want_row(w, 4, 1), KW_EINVAL);  /* no such row */
    assert_int_equal(kw_view_want(w, 1000), KW_EINVAL);     /* wants per row already */
    assert_int_equal(kw_view_want_row(w, 3, 0), 0);
    const int expect[4][2] = {{0, 70}, {70, 70}, {70, 75}, {75, 76}};
    for (int r = 0; r < 4; r++) {
        kw_view_wanted(w, r, &a, &b);
        assert_int_equal(a, expect[r][0]);
        assert_int_equal(b, expect[r][1]);
    }
    assert_int_equal(w->want_pos[69], 139);
    assert_int_equal(w->want_pos[75], 0);
    assert_int_equal(kw_view_reset(w, 2, false), 0); /* shared wants again */
    assert_false(w->want_by_row);
    assert_int_equal(kw_view_want(w, 7), 0);
    kw_view_wanted(w, 1, &a, &b);
    assert_int_equal(b - a, 1);
    kw_view_free(w);
}

static void test_view_dense_and_tokens(void **state)
{
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 64);
    kw_kvseq *s = kw_kvseq_new(p);
    append(s, &c, 0, 10);
    kw_view *w = kw_view_new();
    assert_int_equal(kw_view_dense(w, s, 0, false), 0);
    assert_int_equal(w->n_rows, 2);
    assert_int_equal(kw_view_row_tokens(w, 0), 10);
    assert_int_equal(kw_view_row_tokens(w, 1), 10);
    assert_int_equal(w->row_ptr[1], 3);
    assert_int_equal(kw_view_dense(w, s, 1, true), 0);
    assert_int_equal(w->n_rows, 4);
    assert_int_equal(kw_view_tokens(w), 40);
    /* token spans merge when contiguous */
    kw_view_reset(w, 2, false);
    kw_view_begin_row(w, 1);
    kw_view_add_token(w, s, 0, 1, 1);
    kw_view_add_token(w, s, 0, 1, 2);
    kw_view_add_token(w, s, 0, 1, 3);
    kw_view_add_token(w, s, 0, 1, 4); /* next page */
    kw_view_add_token(w, s, 0, 1, 7);
    assert_int_equal(w->row_ptr[0], 0);
    assert_int_equal(w->row_ptr[1], 0);
    assert_int_equal(w->row_ptr[2], 3);
    assert_int_equal(w->spans[0].first, 1);
    assert_int_equal(w->spans[0].n, 3);
    assert_int_equal(w->spans[2].first, 3);
    assert_int_equal(kw_view_begin_row(w, 0), KW_EINVAL); /* rows go forward only */
    kw_view_free(w);
    kw_kvseq_free(s);
    kw_kvpool_free(p);
}

/* int8 pages: each value within half a quantization step (absmax / 254) of what was
 * appended; fork and eviction move rows and scales exactly. */
static void test_kvpool_int8_pages_round_trip(void **state)
{
    kw_model_config c = small_cfg();
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    o.n_pages = 64;
    o.dtype = KW_KV_I8;
    kw_kvpool *p;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(&c, &o, &p, &err), 0);
    kw_kvseq *s = kw_kvseq_new(p);
    append(s, &c, 0, 11);
    float k[8], v[8], k2[8], v2[8];
    int32_t pos;
    for (int l = 0; l < 2; l++)
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 11; j++) {
                assert_int_equal(kw_kvseq_token_f32(s, l, h, j, k, v, &pos), 0);
                assert_int_equal(pos, j);
                float amax = 0;
                for (int i = 0; i < 8; i++)
                    amax = fmaxf(amax, fabsf(val(l, h, j, i, 1)));
                for (int i = 0; i < 8; i++) {
                    assert_true(fabsf(k[i] - val(l, h, j, i, 0)) <= amax / 254 * 1.001f);
                    assert_true(fabsf(v[i] - val(l, h, j, i, 1)) <= amax / 254 * 1.001f);
                }
            }
    const float *kp;
    assert_int_equal(kw_kvseq_token(s, 0, 0, 0, &kp, NULL, &pos), KW_ENOSYS);
    kw_kvseq *f = kw_kvseq_fork(s);
    assert_non_null(f);
    kw_kvseq_token_f32(s, 1, 1, 9, k, v, &pos);
    int32_t keep[] = {2, 9};
    assert_int_equal(kw_kvseq_keep(f, 1, 1, keep, 2), 0);
    kw_kvseq_token_f32(f, 1, 1, 1, k2, v2, &pos);
    assert_int_equal(pos, 9);
    assert_memory_equal(k, k2, sizeof k);
    assert_memory_equal(v, v2, sizeof v);
    kw_kvseq_free(f);
    kw_kvseq_free(s);
    assert_int_equal(kw_kvpool_free_pages(p), 64);
    kw_kvmem_stats st;
    kw_kvpool_stats(p, &st);
    assert_int_equal(st.page_bytes, 2 * 4 * 8 + 8 * 4 + 4 * 4); /* int8 K, V; scales; pos */
    kw_kvpool_free(p);
}


/* ---- pages with K quantized per channel (KW_KV_I8K, KW_KV_I4K) ---- */

enum { KC_N = 14 }; /* tokens appended: 3 full pages of 4 and a partial one */

/* K with an outlier channel (3: values near 40), V plain; seeded */
static void kc_data(const kw_model_config *c, uint64_t seed, float *k, float *v)
{
    uint64_t s = seed;
    for (int i = 0; i < c->n_layer * KC_N * c->n_head_kv * c->head_dim; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        float u = (float)((s >> 11) * 0x1.0p-53) * 2 - 1;
        k[i] = i % c->head_dim == 3 ? 40 + 5 * u : u;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = (float)((s >> 11) * 0x1.0p-53) * 2 - 1;
    }
}

#define KC_AT(x, c, l, t, h, i) \
    ((x)[(((int64_t)(l) * KC_N + (t)) * (c)->n_head_kv + (h)) * (c)->head_dim + (i)])

/* Half a step of token t's channel i of K over its page (tokens p0 .. p0 + n of the
 * page, the values x, levels L), or of its V row. */
static float kc_half_step(const kw_model_config *c, const float *x, int l, int h, int t, int i,
                          int p0, int n, int which, int L)
{
    float lo = INFINITY, hi = -INFINITY;
    for (int r = 0; r < (which ? c->head_dim : n); r++) {
        float y = which ? KC_AT(x, c, l, t, h, r) : KC_AT(x, c, l, p0 + r, h, i);
        lo = fminf(lo, y), hi = fmaxf(hi, y);
    }
    return (hi - lo) / (2.f * L) * 1.001f + 1e-6f;
}

/* A sequence of pool p holding KC_N tokens at positions 0.. (*k and *v: their K and V,
 * kc_data's from seed, malloc'd), each layer appended 9 at once, then one by one. */
static kw_kvseq *kc_sequence(kw_kvpool *p, const kw_model_config *c, uint64_t seed, float **kp,
                             float **vp)
{
    size_t n = (size_t)c->n_layer * KC_N * c->n_head_kv * c->head_dim;
    float *k = *kp = malloc(sizeof(float) * n), *v = *vp = malloc(sizeof(float) * n);
    kc_data(c, seed, k, v);
    kw_kvseq *s = kw_kvseq_new(p);
    int32_t pos[KC_N];
    for (int t = 0; t < KC_N; t++)
        pos[t] = t;
    for (int l = 0; l < c->n_layer; l++) {
        assert_int_equal(kw_kvseq_append(s, l, &KC_AT(k, c, l, 0, 0, 0), &KC_AT(v, c, l, 0, 0, 0),
                                         pos, 9), 0);
        for (int t = 9; t < KC_N; t++)
            assert_int_equal(kw_kvseq_append(s, l, &KC_AT(k, c, l, t, 0, 0),
                                             &KC_AT(v, c, l, t, 0, 0), &pos[t], 1), 0);
    }
    return s;
}

/* Per-channel K and per-token V, 8 and 4 bits: every full page's K within half a step of
 * its channel's range over the page, the partial page's K exact (f32 until the page
 * fills), V within half a step of its row's range; the small channels keep their
 * precision beside the outlier channel (per-token codes would give them half a step of
 * the row's range, the outlier's in it); fork copies the open page's K; compaction quantizes the pages it
 * refills again (within the two half steps); the page and payload bytes; device pools
 * refused. */
static void kc_case(kw_kvdtype dt)
{
    int bits = dt == KW_KV_I4K ? 4 : 8, L = (1 << bits) - 1;
    kw_model_config c = small_cfg();
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4, o.n_pages = 64, o.dtype = dt;
    kw_kvpool *p;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(&c, &o, &p, &err), 0);
    float *k, *v;
    kw_kvseq *s = kc_sequence(p, &c, 0x5eed + (uint64_t)bits, &k, &v);
    float kr[8], vr[8], worst_small = 0;
    int32_t ps;
    for (int l = 0; l < c.n_layer; l++)
        for (int h = 0; h < c.n_head_kv; h++)
            for (int t = 0; t < KC_N; t++) {
                assert_int_equal(kw_kvseq_token_f32(s, l, h, t, kr, vr, &ps), 0);
                assert_int_equal(ps, t);
                bool open = t >= 12;
                for (int i = 0; i < c.head_dim; i++) {
                    float ek = fabsf(kr[i] - KC_AT(k, &c, l, t, h, i));
                    if (open)
                        assert_true(ek == 0);
                    else
                        assert_true(ek <= kc_half_step(&c, k, l, h, t, i, t / 4 * 4, 4, 0, L));
                    assert_true(fabsf(vr[i] - KC_AT(v, &c, l, t, h, i))
                                <= kc_half_step(&c, v, l, h, t, i, 0, 0, 1, L));
                    if (i != 3)
                        worst_small = fmaxf(worst_small, ek);
                }
            }
    /* a token's row spans at least 35 - (-1): per-token codes of the same width would
     * allow half a step of that on every channel */
    float per_token = 36.f / (2.f * L);
    print_message("%d-bit: worst K error on the small channels %.3g (per-token codes: up to "
                  "%.3g)\n", bits, worst_small, per_token);
    assert_true(worst_small < per_token / 4);
    /* bytes: codes, K's scales and minima per channel, V's per token, positions */
    kw_kvmem_stats st;
    kw_kvpool_stats(p, &st);
    int64_t cb = 4 * 8 * bits / 8;
    assert_int_equal(st.page_bytes, 2 * cb + 8 * 8 + 8 * 4 + 4 * 4);
    int tables = c.n_layer * c.n_head_kv;
    assert_int_equal(st.alloc_bytes, st.pages_used * st.page_bytes + tables * 4 * 8 * 4);
    assert_int_equal(kw_kvseq_payload_bytes(s),
                     (int64_t)tables * (KC_N * (2 * 8 * bits / 8 + 8) + 3 * 8 * 8 + 2 * 8 * 4));
    /* fork: the open page's K is copied, each sequence then writes its own */
    kw_kvseq *f = kw_kvseq_fork(s);
    assert_non_null(f);
    float k2[16], v2[16];
    int32_t p14 = 14;
    for (int i = 0; i < 16; i++)
        k2[i] = 0.5f * i, v2[i] = -0.25f * i;
    assert_int_equal(kw_kvseq_append(f, 0, k2, v2, &p14, 1), 0);
    assert_int_equal(kw_kvseq_token_f32(f, 0, 1, 14, kr, vr, &ps), 0);
    assert_memory_equal(kr, k2 + 8, sizeof kr); /* still open: exact */
    assert_int_equal(kw_kvseq_len(s, 0, 1), KC_N);
    assert_int_equal(kw_kvseq_token_f32(s, 0, 1, 13, kr, vr, &ps), 0);
    assert_true(kr[0] == KC_AT(k, &c, 0, 13, 1, 0));
    /* compaction: tokens 1, 2, 5, 9, 10 of (1, 1): the first page refilled closes again */
    const int32_t keep[] = {1, 2, 5, 9, 10};
    assert_int_equal(kw_kvseq_keep(f, 1, 1, keep, 5), 0);
    for (int j = 0; j < 5; j++) {
        int t = keep[j];
        assert_int_equal(kw_kvseq_token_f32(f, 1, 1, j, kr, vr, &ps), 0);
        assert_int_equal(ps, t);
        for (int i = 0; i < 8; i++) {
            float b = kc_half_step(&c, k, 1, 1, t, i, t / 4 * 4, 4, 0, L);
            float lo = INFINITY, hi = -INFINITY; /* the refilled page's range, widened */
            for (int x = 0; x < 4 && j < 4; x++) {
                float y = KC_AT(k, &c, 1, keep[x], 1, i);
                lo = fminf(lo, y), hi = fmaxf(hi, y);
            }
            float b2 = j < 4 ? (hi - lo + 2 * b) / (2.f * L) * 1.001f + 1e-6f : 0;
            assert_true(fabsf(kr[i] - KC_AT(k, &c, 1, t, 1, i)) <= b + b2);
            assert_true(fabsf(vr[i] - KC_AT(v, &c, 1, t, 1, i))
                        <= kc_half_step(&c, v, 1, 1, t, i, 0, 0, 1, L));
        }
    }
    kw_kvseq_free(f);
    kw_kvseq_free(s);
    kw_kvpool_stats(p, &st);
    assert_int_equal(st.pages_used, 0);
    assert_int_equal(st.alloc_bytes, 0); /* the stages went with their pages */
    kw_kvpool_free(p);
    free(k), free(v);
    /* the pool keeps these pages on the host only */
    o.device_pages = true;
    assert_int_equal(kw_kvpool_new(&c, &o, &p, &err), KW_ENOSYS);
    assert_non_null(strstr(err.msg, "host pages only"));
}

static void test_kvpool_pages_with_k_per_channel(void **state)
{
    (void)state;
    kc_case(KW_KV_I8K);
    kc_case(KW_KV_I4K);
}

/* The residual (KIVI's): with pages of 4 and a residual of 6, the latest 6 to 9 tokens of
 * a table keep K exact and the pages before them are quantized (within half a step of
 * each channel's range over the page); the payload counts the open pages' K as f32; a
 * compacted table's pages within the residual stay open, and close once enough tokens
 * follow them again. */
static void test_kvpool_kchan_residual(void **state)
{
    (void)state;
    const int L = 15;
    kw_model_config c = small_cfg();
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4, o.n_pages = 64, o.dtype = KW_KV_I4K, o.residual = 6;
    kw_kvpool *p;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(&c, &o, &p, &err), 0);
    float *k, *v;
    kw_kvseq *s = kc_sequence(p, &c, 0x7e51d, &k, &v);
    /* 14 tokens, 6 of residual: pages 0 and 1 (tokens 0..7) closed, 2 and 3 open */
    float kr[8], vr[8];
    int32_t ps;
    int quantized = 0;
    for (int l = 0; l < c.n_layer; l++)
        for (int h = 0; h < c.n_head_kv; h++)
            for (int t = 0; t < KC_N; t++) {
                assert_int_equal(kw_kvseq_token_f32(s, l, h, t, kr, vr, &ps), 0);
                for (int i = 0; i < c.head_dim; i++) {
                    float ek = fabsf(kr[i] - KC_AT(k, &c, l, t, h, i));
                    if (t >= 8)
                        assert_true(ek == 0);
                    else
                        assert_true(ek <= kc_half_step(&c, k, l, h, t, i, t / 4 * 4, 4, 0, L));
                    quantized += t < 8 && ek > 0;
                }
            }
    assert_true(quantized > 0);
    int tables = c.n_layer * c.n_head_kv;
    assert_int_equal(kw_kvseq_payload_bytes(s),
                     (int64_t)tables * (KC_N * (2 * 8 * 4 / 8 + 8) + 2 * 8 * 8 + 6 * 8 * 4));
    /* compaction of (1, 1) to tokens 1, 2, 5, 9, 10: its first page is refilled and,
     * with 5 tokens left, within the residual: it stays open, K as it read */
    const int32_t keep[] = {1, 2, 5, 9, 10};
    float before[5][8];
    for (int j = 0; j < 5; j++)
        assert_int_equal(kw_kvseq_token_f32(s, 1, 1, keep[j], before[j], vr, &ps), 0);
    assert_int_equal(kw_kvseq_keep(s, 1, 1, keep, 5), 0);
    for (int j = 0; j < 5; j++) {
        assert_int_equal(kw_kvseq_token_f32(s, 1, 1, j, kr, vr, &ps), 0);
        assert_int_equal(ps, keep[j]);
        assert_memory_equal(kr, before[j], sizeof kr);
    }
    /* 5 more tokens on layer 1: (1, 1) holds 10, 4 of them behind the residual, so its
     * first page (tokens 1, 2, 5, 9) is quantized again; token 9's K is no longer exact */
    float k5[5 * 16], v5[5 * 16];
    int32_t p5[5];
    for (int t = 0; t < 5; t++) {
        p5[t] = KC_N + t;
        for (int i = 0; i < 16; i++)
            k5[t * 16 + i] = 0.1f * i - 0.3f * t, v5[t * 16 + i] = 0.2f * t - 0.05f * i;
    }
    assert_int_equal(kw_kvseq_append(s, 1, k5, v5, p5, 5), 0);
    assert_int_equal(kw_kvseq_len(s, 1, 1), 10);
    float lo[8], hi[8], err9 = 0;
    for (int i = 0; i < 8; i++)
        lo[i] = INFINITY, hi[i] = -INFINITY;
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 8; i++)
            lo[i] = fminf(lo[i], before[j][i]), hi[i] = fmaxf(hi[i], before[j][i]);
    for (int j = 0; j < 4; j++) {
        assert_int_equal(kw_kvseq_token_f32(s, 1, 1, j, kr, vr, &ps), 0);
        for (int i = 0; i < 8; i++) {
            float e = fabsf(kr[i] - before[j][i]);
            assert_true(e <= (hi[i] - lo[i]) / (2.f * L) * 1.001f + 1e-6f);
            if (j == 3)
                err9 = fmaxf(err9, e);
        }
    }
    assert_true(err9 > 0);
    assert_int_equal(kw_kvseq_token_f32(s, 1, 1, 4, kr, vr, &ps), 0); /* token 10: open */
    assert_memory_equal(kr, before[4], sizeof kr);
    kw_kvseq_free(s);
    kw_kvmem_stats st;
    kw_kvpool_stats(p, &st);
    assert_int_equal(st.alloc_bytes, 0);
    kw_kvpool_free(p);
    free(k), free(v);
}

/* ---- device_pages pools: the pool's side of kw_kvpool_device, against an arena pool,
 * with a host mirror as the device (mirror_device.h) ---- */

/* Appends tokens [p0, p0 + n) to a device_pages sequence, writing the mirror. */
static void mir_append(kw_kvseq *s, mirror *m, const kw_model_config *c, int p0, int n)
{
    float k[64 * 2 * 8], v[64 * 2 * 8];
    int32_t pos[64], slots[64 * 2];
    for (int l = 0; l < c->n_layer; l++) {
        fill(c, l, p0, n, k, v, pos);
        assert_int_equal(kw_kvseq_append_slots(s, l, pos, n, slots), 0);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < c->n_head_kv; h++) {
                int32_t sl = slots[t * c->n_head_kv + h];
                memcpy(mir_row(m, sl / m->P, 0, sl % m->P),
                       k + (t * c->n_head_kv + h) * c->head_dim, sizeof(float) * m->hd);
                memcpy(mir_row(m, sl / m->P, 1, sl % m->P),
                       v + (t * c->n_head_kv + h) * c->head_dim, sizeof(float) * m->hd);
                m->pos[sl] = pos[t];
            }
    }
}

static void test_kvpool_device_pages_keep_and_read(void **state)
{
    (void)state;
    kw_model_config c = small_cfg();
    kw_error err = {0};
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = 4;
    o.n_pages = 256;
    kw_kvpool *ref, *dev;
    assert_int_equal(kw_kvpool_new(&c, &o, &ref, &err), 0);
    o.device_pages = true;
    assert_int_equal(kw_kvpool_new(&c, &o, &dev, &err), 0);
    mirror *mp = mir_new(o.n_pages, 4, 8);
    assert_non_null(mp);
    kw_kvseq *rs = kw_kvseq_new(ref), *ds = kw_kvseq_new(dev);
    float k[8], v[8], rows[64 * 8], k1[2 * 8], v1[2 * 8];
    /* without the callbacks a device pool cannot move, read or write payloads */
    assert_int_equal(kw_kvseq_keep(ds, 0, 0, (int32_t[]){0}, 1), KW_ENOSYS);
    int32_t p0[1];
    fill(&c, 0, 0, 1, k1, v1, p0);
    assert_int_equal(kw_kvseq_append(ds, 0, k1, v1, p0, 1), KW_ENOSYS);
    mir_attach(dev, mp);
    append(rs, &c, 0, 37);
    mir_append(ds, mp, &c, 0, 37);
    /* a fork shares the pages: compaction of one side must copy before writing */
    kw_kvseq *rf = kw_kvseq_fork(rs), *df = kw_kvseq_fork(ds);
    assert_non_null(rf);
    assert_non_null(df);
    uint64_t x = 7;
    for (int round = 0; round < 3; round++)
        for (int l = 0; l < c.n_layer; l++)
            for (int h = 0; h < c.n_head_kv; h++) {
                int n = kw_kvseq_len(rs, l, h), nk = 0;
                int32_t keep[64];
                for (int j = 0; j < n; j++) {
                    x = x * 6364136223846793005ull + 1442695040888963407ull;
                    if ((x >> 33) % 3 != 0 || j == n - 1)
                        keep[nk++] = j;
                }
                assert_int_equal(kw_kvseq_keep(rs, l, h, keep, nk), 0);
                assert_int_equal(kw_kvseq_keep(ds, l, h, keep, nk), 0);
            }
    assert_true(mp->n_compact > 0);
    /* tokens appended after the compactions go through the device's write (KVStar's
     * loaded blocks): positions out of order, into the pages the compactions left */
    append(rs, &c, 100, 9);
    append(ds, &c, 100, 9);
    assert_int_equal(mp->n_write, c.n_layer);
    assert_int_equal(kw_kvseq_pages_held(ds), kw_kvseq_pages_held(rs));
    assert_int_equal(kw_kvpool_free_pages(dev), kw_kvpool_free_pages(ref));
    for (int l = 0; l < c.n_layer; l++)
        for (int h = 0; h < c.n_head_kv; h++) {
            int n = kw_kvseq_len(rs, l, h);
            assert_int_equal(kw_kvseq_len(ds, l, h), n);
            for (int j = 0; j < n; j++) {
                const float *rk, *rv;
                int32_t rp, dp;
                assert_int_equal(kw_kvseq_token(rs, l, h, j, &rk, &rv, &rp), 0);
                assert_int_equal(kw_kvseq_token_f32(ds, l, h, j, k, v, &dp), 0);
                assert_int_equal(dp, rp);
                assert_memory_equal(k, rk, sizeof k);
                assert_memory_equal(v, rv, sizeof v);
            }
            /* the bulk read equals token by token, across page boundaries, in one
             * device read */
            int reads = mp->n_read;
            assert_int_equal(kw_kvseq_rows_f32(ds, l, h, 1, n - 1, 1, rows), 0);
            assert_int_equal(mp->n_read, reads + 1);
            for (int j = 1; j < n; j++) {
                assert_int_equal(kw_kvseq_token_f32(ds, l, h, j, NULL, v, NULL), 0);
                assert_memory_equal(rows + (size_t)(j - 1) * 8, v, sizeof v);
            }
            assert_int_equal(kw_kvseq_rows_f32(ds, l, h, 0, n + 1, 0, rows), KW_EINVAL);
        }
    /* the fork still holds its 37 tokens, untouched */
    for (int l = 0; l < c.n_layer; l++)
        for (int h = 0; h < c.n_head_kv; h++)
            for (int j = 0; j < 37; j++) {
                int32_t dp;
                assert_int_equal(kw_kvseq_token_f32(df, l, h, j, k, NULL, &dp), 0);
                assert_int_equal(dp, j);
                assert_true(k[3] == val(l, h, j, 3, 0));
            }
    kw_kvseq_free(rf), kw_kvseq_free(df), kw_kvseq_free(rs), kw_kvseq_free(ds);
    kw_kvpool_free(ref), kw_kvpool_free(dev);
    mir_free(mp);
}

/* The edit count of a page list: unchanged by appends (the old list stays a prefix),
 * changed by a copy-on-write replacement and by compaction; uids are distinct. */
static void test_kvpool_pages_edits_track_non_appends(void **state)
{
    (void)state;
    kw_model_config c = small_cfg();
    kw_kvpool *p = small_pool(&c, 64);
    kw_kvseq *a = kw_kvseq_new(p);
    append(a, &c, 0, 6); /* 1 full + 1 partial page per table */
    uint32_t e0 = kw_kvseq_pages_edits(a, 1, 0);
    int n0, n1;
    int32_t before[8];
    const int32_t *pg = kw_kvseq_pages(a, 1, 0, &n0);
    assert_int_equal(n0, 2);
    memcpy(before, pg, sizeof(int32_t) * (size_t)n0);
    append(a, &c, 6, 7); /* fills the partial page, adds two */
    pg = kw_kvseq_pages(a, 1, 0, &n1);
    assert_int_equal(n1, 4);
    assert_int_equal(kw_kvseq_pages_edits(a, 1, 0), e0);
    assert_memory_equal(pg, before, sizeof(int32_t) * (size_t)n0);
    /* a fork copies the partial last page for itself: a's list is untouched */
    kw_kvseq *b = kw_kvseq_fork(a);
    assert_non_null(b);
    assert_true(kw_kvseq_uid(b) != kw_kvseq_uid(a));
    append(a, &c, 13, 1);
    assert_int_equal(kw_kvseq_pages_edits(a, 1, 0), e0);
    /* compaction of a table whose pages b shares: pages replaced and the list cut */
    uint32_t e1 = kw_kvseq_pages_edits(a, 0, 1);
    int32_t keep[3] = {0, 5, 9};
    assert_int_equal(kw_kvseq_keep(a, 0, 1, keep, 3), 0);
    assert_int_not_equal(kw_kvseq_pages_edits(a, 0, 1), e1);
    kw_kvseq_free(a), kw_kvseq_free(b);
    kw_kvpool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kvpool_append_spans_pages),
        cmocka_unit_test(test_kvpool_full_pool_refuses),
        cmocka_unit_test(test_kvpool_fork_shares_full_pages_copies_partial),
        cmocka_unit_test(test_kvpool_share_layer_forks_one_layer_before_eviction),
        cmocka_unit_test(test_kvpool_keep_frees_pages),
        cmocka_unit_test(test_kvpool_pages_edits_track_non_appends),
        cmocka_unit_test(test_view_dense_and_tokens),
        cmocka_unit_test(test_view_wants),
        cmocka_unit_test(test_kvpool_int8_pages_round_trip),
        cmocka_unit_test(test_kvpool_pages_with_k_per_channel),
        cmocka_unit_test(test_kvpool_kchan_residual),
        cmocka_unit_test(test_kvpool_device_pages_keep_and_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
