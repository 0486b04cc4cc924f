/* KVStar's multi-query vote on the host (kernels.h): fp16 sub-vectors, f32 queries. The
 * scoring loop is compiled for x86-64-v3 (AVX2, F16C, FMA) and for the baseline, picked
 * at load time; it uses no OpenMP, so retrieval threads can run it beside the engine. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels_cpu.h"
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

/* logits[s] = qc . sub[s] for n_sub sub-vectors of dk channels. */
KW_CLONES static void dots(const float *qc, const kw_h16 *sub, int n_sub, int dk,
                           float *logits)
{
    for (int s = 0; s < n_sub; s++) {
        const kw_h16 *r = sub + (int64_t)s * dk;
        float acc = 0;
        for (int c = 0; c < dk; c++)
            acc += qc[c] * h16f(r[c]);
        logits[s] = acc;
    }
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
    float *logits = malloc(sizeof(float) * ((size_t)n_sub + (size_t)dk));
    if (!logits)
        return KW_ENOMEM;
    float *qc = logits + n_sub;
    for (int t = 0; t < n_q; t++)
        for (int h = 0; h < n_head; h++) {
            int kvh = h / g;
            const float *qh = q + ((int64_t)t * n_head + h) * head_dim;
            const int32_t *ch = chan + (int64_t)kvh * dk;
            for (int c = 0; c < dk; c++)
                qc[c] = qh[ch[c]];
            dots(qc, (const kw_h16 *)(const void *)(sub + (int64_t)kvh * n_sub * dk), n_sub,
                 dk, logits);
            float mx = logits[0];
            for (int s = 1; s < n_sub; s++)
                mx = logits[s] > mx ? logits[s] : mx;
            double z = 0;
            for (int s = 0; s < n_sub; s++)
                z += (logits[s] = expf(logits[s] - mx));
            float inv = (float)(1.0 / z);
            for (int s = 0; s < n_sub; s++)
                score[s / per_block] += logits[s] * inv;
        }
    free(logits);
    return KW_OK;
}
