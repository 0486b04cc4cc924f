/* Attention over KV views (kernels.h: kw_k_attn_view) and its plain reference.
 *
 * Work is cut into items (a tile of consecutive query tokens of one sequence, a row, a
 * span range): each K and V row read serves every query vector of the tile (the tile's
 * tokens times the g query heads the row serves, at most MAX_V vectors). Rows longer
 * than SPLIT_MIN tokens are split into parts when there are too few items to fill every
 * core (decode); each part keeps its own online-softmax state (max, sum, accumulator)
 * per vector and the parts are merged at the end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "kernels.h"

#define SPLIT_MIN 256
#define MAX_V 64 /* query vectors per item */

typedef struct item {
    int t, nt, row, s0, s1; /* tokens [t, t + nt) */
    int part;               /* index of the partial state */
} item;

static void rope_one(float *k, int32_t pos, int hd, const float *inv_freq,
                     kw_rope_layout layout)
{
    for (int i = 0; i < hd / 2; i++) {
        float a = (float)pos * inv_freq[i], c = cosf(a), s = sinf(a);
        int i0 = layout == KW_ROPE_INTERLEAVED ? 2 * i : i;
        int i1 = layout == KW_ROPE_INTERLEAVED ? 2 * i + 1 : i + hd / 2;
        float x0 = k[i0], x1 = k[i1];
        k[i0] = x0 * c - x1 * s;
        k[i1] = x0 * s + x1 * c;
    }
}

/* Runs one item: query heads h0..h0+ng-1 of tokens t..t+nt-1 over spans [s0, s1) of a
 * view. st: per vector v = ti * ng + j, (m, l, acc[hd]). */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void run_item(const kw_attn_args *a, const kw_view *w, const item *it, int h0, int ng,
                     float *st, float *kbuf)
{
    const int hd = a->mem.head_dim, P = a->mem.page_tokens, nv = it->nt * ng;
    const float *qv[MAX_V];
    int32_t qp[MAX_V], qmax = INT32_MIN;
    for (int v = 0; v < nv; v++) {
        int t = it->t + v / ng;
        qv[v] = a->q + ((int64_t)t * a->n_head + h0 + v % ng) * hd;
        qp[v] = a->q_pos[t];
        qmax = qp[v] > qmax ? qp[v] : qmax;
        st[v * (hd + 2)] = -INFINITY;
        st[v * (hd + 2) + 1] = 0.f;
        memset(st + v * (hd + 2) + 2, 0, (size_t)hd * sizeof(float));
    }
    float sc[MAX_V][64], *vbuf = kbuf + hd;
    for (int si = it->s0; si < it->s1; si++) {
        const kw_span *sp = &w->spans[si];
        const int32_t *pp = a->mem.pos[sp->pool] + (int64_t)sp->page * P;
        for (int c0 = 0; c0 < sp->n; c0 += 64) {
            int nc = sp->n - c0 < 64 ? sp->n - c0 : 64;
            for (int c = 0; c < nc; c++) {
                int slot = sp->first + c0 + c;
                if (pp[slot] > qmax) {
                    for (int v = 0; v < nv; v++)
                        sc[v][c] = -INFINITY;
                    continue;
                }
                const float *k = kw_kvmem_row(&a->mem, sp->pool, sp->page, slot, 0, kbuf);
                if (a->inv_freq) {
                    if (k != kbuf)
                        memcpy(kbuf, k, (size_t)hd * sizeof(float));
                    rope_one(kbuf, pp[slot], hd, a->inv_freq, a->layout);
                    k = kbuf;
                }
                for (int v = 0; v < nv; v++) {
                    const float *q = qv[v];
                    float d = 0.f;
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < hd; i++)
                        d += q[i] * k[i];
                    sc[v][c] = pp[slot] > qp[v] ? -INFINITY : d * a->scale;
                }
            }
            /* rescale each vector's state to the block max, then accumulate V rows read
             * once for all vectors */
            float mxs[MAX_V];
            for (int v = 0; v < nv; v++) {
                float *s = st + v * (hd + 2), *acc = s + 2;
                float mx = s[0];
                for (int c = 0; c < nc; c++)
                    mx = sc[v][c] > mx ? sc[v][c] : mx;
                mxs[v] = mx;
                if (mx == -INFINITY || mx == s[0])
                    continue;
                float r = expf(s[0] - mx);
                s[1] *= r;
                for (int i = 0; i < hd; i++)
                    acc[i] *= r;
                s[0] = mx;
            }
            for (int c = 0; c < nc; c++) {
                if (pp[sp->first + c0 + c] > qmax) /* masked for every vector */
                    continue;
                const float *vr = kw_kvmem_row(&a->mem, sp->pool, sp->page, sp->first + c0 + c,
                                               1, vbuf);
                for (int v = 0; v < nv; v++) {
                    if (sc[v][c] == -INFINITY)
                        continue;
                    float p = expf(sc[v][c] - mxs[v]), *s = st + v * (hd + 2), *acc = s + 2;
                    s[1] += p;
#pragma omp simd
                    for (int i = 0; i < hd; i++)
                        acc[i] += p * vr[i];
                }
            }
        }
    }
}

