/* Selection kernels for eviction methods (kernels.h, "selection"): observation-window
 * scores, 1-D pooling and top-k with ties to the lower index. OpenMP over rows; each
 * row is independent, so results do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>

#include "cpu/kernels_cpu.h"
#include "kernels.h"

int kw_cpu_window_scores(const float *probs, int n_q, int n_head, int len, int group,
                         int n_key, float *out)
{
    if (n_q < 0 || n_head < 1 || group < 1 || n_head % group || n_key < 0 || n_key > len)
        return KW_EINVAL;
    int rows = n_head / group;
    float inv = 1.f / (float)group;
#pragma omp parallel for if ((int64_t)rows * n_key > 65536)
    for (int r = 0; r < rows; r++) {
        float *o = out + (int64_t)r * n_key;
        for (int j = 0; j < n_key; j++)
            o[j] = 0;
        /* sum in float over queries then heads: n_q * group terms of [0, 1] */
        for (int q = 0; q < n_q; q++)
            for (int h = r * group; h < (r + 1) * group; h++) {
                const float *p = probs + ((int64_t)q * n_head + h) * len;
#pragma omp simd
                for (int j = 0; j < n_key; j++)
                    o[j] += p[j];
            }
        for (int j = 0; j < n_key; j++)
            o[j] *= inv;
    }
    return KW_OK;
}

int kw_cpu_pool1d(const float *x, int rows, int n, int kernel, kw_pooling mode, float *out)
{
    if (rows < 0 || n < 0 || kernel < 1 || (mode != KW_POOLING_AVG && mode != KW_POOLING_MAX)
        || x == out)
        return KW_EINVAL;
    int lo = kernel / 2;
#pragma omp parallel for if ((int64_t)rows * n > 65536)
    for (int r = 0; r < rows; r++) {
        const float *v = x + (int64_t)r * n;
        float *o = out + (int64_t)r * n;
        if (mode == KW_POOLING_MAX) {
            for (int i = 0; i < n; i++) {
                int a = i - lo < 0 ? 0 : i - lo, b = i - lo + kernel;
                b = b > n ? n : b;
                float m = -INFINITY;
                for (int j = a; j < b; j++)
                    m = v[j] > m ? v[j] : m;
                o[i] = m;
            }
            continue;
        }
        /* running sum in double: exact enough for any length, O(n) */
        double s = 0;
        for (int j = 0; j < kernel - lo && j < n; j++)
            s += v[j];
        for (int i = 0; i < n; i++) {
            o[i] = (float)(s / kernel);
            int add = i - lo + kernel, drop = i - lo;
            if (add < n)
                s += v[add];
            if (drop >= 0)
                s -= v[drop];
        }
    }
    return KW_OK;
}

typedef struct vi {
    float v;
    int32_t i;
} vi;

/* larger value first, then lower index */
static int vi_cmp(const void *a, const void *b)
{
    const vi *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int i32_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Moves the k first elements in vi_cmp order to a[0..k) (any order): quickselect. */
static void select_k(vi *a, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        vi piv = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (vi_cmp(&a[i], &piv) < 0)
                i++;
            while (vi_cmp(&a[j], &piv) > 0)
                j--;
            if (i <= j) {
                vi t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++, j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

int kw_cpu_topk(const float *x, int rows, int n, int k, int32_t *idx)
{
    if (rows < 0 || n < 0 || k < 0 || k > n)
        return KW_EINVAL;
    for (int64_t i = 0; i < (int64_t)rows * n; i++)
        if (isnan(x[i]))
            return KW_EINVAL;
    if (k == 0 || rows == 0)
        return KW_OK;
    int rc = KW_OK;
#pragma omp parallel for if ((int64_t)rows * n > 16384)
    for (int r = 0; r < rows; r++) {
        vi *a = malloc(sizeof(vi) * (size_t)n);
        if (!a) {
#pragma omp atomic write
            rc = KW_ENOMEM;
            continue;
        }
        const float *v = x + (int64_t)r * n;
        for (int i = 0; i < n; i++)
            a[i] = (vi){v[i], i};
        if (k < n)
            select_k(a, n, k);
        int32_t *o = idx + (int64_t)r * k;
        for (int i = 0; i < k; i++)
            o[i] = a[i].i;
        qsort(o, (size_t)k, sizeof *o, i32_cmp);
        free(a);
    }
    return rc;
}

/* ---- plain references ---- */

void kw_ref_window_scores(const float *probs, int n_q, int n_head, int len, int group,
                          int n_key, float *out)
{
    for (int r = 0; r < n_head / group; r++)
        for (int j = 0; j < n_key; j++) {
            double s = 0;
            for (int h = r * group; h < (r + 1) * group; h++)
                for (int q = 0; q < n_q; q++)
                    s += probs[((int64_t)q * n_head + h) * len + j];
            out[(int64_t)r * n_key + j] = (float)(s / group);
        }
}

void kw_ref_pool1d(const float *x, int rows, int n, int kernel, kw_pooling mode, float *out)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) {
            double s = 0, m = -INFINITY;
            for (int t = 0; t < kernel; t++) {
                int j = i - kernel / 2 + t;
                if (j < 0 || j >= n)
                    continue; /* padding: 0 in the average, ignored by the max */
                double v = x[(int64_t)r * n + j];
                s += v;
                m = v > m ? v : m;
            }
            out[(int64_t)r * n + i] = (float)(mode == KW_POOLING_MAX ? m : s / kernel);
        }
}

void kw_ref_topk(const float *x, int rows, int n, int k, int32_t *idx)
{
    /* i is kept when fewer than k elements rank before it */
    for (int r = 0; r < rows; r++) {
        const float *v = x + (int64_t)r * n;
        int o = 0;
        for (int i = 0; i < n; i++) {
            int before = 0;
            for (int j = 0; j < n; j++)
                before += v[j] > v[i] || (v[j] == v[i] && j < i);
            if (before < k)
                idx[(int64_t)r * k + o++] = i;
        }
    }
}
