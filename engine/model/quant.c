/* Element types, f16/bf16 conversions and dequantization (tensor.h).
 *
 * Block layouts, little-endian, as ggml defines them (QK = 32, QK_K = 256):
 *   Q4_0  { f16 d; u8 qs[16]; }                       18 bytes  x = (nib - 8) * d
 *   Q4_1  { f16 d; f16 m; u8 qs[16]; }                20 bytes  x = nib * d + m
 *   Q5_0  { f16 d; u8 qh[4]; u8 qs[16]; }             22 bytes  x = (nib | hi<<4) - 16) * d
 *   Q5_1  { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }      24 bytes  x = (nib | hi<<4) * d + m
 *   Q8_0  { f16 d; i8 qs[32]; }                       34 bytes  x = q * d
 *     (legacy types: element j < 16 is the low nibble of qs[j], element j + 16 the high
 *      nibble; the fifth bit of element j is bit j of qh read as a u32)
 *   Q4_K  { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }            144 bytes
 *   Q5_K  { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; } 176 bytes
 *     (8 sub-blocks of 32 with a 6-bit scale and a 6-bit min packed in scales[12];
 *      x = d * sc * q - dmin * m)
 *   Q6_K  { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }           210 bytes
 *     (16 sub-blocks of 16 with an 8-bit scale; x = d * sc * (q - 32))
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/tensor.h"

#define QK 32
#define QK_K 256

static const struct {
    const char *name;
    size_t elems, bytes;
} dtypes[KW_DT_COUNT] = {
    [KW_DT_F32] = {"F32", 1, 4},      [KW_DT_F16] = {"F16", 1, 2},
    [KW_DT_BF16] = {"BF16", 1, 2},    [KW_DT_Q4_0] = {"Q4_0", QK, 18},
    [KW_DT_Q4_1] = {"Q4_1", QK, 20},  [KW_DT_Q5_0] = {"Q5_0", QK, 22},
    [KW_DT_Q5_1] = {"Q5_1", QK, 24},  [KW_DT_Q8_0] = {"Q8_0", QK, 34},
    [KW_DT_Q4_K] = {"Q4_K", QK_K, 144}, [KW_DT_Q5_K] = {"Q5_K", QK_K, 176},
    [KW_DT_Q6_K] = {"Q6_K", QK_K, 210}, [KW_DT_I8] = {"I8", 1, 1},
    [KW_DT_I32] = {"I32", 1, 4},
};

const char *kw_dtype_name(kw_dtype t)
{
    return (unsigned)t < KW_DT_COUNT ? dtypes[t].name : "?";
}

int kw_dtype_block(kw_dtype t, size_t *block_elems, size_t *block_bytes)
{
    if ((unsigned)t >= KW_DT_COUNT)
        return KW_EINVAL;
    if (block_elems)
        *block_elems = dtypes[t].elems;
    if (block_bytes)
        *block_bytes = dtypes[t].bytes;
    return KW_OK;
}

int64_t kw_tensor_nelems(const kw_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int64_t kw_dtype_nbytes(kw_dtype t, int64_t n)
{
    if ((unsigned)t >= KW_DT_COUNT || n < 0 || n % (int64_t)dtypes[t].elems)
        return KW_EINVAL;
    int64_t blocks = n / (int64_t)dtypes[t].elems;
    if (blocks > INT64_MAX / (int64_t)dtypes[t].bytes)
        return KW_EINVAL;
    return blocks * (int64_t)dtypes[t].bytes;
}

/* ---- scalar conversions ---- */

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float kw_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t kw_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf or nan (keep nan quiet and non-zero) */
        return sign | 0x7c00 | (a > 0x7f800000u ? (uint16_t)(0x200 | ((a >> 13) & 0x3ff)) : 0);
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return sign | 0x7c00;
    if (a < 0x38800000u) {
        /* result is subnormal or zero: round a * 2^24 to nearest even integer */
        float v = bits_f32(a) * 0x1p24f;
        return sign | (uint16_t)lrintf(v); /* default rounding mode: nearest even */
    }
    uint32_t exp = (a >> 23) - 112, man = a & 0x7fffff;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent, which is the right answer */
    return sign | (uint16_t)h;
}

