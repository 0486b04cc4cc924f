/* Every dense CPU kernel against its plain reference on random shapes and random data
 * (never zeros). Bound: relative L2 error < 1e-5 (f32 with f64 references), except
 * RoPE (< 1e-5 as well: both evaluate the same angles, in float vs double). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define CPU_CHECK_SEED 0x9e3779b97f4a7c15ull
#include "cpu_check.h"
#include "kernels.h"
#include "kw_config.h"

static void test_linear_matches_reference_on_random_shapes(void **s)
{
    (void)s;
    for (int trial = 0; trial < 12; trial++) {
        int M = trial % 3 == 0 ? 1 : irand(2, 37), N = irand(1, 300), K = irand(1, 257);
        float *x = randv((int64_t)M * K, 1), *w = randv((int64_t)N * K, 0.5f);
        float *b = trial % 2 ? randv(N, 1) : NULL;
        float *y = randv((int64_t)M * N, 9), *r = randv((int64_t)M * N, 9);
        assert_int_equal(kw_k_linear(KW_BK_CPU, NULL, x, w, b, y, M, N, K), 0);
        kw_ref_linear(x, w, b, r, M, N, K);
        assert_true(rel_l2(y, r, (int64_t)M * N) < 1e-5);
        free(x), free(w), free(b), free(y), free(r);
    }
}

/* kw_k_linear_q and kw_k_linear_qt over int4 (with minima) and int8 blocks against the
 * reference over the same matrix dequantized: random shapes (rows past one group of four
 * and one block of sixteen output rows, K of one to 18 blocks), codes, scales and minima
 * (never zeros), a scale per 32 or per 16, tiles of one row to the whole matrix,
 * outputs poisoned first; bound 1e-5 relative L2 (the same products summed in another
 * order, f32 against double). The rows kw_k_embed_q gathers equal the dequantized
 * matrix's exactly. */
static void test_linear_q_matches_reference_on_random_shapes(void **s)
{
    (void)s;
    for (int trial = 0; trial < 16; trial++) {
        int bits = trial % 2 ? 8 : 4, M = trial % 4 < 2 ? irand(1, 4) : irand(5, 40);
        int group = trial % 8 < 4 ? 32 : 16; /* Q6_K's scale per 16 */
        int N = irand(1, 70), K = 32 * irand(1, 18), nb = N * K / group;
        uint8_t *codes = malloc((size_t)N * K * bits / 8);
        for (int64_t i = 0; i < (int64_t)N * K * bits / 8; i++)
            codes[i] = (uint8_t)irand(0, 255);
        float *scale = randpos(nb, 0.05f);
        for (int i = 0; i < nb; i++) /* a few significant bits, as an f16 has: code x scale
                                      * is exact, so the dequantized weight is one rounding */
            scale[i] = (1.0f + floorf(scale[i] * 2048.0f)) / 2048.0f;
        float *min = bits == 4 ? randv(nb, 0.4f) : calloc((size_t)nb, sizeof(float));
        float *w = malloc(sizeof(float) * (size_t)N * K), *x = randv((int64_t)M * K, 1);
        for (int64_t i = 0; i < (int64_t)N * K; i++) {
            int64_t b = i / 32, j = i % 32;
            float c = bits == 8 ? (float)(int8_t)codes[i]
                                : (float)((codes[b * 16 + j % 16] >> (j < 16 ? 0 : 4)) & 15);
            w[i] = c * scale[i / group] + min[i / group];
        }
        float *b = trial % 3 ? randv(N, 1) : NULL;
        float *y = malloc(sizeof(float) * (size_t)M * N), *r = randv((int64_t)M * N, 9);
        for (int64_t i = 0; i < (int64_t)M * N; i++)
            y[i] = NAN;
        kw_qmat q = {.bits = bits, .group = group, .codes = codes, .scale = scale, .min = min};
        assert_int_equal(kw_k_linear_q(KW_BK_CPU, NULL, x, &q, b, y, M, N, K), 0);
        kw_ref_linear(x, w, b, r, M, N, K);
        double e = rel_l2(y, r, (int64_t)M * N);
        if (!(e < 1e-5))
            fail_msg("bits %d, group %d, M %d N %d K %d: rel L2 %g", bits, group, M, N, K, e);
        int64_t tile_n = (int64_t)K * irand(1, N + 1);
        float *tile = randv(tile_n, 9);
        for (int64_t i = 0; i < (int64_t)M * N; i++)
            y[i] = NAN;
        assert_int_equal(kw_k_linear_qt(KW_BK_CPU, NULL, x, &q, b, y, M, N, K, tile, tile_n),
                         0);
        if (!((e = rel_l2(y, r, (int64_t)M * N)) < 1e-5))
            fail_msg("tiles of %lld rows, bits %d, M %d N %d K %d: rel L2 %g",
                     (long long)(tile_n / K), bits, M, N, K, e);
        int32_t ids[3] = {irand(0, N - 1), irand(0, N - 1), N - 1};
        float *rows = randv(3 * (int64_t)K, 9);
        assert_int_equal(kw_k_embed_q(KW_BK_CPU, NULL, &q, N, K, ids, 3, rows), 0);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < K; j++)
                if (rows[i * K + j] != w[(int64_t)ids[i] * K + j])
                    fail_msg("embedding row %d, element %d: %g, not %g", ids[i], j,
                             rows[i * K + j], w[(int64_t)ids[i] * K + j]);
        ids[0] = N;
        assert_int_equal(kw_k_embed_q(KW_BK_CPU, NULL, &q, N, K, ids, 1, rows), KW_ERANGE);
        free(codes), free(scale), free(min), free(w), free(x), free(b), free(y), free(r);
        free(tile), free(rows);
    }
    kw_qmat bad = {.bits = 4}, bad_group = {.bits = 8, .group = 8};
    float x[32], y[1];
    int32_t id = 0;
    assert_int_equal(kw_k_linear_q(KW_BK_CPU, NULL, x, &bad, NULL, y, 1, 1, 31), KW_EINVAL);
    assert_int_equal(kw_k_linear_q(KW_BK_CUDA, NULL, x, &bad, NULL, y, 1, 1, 32), KW_ENOSYS);
    assert_int_equal(kw_k_linear_qt(KW_BK_CPU, NULL, x, &bad, NULL, y, 1, 1, 32, x, 31),
                     KW_EINVAL); /* a tile smaller than a row */
    assert_int_equal(kw_k_embed_q(KW_BK_CPU, NULL, &bad, 1, 31, &id, 1, x), KW_EINVAL);
    assert_int_equal(kw_k_linear_q(KW_BK_CPU, NULL, x, &bad_group, NULL, y, 1, 1, 32),
                     KW_EINVAL);
}

