/* compress.deltakv: rebuilding the tokens the hook holds before a layer's attention
 * (deltakv.c says what the hook does; deltakv_hook.h has its state). */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "deltakv_hook.h"
#include "kernels.h"
#include "kvweave/util.h"

int kw__dkv_trained_scratch(dseq *ds, const kw_deltakv_proj *p, int m)
{
    return kw_grow((void **)&ds->scr, &ds->scr_cap, (int64_t)m * 2 * (p->inter + 1),
                   sizeof(float));
}

/* Stored tokens [0, n) of (l, h) as spans of main pool pages in row h of w. */
static int add_pool(kw_view *w, const kw_kvseq *kv, int l, int h, int P)
{
    int npg, n = kw_kvseq_len(kv, l, h), rc = 0;
    const int32_t *pages = kw_kvseq_pages(kv, l, h, &npg);
    for (int j = 0; j < n && rc == 0; j += P)
        rc = kw_view_add(w, KW_POOL_MAIN, pages[j / P], 0, n - j < P ? n - j : P);
    return rc;
}

/* Which held tokens of layer l to rebuild: every one (want NULL), or those whose
 * positions are in want (n_want, increasing): the indices of centers (past the sinks)
 * into ds->ci and of latents into ds->li. Centers' and latents' positions increase in
 * the order they were encoded. */
static int pick(dseq *ds, const dlayer *ly, const int32_t *want, int n_want, int *nc, int *nl)
{
    int rc = kw_grow((void **)&ds->ci, &ds->ci_cap, ly->n_c + 1, sizeof(int32_t));
    if (rc == 0)
        rc = kw_grow((void **)&ds->li, &ds->li_cap, ly->n_l + 1, sizeof(int32_t));
    if (rc < 0)
        return rc;
    *nc = *nl = 0;
    for (int i = ly->n_sink, w = 0; i < ly->n_c; i++) {
        while (want && w < n_want && want[w] < ly->cpos[i])
            w++;
        if (!want || (w < n_want && want[w] == ly->cpos[i]))
            ds->ci[(*nc)++] = i;
    }
    for (int i = 0, w = 0; i < ly->n_l; i++) {
        while (want && w < n_want && want[w] < ly->lpos[i])
            w++;
        if (!want || (w < n_want && want[w] == ly->lpos[i]))
            ds->li[(*nl)++] = i;
    }
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The union of the wants pos[0..n) whose rows (row, parallel) lie in [r0, r1),
 * increasing and without repeats, into ds->u; returns its count or a status. */
static int rows_union(dseq *ds, const int32_t *pos, const int32_t *row, int n, int r0, int r1)
{
    int rc = kw_grow((void **)&ds->u, &ds->u_cap, n + 1, sizeof(int32_t)), k = 0;
    if (rc < 0)
        return rc;
    for (int i = 0; i < n; i++)
        if (row[i] >= r0 && row[i] < r1)
            ds->u[k++] = pos[i];
    qsort(ds->u, (size_t)k, sizeof(int32_t), cmp_i32);
    int j = 0;
    for (int i = 0; i < k; i++)
        if (j == 0 || ds->u[i] != ds->u[j - 1])
            ds->u[j++] = ds->u[i];
    return j;
}

/* The positions a chosen view wants, increasing: its list, or for wants per row the
 * union of every row's (into ds->u). *n gets the count, or a status (NULL returned). */
static const int32_t *wanted_union(dseq *ds, const kw_view *w, int *n)
{
    *n = w->n_want;
    if (!w->want_by_row)
        return w->want_pos;
    *n = rows_union(ds, w->want_pos, w->want_row, w->n_want, 0, w->n_rows);
    return *n < 0 ? NULL : ds->u;
}

/* Adds to the current row of w the rebuilt tokens (temporary pages tp, P slots each) at
 * the positions want[0..n) (increasing); ord (m, rebuilt indices by increasing
 * position) and pos give the rebuilt tokens' positions. Consecutive slots of a page make
 * one span. */
static int add_wanted(kw_view *w, const int32_t *tp, int P, const int32_t *ord,
                      const int32_t *pos, int m, const int32_t *want, int n)
{
    int o = 0, run_t = -1, run_n = 0, rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        while (o < m && pos[ord[o]] < want[i])
            o++;
        if (o == m || pos[ord[o]] != want[i])
            continue; /* a position DeltaKV does not hold */
        int t = ord[o];
        if (run_n > 0 && t == run_t + run_n && t % P != 0) {
            run_n++;
            continue;
        }
        if (run_n > 0)
            rc = kw_view_add(w, KW_POOL_TMP, tp[run_t / P], run_t % P, run_n);
        run_t = t, run_n = 1;
    }
    if (rc == 0 && run_n > 0)
        rc = kw_view_add(w, KW_POOL_TMP, tp[run_t / P], run_t % P, run_n);
    return rc;
}

