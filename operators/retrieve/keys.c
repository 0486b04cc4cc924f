/* K rows as attention reads them (keys.h). */
#include "keys.h"

#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/util.h"

int32_t kw__key_pos(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int j)
{
    int npg;
    const int32_t *pages = kw_kvseq_pages(kv, layer, kvh, &npg);
    return mem->pos[KW_POOL_MAIN][(int64_t)pages[j / mem->page_tokens] * mem->page_tokens
                                  + j % mem->page_tokens];
}

int kw__keys_as_read(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int j0,
                     int n, const float *inv_freq, kw_rope_layout layout, int head_dim,
                     float *rows, int32_t *pos)
{
    if (n <= 0)
        return 0;
    int rc = kw_kvseq_rows_f32(kv, layer, kvh, j0, n, 0, rows);
    if (rc < 0)
        return rc;
    for (int r = 0; r < n; r++)
        pos[r] = kw__key_pos(kv, mem, layer, kvh, j0 + r);
    if (mem->pre_rope)
        rc = kw_k_rope(KW_BK_CPU, NULL, rows, pos, n, 1, head_dim, inv_freq, layout);
    return rc < 0 ? rc : 0;
}

/* The row of w holding kvh's tokens; -1 when w is NULL or of another shape. */
static int view_row(const kw_view *w, int kvh, int n_kv)
{
    if (!w || (!w->per_qhead && w->n_rows != n_kv)
        || (w->per_qhead && (w->n_rows < n_kv || w->n_rows % n_kv != 0)))
        return -1;
    return w->per_qhead ? kvh * (w->n_rows / n_kv) : kvh;
}

static int tmp_count(const kw_view *w, int vr, const kw_kvmem *mem, int32_t after)
{
    int n = 0;
    for (int x = vr < 0 ? 0 : w->row_ptr[vr]; vr >= 0 && x < w->row_ptr[vr + 1]; x++) {
        const kw_span *sp = &w->spans[x];
        const int32_t *pp = mem->pos[KW_POOL_TMP] + (int64_t)sp->page * mem->page_tokens;
        for (int i = sp->first; sp->pool == KW_POOL_TMP && i < sp->first + sp->n; i++)
            n += pp[i] > after;
    }
    return n;
}

/* The first stored index of (layer, kvh) at a position > after (positions increase
 * along a table). */
static int pool_from(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int32_t after)
{
    int j = kw_kvseq_len(kv, layer, kvh);
    while (j > 0 && kw__key_pos(kv, mem, layer, kvh, j - 1) > after)
        j--;
    return j;
}

int kw__keys_read_count(const kw_kvseq *kv, const kw_kvmem *mem, const kw_view *w, int layer,
                        int kvh, int32_t after, int n_kv)
{
    return kw_kvseq_len(kv, layer, kvh) - pool_from(kv, mem, layer, kvh, after)
           + tmp_count(w, view_row(w, kvh, n_kv), mem, after);
}

static int by_tpos(const void *x, const void *y, void *ctx)
{
    const int32_t *p = ctx;
    int32_t a = p[*(const int32_t *)x], b = p[*(const int32_t *)y];
    return (a > b) - (a < b);
}

int kw__keys_read(const kw_kvseq *kv, const kw_kvmem *mem, const kw_view *w, int layer,
                  int kvh, int32_t after, const float *inv_freq, const kw_model_config *cfg,
                  kw_keys_read *r)
{
    int hd = cfg->head_dim, j0 = pool_from(kv, mem, layer, kvh, after);
    int vr = view_row(w, kvh, cfg->n_head_kv);
    int np = kw_kvseq_len(kv, layer, kvh) - j0, nt = tmp_count(w, vr, mem, after), n = np + nt;
    int64_t cap = r->cap, tcap = r->tcap;
    int rc = kw_grow((void **)&r->rows, &cap, n + 1, sizeof(float) * (size_t)hd);
    cap = r->cap;
    if (rc == 0)
        rc = kw_grow((void **)&r->pos, &cap, n + 1, sizeof(int32_t));
    if (rc == 0)
        r->cap = cap;
    if (rc == 0)
        rc = kw_grow((void **)&r->trows, &tcap, nt + 1, sizeof(float) * (size_t)hd);
    tcap = r->tcap;
    if (rc == 0)
        rc = kw_grow((void **)&r->tpos, &tcap, nt + 1, sizeof(int32_t));
    tcap = r->tcap;
    if (rc == 0)
        rc = kw_grow((void **)&r->ord, &tcap, nt + 1, sizeof(int32_t));
    if (rc == 0)
        r->tcap = tcap;
    if (rc < 0)
        return rc;
    if (nt == 0) /* the pool's alone: straight into place */
        return (rc = kw__keys_as_read(kv, mem, layer, kvh, j0, np, inv_freq, cfg->rope_layout,
                                      hd, r->rows, r->pos)) < 0 ? rc : np;
    int k = 0;
    for (int x = w->row_ptr[vr]; x < w->row_ptr[vr + 1]; x++) {
        const kw_span *sp = &w->spans[x];
        for (int i = sp->first; sp->pool == KW_POOL_TMP && i < sp->first + sp->n; i++) {
            int32_t p = mem->pos[KW_POOL_TMP][(int64_t)sp->page * mem->page_tokens + i];
            if (p <= after)
                continue;
            memcpy(r->trows + (int64_t)k * hd, kw_kvmem_row(mem, KW_POOL_TMP, sp->page, i, 0, NULL),
                   sizeof(float) * hd);
            r->tpos[k] = p, r->ord[k] = k, k++;
        }
    }
    qsort_r(r->ord, (size_t)nt, sizeof(int32_t), by_tpos, r->tpos);
    /* the pool's rows at the end of rows, then merged forward into place */
    float *pr = r->rows + (int64_t)nt * hd;
    int32_t *pp = r->pos + nt;
    if ((rc = kw__keys_as_read(kv, mem, layer, kvh, j0, np, inv_freq, cfg->rope_layout, hd, pr,
                               pp)) < 0)
        return rc;
    int a = 0, b = 0, o = 0;
    while (a < np || b < nt) {
        bool from_pool = b == nt || (a < np && pp[a] <= r->tpos[r->ord[b]]);
        if (from_pool && b < nt && pp[a] == r->tpos[r->ord[b]])
            b++; /* in both: the pool's */
        int32_t p = from_pool ? pp[a] : r->tpos[r->ord[b]];
        const float *src = from_pool ? pr + (int64_t)a * hd : r->trows + (int64_t)r->ord[b] * hd;
        if (from_pool)
            a++;
        else
            b++;
        memmove(r->rows + (int64_t)o * hd, src, sizeof(float) * hd);
        r->pos[o++] = p;
    }
    return o;
}

void kw__keys_read_free(kw_keys_read *r)
{
    free(r->rows), free(r->pos), free(r->trows), free(r->tpos), free(r->ord);
    memset(r, 0, sizeof *r);
}

int kw__view_choose(kw_view *w, int r, const kw_kvseq *kv, int layer, int kvh,
                    const int32_t *pos, int n, int *j, int32_t p)
{
    while (*j < n && pos[*j] < p)
        (*j)++;
    if (*j < n && pos[*j] == p)
        return kw_view_add_token(w, kv, layer, kvh, (*j)++);
    return kw_view_want_row(w, r, p);
}
