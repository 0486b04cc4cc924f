/* Page metadata kernels for query-aware page selection (Quest): per-page, per-channel
 * min and max of K, and the upper bound of q.k over a page that they give. The plain
 * references follow the CPU versions; tests compare the two on random data. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "kernels_cpu.h"

/* Work below this many multiply-adds stays on the calling thread: a decode step scores
 * a few hundred pages and a parallel region would cost more than it saves. */
#define PAGES_PAR_MIN (1 << 18)

int kw_cpu_page_bounds(const float *k, int n_tok, int head_dim, int page, float *kmin,
                       float *kmax)
{
    if (n_tok < 0 || head_dim < 1 || page < 1)
        return KW_EINVAL;
    int n_pages = (n_tok + page - 1) / page;
#pragma omp parallel for if ((int64_t)n_tok * head_dim >= PAGES_PAR_MIN) schedule(static)
    for (int p = 0; p < n_pages; p++) {
        float *mn = kmin + (int64_t)p * head_dim, *mx = kmax + (int64_t)p * head_dim;
        const float *r = k + (int64_t)p * page * head_dim;
        for (int i = 0; i < head_dim; i++)
            mn[i] = mx[i] = r[i];
        int end = (p + 1) * page < n_tok ? (p + 1) * page : n_tok;
        for (int t = p * page + 1; t < end; t++) {
            r = k + (int64_t)t * head_dim;
            for (int i = 0; i < head_dim; i++) {
                mn[i] = r[i] < mn[i] ? r[i] : mn[i];
                mx[i] = r[i] > mx[i] ? r[i] : mx[i];
            }
        }
    }
    return 0;
}

int kw_cpu_page_scores(const float *q, int n_q, int head_dim, const float *kmin,
                       const float *kmax, int n_pages, float *scores)
{
    if (n_q < 0 || head_dim < 1 || n_pages < 0)
        return KW_EINVAL;
    int64_t work = (int64_t)n_q * n_pages * head_dim;
#pragma omp parallel for if (work >= PAGES_PAR_MIN) schedule(static)
    for (int p = 0; p < n_pages; p++) {
        const float *mn = kmin + (int64_t)p * head_dim, *mx = kmax + (int64_t)p * head_dim;
        for (int h = 0; h < n_q; h++) {
            const float *qh = q + (int64_t)h * head_dim;
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < head_dim; i++) {
                float a = qh[i] * mn[i], b = qh[i] * mx[i];
                acc += a > b ? a : b;
            }
            scores[(int64_t)h * n_pages + p] = acc;
        }
    }
    return 0;
}

/* Kept token i of one table: copies its K and V rows, scales and position. Going up in
 * i is safe in place: keep[i] >= i, so a slot is read before any write reaches it. */
static void compact_one(const kw_page_layout *L, const int32_t *keep, int n_keep,
                        const int32_t *src, const int32_t *dst)
{
    int64_t P = L->page_tokens, rb = L->row_bytes;
    for (int i = 0; i < n_keep; i++) {
        int64_t gs = src[keep[i] / P], ss = keep[i] % P, gd = dst[i / P], sd = i % P;
        if (gs == gd && ss == sd)
            continue;
        uint8_t *pd = L->base + gd * L->page_bytes;
        const uint8_t *ps = L->base + gs * L->page_bytes;
        for (int w = 0; w < 2; w++) {
            memmove(pd + (w * P + sd) * rb, ps + (w * P + ss) * rb, (size_t)rb);
            if (L->scale_bytes)
                memmove(pd + 2 * P * rb + (w * P + sd) * 4, ps + 2 * P * rb + (w * P + ss) * 4,
                        4);
        }
        if (L->pos)
            L->pos[gd * P + sd] = L->pos[gs * P + ss];
    }
}

int kw_cpu_page_compact(const kw_page_layout *L, int n_tab, const int32_t *keep_off,
                        const int32_t *keep, const int32_t *src_off, const int32_t *src,
                        const int32_t *dst_off, const int32_t *dst)
{
    if (!L->base || L->page_tokens < 1 || L->row_bytes < 1 ||
        (L->scale_bytes != 0 && L->scale_bytes != 4) ||
        L->page_bytes < 2 * (int64_t)L->page_tokens * (L->row_bytes + L->scale_bytes) ||
        n_tab < 0)
        return KW_EINVAL;
    int64_t P = L->page_tokens;
    for (int t = 0; t < n_tab; t++) {
        int n_keep = keep_off[t + 1] - keep_off[t];
        const int32_t *kp = keep + keep_off[t];
        int64_t n_src = (int64_t)(src_off[t + 1] - src_off[t]) * P;
        if (n_keep < 0 || (int64_t)(dst_off[t + 1] - dst_off[t]) * P < n_keep)
            return KW_EINVAL;
        for (int i = 0; i < n_keep; i++)
            if (kp[i] < 0 || kp[i] >= n_src || (i && kp[i] <= kp[i - 1]))
                return KW_EINVAL;
    }
    /* tables are independent (no page is shared between them), but one table is a
     * forward sweep, so the parallelism is over tables */
#pragma omp parallel for if (n_tab > 8) schedule(dynamic)
    for (int t = 0; t < n_tab; t++)
        compact_one(L, keep + keep_off[t], keep_off[t + 1] - keep_off[t], src + src_off[t],
                    dst + dst_off[t]);
    return 0;
}

void kw_ref_page_compact(const kw_page_layout *L, int n_tab, const int32_t *keep_off,
                         const int32_t *keep, const int32_t *src_off, const int32_t *src,
                         const int32_t *dst_off, const int32_t *dst)
{
    for (int t = 0; t < n_tab; t++)
        compact_one(L, keep + keep_off[t], keep_off[t + 1] - keep_off[t], src + src_off[t],
                    dst + dst_off[t]);
}

void kw_ref_page_bounds(const float *k, int n_tok, int head_dim, int page, float *kmin,
                        float *kmax)
{
    for (int t = 0; t < n_tok; t++) {
        int p = t / page;
        for (int i = 0; i < head_dim; i++) {
            float x = k[(int64_t)t * head_dim + i];
            float *mn = &kmin[(int64_t)p * head_dim + i], *mx = &kmax[(int64_t)p * head_dim + i];
            if (t % page == 0 || x < *mn)
                *mn = x;
            if (t % page == 0 || x > *mx)
                *mx = x;
        }
    }
}

void kw_ref_page_scores(const float *q, int n_q, int head_dim, const float *kmin,
                        const float *kmax, int n_pages, float *scores)
{
    for (int h = 0; h < n_q; h++)
        for (int p = 0; p < n_pages; p++) {
            double s = 0;
            for (int i = 0; i < head_dim; i++) {
                double qi = q[(int64_t)h * head_dim + i];
                double lo = qi * kmin[(int64_t)p * head_dim + i];
                double hi = qi * kmax[(int64_t)p * head_dim + i];
                s += fmax(lo, hi);
            }
            scores[(int64_t)h * n_pages + p] = (float)s;
        }
}
