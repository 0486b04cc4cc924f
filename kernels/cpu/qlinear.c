/* Linear layers and embedding rows over block-quantized weights (kernels.h), so that the
 * CPU engine keeps a quantized model in its blocks only.
 *
 * kw_k_linear_q, for the few rows of a decode step, where reading the weights is the
 * cost (a Q4_1 matrix is a sixth of its f32 copy's bytes): each weight is dequantized in
 * registers and used for up to QR input rows before the next block is read; only the
 * order of the sums differs from kw_k_linear over the dequantized matrix. Output rows are
 * spread over the OpenMP threads.
 *
 * kw_k_linear_qt, for prefill chunks, where the products are the cost: a tile of w's rows
 * is dequantized into the caller's scratch, then multiplied by OpenBLAS's sgemm.
 *
 * Every weight is dequantized to the value kw_to_f32 gives: code * scale + min, where a
 * small integer times an f16 is exact in f32, so a fused multiply-add rounds as the two
 * operations do. */
#include <cblas.h>
#include <stdbool.h>
#include <string.h>

#include "cpu/kernels_cpu.h"
#include "kernels.h"

#define QB 32 /* weights a block */
#define QR 8  /* input rows per pass over a weight row */

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

/* The 32 weights of block b of row n; bits (4 or 8) and g2 (two scales a block: groups
 * of 16) constants in each caller. */
static inline __attribute__((always_inline)) void block32(const kw_qmat *w, int bits, bool g2,
                                                          int64_t n, int64_t nb, int64_t b,
                                                          v8 wv[4])
{
    const uint8_t *q = w->codes + (n * nb + b) * (QB * bits / 8);
    if (bits == 4) /* elements 0..15: the low nibbles, 16..31: the high ones */
        wv[0] = codes8(q, 4, 0), wv[1] = codes8(q + 8, 4, 0), wv[2] = codes8(q, 4, 4),
        wv[3] = codes8(q + 8, 4, 4);
    else
        for (int i = 0; i < 4; i++)
            wv[i] = codes8(q + 8 * i, 8, 0);
    const int64_t s = g2 ? 2 * (n * nb + b) : n * nb + b;
    for (int i = 0; i < 4; i++) {
        const int64_t si = g2 && i >= 2 ? s + 1 : s;
        wv[i] = wv[i] * ((v8){0} + w->scale[si]) + ((v8){0} + w->min[si]);
    }
}

/* out[r] = x[r] . (row n of w), r < nr <= QR; bits and g2 as for block32. */
static inline __attribute__((always_inline)) void row_dots(const kw_qmat *w, int bits, bool g2,
                                                           int64_t n, const float *x, int nr,
                                                           int K, float *out)
{
    const int64_t nb = K / QB;
    v8 acc[QR] = {{0}};
    for (int64_t b = 0; b < nb; b++) {
        v8 wv[4];
        block32(w, bits, g2, n, nb, b, wv);
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

/* Rows [n0, n1) of y; bits and g2 constants in each of rows()'s calls. */
static inline __attribute__((always_inline)) void rows_bits(const kw_qmat *w, int bits, bool g2,
                                                            int64_t n0, int64_t n1,
                                                            const float *x, int M, int N, int K,
                                                            float *y)
{
    float o[QR];
    for (int64_t n = n0; n < n1; n++)
        for (int r0 = 0; r0 < M; r0 += QR) {
            int nr = M - r0 < QR ? M - r0 : QR;
            row_dots(w, bits, g2, n, x + (int64_t)r0 * K, nr, K, o);
            for (int r = 0; r < nr; r++)
                y[(int64_t)(r0 + r) * N + n] = o[r];
        }
}

KW_CLONES static void rows(const kw_qmat *w, int64_t n0, int64_t n1, const float *x, int M,
                           int N, int K, float *y)
{
    if (w->group == 16)
        w->bits == 4 ? rows_bits(w, 4, true, n0, n1, x, M, N, K, y)
                     : rows_bits(w, 8, true, n0, n1, x, M, N, K, y);
    else
        w->bits == 4 ? rows_bits(w, 4, false, n0, n1, x, M, N, K, y)
                     : rows_bits(w, 8, false, n0, n1, x, M, N, K, y);
}

/* bits 4 or 8, groups of 32 or 16, K whole blocks */
static bool qmat_ok(const kw_qmat *w, int K)
{
    return K > 0 && K % QB == 0 && (w->bits == 4 || w->bits == 8)
           && (w->group == 0 || w->group == 32 || w->group == 16);
}

int kw_cpu_linear_q(const float *x, const kw_qmat *w, const float *bias, float *y, int M, int N,
                    int K)
{
    if (M <= 0 || N <= 0 || !qmat_ok(w, K))
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

/* Rows [n0, n1) of w as f32, row-major with K columns, into out. */
static inline __attribute__((always_inline)) void dequant_bits(const kw_qmat *w, int bits,
                                                               bool g2, int64_t n0, int64_t n1,
                                                               int K, float *out)
{
    const int64_t nb = K / QB;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t b = 0; b < nb; b++) {
            v8 wv[4];
            block32(w, bits, g2, n, nb, b, wv);
            memcpy(out + (n - n0) * K + b * QB, wv, sizeof wv);
        }
}

KW_CLONES static void dequant(const kw_qmat *w, int64_t n0, int64_t n1, int K, float *out)
{
    if (w->group == 16)
        w->bits == 4 ? dequant_bits(w, 4, true, n0, n1, K, out)
                     : dequant_bits(w, 8, true, n0, n1, K, out);
    else
        w->bits == 4 ? dequant_bits(w, 4, false, n0, n1, K, out)
                     : dequant_bits(w, 8, false, n0, n1, K, out);
}

int kw_cpu_linear_qt(const float *x, const kw_qmat *w, const float *bias, float *y, int M,
                     int N, int K, float *tile, int64_t tile_floats)
{
    if (M <= 0 || N <= 0 || !qmat_ok(w, K) || !tile || tile_floats < K)
        return KW_EINVAL;
    const int64_t nt = tile_floats / K < N ? tile_floats / K : N;
    for (int64_t t0 = 0; t0 < N; t0 += nt) {
        const int64_t t1 = t0 + nt < N ? t0 + nt : N, nblk = (t1 - t0 + 15) / 16;
#pragma omp parallel for schedule(static) if ((t1 - t0) * K >= 65536)
        for (int64_t i = 0; i < nblk; i++) {
            int64_t n0 = t0 + 16 * i, n1 = n0 + 16 < t1 ? n0 + 16 : t1;
            dequant(w, n0, n1, K, tile + (n0 - t0) * K);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, (int)(t1 - t0), K, 1.0f, x, K,
                    tile, K, 0.0f, y + t0, N);
    }
    if (bias)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                y[(int64_t)m * N + n] += bias[n];
    return KW_OK;
}

int kw_cpu_embed_q(const kw_qmat *table, int64_t n_rows, int dim, const int32_t *ids, int n,
                   float *out)
{
    if (!qmat_ok(table, dim))
        return KW_EINVAL;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_rows)
            return KW_ERANGE;
    for (int i = 0; i < n; i++)
        dequant(table, ids[i], (int64_t)ids[i] + 1, dim, out + (int64_t)i * dim);
    return KW_OK;
}
