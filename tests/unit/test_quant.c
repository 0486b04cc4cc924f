/* Dequantization and float conversions (quant.c).
 *
 * Each quantized format is checked by encoding random logical values (scales, mins,
 * integer quants) into blocks from the layout description written here, then comparing
 * kw_to_f32 with the value the format defines, element by element. Error bound: the
 * reference does the same float operations, so we allow 1e-6 relative (contraction of
 * a*b + c into an FMA may change the last bit). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvweave/tensor.h"
#include "tiny_model.h"

static uint64_t rng = 12345;

static int ri(int lo, int hi) { return lo + (int)(kw_tiny_rand(&rng) % (uint64_t)(hi - lo + 1)); }

/* A random f16 scale and the float it stands for. */
static float rand_half(uint8_t *dst, float lo, float hi)
{
    uint16_t h = kw_f32_to_f16(kw_tiny_uniform(&rng, lo, hi));
    memcpy(dst, &h, 2);
    return kw_f16_to_f32(h);
}

static void close_enough(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        float tol = 1e-6f * (fabsf(want[i]) + 1e-3f);
        if (!(fabsf(got[i] - want[i]) <= tol))
            fail_msg("%s: element %lld is %.9g, want %.9g", what, (long long)i, got[i], want[i]);
    }
}

/* Encodes one block of type t with random logical values; writes the defined result. */
static void make_block(kw_dtype t, uint8_t *b, float *want)
{
    switch (t) {
    case KW_DT_Q4_0: case KW_DT_Q4_1: case KW_DT_Q5_0: case KW_DT_Q5_1: {
        int five = t == KW_DT_Q5_0 || t == KW_DT_Q5_1, hasm = t == KW_DT_Q4_1 || t == KW_DT_Q5_1;
        float d = rand_half(b, -0.1f, 0.1f), m = hasm ? rand_half(b + 2, -1, 1) : 0;
        uint8_t *qh = b + (hasm ? 4 : 2), *qs = qh + (five ? 4 : 0);
        memset(qh, 0, five ? 20 : 16);
        for (int e = 0; e < 32; e++) {
            int q = ri(0, five ? 31 : 15);
            qs[e % 16] |= (uint8_t)((q & 15) << (e < 16 ? 0 : 4));
            if (five)
                qh[e / 8] |= (uint8_t)(((q >> 4) & 1) << (e % 8)); /* bit e of a LE u32 */
            int off = hasm ? 0 : (five ? 16 : 8);
            want[e] = (float)(q - off) * d + m;
        }
        break;
    }
    case KW_DT_Q8_0: {
        float d = rand_half(b, -0.1f, 0.1f);
        for (int e = 0; e < 32; e++) {
            int q = ri(-128, 127);
            b[2 + e] = (uint8_t)(int8_t)q;
            want[e] = (float)q * d;
        }
        break;
    }
    case KW_DT_Q4_K: case KW_DT_Q5_K: {
        int five = t == KW_DT_Q5_K;
        float d = rand_half(b, 0, 0.05f), dmin = rand_half(b + 2, 0, 0.05f);
        uint8_t *sc = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
        memset(sc, 0, 12);
        if (five)
            memset(qh, 0, 32);
        memset(qs, 0, 128);
        int s6[8], m6[8];
        for (int j = 0; j < 8; j++) {
            s6[j] = ri(0, 63);
            m6[j] = ri(0, 63);
            /* bytes 0-3: scales 0-3 (low 6 bits) + top 2 bits of scales 4-7;
             * bytes 4-7: mins 0-3 + top 2 bits of mins 4-7;
             * bytes 8-11: low nibble = scale 4-7 low 4 bits, high nibble = min 4-7 */
            if (j < 4) {
                sc[j] |= (uint8_t)s6[j];
                sc[j + 4] |= (uint8_t)m6[j];
            } else {
                sc[j - 4] |= (uint8_t)((s6[j] >> 4) << 6);
                sc[j] |= (uint8_t)((m6[j] >> 4) << 6);
                sc[j + 4] |= (uint8_t)((s6[j] & 15) | ((m6[j] & 15) << 4));
            }
        }
        for (int e = 0; e < 256; e++) {
            int q = ri(0, five ? 31 : 15), sb = e / 32, l = e % 32;
            /* sub-blocks 2s and 2s+1 share bytes qs[32s .. 32s+31]: low, then high nibble */
            qs[32 * (e / 64) + l] |= (uint8_t)((q & 15) << ((sb & 1) ? 4 : 0));
            if (five)
                qh[l] |= (uint8_t)(((q >> 4) & 1) << sb);
            want[e] = d * (float)s6[sb] * (float)q - dmin * (float)m6[sb];
        }
        break;
    }
    case KW_DT_Q6_K: {
        uint8_t *ql = b, *qh = b + 128;
        int8_t *sc = (int8_t *)(b + 192);
        memset(b, 0, 192);
        float d = rand_half(b + 208, -0.01f, 0.01f);
        for (int j = 0; j < 16; j++)
            sc[j] = (int8_t)ri(-128, 127);
        for (int e = 0; e < 256; e++) {
            int q = ri(0, 63), half = e / 128, k = (e % 128) / 32, l = e % 32;
            ql[64 * half + l + 32 * (k & 1)] |= (uint8_t)((q & 15) << (k >= 2 ? 4 : 0));
            qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * k));
            int s = sc[8 * half + l / 16 + 2 * k];
            want[e] = d * (float)(s * (q - 32));
        }
        break;
    }
    default:
        fail_msg("no encoder for %s", kw_dtype_name(t));
    }
}

