/* Token choice. Temperature / top-p draws use a counter-based key (seed, sample, step)
 * so a sequence samples the same tokens alone or in any batch. */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"
#include "kvweave/util.h"
#include "sampler.h"

static uint64_t mix(uint64_t z) { return kw_splitmix64(&z); }

uint64_t kw__sample_key(uint64_t seed, int64_t sample, int64_t step)
{
    return mix(mix(mix(seed) ^ (uint64_t)sample) ^ (uint64_t)step);
}

double kw__sample_uniform(uint64_t key) { return (double)(mix(key) >> 11) / 9007199254740992.0; }

static int by_prob_desc(const void *a, const void *b, void *ctx)
{
    const float *p = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (p[i] != p[j])
        return p[i] > p[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

int kw__sample(const float *logits, int n, const kw_sampling *s, uint64_t key, int *idx,
               float *p)
{
    if (s->temperature <= 0.f)
        return kw_k_argmax(logits, n);
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        p[i] = expf((logits[i] - mx) / s->temperature);
        sum += p[i];
        idx[i] = i;
    }
    int m = n;
    double mass = sum;
    if (s->top_p > 0.f && s->top_p < 1.f) {
        qsort_r(idx, (size_t)n, sizeof *idx, by_prob_desc, p);
        double c = 0;
        for (m = 0; m < n; m++) {
            c += p[idx[m]];
            if (c >= s->top_p * sum) {
                m++;
                break;
            }
        }
        m = m > n ? n : m;
        mass = 0;
        for (int i = 0; i < m; i++)
            mass += p[idx[i]];
    }
    double u = kw__sample_uniform(key) * mass, c = 0;
    for (int i = 0; i < m; i++) {
        c += p[idx[i]];
        if (u < c)
            return idx[i];
    }
    return idx[m - 1];
}

double kw__logprob(const float *logits, int n, int tok, int k, int32_t *ids, float *lp)
{
    double lse = kw_k_logsumexp(logits, n);
    for (int j = 0; j < k; j++) {
        ids[j] = -1;
        lp[j] = -INFINITY;
    }
    for (int i = 0; i < n && k > 0; i++) {
        float v = logits[i];
        if (ids[k - 1] >= 0 && v <= logits[ids[k - 1]])
            continue; /* not above the k-th (ties keep the lower index) */
        int j = k - 1;
        while (j > 0 && (ids[j - 1] < 0 || v > logits[ids[j - 1]])) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    for (int j = 0; j < k; j++)
        lp[j] = ids[j] >= 0 ? (float)(logits[ids[j]] - lse) : -INFINITY;
    return tok >= 0 && tok < n ? logits[tok] - lse : -INFINITY;
}

void kw__fidelity(const float *full, const float *meth, int n, float *kl, uint8_t *top1,
                  uint8_t *top5)
{
    double lf = kw_k_logsumexp(full, n), lm = kw_k_logsumexp(meth, n), d = 0;
    for (int i = 0; i < n; i++) {
        double a = full[i] - lf;
        d += exp(a) * (a - (meth[i] - lm));
    }
    *kl = (float)(d > 0 ? d : 0); /* rounding can leave -1e-9 for equal rows */
    int af = kw_k_argmax(full, n), am = kw_k_argmax(meth, n), rank = 0;
    for (int i = 0; i < n && rank < 5; i++)
        rank += meth[i] > meth[af] || (meth[i] == meth[af] && i < af);
    *top1 = af == am;
    *top5 = rank < 5;
}