static void test_rmsnorm_matches_reference(void **s)
{
    (void)s;
    for (int trial = 0; trial < 8; trial++) {
        int rows = irand(1, 20), dim = irand(1, 1000);
        float *x = randv((int64_t)rows * dim, 3), *g = randv(dim, 1);
        float *y = randv((int64_t)rows * dim, 1), *r = randv((int64_t)rows * dim, 1);
        kw_k_rmsnorm(KW_BK_CPU, NULL, x, g, y, rows, dim, 1e-5f);
        kw_ref_rmsnorm(x, g, r, rows, dim, 1e-5f);
        assert_true(rel_l2(y, r, (int64_t)rows * dim) < 1e-5);
        /* in place */
        kw_k_rmsnorm(KW_BK_CPU, NULL, x, g, x, rows, dim, 1e-5f);
        assert_true(rel_l2(x, r, (int64_t)rows * dim) < 1e-5);
        free(x), free(g), free(y), free(r);
    }
}

static void test_rope_both_layouts_match_reference(void **s)
{
    (void)s;
    kw_model_config cfg = {.head_dim = 64, .rope_theta = 10000.0f};
    for (int layout = 0; layout < 2; layout++)
        for (int trial = 0; trial < 4; trial++) {
            cfg.head_dim = 2 * irand(1, 64);
            int n_tok = irand(1, 30), nh = irand(1, 6);
            float inv[128];
            kw_rope_inv_freq(&cfg, inv);
            int32_t *pos = malloc(sizeof(int32_t) * n_tok);
            for (int t = 0; t < n_tok; t++)
                pos[t] = irand(0, 4000);
            int64_t n = (int64_t)n_tok * nh * cfg.head_dim;
            float *x = randv(n, 1), *r = malloc(sizeof(float) * n);
            memcpy(r, x, sizeof(float) * n);
            kw_k_rope(KW_BK_CPU, NULL, x, pos, n_tok, nh, cfg.head_dim, inv, layout);
            kw_ref_rope(r, pos, n_tok, nh, cfg.head_dim, inv, layout);
            assert_true(rel_l2(x, r, n) < 1e-5);
            free(pos), free(x), free(r);
        }
}

static void test_rope_layouts_are_a_permutation_of_each_other(void **s)
{
    /* Interleaved pairs on a vector permuted (i, i+d/2) -> (2i, 2i+1) equal half-split
     * pairs on the original: the relation the GGUF converter's Q/K permutation relies on. */
    (void)s;
    int d = 16, half = d / 2;
    kw_model_config cfg = {.head_dim = d, .rope_theta = 10000.0f};
    float inv[8], a[16], b[16];
    kw_rope_inv_freq(&cfg, inv);
    float *x = randv(d, 1);
    for (int i = 0; i < half; i++) {
        a[2 * i] = x[i];
        a[2 * i + 1] = x[i + half];
    }
    memcpy(b, x, sizeof b);
    int32_t pos = 1234;
    kw_k_rope(KW_BK_CPU, NULL, a, &pos, 1, 1, d, inv, KW_ROPE_INTERLEAVED);
    kw_k_rope(KW_BK_CPU, NULL, b, &pos, 1, 1, d, inv, KW_ROPE_HALF);
    for (int i = 0; i < half; i++) {
        assert_float_equal(a[2 * i], b[i], 1e-6);
        assert_float_equal(a[2 * i + 1], b[i + half], 1e-6);
    }
    free(x);
}