static void check_format(kw_dtype t)
{
    size_t be, bb;
    assert_int_equal(kw_dtype_block(t, &be, &bb), 0);
    /* sizes across the single-thread and the chunked parallel paths */
    int64_t counts[] = {1, 3, 257, 70000 / (int64_t)be + 5};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        int64_t nb = counts[c], n = nb * (int64_t)be;
        uint8_t *blocks = malloc((size_t)nb * bb);
        float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
        for (int64_t i = 0; i < nb; i++)
            make_block(t, blocks + i * (int64_t)bb, want + i * (int64_t)be);
        assert_int_equal(kw_dtype_nbytes(t, n), nb * (int64_t)bb);
        assert_int_equal(kw_to_f32(t, blocks, got, n), 0);
        close_enough(got, want, n, kw_dtype_name(t));
        free(blocks);
        free(want);
        free(got);
    }
}

/* kw_split_blocks: codes * scale + min is the value kw_to_f32 gives, for random
 * blocks of every type it splits (Q6_K with a scale per 16); other types are refused */
static void test_split_blocks_rebuild_the_dequantized_values(void **st)
{
    (void)st;
    const kw_dtype ts[] = {KW_DT_Q4_0, KW_DT_Q4_1, KW_DT_Q5_0, KW_DT_Q5_1,
                           KW_DT_Q8_0, KW_DT_Q4_K, KW_DT_Q5_K, KW_DT_Q6_K};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) {
        kw_dtype t = ts[k];
        size_t be, bb;
        assert_int_equal(kw_dtype_block(t, &be, &bb), 0);
        int64_t nb = 37, n = nb * (int64_t)be, bits = kw_split_bits(t),
                group = kw_split_group(t), ng = n / group;
        assert_int_equal(bits, t == KW_DT_Q4_0 || t == KW_DT_Q4_1 || t == KW_DT_Q4_K ? 4 : 8);
        assert_int_equal(group, t == KW_DT_Q6_K ? 16 : 32);
        uint8_t *blocks = malloc((size_t)nb * bb), *codes = malloc((size_t)(n * bits / 8));
        float *want = malloc(sizeof(float) * (size_t)n), *ref = malloc(sizeof(float) * (size_t)n);
        float *scale = malloc(sizeof(float) * (size_t)ng);
        float *min = malloc(sizeof(float) * (size_t)ng);
        for (int64_t i = 0; i < nb; i++)
            make_block(t, blocks + i * (int64_t)bb, want + i * (int64_t)be);
        assert_int_equal(kw_to_f32(t, blocks, ref, n), 0);
        assert_int_equal(kw_split_blocks(t, blocks, n, codes, scale, min), 0);
        int nonzero = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t b = i / 32, j = i % 32;
            float c = bits == 8 ? (float)(int8_t)codes[i]
                                : (float)((codes[b * 16 + j % 16] >> (j < 16 ? 0 : 4)) & 15);
            float v = c * scale[i / group] + min[i / group];
            if (v != ref[i]) /* equal values (a zero may differ in sign) */
                fail_msg("%s element %lld: %a, kw_to_f32 %a", kw_dtype_name(t), (long long)i,
                         (double)v, (double)ref[i]);
            nonzero += v != 0;
        }
        assert_true(nonzero > n / 2);
        free(blocks), free(codes), free(want), free(ref), free(scale), free(min);
    }
    uint8_t blk[210] = {0}, c[256];
    float sc[8], mn[8];
    assert_int_equal(kw_split_bits(KW_DT_BF16), 0);
    assert_int_equal(kw_split_group(KW_DT_F32), 0);
    assert_int_equal(kw_split_blocks(KW_DT_F16, blk, 32, c, sc, mn), KW_EINVAL);
    assert_int_equal(kw_split_blocks(KW_DT_Q4_1, blk, 31, c, sc, mn), KW_EINVAL);
    assert_int_equal(kw_split_blocks(KW_DT_Q4_K, blk, 32, c, sc, mn), KW_EINVAL);
}

