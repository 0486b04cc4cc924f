/* Attention over KV views (kernels.h: kw_k_attn_view) and its plain reference.
 *
 * Work is cut into items (query token, row, span range): a row that serves g query
 * heads is read once for all of them. Rows longer than SPLIT_MIN tokens are split into
 * parts so that decode with few rows still fills every core; each part keeps its own
 * online-softmax state (max, sum, accumulator) and the parts are merged at the end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "kernels.h"

#define SPLIT_MIN 256
#define MAX_G 64

typedef struct item {
    int t, row, s0, s1;
    int part; /* index of the partial state */
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

/* Runs one item: query heads h0..h0+ng-1 of token t over spans [s0, s1) of a view.
 * st: per head (m, l, acc[hd]). */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void run_item(const kw_attn_args *a, const kw_view *w, const item *it, int h0, int ng,
                     float *st, float *kbuf)
{
    const int hd = a->mem.head_dim, P = a->mem.page_tokens;
    const float *q = a->q + ((int64_t)it->t * a->n_head + h0) * hd;
    const int32_t qp = a->q_pos[it->t];
    float sc[MAX_G][64];
    for (int j = 0; j < ng; j++) {
        st[j * (hd + 2)] = -INFINITY;
        st[j * (hd + 2) + 1] = 0.f;
        memset(st + j * (hd + 2) + 2, 0, (size_t)hd * sizeof(float));
    }
    float *vbuf = kbuf + hd;
    for (int si = it->s0; si < it->s1; si++) {
        const kw_span *sp = &w->spans[si];
        const int32_t *pp = a->mem.pos[sp->pool] + (int64_t)sp->page * P;
        for (int c0 = 0; c0 < sp->n; c0 += 64) {
            int nc = sp->n - c0 < 64 ? sp->n - c0 : 64;
            for (int c = 0; c < nc; c++) {
                int slot = sp->first + c0 + c;
                if (pp[slot] > qp) {
                    for (int j = 0; j < ng; j++)
                        sc[j][c] = -INFINITY;
                    continue;
                }
                const float *k = kw_kvmem_row(&a->mem, sp->pool, sp->page, slot, 0, kbuf);
                if (a->inv_freq) {
                    if (k != kbuf)
                        memcpy(kbuf, k, (size_t)hd * sizeof(float));
                    rope_one(kbuf, pp[slot], hd, a->inv_freq, a->layout);
                    k = kbuf;
                }
                for (int j = 0; j < ng; j++) {
                    const float *qj = q + (int64_t)j * hd;
                    float d = 0.f;
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < hd; i++)
                        d += qj[i] * k[i];
                    sc[j][c] = d * a->scale;
                }
            }
            /* rescale each head's state to the block max, then accumulate V rows read
             * once for all heads of the group */
            float mxs[MAX_G];
            for (int j = 0; j < ng; j++) {
                float *s = st + j * (hd + 2), *acc = s + 2;
                float mx = s[0];
                for (int c = 0; c < nc; c++)
                    mx = sc[j][c] > mx ? sc[j][c] : mx;
                mxs[j] = mx;
                if (mx == -INFINITY)
                    continue;
                float r = expf(s[0] - mx);
                if (r != 1.f) {
                    s[1] *= r;
                    for (int i = 0; i < hd; i++)
                        acc[i] *= r;
                }
                s[0] = mx;
            }
            for (int c = 0; c < nc; c++) {
                if (pp[sp->first + c0 + c] > qp) /* masked for every head */
                    continue;
                const float *v = kw_kvmem_row(&a->mem, sp->pool, sp->page, sp->first + c0 + c,
                                              1, vbuf);
                for (int j = 0; j < ng; j++) {
                    if (sc[j][c] == -INFINITY)
                        continue;
                    float p = expf(sc[j][c] - mxs[j]), *s = st + j * (hd + 2), *acc = s + 2;
                    s[1] += p;
#pragma omp simd
                    for (int i = 0; i < hd; i++)
                        acc[i] += p * v[i];
                }
            }
        }
    }
}

/* Cuts each (token, row) into parts of about equal token counts; the parts of one
 * (token, row) are consecutive items. */
static int plan_items(const kw_attn_args *a, item **out, int *n_items)
{
    int nth = omp_get_max_threads();
    int64_t cap = 0;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        cap += (int64_t)(a->tok_off[i + 1] - a->tok_off[i]) * (w->row_ptr[w->n_rows] + w->n_rows);
    }
    item *it = malloc((size_t)(cap + 1) * sizeof *it);
    if (!it)
        return KW_ENOMEM;
    int n = 0;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        int units = (a->tok_off[i + 1] - a->tok_off[i]) * w->n_rows;
        int want = units >= 4 * nth ? 1 : (4 * nth + units - 1) / (units > 0 ? units : 1);
        for (int t = a->tok_off[i]; t < a->tok_off[i + 1]; t++)
            for (int r = 0; r < w->n_rows; r++) {
                int b = w->row_ptr[r], e = w->row_ptr[r + 1];
                int len = kw_view_row_tokens(w, r);
                int parts = len >= SPLIT_MIN ? want : 1;
                int per = (len + parts - 1) / parts, acc = 0, s0 = b;
                for (int si = b; si < e; si++) {
                    acc += w->spans[si].n;
                    if (acc >= per && si + 1 < e) {
                        it[n] = (item){.t = t, .row = r, .s0 = s0, .s1 = si + 1, .part = n};
                        n++;
                        s0 = si + 1;
                        acc = 0;
                    }
                }
                it[n] = (item){.t = t, .row = r, .s0 = s0, .s1 = e, .part = n};
                n++;
            }
    }
    *out = it;
    *n_items = n;
    return 0;
}

static void merge(const kw_attn_args *a, const item *it, int n, const float *parts,
                  int gmax)
{
    const int hd = a->mem.head_dim, g = a->n_head / a->n_kv;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < n; k++) {
        if (k > 0 && it[k - 1].t == it[k].t && it[k - 1].row == it[k].row)
            continue; /* the first part of a (token, row) merges all of them */
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
        for (int j = 0; j < ng; j++) {
            float M = -INFINITY;
            for (int p = k; p < e; p++) {
                float m = parts[((int64_t)p * gmax + j) * (hd + 2)];
                M = m > M ? m : M;
            }
            float *o = a->out + ((int64_t)it[k].t * a->n_head + h0 + j) * hd;
            memset(o, 0, (size_t)hd * sizeof(float));
            double l = 0;
            if (M != -INFINITY)
                for (int p = k; p < e; p++) {
                    const float *s = parts + ((int64_t)p * gmax + j) * (hd + 2);
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
                a->lse[(int64_t)it[k].t * a->n_head + h0 + j] =
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
    if (a->n_kv < 1 || a->n_head % a->n_kv || a->n_head / a->n_kv > MAX_G || hd < 2 || hd % 2)
        return KW_EINVAL;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        if (w->n_rows != (w->per_qhead ? a->n_head : a->n_kv) || w->n_rows > MAX_G)
            return KW_EINVAL;
    }
    item *it;
    int n;
    int rc = plan_items(a, &it, &n);
    if (rc < 0)
        return rc;
    int gmax = a->n_head / a->n_kv;
    float *parts = malloc((size_t)n * gmax * (hd + 2) * sizeof(float));
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
        run_item(a, w, &it[k], h0, ng, parts + (int64_t)it[k].part * gmax * (hd + 2),
                 kb + (int64_t)omp_get_thread_num() * 2 * hd);
    }
    merge(a, it, n, parts, gmax);
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