static int tile_tokens(const kw_attn_args *a, const kw_view *w)
{
    int ng = w->per_qhead ? 1 : a->n_head / a->n_kv;
    return MAX_V / ng;
}

/* Cuts each (tile, row) into parts of about equal token counts; the parts of one
 * (tile, row) are consecutive items. */
static int plan_items(const kw_attn_args *a, item **out, int *n_items)
{
    int nth = omp_get_max_threads();
    int64_t cap = 0;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        int nq = a->tok_off[i + 1] - a->tok_off[i], qt = tile_tokens(a, w);
        cap += (int64_t)((nq + qt - 1) / qt) * (w->row_ptr[w->n_rows] + w->n_rows);
    }
    item *it = malloc((size_t)(cap + 1) * sizeof *it);
    if (!it)
        return KW_ENOMEM;
    int n = 0;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        int nq = a->tok_off[i + 1] - a->tok_off[i], qt = tile_tokens(a, w);
        int units = (nq + qt - 1) / qt * w->n_rows;
        int want = units >= 4 * nth ? 1 : (4 * nth + units - 1) / (units > 0 ? units : 1);
        for (int t = a->tok_off[i]; t < a->tok_off[i + 1]; t += qt) {
            int nt = a->tok_off[i + 1] - t < qt ? a->tok_off[i + 1] - t : qt;
            for (int r = 0; r < w->n_rows; r++) {
                int b = w->row_ptr[r], e = w->row_ptr[r + 1];
                int len = kw_view_row_tokens(w, r);
                int parts = len >= SPLIT_MIN ? want : 1;
                int per = (len + parts - 1) / parts, acc = 0, s0 = b;
                for (int si = b; si < e; si++) {
                    acc += w->spans[si].n;
                    if (acc >= per && si + 1 < e) {
                        it[n] = (item){.t = t, .nt = nt, .row = r, .s0 = s0, .s1 = si + 1,
                                       .part = n};
                        n++;
                        s0 = si + 1;
                        acc = 0;
                    }
                }
                it[n] = (item){.t = t, .nt = nt, .row = r, .s0 = s0, .s1 = e, .part = n};
                n++;
            }
        }
    }
    *out = it;
    *n_items = n;
    return 0;
}

static void merge(const kw_attn_args *a, const item *it, int n, const float *parts)
{
    const int hd = a->mem.head_dim, g = a->n_head / a->n_kv;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < n; k++) {
        if (k > 0 && it[k - 1].t == it[k].t && it[k - 1].row == it[k].row)
            continue; /* the first part of a (tile, row) merges all of them */
        int e = k + 1;
        while (e < n && it[e].t == it[k].t && it[e].row == it[k].row)
            e++;
        const kw_view *w = NULL;
        for (int i = 0; i < a->n_seq; i++)
            if (it[k].t < a->tok_off[i + 1]) {
                w = a->views[i];
                break;
            }
        int h0 = w->per_qhead ? it[k].row : it[k].row * g, ng = w->per_qhead ? 1 : g;
        for (int v = 0; v < it[k].nt * ng; v++) {
            int t = it[k].t + v / ng, j = v % ng;
            float M = -INFINITY;
            for (int p = k; p < e; p++) {
                float m = parts[((int64_t)p * MAX_V + v) * (hd + 2)];
                M = m > M ? m : M;
            }
            float *o = a->out + ((int64_t)t * a->n_head + h0 + j) * hd;
            memset(o, 0, (size_t)hd * sizeof(float));
            double l = 0;
            if (M != -INFINITY)
                for (int p = k; p < e; p++) {
                    const float *s = parts + ((int64_t)p * MAX_V + v) * (hd + 2);
                    if (s[0] == -INFINITY)
                        continue;
                    float r = expf(s[0] - M);
                    l += (double)s[1] * r;
                    for (int i = 0; i < hd; i++)
                        o[i] += r * s[2 + i];
                }
            if (l > 0)
                for (int i = 0; i < hd; i++)
                    o[i] = (float)(o[i] / l);
            if (a->lse)
                a->lse[(int64_t)t * a->n_head + h0 + j] =
                    l > 0 ? M + (float)log(l) : -INFINITY;
        }
    }
}

