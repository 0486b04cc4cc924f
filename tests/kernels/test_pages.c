/* Page metadata kernels against their plain references on random shapes and random
 * data (never zeros). Bounds: kmin/kmax are exact (a min and a max need no rounding);
 * page scores within 1e-5 of sum_i |q_i| * max(|kmin_i|, |kmax_i|) (f32 sums against an
 * f64 reference), and every score is at least q.k for every key of its page. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cpu_check.h"
#include "kernels.h"

static void test_page_bounds_equal_reference_exactly(void **s)
{
    (void)s;
    for (int trial = 0; trial < 20; trial++) {
        int hd = trial % 4 == 0 ? 64 : irand(1, 130), page = irand(1, 33);
        int n = trial == 0 ? 20000 : irand(1, 700), np = (n + page - 1) / page;
        float *k = randv((int64_t)n * hd, 3);
        float *mn = randv((int64_t)np * hd, 9), *mx = randv((int64_t)np * hd, 9);
        float *rmn = randv((int64_t)np * hd, 9), *rmx = randv((int64_t)np * hd, 9);
        assert_int_equal(kw_k_page_bounds(KW_BK_CPU, NULL, k, n, hd, page, mn, mx), 0);
        kw_ref_page_bounds(k, n, hd, page, rmn, rmx);
        assert_memory_equal(mn, rmn, sizeof(float) * (size_t)np * hd);
        assert_memory_equal(mx, rmx, sizeof(float) * (size_t)np * hd);
        free(k), free(mn), free(mx), free(rmn), free(rmx);
    }
}

static void test_page_scores_match_reference_and_bound_every_key(void **s)
{
    (void)s;
    for (int trial = 0; trial < 20; trial++) {
        int hd = trial % 3 == 0 ? 64 : irand(1, 130), page = irand(1, 33);
        int n = trial == 0 ? 40000 : irand(1, 900), np = (n + page - 1) / page;
        int nq = irand(1, 9);
        float *k = randv((int64_t)n * hd, 2), *q = randv((int64_t)nq * hd, 1.5f);
        float *mn = malloc(sizeof(float) * (size_t)np * hd);
        float *mx = malloc(sizeof(float) * (size_t)np * hd);
        float *sc = randv((int64_t)nq * np, 9), *ref = randv((int64_t)nq * np, 9);
        assert_int_equal(kw_k_page_bounds(KW_BK_CPU, NULL, k, n, hd, page, mn, mx), 0);
        assert_int_equal(kw_k_page_scores(KW_BK_CPU, NULL, q, nq, hd, mn, mx, np, sc), 0);
        kw_ref_page_scores(q, nq, hd, mn, mx, np, ref);
        for (int h = 0; h < nq; h++)
            for (int p = 0; p < np; p++) {
                double mag = 0;
                for (int i = 0; i < hd; i++)
                    mag += fabs(q[h * hd + i])
                           * fmax(fabs(mn[(int64_t)p * hd + i]), fabs(mx[(int64_t)p * hd + i]));
                double got = sc[(int64_t)h * np + p], want = ref[(int64_t)h * np + p];
                assert_true(fabs(got - want) <= 1e-5 * mag + 1e-30);
                for (int t = p * page; t < n && t < (p + 1) * page; t++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += (double)q[h * hd + i] * k[(int64_t)t * hd + i];
                    assert_true(dot <= want + 1e-6 * mag); /* want is rounded to f32 */
                }
            }
        free(k), free(q), free(mn), free(mx), free(sc), free(ref);
    }
}

static void test_page_kernels_refuse_bad_shapes(void **s)
{
    (void)s;
    float k[4] = {1, 2, 3, 4}, mn[4], mx[4], sc[2];
    /* CUDA checks shapes before touching memory; builds without CUDA answer KW_ENOSYS */
    int rc = kw_k_page_bounds(KW_BK_CUDA, NULL, k, 2, 2, 0, mn, mx);
    assert_true(rc == KW_EINVAL || rc == KW_ENOSYS);
    rc = kw_k_page_scores(KW_BK_CUDA, NULL, k, 1, 0, mn, mx, 2, sc);
    assert_true(rc == KW_EINVAL || rc == KW_ENOSYS);
    assert_int_equal(kw_k_page_bounds(KW_BK_CPU, NULL, k, 2, 2, 0, mn, mx), KW_EINVAL);
    assert_int_equal(kw_k_page_scores(KW_BK_CPU, NULL, k, 1, 0, mn, mx, 2, sc), KW_EINVAL);
}

