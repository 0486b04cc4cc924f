/* The selection kernels (window scores, pooling, top-k) against their plain references
 * on random shapes and random data (never zeros). Bounds: window scores and average
 * pooling, relative L2 error < 1e-5 (float sums vs double references over at most a few
 * thousand terms in [0, 1]); max pooling and top-k exact. Top-k is also checked on data
 * with many ties (values drawn from a few levels), where the lower index must win. */
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

static void test_window_scores_match_reference_per_group(void **s)
{
    (void)s;
    for (int trial = 0; trial < 20; trial++) {
        int n_kv = irand(1, 4), group = irand(1, 4), n_head = n_kv * group;
        if (trial % 4 == 0)
            group = 1; /* per query head */
        int n_q = irand(1, 40), len = irand(1, 3000), n_key = irand(0, len);
        int64_t np = (int64_t)n_q * n_head * len, no = (int64_t)(n_head / group) * n_key;
        float *p = randpos(np, 1.f / 64), *o = randpos(no, 7), *r = randpos(no, 7);
        assert_int_equal(kw_k_window_scores(KW_BK_CPU, NULL, p, n_q, n_head, len, group, n_key,
                                            o), 0);
        kw_ref_window_scores(p, n_q, n_head, len, group, n_key, r);
        assert_true(rel_l2(o, r, no) < 1e-5);
        free(p), free(o), free(r);
    }
    float p[4] = {1, 1, 1, 1}, o[4];
    assert_int_equal(kw_k_window_scores(KW_BK_CPU, NULL, p, 1, 3, 4, 2, 4, o), KW_EINVAL);
    assert_int_equal(kw_k_window_scores(KW_BK_CPU, NULL, p, 1, 1, 4, 1, 5, o), KW_EINVAL);
}

static void test_pooling_matches_reference_odd_and_even_kernels(void **s)
{
    (void)s;
    for (int trial = 0; trial < 30; trial++) {
        int rows = irand(1, 6), n = irand(1, 2500), kernel = irand(1, 9);
        kw_pooling mode = trial % 2 ? KW_POOLING_MAX : KW_POOLING_AVG;
        int64_t N = (int64_t)rows * n;
        float *x = randpos(N, 3), *o = randpos(N, 9), *r = randpos(N, 9);
        assert_int_equal(kw_k_pool1d(KW_BK_CPU, NULL, x, rows, n, kernel, mode, o), 0);
        kw_ref_pool1d(x, rows, n, kernel, mode, r);
        if (mode == KW_POOLING_MAX)
            assert_memory_equal(o, r, sizeof(float) * (size_t)N);
        else
            assert_true(rel_l2(o, r, N) < 1e-5);
        free(x), free(o), free(r);
    }
}

static void test_avg_pooling_counts_padding_as_zeros(void **s)
{
    (void)s;
    /* kernel 5 over [1,2,3,4,5,6]: the ends average with two (then one) zero pads */
    float x[6] = {1, 2, 3, 4, 5, 6}, o[6];
    assert_int_equal(kw_k_pool1d(KW_BK_CPU, NULL, x, 1, 6, 5, KW_POOLING_AVG, o), 0);
    float want[6] = {6 / 5.f, 10 / 5.f, 15 / 5.f, 20 / 5.f, 18 / 5.f, 15 / 5.f};
    for (int i = 0; i < 6; i++)
        assert_float_equal(o[i], want[i], 1e-6);
    assert_int_equal(kw_k_pool1d(KW_BK_CPU, NULL, x, 1, 6, 5, KW_POOLING_MAX, o), 0);
    float wmax[6] = {3, 4, 5, 6, 6, 6};
    assert_memory_equal(o, wmax, sizeof o);
    assert_int_equal(kw_k_pool1d(KW_BK_CPU, NULL, x, 1, 6, 5, KW_POOLING_AVG, x), KW_EINVAL);
}

static void test_topk_matches_reference_with_ties_to_lower_index(void **s)
{
    (void)s;
    for (int trial = 0; trial < 40; trial++) {
        int rows = irand(1, 5), n = irand(1, 1500), k = irand(0, n);
        if (trial % 5 == 0)
            k = n;
        int64_t N = (int64_t)rows * n;
        float *x = randpos(N, 1);
        if (trial % 2) /* a few levels: many ties */
            for (int64_t i = 0; i < N; i++)
                x[i] = 0.125f * (float)(1 + (int)(x[i] * 4));
        int32_t *o = malloc(sizeof(int32_t) * (size_t)(rows * k + 1));
        int32_t *r = malloc(sizeof(int32_t) * (size_t)(rows * k + 1));
        assert_int_equal(kw_k_topk(KW_BK_CPU, NULL, x, rows, n, k, o), 0);
        kw_ref_topk(x, rows, n, k, r);
        assert_memory_equal(o, r, sizeof(int32_t) * (size_t)(rows * k));
        for (int64_t i = 1; i < (int64_t)rows * k; i++)
            if (i % k)
                assert_true(o[i] > o[i - 1]);
        free(x), free(o), free(r);
    }
}

static void test_topk_hand_example_and_bad_input(void **s)
{
    (void)s;
    float x[7] = {0.5f, 0.9f, 0.5f, 0.1f, 0.9f, 0.5f, 0.2f};
    int32_t o[4];
    assert_int_equal(kw_k_topk(KW_BK_CPU, NULL, x, 1, 7, 4, o), 0);
    int32_t want[4] = {0, 1, 2, 4}; /* 0.9 x2, then the first two 0.5 */
    assert_memory_equal(o, want, sizeof want);
    assert_int_equal(kw_k_topk(KW_BK_CPU, NULL, x, 1, 7, 8, o), KW_EINVAL);
    x[3] = NAN;
    assert_int_equal(kw_k_topk(KW_BK_CPU, NULL, x, 1, 7, 2, o), KW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_window_scores_match_reference_per_group),
        cmocka_unit_test(test_pooling_matches_reference_odd_and_even_kernels),
        cmocka_unit_test(test_avg_pooling_counts_padding_as_zeros),
        cmocka_unit_test(test_topk_matches_reference_with_ties_to_lower_index),
        cmocka_unit_test(test_topk_hand_example_and_bad_input),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