static void test_q4_0_matches_layout(void **st) { (void)st; check_format(KW_DT_Q4_0); }
static void test_q4_1_matches_layout(void **st) { (void)st; check_format(KW_DT_Q4_1); }
static void test_q5_0_matches_layout(void **st) { (void)st; check_format(KW_DT_Q5_0); }
static void test_q5_1_matches_layout(void **st) { (void)st; check_format(KW_DT_Q5_1); }
static void test_q8_0_matches_layout(void **st) { (void)st; check_format(KW_DT_Q8_0); }
static void test_q4_k_matches_layout(void **st) { (void)st; check_format(KW_DT_Q4_K); }
static void test_q5_k_matches_layout(void **st) { (void)st; check_format(KW_DT_Q5_K); }
static void test_q6_k_matches_layout(void **st) { (void)st; check_format(KW_DT_Q6_K); }

static void test_block_sizes_are_ggml(void **st)
{
    (void)st;
    static const struct { kw_dtype t; size_t e, b; } want[] = {
        {KW_DT_F32, 1, 4},    {KW_DT_F16, 1, 2},    {KW_DT_BF16, 1, 2},   {KW_DT_Q4_0, 32, 18},
        {KW_DT_Q4_1, 32, 20}, {KW_DT_Q5_0, 32, 22}, {KW_DT_Q5_1, 32, 24}, {KW_DT_Q8_0, 32, 34},
        {KW_DT_Q4_K, 256, 144}, {KW_DT_Q5_K, 256, 176}, {KW_DT_Q6_K, 256, 210}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        size_t e, b;
        assert_int_equal(kw_dtype_block(want[i].t, &e, &b), 0);
        assert_int_equal(e, want[i].e);
        assert_int_equal(b, want[i].b);
    }
    assert_true(kw_dtype_nbytes(KW_DT_Q4_K, 100) < 0); /* not a whole block */
    assert_true(kw_to_f32(KW_DT_Q8_0, NULL, NULL, 31) < 0);
    assert_string_equal(kw_dtype_name(KW_DT_Q5_K), "Q5_K");
}