int kw_k_attn_view(kw_backend bk, void *stream, const kw_attn_args *a)
{
    (void)stream;
    if (bk != KW_BK_CPU)
        return KW_ENOSYS;
    const int hd = a->mem.head_dim;
    if (a->n_kv < 1 || a->n_head % a->n_kv || a->n_head / a->n_kv > MAX_V || hd < 2 || hd % 2)
        return KW_EINVAL;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        if (w->n_rows != (w->per_qhead ? a->n_head : a->n_kv))
            return KW_EINVAL;
    }
    item *it;
    int n;
    int rc = plan_items(a, &it, &n);
    if (rc < 0)
        return rc;
    float *parts = malloc((size_t)n * MAX_V * (hd + 2) * sizeof(float));
    int nth = omp_get_max_threads();
    float *kb = malloc((size_t)nth * 2 * hd * sizeof(float));
    if (!parts || !kb) {
        free(it), free(parts), free(kb);
        return KW_ENOMEM;
    }
#pragma omp parallel for schedule(dynamic, 4)
    for (int k = 0; k < n; k++) {
        const kw_view *w = NULL;
        for (int i = 0; i < a->n_seq; i++)
            if (it[k].t < a->tok_off[i + 1]) {
                w = a->views[i];
                break;
            }
        int g = a->n_head / a->n_kv;
        int h0 = w->per_qhead ? it[k].row : it[k].row * g, ng = w->per_qhead ? 1 : g;
        run_item(a, w, &it[k], h0, ng, parts + (int64_t)it[k].part * MAX_V * (hd + 2),
                 kb + (int64_t)omp_get_thread_num() * 2 * hd);
    }
    merge(a, it, n, parts);
    free(it), free(parts), free(kb);
    return 0;
}

void kw_ref_attn_view(const kw_attn_args *a)
{
    const int hd = a->mem.head_dim, P = a->mem.page_tokens, g = a->n_head / a->n_kv;
    float *kb = malloc((size_t)hd * sizeof(float)), *vb = malloc((size_t)hd * sizeof(float));
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        for (int t = a->tok_off[i]; t < a->tok_off[i + 1]; t++)
            for (int h = 0; h < a->n_head; h++) {
                int r = w->per_qhead ? h : h / g;
                const float *q = a->q + ((int64_t)t * a->n_head + h) * hd;
                double mx = -INFINITY, l = 0, *o = calloc((size_t)hd, sizeof(double));
                for (int pass = 0; pass < 2; pass++)
                    for (int si = w->row_ptr[r]; si < w->row_ptr[r + 1]; si++) {
                        const kw_span *sp = &w->spans[si];
                        for (int c = sp->first; c < sp->first + sp->n; c++) {
                            int32_t pos = a->mem.pos[sp->pool][(int64_t)sp->page * P + c];
                            if (pos > a->q_pos[t])
                                continue;
                            const float *kr = kw_kvmem_row(&a->mem, sp->pool, sp->page, c, 0, kb);
                            if (kr != kb)
                                memcpy(kb, kr, (size_t)hd * sizeof(float));
                            if (a->inv_freq)
                                rope_one(kb, pos, hd, a->inv_freq, a->layout);
                            double d = 0;
                            for (int x = 0; x < hd; x++)
                                d += (double)q[x] * kb[x];
                            d *= a->scale;
                            if (pass == 0) {
                                mx = d > mx ? d : mx;
                                continue;
                            }
                            double p = exp(d - mx);
                            l += p;
                            const float *vr = kw_kvmem_row(&a->mem, sp->pool, sp->page, c, 1, vb);
                            for (int x = 0; x < hd; x++)
                                o[x] += p * vr[x];
                        }
                    }
                float *out = a->out + ((int64_t)t * a->n_head + h) * hd;
                for (int x = 0; x < hd; x++)
                    out[x] = l > 0 ? (float)(o[x] / l) : 0.f;
                if (a->lse)
                    a->lse[(int64_t)t * a->n_head + h] = l > 0 ? (float)(mx + log(l)) : -INFINITY;
                free(o);
            }
    }
    free(kb);
    free(vb);
}