static void test_llama3_scaling_keeps_high_and_divides_low_frequencies(void **s)
{
    (void)s;
    kw_model_config cfg = {.head_dim = 128, .rope_theta = 500000.0f,
                           .rope_scaling = KW_ROPE_SCALE_LLAMA3, .rope_factor = 8,
                           .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                           .rope_orig_ctx = 8192};
    kw_model_config plain = cfg;
    plain.rope_scaling = KW_ROPE_SCALE_NONE;
    float a[64], b[64];
    kw_rope_inv_freq(&cfg, a);
    kw_rope_inv_freq(&plain, b);
    assert_float_equal(a[0], b[0], 0);          /* wavelength 2pi: kept */
    assert_float_equal(a[63], b[63] / 8, 1e-12); /* longest wavelength: divided */
    for (int i = 0; i < 64; i++)
        assert_true(a[i] <= b[i] && a[i] >= b[i] / 8 * 0.999f);
}

static void test_swiglu_softmax_embed_add_match_reference(void **s)
{
    (void)s;
    int64_t n = irand(100, 5000);
    float *g = randv(n, 6), *u = randv(n, 2), *y = randv(n, 1), *r = randv(n, 1);
    kw_k_swiglu(KW_BK_CPU, NULL, g, u, y, n);
    kw_ref_swiglu(g, u, r, n);
    assert_true(rel_l2(y, r, n) < 1e-6);

    int rows = 7, cols = irand(3, 700);
    float *x = randv((int64_t)rows * cols, 20), *x2 = malloc(sizeof(float) * rows * cols);
    memcpy(x2, x, sizeof(float) * rows * cols);
    kw_k_softmax(KW_BK_CPU, NULL, x, rows, cols);
    kw_ref_softmax(x2, rows, cols);
    assert_true(rel_l2(x, x2, (int64_t)rows * cols) < 1e-6);
    double lse = kw_k_logsumexp(g, (int)n), ref = 0;
    for (int64_t i = 0; i < n; i++)
        ref += exp((double)g[i]);
    assert_true(fabs(lse - log(ref)) < 1e-9 * fabs(log(ref)) + 1e-9);

    float *tab = randv(50 * 8, 1), out[3 * 8];
    int32_t ids[3] = {7, 0, 49}, bad[1] = {50};
    assert_int_equal(kw_k_embed(KW_BK_CPU, NULL, tab, 50, 8, ids, 3, out), 0);
    assert_memory_equal(out + 8, tab, sizeof(float) * 8);
    assert_memory_equal(out + 16, tab + 49 * 8, sizeof(float) * 8);
    assert_int_equal(kw_k_embed(KW_BK_CPU, NULL, tab, 50, 8, bad, 1, out), KW_ERANGE);

    memcpy(r, y, sizeof(float) * n);
    kw_k_add(KW_BK_CPU, NULL, y, u, n);
    for (int64_t i = 0; i < n; i++)
        assert_float_equal(y[i], r[i] + u[i], 0);
    float ties[4] = {1, 3, 3, 2};
    assert_int_equal(kw_k_argmax(ties, 4), 1);
    free(g), free(u), free(y), free(r), free(x), free(x2), free(tab);
}

static void test_cuda_backend_is_refused_without_cuda(void **s)
{
    (void)s;
#if KW_HAVE_CUDA
    skip(); /* the CUDA build routes it to kernels/cuda: tests/kernels/test_cuda_*.c */
#else
    float x = 1;
    assert_int_equal(kw_k_add(KW_BK_CUDA, NULL, &x, &x, 1), KW_ENOSYS);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_matches_reference_on_random_shapes),
        cmocka_unit_test(test_linear_q_matches_reference_on_random_shapes),
        cmocka_unit_test(test_rmsnorm_matches_reference),
        cmocka_unit_test(test_rope_both_layouts_match_reference),
        cmocka_unit_test(test_rope_layouts_are_a_permutation_of_each_other),
        cmocka_unit_test(test_llama3_scaling_keeps_high_and_divides_low_frequencies),
        cmocka_unit_test(test_swiglu_softmax_embed_add_match_reference),
        cmocka_unit_test(test_cuda_backend_is_refused_without_cuda),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