/* A chosen view's rows (spans into ds->sp, offsets into ds->rp) and its first nw wants
 * per row (positions then rows, into ds->wp), kept to be written again with the rebuilt
 * tokens once the view is reset. */
static int save_chosen(dseq *ds, const kw_view *w, int nw)
{
    int rows = w->n_rows, n_sp = w->row_ptr[rows], rc;
    if ((rc = kw_grow((void **)&ds->sp, &ds->sp_cap, n_sp + 1, sizeof(kw_span))) < 0
        || (rc = kw_grow((void **)&ds->rp, &ds->rp_cap, rows + 1, sizeof(int32_t))) < 0
        || (rc = kw_grow((void **)&ds->wp, &ds->wp_cap, 2 * (int64_t)nw + 1, sizeof(int32_t))) < 0)
        return rc;
    memcpy(ds->sp, w->spans, sizeof(kw_span) * (size_t)n_sp);
    for (int i = 0; i <= rows; i++)
        ds->rp[i] = w->row_ptr[i];
    for (int i = 0; i < nw; i++)
        ds->wp[i] = w->want_pos[i], ds->wp[nw + i] = w->want_row[i];
    return 0;
}

/* rebuild() for a view with wants per row over a linear compressor: each KV head
 * rebuilds only its rows' wants (the union over its query heads), x_h = U_h latent +
 * ref_h with U_h the rows of U for that head's K and V, so a token one head's rows
 * want costs one head's share. The view's rows keep the pool's tokens they chose, and
 * get the rebuilt ones they want. */