float kw_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t kw_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline float rdh(const uint8_t *p) { return kw_f16_to_f32(rd16(p)); }

/* ---- one block each ---- */

static void deq_q4_0(const uint8_t *b, float *y)
{
    float d = rdh(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0xf) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const uint8_t *b, float *y)
{
    float d = rdh(b), m = rdh(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0xf) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

static void deq_q5(const uint8_t *qh4, const uint8_t *qs, float d, float m, int off, float *y)
{
    uint32_t qh = (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 |
                  (uint32_t)qh4[3] << 24;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) << 4 & 0x10), h1 = (int)((qh >> (j + 12)) & 0x10);
        y[j] = (float)(((qs[j] & 0xf) | h0) - off) * d + m;
        y[j + 16] = (float)(((qs[j] >> 4) | h1) - off) * d + m;
    }
}

static void deq_q5_0(const uint8_t *b, float *y) { deq_q5(b + 2, b + 6, rdh(b), 0.0f, 16, y); }
static void deq_q5_1(const uint8_t *b, float *y)
{
    deq_q5(b + 4, b + 8, rdh(b), rdh(b + 2), 0, y);
}

static void deq_q8_0(const uint8_t *b, float *y)
{
    float d = rdh(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++)
        y[j] = (float)qs[j] * d;
}

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block. */
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void deq_q45_k(const uint8_t *b, const uint8_t *qh, const uint8_t *ql, float *y)
{
    float d = rdh(b), dmin = rdh(b + 2);
    const uint8_t *scales = b + 4;
    for (int s = 0; s < 4; s++) { /* 64 elements: sub-blocks 2s (low nibbles), 2s+1 */
        int sc0, m0, sc1, m1;
        scale_min_k4(2 * s, scales, &sc0, &m0);
        scale_min_k4(2 * s + 1, scales, &sc1, &m1);
        float d0 = d * (float)sc0, mm0 = dmin * (float)m0;
        float d1 = d * (float)sc1, mm1 = dmin * (float)m1;
        const uint8_t *q = ql + 32 * s;
        for (int l = 0; l < 32; l++) {
            int h0 = qh ? ((qh[l] >> (2 * s)) & 1) << 4 : 0;
            int h1 = qh ? ((qh[l] >> (2 * s + 1)) & 1) << 4 : 0;
            y[64 * s + l] = d0 * (float)((q[l] & 0xf) + h0) - mm0;
            y[64 * s + 32 + l] = d1 * (float)((q[l] >> 4) + h1) - mm1;
        }
    }
}

static void deq_q4_k(const uint8_t *b, float *y) { deq_q45_k(b, NULL, b + 16, y); }
static void deq_q5_k(const uint8_t *b, float *y) { deq_q45_k(b, b + 16, b + 48, y); }

static void deq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = rdh(b + 208);
    for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)(sc[is] * q1);
            y[l + 32] = d * (float)(sc[is + 2] * q2);
            y[l + 64] = d * (float)(sc[is + 4] * q3);
            y[l + 96] = d * (float)(sc[is + 6] * q4);
        }
    }
}

typedef void (*deq_fn)(const uint8_t *, float *);