/* CPU compaction: in place over several tables of a random f32 arena equals the plain
 * reference byte for byte (partial last pages, keep-all and keep-none tables), and bad
 * keep lists are refused before anything moves. */
static void test_page_compact_cpu_equals_reference(void **s)
{
    (void)s;
    for (int trial = 0; trial < 20; trial++) {
        int P = irand(1, 20), hd = irand(1, 70), n_tab = irand(1, 12), scales = trial % 2;
        int32_t keep_off[13] = {0}, src_off[13] = {0}, ntok[12];
        for (int t = 0; t < n_tab; t++) {
            ntok[t] = irand(1, 300);
            src_off[t + 1] = src_off[t] + (ntok[t] + P - 1) / P;
        }
        int n_pages = src_off[n_tab];
        int32_t *src = malloc(sizeof(int32_t) * (size_t)n_pages);
        int32_t *keep = malloc(sizeof(int32_t) * (size_t)n_pages * P);
        for (int i = 0; i < n_pages; i++)
            src[i] = n_pages - 1 - i; /* tables over scattered pages */
        for (int t = 0; t < n_tab; t++) {
            double frac = t % 3 == 0 ? 1.0 : t % 3 == 1 ? uni() : 0.0;
            int m = 0;
            for (int j = 0; j < ntok[t]; j++)
                if (uni() < frac)
                    keep[keep_off[t] + m++] = j;
            keep_off[t + 1] = keep_off[t] + m;
        }
        int rb = 4 * hd;
        kw_page_layout L = {.page_tokens = P, .row_bytes = rb, .scale_bytes = scales ? 4 : 0,
                            .page_bytes = 2 * (int64_t)P * (rb + (scales ? 4 : 0))};
        size_t bytes = (size_t)n_pages * L.page_bytes;
        float *a = randv((int64_t)(bytes / 4), 1), *b = malloc(bytes);
        int32_t *pa = malloc(sizeof(int32_t) * (size_t)n_pages * P),
                *pb = malloc(sizeof(int32_t) * (size_t)n_pages * P);
        for (int i = 0; i < n_pages * P; i++)
            pa[i] = pb[i] = irand(1, 1 << 20);
        memcpy(b, a, bytes);
        L.base = (uint8_t *)a, L.pos = pa;
        assert_int_equal(kw_k_page_compact(KW_BK_CPU, NULL, &L, n_tab, keep_off, keep, src_off,
                                           src, src_off, src), 0);
        L.base = (uint8_t *)b, L.pos = pb;
        kw_ref_page_compact(&L, n_tab, keep_off, keep, src_off, src, src_off, src);
        assert_memory_equal(a, b, bytes);
        assert_memory_equal(pa, pb, sizeof(int32_t) * (size_t)n_pages * P);
        if (keep_off[1] > 1) { /* not increasing, then out of the table */
            int32_t k0 = keep[0];
            keep[0] = keep[1];
            assert_int_equal(kw_k_page_compact(KW_BK_CPU, NULL, &L, n_tab, keep_off, keep,
                                               src_off, src, src_off, src), KW_EINVAL);
            keep[0] = k0;
        }
        if (keep_off[1] > 0) {
            keep[0] = src_off[1] * P;
            assert_int_equal(kw_k_page_compact(KW_BK_CPU, NULL, &L, n_tab, keep_off, keep,
                                               src_off, src, src_off, src), KW_EINVAL);
            assert_memory_equal(a, b, bytes); /* nothing moved by a refused call */
        }
        free(src), free(keep), free(a), free(b), free(pa), free(pb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_bounds_equal_reference_exactly),
        cmocka_unit_test(test_page_scores_match_reference_and_bound_every_key),
        cmocka_unit_test(test_page_kernels_refuse_bad_shapes),
        cmocka_unit_test(test_page_compact_cpu_equals_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
