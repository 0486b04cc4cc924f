/* KVStar's multi-query vote on the host (kernels.h): fp16 sub-vectors, f32 queries. Per KV
 * head, all its query vectors (queries x the heads sharing it) score its sub-vectors in
 * one pass over them, eight sub-vectors at a time widened into a tile that eight query
 * vectors read together; the softmax and the blocks' sums run 8 logits at a time with
 * the polynomial exponential (cpu/vec8.h). Both passes are compiled for x86-64-v3 (AVX2,
 * FMA) and for the baseline, picked at load time; no OpenMP inside, so retrieval threads
 * can run it beside the engine. `kvweave bench cpu` (one thread, 2-core machine): one
 * layer's vote at Llama-3.1-8B's heads over a 32k prompt's 253 middle blocks, 7.4-8.0 ms
 * (33-36 GFLOP/s), against 106 ms when each query vector and head scored the sub-vectors
 * one dot product at a time with the fp16 values widened one by one, and libm's expf. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels_cpu.h"
#include "cpu/vec8.h"
#include "kernels.h"

/* fp16 as the compiler's _Float16 where it has one (GCC 12, Clang 15 on x86-64); older
 * compilers (Debian 12's Clang 14, used for the fuzz build) get the bits widened by hand,
 * to the same values. */
#ifdef __FLT16_MAX__
typedef _Float16 kw_h16;
static inline float h16f(kw_h16 h) { return (float)h; }
#else
typedef uint16_t kw_h16;
static inline float h16f(kw_h16 h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0    ? ldexpf((float)m, -24)
              : e == 31 ? (m ? NAN : INFINITY)
                        : ldexpf((float)(m | 1024), e - 25);
    return h >> 15 ? -v : v;
}
#endif

typedef uint16_t u16x8u __attribute__((vector_size(16), aligned(2)));

/* 8 finite fp16 values (bits at h) as floats, exactly: the exponent and mantissa bits
 * moved into a float's place and scaled by 2^112 (which also makes fp16's subnormals
 * normal floats), the sign put back. Integer vector operations: GCC 12 converts
 * _Float16 vectors one element at a time. */
static inline KW_V8_INLINE v8 h16x8(const uint16_t *h)
{
    v8i x = __builtin_convertvector(*(const u16x8u *)h, v8i);
    v8 m = (v8)((x & 0x7fff) << 13) * 0x1p112f;
    return (v8)((v8i)m | ((x & 0x8000) << 16));
}

/* lg[v][s] = qc[v] . sub[s] (lg rows of ld floats) for nv query vectors qc (nv, dk) and
 * n_sub sub-vectors of dk channels. Eight sub-vectors at a time are converted into a
 * tile channel by channel (tile: dk x 8 floats), which every query vector then reads,
 * eight vectors at a time (the rest one by one): one tile load serves eight
 * multiply-adds, and eight logits come out of a vector without sums across it. Logits
 * past n_sub, up to a multiple of 8, are written too (of zero rows). */
static inline KW_V8_INLINE void dots_in(const float *qc, int nv, const kw_h16 *sub,
                                        int n_sub, int dk, float *tile, float *lg, int64_t ld)
{
    const int d8 = dk & ~7;
    for (int s0 = 0; s0 < n_sub; s0 += 8) {
        for (int j = 0; j < 8; j++) {
            if (s0 + j >= n_sub) {
                for (int c = 0; c < dk; c++)
                    tile[c * 8 + j] = 0;
                continue;
            }
            const kw_h16 *r = sub + (int64_t)(s0 + j) * dk;
            for (int c = 0; c < d8; c += 8) {
                v8 x = h16x8((const uint16_t *)(const void *)(r + c));
                for (int i = 0; i < 8; i++)
                    tile[(c + i) * 8 + j] = x[i];
            }
            for (int c = d8; c < dk; c++)
                tile[c * 8 + j] = h16f(r[c]);
        }
        int v = 0;
        for (; v + 8 <= nv; v += 8) {
            const float *q0 = qc + (int64_t)v * dk;
            v8 a[8] = {{0}};
            for (int c = 0; c < dk; c++) {
                v8 t = *(const v8 *)(tile + c * 8);
                for (int i = 0; i < 8; i++)
                    a[i] += t * q0[i * dk + c];
            }
            for (int i = 0; i < 8; i++)
                *(v8u *)(lg + (v + i) * ld + s0) = a[i];
        }
        for (; v < nv; v++) {
            const float *q0 = qc + (int64_t)v * dk;
            v8 a0 = {0};
            for (int c = 0; c < dk; c++)
                a0 += *(const v8 *)(tile + c * 8) * q0[c];
            *(v8u *)(lg + v * ld + s0) = a0;
        }
    }
}