static float f16_value_ref(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static void test_f16_decodes_every_finite_value(void **st)
{
    (void)st;
    for (uint32_t h = 0; h < 65536; h++) {
        if (((h >> 10) & 31) == 31) {
            float f = kw_f16_to_f32((uint16_t)h);
            assert_true((h & 1023) ? isnan(f) : isinf(f));
            continue;
        }
        float want = f16_value_ref((uint16_t)h);
        assert_true(kw_f16_to_f32((uint16_t)h) == want);
        assert_true(signbit(kw_f16_to_f32((uint16_t)h)) == signbit(want) || want != 0);
        assert_int_equal(kw_f32_to_f16(want), h); /* exact values round-trip */
    }
}

static void test_f32_to_f16_rounds_to_nearest_even(void **st)
{
    (void)st;
    for (int i = 0; i < 200000; i++) {
        float x = ldexpf(kw_tiny_uniform(&rng, -1, 1), ri(-27, 17));
        uint16_t h = kw_f32_to_f16(x);
        double ax = fabs((double)x);
        if (ax >= 65520.0) {
            assert_int_equal(h & 0x7fff, 0x7c00);
            continue;
        }
        double got = fabs((double)kw_f16_to_f32(h));
        /* neighbours of the magnitude */
        uint16_t mag = h & 0x7fff;
        double lo = mag ? fabs((double)kw_f16_to_f32((uint16_t)(mag - 1))) : 0;
        double hi = fabs((double)kw_f16_to_f32((uint16_t)(mag + 1)));
        double err = fabs(got - ax);
        assert_true(err <= fabs(lo - ax) && err <= fabs(hi - ax));
        if (err == fabs(lo - ax) && mag && err > 0)
            assert_int_equal(mag & 1, 0);
        if (err == fabs(hi - ax) && err > 0)
            assert_int_equal(mag & 1, 0);
    }
    assert_int_equal(kw_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(kw_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(kw_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(kw_f32_to_f16(1e6f), 0x7c00);
    assert_int_equal(kw_f32_to_f16(ldexpf(1, -24)), 0x0001);
    assert_int_equal(kw_f32_to_f16(ldexpf(1, -25)), 0x0000); /* tie to even (zero) */
    assert_true(isnan(kw_f16_to_f32(kw_f32_to_f16(NAN))));
}

static void test_bf16_round_trip_and_rounding(void **st)
{
    (void)st;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kw_bf16_to_f32((uint16_t)h);
        if (isnan(f))
            assert_true(isnan(kw_bf16_to_f32(kw_f32_to_bf16(f))));
        else
            assert_int_equal(kw_f32_to_bf16(f), h);
    }
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0) */
    assert_int_equal(kw_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
    assert_int_equal(kw_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    assert_int_equal(kw_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
}

static void test_f16_and_bf16_tensors_convert(void **st)
{
    (void)st;
    enum { N = 100003 };
    uint16_t *h = malloc(N * 2), *b = malloc(N * 2);
    float *x = malloc(N * 4), *got = malloc(N * 4);
    for (int i = 0; i < N; i++) {
        x[i] = kw_tiny_uniform(&rng, -3, 3);
        h[i] = kw_f32_to_f16(x[i]);
        b[i] = kw_f32_to_bf16(x[i]);
    }
    assert_int_equal(kw_to_f32(KW_DT_F16, h, got, N), 0);
    for (int i = 0; i < N; i++)
        assert_true(got[i] == kw_f16_to_f32(h[i]) && fabsf(got[i] - x[i]) <= ldexpf(1, -10) * 2);
    assert_int_equal(kw_to_f32(KW_DT_BF16, b, got, N), 0);
    for (int i = 0; i < N; i++)
        assert_true(got[i] == kw_bf16_to_f32(b[i]) && fabsf(got[i] - x[i]) <= ldexpf(1, -7) * 2);
    kw_tensor t = {.name = "t", .dtype = KW_DT_F16, .ndim = 2, .shape = {7, N / 7}, .data = h,
                   .nbytes = 2 * (size_t)(N / 7 * 7)};
    float *all;
    kw_error err = {0};
    assert_int_equal(kw_tensor_to_f32(&t, &all, &err), 0);
    assert_true(all[N / 7 * 7 - 1] == kw_f16_to_f32(h[N / 7 * 7 - 1]));
    free(all);
    t.nbytes -= 2;
    assert_true(kw_tensor_to_f32(&t, &all, &err) < 0);
    assert_non_null(strstr(err.msg, "'t'"));
    free(h);
    free(b);
    free(x);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_sizes_are_ggml),
        cmocka_unit_test(test_q4_0_matches_layout),
        cmocka_unit_test(test_split_blocks_rebuild_the_dequantized_values),
        cmocka_unit_test(test_q4_1_matches_layout),
        cmocka_unit_test(test_q5_0_matches_layout),
        cmocka_unit_test(test_q5_1_matches_layout),
        cmocka_unit_test(test_q8_0_matches_layout),
        cmocka_unit_test(test_q4_k_matches_layout),
        cmocka_unit_test(test_q5_k_matches_layout),
        cmocka_unit_test(test_q6_k_matches_layout),
        cmocka_unit_test(test_f16_decodes_every_finite_value),
        cmocka_unit_test(test_f32_to_f16_rounds_to_nearest_even),
        cmocka_unit_test(test_bf16_round_trip_and_rounding),
        cmocka_unit_test(test_f16_and_bf16_tensors_convert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