static deq_fn block_fn(kw_dtype t)
{
    switch (t) {
    case KW_DT_Q4_0: return deq_q4_0;
    case KW_DT_Q4_1: return deq_q4_1;
    case KW_DT_Q5_0: return deq_q5_0;
    case KW_DT_Q5_1: return deq_q5_1;
    case KW_DT_Q8_0: return deq_q8_0;
    case KW_DT_Q4_K: return deq_q4_k;
    case KW_DT_Q5_K: return deq_q5_k;
    case KW_DT_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

/* Converts blocks [b0, b1) of src. */
static void convert_range(kw_dtype t, const uint8_t *src, float *dst, int64_t b0, int64_t b1)
{
    size_t be = dtypes[t].elems, bb = dtypes[t].bytes;
    switch (t) {
    case KW_DT_F32:
        memcpy(dst + b0, src + 4 * b0, (size_t)(b1 - b0) * 4);
        return;
    case KW_DT_F16:
        for (int64_t i = b0; i < b1; i++)
            dst[i] = kw_f16_to_f32(rd16(src + 2 * i));
        return;
    case KW_DT_BF16:
        for (int64_t i = b0; i < b1; i++)
            dst[i] = kw_bf16_to_f32(rd16(src + 2 * i));
        return;
    case KW_DT_I8:
        for (int64_t i = b0; i < b1; i++)
            dst[i] = (float)(int8_t)src[i];
        return;
    case KW_DT_I32:
        for (int64_t i = b0; i < b1; i++) {
            int32_t v;
            memcpy(&v, src + 4 * i, 4);
            dst[i] = (float)v;
        }
        return;
    default: {
        deq_fn fn = block_fn(t);
        for (int64_t i = b0; i < b1; i++)
            fn(src + (size_t)i * bb, dst + (size_t)i * be);
    }
    }
}

int kw_split_bits(kw_dtype t)
{
    switch (t) {
    case KW_DT_Q4_0: case KW_DT_Q4_1: case KW_DT_Q4_K: return 4;
    case KW_DT_Q5_0: case KW_DT_Q5_1: case KW_DT_Q5_K: case KW_DT_Q6_K: case KW_DT_Q8_0:
        return 8;
    default: return 0;
    }
}

int kw_split_group(kw_dtype t)
{
    return !kw_split_bits(t) ? 0 : t == KW_DT_Q6_K ? 16 : 32;
}

/* The integer codes of elements [32 g, 32 g + 32) of an array of type t, with the scales
 * and minima (one, or two for Q6_K's groups of 16) that make code * scale + min each
 * element's value as the deq_* functions round it: an f16 (times a 6-bit integer for
 * Q4_K and Q5_K, an 8-bit one for Q6_K) times a code of at most 8 bits is exact in f32, as
 * are Q4_0's -8 d and Q5_0's -16 d, so the one rounding is the sum's, as there (Q6_K's
 * d * (sc * q) has none). */
static void group_codes(kw_dtype t, const uint8_t *src, int64_t g, int q[QK], float *scale,
                        float *min)
{
    if (t == KW_DT_Q6_K) { /* element e of a block: scale sc[e / 16] */
        const uint8_t *b = src + (g / 8) * (int64_t)dtypes[t].bytes;
        int k = (int)(g % 8), h = k / 4, qd = k % 4;
        const uint8_t *ql = b + 64 * h + (qd % 2 ? 32 : 0), *qh = b + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(b + 192) + 8 * h + 2 * qd;
        float d = rdh(b + 208);
        for (int i = 0; i < 2; i++) {
            scale[i] = d * (float)sc[i];
            min[i] = 0.0f;
        }
        for (int l = 0; l < 32; l++)
            q[l] = ((qd < 2 ? ql[l] & 0xf : ql[l] >> 4) | ((qh[l] >> (2 * qd)) & 3) << 4) - 32;
        return;
    }
    if (t == KW_DT_Q4_K || t == KW_DT_Q5_K) {
        const uint8_t *b = src + (g / 8) * (int64_t)dtypes[t].bytes;
        int sub = (int)(g % 8), s = sub / 2, hi = sub % 2, sc, m;
        const uint8_t *qh = t == KW_DT_Q5_K ? b + 16 : NULL,
                      *ql = b + (t == KW_DT_Q5_K ? 48 : 16) + 32 * s;
        scale_min_k4(sub, b + 4, &sc, &m);
        *scale = rdh(b) * (float)sc;
        *min = -(rdh(b + 2) * (float)m);
        for (int l = 0; l < 32; l++)
            q[l] = (hi ? ql[l] >> 4 : ql[l] & 0xf) | (qh ? ((qh[l] >> sub) & 1) << 4 : 0);
        return;
    }
    const uint8_t *b = src + g * (int64_t)dtypes[t].bytes;
    float d = rdh(b);
    *scale = d;
    if (t == KW_DT_Q8_0) {
        *min = 0.0f;
        for (int j = 0; j < 32; j++)
            q[j] = (int8_t)b[2 + j];
        return;
    }
    bool hasm = t == KW_DT_Q4_1 || t == KW_DT_Q5_1, five = t == KW_DT_Q5_0 || t == KW_DT_Q5_1;
    *min = hasm ? rdh(b + 2) : five ? -16.0f * d : -8.0f * d;
    const uint8_t *qh4 = b + (hasm ? 4 : 2), *qs = qh4 + (five ? 4 : 0);
    uint32_t qh = five ? (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16
                             | (uint32_t)qh4[3] << 24
                       : 0;
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0xf) | (int)((qh >> j) << 4 & 0x10);
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
    }
}

int kw_split_blocks(kw_dtype t, const void *src, int64_t n, uint8_t *codes, float *scale,
                    float *min)
{
    int bits = kw_split_bits(t), per = QK / (kw_split_group(t) ? kw_split_group(t) : QK);
    if (!bits || n < 0 || n % (int64_t)dtypes[t].elems)
        return KW_EINVAL;
    int q[QK];
    for (int64_t g = 0; g < n / QK; g++) {
        group_codes(t, src, g, q, &scale[g * per], &min[g * per]);
        uint8_t *c = codes + g * (QK * bits / 8);
        for (int j = 0; j < (bits == 4 ? 16 : 32); j++)
            c[j] = bits == 4 ? (uint8_t)(q[j] | q[j + 16] << 4) : (uint8_t)(int8_t)q[j];
    }
    return KW_OK;
}

int kw_to_f32(kw_dtype t, const void *src, float *dst, int64_t n)
{
    if ((unsigned)t >= KW_DT_COUNT || n < 0 || n % (int64_t)dtypes[t].elems)
        return KW_EINVAL;
    int64_t nb = n / (int64_t)dtypes[t].elems;
    /* Chunks of ~64K elements: small tensors stay on one thread. */
    int64_t chunk = (int64_t)(65536 / dtypes[t].elems);
    int64_t nchunks = (nb + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t b1 = (c + 1) * chunk < nb ? (c + 1) * chunk : nb;
        convert_range(t, src, dst, c * chunk, b1);
    }
    return KW_OK;
}

int kw_tensor_to_f32(const kw_tensor *t, float **out, kw_error *err)
{
    *out = NULL;
    int64_t n = kw_tensor_nelems(t);
    int64_t need = kw_dtype_nbytes(t->dtype, n);
    if (need < 0)
        return kw_error_set(err, KW_EINVAL,
                            "tensor '%s': %lld elements is not a whole number of %s blocks",
                            t->name ? t->name : "?", (long long)n, kw_dtype_name(t->dtype));
    if ((uint64_t)need > t->nbytes)
        return kw_error_set(err, KW_EFORMAT, "tensor '%s': needs %lld bytes but has %zu",
                            t->name ? t->name : "?", (long long)need, t->nbytes);
    float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!buf)
        return kw_error_set(err, KW_ENOMEM, "tensor '%s': out of memory for %lld floats",
                            t->name ? t->name : "?", (long long)n);
    kw_to_f32(t->dtype, t->data, buf, n);
    *out = buf;
    return KW_OK;
}