/* The softmax of n logits (lg, padded with -inf to a multiple of 8), each block of per
 * consecutive ones adding its mass to score[block]; bs: scratch of n / per floats.
 * Blocks of a multiple of 8 logits take their exponentials and sums 8 at a time. */
static inline KW_V8_INLINE void softmax_in(float *lg, int n, int per, float *bs,
                                           float *score)
{
    const int n8 = (n + 7) & ~7, nb = n / per;
    v8 vm = (v8){0} - INFINITY;
    for (int s = 0; s < n8; s += 8) {
        v8 x = *(v8u *)(lg + s);
        vm = sel8(x > vm, x, vm);
    }
    const float mx = hmax8(vm);
    if (per % 8 == 0) {
        for (int b = 0; b < nb; b++) {
            const float *x = lg + (int64_t)b * per;
            v8 a = {0};
            for (int s = 0; s < per; s += 8)
                a += exp8(*(const v8u *)(x + s) - mx);
            bs[b] = hsum8(a);
        }
    } else {
        for (int s = 0; s < n8; s += 8)
            *(v8u *)(lg + s) = exp8(*(v8u *)(lg + s) - mx);
        for (int b = 0; b < nb; b++) {
            float m = 0;
            for (int s = b * per; s < (b + 1) * per; s++)
                m += lg[s];
            bs[b] = m;
        }
    }
    float z = 0;
    for (int b = 0; b < nb; b++)
        z += bs[b];
    const float inv = 1.0f / z;
    for (int b = 0; b < nb; b++)
        score[b] += bs[b] * inv;
}

/* The two passes compiled for x86-64-v3 and the baseline, the helpers inlined into each
 * (Clang refuses the 8-float helpers' calls in a clone's own body in the baseline). */
KW_CLONES static void dots(const float *qc, int nv, const kw_h16 *sub, int n_sub, int dk,
                           float *tile, float *lg, int64_t ld)
{
    dots_in(qc, nv, sub, n_sub, dk, tile, lg, ld);
}

KW_CLONES static void softmax_blocks(float *lg, int n, int per, float *bs, float *score)
{
    softmax_in(lg, n, per, bs, score);
}

int kw_k_kvstar_vote(const float *q, int n_q, int n_head, int n_kv, int head_dim,
                     const int32_t *chan, int dk, const uint16_t *sub, int n_sub,
                     int per_block, float *score)
{
    if (n_q < 0 || n_head < 1 || n_kv < 1 || n_head % n_kv || dk < 1 || dk > head_dim
        || n_sub < 0 || per_block < 1 || n_sub % per_block)
        return KW_EINVAL;
    int nb = n_sub / per_block, g = n_head / n_kv;
    for (int b = 0; b < nb; b++)
        score[b] = 0;
    if (n_sub == 0 || n_q == 0)
        return KW_OK;
    /* per KV head: its g query heads' n_q queries together (nv vectors), cut to its
     * channels, score its sub-vectors in one pass; then a softmax per vector */
    const int n8 = (n_sub + 7) & ~7, nv = n_q * g;
    float *lg = malloc(sizeof(float) * ((size_t)nv * n8 + (size_t)nv * dk + (size_t)nb
                                        + 8 * (size_t)dk + 8));
    if (!lg)
        return KW_ENOMEM;
    float *qc = lg + (size_t)nv * n8, *bs = qc + (size_t)nv * dk;
    float *tile = (float *)(((uintptr_t)(bs + nb) + 31) & ~(uintptr_t)31);
    for (int kvh = 0; kvh < n_kv; kvh++) {
        const int32_t *ch = chan + (int64_t)kvh * dk;
        for (int t = 0; t < n_q; t++)
            for (int i = 0; i < g; i++) {
                const float *qh = q + ((int64_t)t * n_head + kvh * g + i) * head_dim;
                float *o = qc + ((int64_t)t * g + i) * dk;
                for (int c = 0; c < dk; c++)
                    o[c] = qh[ch[c]];
            }
        dots(qc, nv, (const kw_h16 *)(const void *)(sub + (int64_t)kvh * n_sub * dk), n_sub,
             dk, tile, lg, n8);
        for (int v = 0; v < nv; v++) {
            float *row = lg + (int64_t)v * n8;
            for (int s = n_sub; s < n8; s++)
                row[s] = -INFINITY;
            softmax_blocks(row, n_sub, per_block, bs, score);
        }
    }
    free(lg);
    return KW_OK;
}
