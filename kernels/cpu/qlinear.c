/* Linear layers over block-quantized weights (kernels.h, kw_k_linear_q), for the few rows
 * of a decode step, where reading the weights is the cost: a Q4_1 matrix is a sixth of
 * its f32 copy's bytes. Each weight is dequantized in registers to the value kw_to_f32
 * gives (code * scale + min: a small integer times an f16 is exact in f32, so a fused
 * multiply-add rounds as the two operations do) and used for up to QR input rows before
 * the next block is read; only the order of the sums differs from kw_k_linear over the
 * dequantized matrix. Output rows are spread over the OpenMP threads. */
#include <string.h>

#include "cpu/kernels_cpu.h"
#include "kernels.h"

#define QB 32 /* weights a block */
#define QR 4  /* input rows per pass over a weight row */

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) v8 load8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Eight codes as floats: int4 (the nibbles at `shift` of eight bytes) or int8 (signed). */
static inline __attribute__((always_inline)) v8 codes8(const uint8_t *q, int bits, int shift)
{
    v8i t;
    for (int i = 0; i < 8; i++)
        t[i] = bits == 4 ? (q[i] >> shift) & 15 : (int8_t)q[i];
    return __builtin_convertvector(t, v8);
}

/* out[r] = x[r] . (row n of w), r < nr <= QR; bits 4 or 8, a constant in each caller. */
static inline __attribute__((always_inline)) void row_dots(const kw_qmat *w, int bits,
                                                           int64_t n, const float *x, int nr,
                                                           int K, float *out)
{
    const int64_t nb = K / QB;
    const float *sc = w->scale + n * nb, *mn = w->min + n * nb;
    const uint8_t *q = w->codes + n * nb * (QB * bits / 8);
    v8 acc[QR] = {{0}};
    for (int64_t b = 0; b < nb; b++, q += QB * bits / 8) {
        const v8 d = (v8){0} + sc[b], m = (v8){0} + mn[b];
        v8 wv[4];
        if (bits == 4) /* elements 0..15: the low nibbles, 16..31: the high ones */
            wv[0] = codes8(q, 4, 0), wv[1] = codes8(q + 8, 4, 0), wv[2] = codes8(q, 4, 4),
            wv[3] = codes8(q + 8, 4, 4);
        else
            for (int i = 0; i < 4; i++)
                wv[i] = codes8(q + 8 * i, 8, 0);
        for (int i = 0; i < 4; i++)
            wv[i] = wv[i] * d + m;
        for (int r = 0; r < nr; r++) {
            const float *xr = x + (int64_t)r * K + b * QB;
            acc[r] += wv[0] * load8(xr) + wv[1] * load8(xr + 8) + wv[2] * load8(xr + 16)
                      + wv[3] * load8(xr + 24);
        }
    }
    for (int r = 0; r < nr; r++) {
        float s = 0.f;
        for (int i = 0; i < 8; i++)
            s += acc[r][i];
        out[r] = s;
    }
}

/* Rows [n0, n1) of y; bits a constant in each of rows()'s two calls. */
static inline __attribute__((always_inline)) void rows_bits(const kw_qmat *w, int bits,
                                                            int64_t n0, int64_t n1,
                                                            const float *x, int M, int N, int K,
                                                            float *y)
{
    float o[QR];
    for (int64_t n = n0; n < n1; n++)
        for (int r0 = 0; r0 < M; r0 += QR) {
            int nr = M - r0 < QR ? M - r0 : QR;
            row_dots(w, bits, n, x + (int64_t)r0 * K, nr, K, o);
            for (int r = 0; r < nr; r++)
                y[(int64_t)(r0 + r) * N + n] = o[r];
        }
}

KW_CLONES static void rows(const kw_qmat *w, int64_t n0, int64_t n1, const float *x, int M,
                           int N, int K, float *y)
{
    if (w->bits == 4)
        rows_bits(w, 4, n0, n1, x, M, N, K, y);
    else
        rows_bits(w, 8, n0, n1, x, M, N, K, y);
}

int kw_cpu_linear_q(const float *x, const kw_qmat *w, const float *bias, float *y, int M, int N,
                    int K)
{
    if (M <= 0 || N <= 0 || K <= 0 || K % QB || (w->bits != 4 && w->bits != 8))
        return KW_EINVAL;
    /* blocks of 16 output rows: a thread's rows are contiguous weight memory */
    const int64_t nblk = (N + 15) / 16;
#pragma omp parallel for schedule(static) if ((int64_t)N * K >= 65536)
    for (int64_t i = 0; i < nblk; i++) {
        int64_t n0 = 16 * i, n1 = n0 + 16 < N ? n0 + 16 : N;
        rows(w, n0, n1, x, M, N, K, y);
    }
    if (bias)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                y[(int64_t)m * N + n] += bias[n];
    return KW_OK;
}
