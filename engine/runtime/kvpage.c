/* Page payloads of the KV pool: writing and copying rows in each page type, and the
 * per-channel-K pages' stages (kvpool.h says the layouts; kvpool.c keeps the tables). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvpool_internal.h"

int64_t kw_kvpool_page_bytes(kw_kvdtype dtype, int page_tokens, int head_dim)
{
    int64_t P = page_tokens, hd = head_dim;
    switch (dtype) {
    case KW_KV_I8:
        return kw_kvpage_params_offset(P * hd) + 8 * P;
    case KW_KV_I8K:
    case KW_KV_I4K:
        return kw_kvpage_params_offset(P * hd * (dtype == KW_KV_I4K ? 4 : 8) / 8) + 8 * hd
               + 8 * P;
    default:
        return 2 * P * hd * 4;
    }
}

/* Asymmetric quantization of n values x[i * stride] to codes of `bits` (element e0 + i
 * of a code block; int4: two a byte, the lower nibble first): *scale and *mn. */
static void quant_asym(const float *x, int n, int64_t stride, int bits, uint8_t *codes,
                       int64_t e0, int64_t estride, float *scale, float *mn)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[i * stride];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    int L = (1 << bits) - 1;
    float sc = (hi - lo) / (float)L, inv = hi > lo ? (float)L / (hi - lo) : 0.f;
    for (int i = 0; i < n; i++) {
        long c = lrintf((x[i * stride] - lo) * inv);
        c = c < 0 ? 0 : c > L ? L : c;
        int64_t e = e0 + i * estride;
        if (bits == 8)
            codes[e] = (uint8_t)c;
        else
            codes[e >> 1] = (uint8_t)((codes[e >> 1] & (0xF0 >> ((e & 1) * 4)))
                                      | (c << ((e & 1) * 4)));
    }
    *scale = sc, *mn = lo;
}

/* A per-channel-K page's parameters: K's scales and minima, then V's */
static float *kparams(kw_kvpool *p, uint8_t *pg)
{
    return (float *)(void *)(pg + kw_kvpage_params_offset(p->code_bytes));
}

/* A per-channel-K page: its K rows quantized per channel from its stage, which goes. */
void kw__page_close(kw_kvpool *p, int32_t g)
{
    float *st = p->stage[g], *kp = kparams(p, page_ptr(p, g));
    for (int c = 0; c < p->hd; c++)
        quant_asym(st + c, p->P, p->hd, p->bits, page_ptr(p, g), c, p->hd, &kp[c],
                   &kp[p->hd + c]);
    free(st);
    p->stage[g] = NULL;
    p->n_open--;
}

/* A per-channel-K page's stage: NULL on out of memory. A full page reopened (compaction
 * writes into it) gets its K rows back as they read. */
static float *page_open(kw_kvpool *p, int32_t g)
{
    if (p->stage[g])
        return p->stage[g];
    float *st = malloc(sizeof(float) * (size_t)p->P * p->hd);
    if (!st)
        return NULL;
    kw_kvmem m = kw_kvpool_mem(p);
    for (int r = 0; r < p->P; r++) /* a closed page's rows are dequantized into st */
        kw_kvmem_row(&m, KW_POOL_MAIN, g, r, 0, st + (int64_t)r * p->hd);
    p->stage[g] = st;
    p->n_open++;
    return st;
}

/* Writes one K or V row into a slot, quantizing for int8 pages (a per-channel-K page's K
 * row goes to its stage; the caller closes the page once full). */
int kw__page_row_put(kw_kvpool *p, int32_t g, int slot, int which, const float *x)
{
    uint8_t *pg = page_ptr(p, g);
    int64_t r = (int64_t)which * p->P + slot;
    if (p->bits && which == 0) {
        float *st = page_open(p, g);
        if (!st)
            return KW_ENOMEM;
        memcpy(st + (int64_t)slot * p->hd, x, sizeof(float) * (size_t)p->hd);
        return 0;
    }
    if (p->bits) {
        float *vp = kparams(p, pg) + 2 * p->hd;
        quant_asym(x, p->hd, 1, p->bits, pg + p->code_bytes, (int64_t)slot * p->hd, 1,
                   &vp[slot], &vp[p->P + slot]);
        return 0;
    }
    if (p->o.dtype == KW_KV_F32) {
        memcpy((float *)(void *)pg + r * p->hd, x, (size_t)p->hd * sizeof(float));
        return 0;
    }
    float mx = 0.f;
    for (int i = 0; i < p->hd; i++)
        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    float sc = mx / 127.f, inv = mx > 0.f ? 127.f / mx : 0.f;
    int8_t *q = (int8_t *)pg + r * p->hd;
    for (int i = 0; i < p->hd; i++) {
        long v = lrintf(x[i] * inv);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    ((float *)(void *)(pg + kw_kvpage_params_offset((int64_t)p->P * p->hd)))[r] = sc;
    return 0;
}

/* Copies slot ss of page gs to slot sd of page gd (K, V and their scales). On
 * per-channel-K pages K goes through gd's stage (a full gd is reopened: its K is
 * quantized again when it closes) and V's codes and parameters are copied. */
int kw__page_slot_copy_kchan(kw_kvpool *p, int32_t gd, int sd, int32_t gs, int ss)
{
    float *st = page_open(p, gd);
    if (!st)
        return KW_ENOMEM;
    kw_kvmem m = kw_kvpool_mem(p);
    float *dst = st + (int64_t)sd * p->hd;
    const float *k = kw_kvmem_row(&m, KW_POOL_MAIN, gs, ss, 0, dst);
    if (k != dst)
        memmove(dst, k, sizeof(float) * (size_t)p->hd);
    uint8_t *pd = page_ptr(p, gd), *ps = page_ptr(p, gs);
    int64_t row = (int64_t)p->hd * p->bits / 8; /* hd is even: rows start on a byte */
    memmove(pd + p->code_bytes + sd * row, ps + p->code_bytes + ss * row, (size_t)row);
    float *vd = kparams(p, pd) + 2 * p->hd, *vs = kparams(p, ps) + 2 * p->hd;
    vd[sd] = vs[ss], vd[p->P + sd] = vs[p->P + ss];
    return 0;
}

void kw__page_slot_copy(kw_kvpool *p, uint8_t *gd, int sd, const uint8_t *gs, int ss)
{
    size_t eb = p->o.dtype == KW_KV_F32 ? 4 : 1, row = (size_t)p->hd * eb;
    const int64_t so = kw_kvpage_params_offset((int64_t)p->P * p->hd); /* int8 scales */
    for (int w = 0; w < 2; w++) {
        int64_t rd = (int64_t)w * p->P + sd, rs = (int64_t)w * p->P + ss;
        memcpy(gd + rd * (int64_t)row, gs + rs * (int64_t)row, row);
        if (eb == 1)
            ((float *)(void *)(gd + so))[rd] = ((const float *)(const void *)(gs + so))[rs];
    }
}
