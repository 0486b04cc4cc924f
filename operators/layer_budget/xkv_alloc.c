/* XKV's exact greedy allocation of tokens to layers, with a heap (xkv_alloc.h). */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "xkv_alloc.h"

typedef struct hnode {
    double g;
    int l;
} hnode;

static bool above(const hnode *a, const hnode *b)
{
    return a->g > b->g || (a->g == b->g && a->l < b->l);
}

static void sift_down(hnode *h, int n, int i)
{
    for (;;) {
        int c = 2 * i + 1, best = i;
        if (c < n && above(&h[c], &h[best]))
            best = c;
        if (c + 1 < n && above(&h[c + 1], &h[best]))
            best = c + 1;
        if (best == i)
            return;
        hnode t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

int64_t kw__xkv_allocate(const double *const *gain, const int *n, int L, kw_xkv_mode mode,
                         double value, int32_t *alloc, double *retained)
{
    hnode *h = malloc(sizeof(hnode) * (size_t)(L > 0 ? L : 1));
    double *cum = calloc((size_t)(L > 0 ? L : 1), sizeof(double));
    if (!h || !cum) {
        free(h), free(cum);
        return KW_ENOMEM;
    }
    int hn = 0;
    for (int l = 0; l < L; l++) {
        alloc[l] = 0;
        if (n[l] > 0)
            h[hn++] = (hnode){gain[l][0], l};
    }
    for (int i = hn / 2 - 1; i >= 0; i--)
        sift_down(h, hn, i);
    int64_t given = 0;
    double total = 0; /* sum over layers of the retained shares */
    for (;;) {
        if (mode == KW_XKV_TOTAL_SIZE ? given >= (int64_t)value : total >= value * L)
            break;
        if (hn == 0)
            break;
        int l = h[0].l;
        cum[l] += h[0].g;
        total += h[0].g;
        given++;
        if (++alloc[l] < n[l])
            h[0].g = gain[l][alloc[l]];
        else
            h[0] = h[--hn];
        sift_down(h, hn, 0);
    }
    if (retained)
        memcpy(retained, cum, sizeof(double) * (size_t)L);
    free(h), free(cum);
    return given;
}

void kw__xkv_gains(const kw_stats *s, int sample, double *gain)
{
    int L = s->n_layer, H = s->n_kv_head, nk = s->n_keys[sample];
    for (int l = 0; l < L; l++)
        for (int p = 0; p < nk; p++) {
            double g = 0;
            for (int hh = 0; hh < H; hh++)
                g += s->profiles[sample][((int64_t)l * H + hh) * nk + p];
            gain[(int64_t)l * nk + p] = g;
        }
}

typedef struct rem {
    double r;
    int l;
} rem;

static int by_rem(const void *x, const void *y)
{
    const rem *a = x, *b = y;
    if (a->r != b->r)
        return a->r > b->r ? -1 : 1;
    return a->l - b->l;
}

int64_t kw__xkv_prompt(const kw_stats *s, int sample)
{
    return (int64_t)s->n_keys[sample] + (s->window > 0 ? s->window : 0);
}

int64_t kw__xkv_ratio_total(const kw_stats *s, int sample, double ratio, int window)
{
    int64_t per_layer = llround(ratio * (double)kw__xkv_prompt(s, sample)) - window;
    return (int64_t)s->n_layer * (per_layer > 0 ? per_layer : 0);
}

int kw__xkv_solve(const kw_stats *s, kw_xkv_mode mode, double value, int32_t *alloc)
{
    if (s->n_samples < 1)
        return KW_EINVAL;
    double *v = malloc(sizeof(double) * (size_t)s->n_samples);
    if (!v)
        return KW_ENOMEM;
    for (int i = 0; i < s->n_samples; i++)
        v[i] = value;
    int rc = kw__xkv_solve_each(s, mode, v, alloc);
    free(v);
    return rc;
}

int kw__xkv_solve_each(const kw_stats *s, kw_xkv_mode mode, const double *values,
                       int32_t *alloc)
{
    int L = s->n_layer;
    if (s->n_samples < 1)
        return KW_EINVAL;
    double *sum = calloc((size_t)L, sizeof(double));
    int32_t *a = malloc(sizeof(int32_t) * (size_t)L);
    int *n = malloc(sizeof(int) * (size_t)L);
    const double **gp = malloc(sizeof(double *) * (size_t)L);
    rem *rm = malloc(sizeof(rem) * (size_t)L);
    int rc = sum && a && n && gp && rm ? 0 : KW_ENOMEM;
    for (int i = 0; rc == 0 && i < s->n_samples; i++) {
        int nk = s->n_keys[i];
        double *gain = malloc(sizeof(double) * ((size_t)L * nk + 1));
        if (!gain) {
            rc = KW_ENOMEM;
            break;
        }
        kw__xkv_gains(s, i, gain);
        for (int l = 0; l < L; l++) {
            n[l] = nk;
            gp[l] = gain + (int64_t)l * nk;
        }
        int64_t g = kw__xkv_allocate(gp, n, L, mode, values[i], a, NULL);
        free(gain);
        if (g < 0) {
            rc = (int)g;
            break;
        }
        for (int l = 0; l < L; l++)
            sum[l] += a[l];
    }
    if (rc == 0) {
        double tot = 0;
        int64_t floor_tot = 0;
        for (int l = 0; l < L; l++) {
            double m = sum[l] / s->n_samples;
            tot += m;
            alloc[l] = (int32_t)floor(m);
            floor_tot += alloc[l];
            rm[l] = (rem){m - floor(m), l};
        }
        int64_t extra = (int64_t)llround(tot) - floor_tot;
        qsort(rm, (size_t)L, sizeof(rem), by_rem);
        for (int64_t k = 0; k < extra && k < L; k++)
            alloc[rm[k].l]++;
    }
    free(sum), free(a), free(n), free(gp), free(rm);
    return rc;
}