static int rebuild_by_head(dstate *st, kw_lctx *c, kw_seq *s, dseq *ds, kw_view *w)
{
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, Hk = cf->n_head_kv, hd = cf->head_dim, D = st->c->dim, r = st->c->latent;
    int P = kw_kvpool_options(c->pool)->page_tokens, g = cf->n_head / Hk, rows = w->n_rows;
    bool pq = w->per_qhead;
    const float *U = st->c->u + (int64_t)l * D * r;
    dlayer *ly = &ds->ly[l];
    if (rows != (pq ? cf->n_head : Hk))
        return KW_EINVAL;
    int nw = w->n_want, rc;
    if ((rc = save_chosen(ds, w, nw)) < 0 || (rc = kw_view_reset(w, rows, pq)) < 0)
        return rc;
    int64_t held = ly->n_c - ly->n_sink + ly->n_l;
    ds->pairs_full += held * Hk;
    for (int h = 0, wi = 0; h < Hk; h++) {
        int r0 = pq ? h * g : h, r1 = pq ? r0 + g : h + 1, nc, nl;
        int n_u = rows_union(ds, ds->wp, ds->wp + nw, nw, r0, r1);
        if (n_u < 0)
            return n_u;
        if ((rc = pick(ds, ly, ds->u, n_u, &nc, &nl)) < 0)
            return rc;
        int m = nc + nl, npg = (m + P - 1) / P;
        ds->pairs += m;
        if ((rc = kw_grow((void **)&ds->x, &ds->x_cap, (int64_t)m * hd + 1, sizeof(float))) < 0
            || (rc = kw_grow((void **)&ds->k, &ds->k_cap, (int64_t)m * hd + 1, sizeof(float))) < 0
            || (rc = kw_grow((void **)&ds->pos, &ds->pos_cap, m + 1, sizeof(int32_t))) < 0
            || (rc = kw_grow((void **)&ds->res, &ds->res_cap, (int64_t)nl * r + 1,
                             sizeof(float))) < 0
            || (rc = kw_grow((void **)&ds->ord, &ds->ord_cap, m + 1, sizeof(int32_t))) < 0
            || (rc = kw_grow((void **)&ds->tp, &ds->tp_cap, npg + 1, sizeof(int32_t))) < 0)
            return rc;
        /* K_h into ds->k and V_h into ds->x, (m, head_dim) each: centers, then latents */
        int64_t ko = (int64_t)h * hd, vo = (int64_t)(Hk + h) * hd;
        for (int t = 0; t < m; t++) {
            bool ctr = t < nc;
            int i = ctr ? ds->ci[t] : ds->li[t - nc];
            const float *x = ly->cx + (int64_t)(ctr ? i : ly->lref[i]) * D;
            memcpy(ds->k + (int64_t)t * hd, x + ko, sizeof(float) * hd);
            memcpy(ds->x + (int64_t)t * hd, x + vo, sizeof(float) * hd);
            ds->pos[t] = ctr ? ly->cpos[i] : ly->lpos[i];
            if (ctr)
                continue;
            kw__dkv_latent(st, ly, i, r, ds->res + (int64_t)(t - nc) * r);
        }
        if (nl > 0) { /* + latent . U_h^T, K's rows and V's rows of U */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nl, hd, r, 1.f, ds->res, r,
                        U + ko * r, r, 1.f, ds->k + (int64_t)nc * hd, hd);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nl, hd, r, 1.f, ds->res, r,
                        U + vo * r, r, 1.f, ds->x + (int64_t)nc * hd, hd);
        }
        if (m > 0 && (rc = kw_k_rope(KW_BK_CPU, NULL, ds->k, ds->pos, m, 1, hd, st->inv_freq,
                                     cf->rope_layout)) < 0)
            return rc;
        for (int a = 0, b = nc, o = 0; o < m; o++)
            ds->ord[o] = b == m || (a < nc && ds->pos[a] < ds->pos[b]) ? a++ : b++;
        for (int t0 = 0; t0 < m; t0 += P) {
            int32_t page, *pp;
            if ((rc = kw_kvpool_tmp_alloc(c->pool, &page)) < 0)
                return kw_seq_fail(s, rc, "compress.deltakv: the temporary pool is full "
                                   "(raise the engine's n_tmp_pages)");
            ds->tp[t0 / P] = page;
            float *pg = kw_kvpool_tmp_page(c->pool, page, &pp);
            int n = m - t0 < P ? m - t0 : P;
            memcpy(pg, ds->k + (int64_t)t0 * hd, sizeof(float) * (size_t)n * hd);
            memcpy(pg + (int64_t)P * hd, ds->x + (int64_t)t0 * hd, sizeof(float) * (size_t)n * hd);
            memcpy(pp, ds->pos + t0, sizeof(int32_t) * (size_t)n);
        }
        for (int row = r0; row < r1; row++) {
            if ((rc = kw_view_begin_row(w, row)) < 0)
                return rc;
            for (int j = ds->rp[row]; j < ds->rp[row + 1]; j++)
                if ((rc = kw_view_add(w, ds->sp[j].pool, ds->sp[j].page, ds->sp[j].first,
                                      ds->sp[j].n)) < 0)
                    return rc;
            int a = wi;
            while (wi < nw && ds->wp[nw + wi] == row)
                wi++;
            if ((rc = add_wanted(w, ds->tp, P, ds->ord, ds->pos, m, ds->wp + a, wi - a)) < 0)
                return rc;
        }
    }
    return 0;
}

/* Rebuilds what layer l holds (all of it for a dense view; for a view a SELECT hook chose
 * by position, only the positions it wants), writes the tokens to temporary pages (per KV
 * head) and adds them to the rows: a dense view becomes the pool's pages plus them; a
 * chosen one keeps its rows (the chosen tokens of the pool) with them appended, to every
 * row, or with wants per row (rows per query head allowed) to the rows that want them. */
int kw__dkv_rebuild(dstate *st, kw_lctx *c, kw_seq *s, dseq *ds, kw_view *w)
{
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, Hk = cf->n_head_kv, hd = cf->head_dim, D = st->c->dim, r = st->c->latent;
    int P = kw_kvpool_options(c->pool)->page_tokens;
    dlayer *ly = &ds->ly[l];
    bool chosen = w->by_pos != 0, by_row = chosen && w->want_by_row;
    if (by_row && !st->c->up) {
        int rc = rebuild_by_head(st, c, s, ds, w);
        s->rebuilt = ds->pairs / Hk, s->rebuilt_full = ds->pairs_full / Hk;
        return rc;
    }
    int nc, nl, rc, n_u = 0;
    const int32_t *u = chosen ? wanted_union(ds, w, &n_u) : NULL;
    if (chosen && !u && n_u != 0)
        return n_u < 0 ? n_u : KW_ENOMEM;
    if ((rc = pick(ds, ly, u, n_u, &nc, &nl)) < 0)
        return rc;
    int m = nc + nl;
    ds->pairs += (int64_t)m * Hk;
    ds->pairs_full += (int64_t)(ly->n_c - ly->n_sink + ly->n_l) * Hk;
    s->rebuilt = ds->pairs / Hk, s->rebuilt_full = ds->pairs_full / Hk;
    if (m == 0 && !chosen)
        return 0; /* the dense view is the pool's */
    if ((rc = kw_grow((void **)&ds->x, &ds->x_cap, (int64_t)m * D + 1, sizeof(float))) < 0
        || (rc = kw_grow((void **)&ds->k, &ds->k_cap, (int64_t)m * Hk * hd + 1, sizeof(float))) < 0
        || (rc = kw_grow((void **)&ds->pos, &ds->pos_cap, m + 1, sizeof(int32_t))) < 0
        || (rc = kw_grow((void **)&ds->res, &ds->res_cap, (int64_t)nl * r + 1, sizeof(float))) < 0)
        return rc;
    for (int t = 0; t < nc; t++) {
        memcpy(ds->x + (int64_t)t * D, ly->cx + (int64_t)ds->ci[t] * D, sizeof(float) * D);
        ds->pos[t] = ly->cpos[ds->ci[t]];
    }
    if (nl > 0) { /* x = ref + latent . U^T, the chosen latents gathered into res */
        float *xl = ds->x + (int64_t)nc * D, *lat = ds->res;
        for (int t = 0; t < nl; t++) {
            int i = ds->li[t];
            kw__dkv_latent(st, ly, i, r, lat + (int64_t)t * r);
            memcpy(xl + (int64_t)t * D, ly->cx + (int64_t)ly->lref[i] * D, sizeof(float) * D);
            ds->pos[nc + t] = ly->lpos[i];
        }
        if (st->c->up) { /* up(latent) + ref */
            if ((rc = kw__dkv_trained_scratch(ds, &st->c->up[l], nl)) < 0 ||
                (rc = kw_grow((void **)&ds->y, &ds->y_cap, (int64_t)nl * D, sizeof(float))) < 0)
                return rc;
            kw__deltakv_proj_apply(&st->c->up[l], lat, nl, ds->y, ds->scr);
            for (int64_t i = 0; i < (int64_t)nl * D; i++)
                xl[i] += ds->y[i];
        } else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nl, D, r, 1.f, lat, r,
                        st->c->u + (int64_t)l * D * r, r, 1.f, xl, D);
    }
    /* K (the first n_kv x head_dim of each row) gets RoPE at its position */
    for (int t = 0; t < m; t++)
        memcpy(ds->k + (int64_t)t * Hk * hd, ds->x + (int64_t)t * D, sizeof(float) * Hk * hd);
    if (m > 0 && (rc = kw_k_rope(KW_BK_CPU, NULL, ds->k, ds->pos, m, Hk, hd, st->inv_freq,
                                 cf->rope_layout)) < 0)
        return rc;
    /* a chosen view's rows and wants, kept to be written again with the rebuilt tokens */
    int g = cf->n_head / Hk, rows = chosen ? w->n_rows : Hk;
    bool pq = chosen && w->per_qhead;
    int nw = by_row ? w->n_want : 0;
    if (chosen && rows != (pq ? cf->n_head : Hk))
        return KW_EINVAL;
    if (chosen && (rc = save_chosen(ds, w, nw)) < 0)
        return rc;
    /* the rebuilt tokens by increasing position (centers and latents each increase) */
    int npg = (m + P - 1) / P;
    if ((rc = kw_grow((void **)&ds->ord, &ds->ord_cap, m + 1, sizeof(int32_t))) < 0
        || (rc = kw_grow((void **)&ds->tp, &ds->tp_cap, (int64_t)Hk * npg + 1,
                         sizeof(int32_t))) < 0)
        return rc;
    for (int a = 0, b = nc, o = 0; o < m; o++)
        ds->ord[o] = b == m || (a < nc && ds->pos[a] < ds->pos[b]) ? a++ : b++;
    for (int h = 0; h < Hk; h++)
        for (int t0 = 0; t0 < m; t0 += P) {
            int32_t page, *pp;
            if ((rc = kw_kvpool_tmp_alloc(c->pool, &page)) < 0)
                return kw_seq_fail(s, rc, "compress.deltakv: the temporary pool is full "
                                   "(raise the engine's n_tmp_pages)");
            ds->tp[(int64_t)h * npg + t0 / P] = page;
            float *pg = kw_kvpool_tmp_page(c->pool, page, &pp);
            int n = m - t0 < P ? m - t0 : P;
            for (int t = 0; t < n; t++) {
                memcpy(pg + (int64_t)t * hd, ds->k + ((int64_t)(t0 + t) * Hk + h) * hd,
                       sizeof(float) * hd);
                memcpy(pg + (int64_t)(P + t) * hd, ds->x + (int64_t)(t0 + t) * D + (Hk + h) * hd,
                       sizeof(float) * hd);
                pp[t] = ds->pos[t0 + t];
            }
        }
    if ((rc = kw_view_reset(w, rows, pq)) < 0)
        return rc;
    for (int row = 0, wi = 0; row < rows; row++) {
        int h = pq ? row / g : row;
        const int32_t *tp = ds->tp + (int64_t)h * npg;
        if ((rc = kw_view_begin_row(w, row)) < 0)
            return rc;
        if (!chosen && (rc = add_pool(w, s->kv, l, h, P)) < 0)
            return rc;
        for (int j = chosen ? ds->rp[row] : 0; chosen && j < ds->rp[row + 1]; j++)
            if ((rc = kw_view_add(w, ds->sp[j].pool, ds->sp[j].page, ds->sp[j].first,
                                  ds->sp[j].n)) < 0)
                return rc;
        if (by_row) { /* this row's wants: wp[wi ..) while their row is this one */
            int a = wi;
            while (wi < nw && ds->wp[nw + wi] == row)
                wi++;
            if ((rc = add_wanted(w, tp, P, ds->ord, ds->pos, m, ds->wp + a, wi - a)) < 0)
                return rc;
            continue;
        }
        for (int t0 = 0; t0 < m; t0 += P)
            if ((rc = kw_view_add(w, KW_POOL_TMP, tp[t0 / P], 0, m - t0 < P ? m - t0 : P)) < 0)
                return rc;
    }
    return 0;
}

