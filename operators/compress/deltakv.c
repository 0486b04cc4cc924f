/* compress.deltakv — DeltaKV's residual compression against reference tokens (METHODS.md),
 * an EVICT + STORE hook (CPU and CUDA engines), over a compressor that compress.deltakv_fit
 * fits in the calibration phase.
 *
 * Per layer a token is x = [K; V] of all its KV heads, K before RoPE (dim = 2 n_kv
 * head_dim). The first `sink` tokens stay in the pool. When a token leaves the window of
 * the last `recent` positions (after each step's attention; at the prompt's end after
 * on_prefill_end, so a full-attention reference branch still shares the whole prompt;
 * the sinks, references too, are copied to the hook and stay in the pool):
 *  - a reference ("center") token, every `every`-th position, moves to the hook whole
 *    (f32, before RoPE);
 *  - any other token is stored as latent = U^T (x - ref), ref the nearest preceding
 *    center by L2 (the sinks count as centers; one neighbour, as at inference), as f32,
 *    or int8 or int4 (two a byte) with one scale per token;
 * and their slots in the pool are freed at once, so the pool holds the sinks, the recent
 * window and the step's tokens, whatever the length. Before each layer's attention
 * (materialize) the hook rebuilds every token it holds, x = U latent + ref (centers
 * exactly), applies RoPE from the stored positions and writes them to the temporary pool;
 * the view stitches the pool's pages and those temporary pages per KV head. The
 * temporary pages are given back after the layer's attention. After a SELECT hook that
 * chose by position (OmniKV or ClusterKV, placed before DeltaKV in the stack; kvpool.h's
 * want lists), the hook rebuilds only the chosen positions it holds (for wants per row,
 * the union of the rows') and adds them to the rows that want them; after one that chose
 * among the pool's tokens only, the sequence fails. The
 * tokens rebuilt, and what rebuilding all would have been, are counted in kw_seq.
 *
 * Memory: the pool's payload falls to the sinks and the window; what the hook holds
 * (centers, latents, their positions and references) is recorded as held_peak_bytes
 * beside the pool's figures. Attention still reads every token (reconstructed): DeltaKV
 * saves memory, not bandwidth. The K rows come out of the (post-RoPE) pool and are
 * rotated back by their positions before encoding (the rotation is orthogonal, the
 * round trip is exact up to float rounding).
 *
 * On the CUDA engine the pool's rows are read back through its device callbacks, the
 * rebuilding stays on the host, and the engine copies the temporary pages to the device
 * (as bf16) before each layer's attention: every rebuilt token crosses to the device at
 * every layer of every step.
 *
 * Limits: a pool that stores K after RoPE (the default), bf16 pages on the CUDA engine,
 * and no other hook that evicts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "deltakv.h"
#include "deltakv_hook.h"
#include "kernels.h"
#include "kvweave/op.h"
#include "retrieve/keys.h"
#include "kvweave/util.h"

/* ---- the compressor ---- */

void kw__compressor_free(void *p)
{
    kw_deltakv_comp *c = p;
    if (c) {
        free(c->u);
        kw__deltakv_projs_free(c);
    }
    free(c);
}

const kw_type kw__type_compressor = {.name = KW_T_COMPRESSOR, .free = kw__compressor_free};

kw_value *kw__value_compressor(kw_deltakv_comp *c)
{
    return kw_value_new(&kw__type_compressor, c);
}

int kw__deltakv_refs(const float *x, const int32_t *pos, int m, const float *cx,
                     const int32_t *cpos, int n_c, int dim, int32_t *ref)
{
    enum { BT = 256 };
    float *g = NULL, *cn = malloc(sizeof(float) * (size_t)(n_c ? n_c : 1));
    if (!cn || !(g = malloc(sizeof(float) * (size_t)BT * (n_c ? n_c : 1)))) {
        free(cn);
        return KW_ENOMEM;
    }
    for (int c0 = 0; c0 < n_c; c0++) {
        const float *c = cx + (int64_t)c0 * dim;
        float a = 0;
        for (int j = 0; j < dim; j++)
            a += c[j] * c[j];
        cn[c0] = a;
    }
    for (int t0 = 0; t0 < m; t0 += BT) {
        int nb = m - t0 < BT ? m - t0 : BT;
        if (n_c > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, n_c, dim, 1.f,
                        x + (int64_t)t0 * dim, dim, cx, dim, 0.f, g, n_c);
        for (int t = t0; t < t0 + nb; t++) {
            const float *gt = g + (int64_t)(t - t0) * n_c;
            int best = -1;
            float bd = 0;
            for (int c0 = 0; c0 < n_c && cpos[c0] < pos[t]; c0++) { /* ties: earlier */
                float d = cn[c0] - 2 * gt[c0];
                if (best < 0 || d < bd)
                    bd = d, best = c0;
            }
            ref[t] = best;
        }
    }
    free(cn), free(g);
    return 0;
}

void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
            double *w, double *work, const int *lwork, int *info);

int kw__deltakv_basis(const double *cov, int dim, int latent, float *u, double *kept)
{
    double *a = malloc(sizeof(double) * (size_t)dim * dim), *w = malloc(sizeof(double) * dim);
    int lwork = -1, info = 0;
    double q;
    if (!a || !w) {
        free(a), free(w);
        return KW_ENOMEM;
    }
    memcpy(a, cov, sizeof(double) * (size_t)dim * dim);
    dsyev_("V", "U", &dim, a, &dim, w, &q, &lwork, &info);
    lwork = info == 0 ? (int)q : 3 * dim;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    if (!work) {
        free(a), free(w);
        return KW_ENOMEM;
    }
    dsyev_("V", "U", &dim, a, &dim, w, work, &lwork, &info);
    free(work);
    if (info != 0) {
        free(a), free(w);
        return KW_EINVAL;
    }
    /* eigenvalues ascending; eigenvector j is column j of the (column-major) a */
    double tot = 0, top = 0;
    for (int j = 0; j < dim; j++)
        tot += w[j] > 0 ? w[j] : 0;
    for (int c = 0; c < latent; c++) {
        int j = dim - 1 - c;
        top += w[j] > 0 ? w[j] : 0;
        for (int i = 0; i < dim; i++)
            u[(int64_t)i * latent + c] = (float)a[(int64_t)j * dim + i];
    }
    *kept = tot > 0 ? top / tot : 1;
    free(a), free(w);
    return 0;
}

/* ---- the hook (its types: deltakv_hook.h) ---- */

static int grow_i(void **p, int *cap, int need, size_t elem)
{
    int64_t c = *cap;
    int rc = kw_grow(p, &c, need, elem);
    *cap = (int)c;
    return rc;
}

static int64_t layer_bytes(const dstate *st, const dlayer *ly)
{
    int D = st->c->dim, r = st->c->latent;
    bool q = DP(st)->int8 || DP(st)->int4;
    int64_t per_l = (q ? kw__dkv_latent_bytes(DP(st), r) + 4 : (int64_t)r * 4) + 8;
    return (int64_t)ly->n_c * (D * 4 + 4 + (st->c->down ? 4 * r : 0)) + ly->n_l * per_l;
}

/* down() of layer l's centers from n_c0 on, kept beside them (a trained compressor
 * stores down(x) - down(ref): each reference's down is taken once). */
static int centers_down(const dstate *st, dseq *ds, dlayer *ly, int l, int n_c0)
{
    int n = ly->n_c - n_c0, r = st->c->latent, cap = ly->cap_cd, rc;
    if (n <= 0)
        return 0;
    if ((rc = grow_i((void **)&ly->cdown, &cap, ly->n_c, sizeof(float) * r)) < 0 ||
        (rc = kw__dkv_trained_scratch(ds, &st->c->down[l], n)) < 0)
        return rc;
    ly->cap_cd = cap;
    kw__deltakv_proj_apply(&st->c->down[l], ly->cx + (int64_t)n_c0 * st->c->dim, n,
                           ly->cdown + (int64_t)n_c0 * r, ds->scr);
    return 0;
}

/* The tokens of layer l between enc_to and limit leave the pool: centers whole, the
 * others as latents. */
static int encode(dstate *st, kw_lctx *c, kw_seq *s, dseq *ds, int l, int32_t limit)
{
    const kw_model_config *cf = &st->cfg;
    dlayer *ly = &ds->ly[l];
    int Hk = cf->n_head_kv, hd = cf->head_dim, D = st->c->dim, r = st->c->latent, rc;
    if (limit <= ly->enc_to)
        return 0;
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int n = kw_kvseq_len(s->kv, l, 0), j0 = -1, j1 = -1;
    for (int j = 0; j < n; j++) {
        int32_t p = kw__key_pos(s->kv, &mem, l, 0, j);
        if (p >= ly->enc_to && p < limit) {
            if (j0 < 0)
                j0 = j;
            j1 = j + 1;
        }
    }
    ly->enc_to = limit;
    if (j0 < 0)
        return 0;
    int m = j1 - j0;
    if ((rc = kw_grow((void **)&ds->x, &ds->x_cap, (int64_t)m * D, sizeof(float))) < 0
        || (rc = kw_grow((void **)&ds->pos, &ds->pos_cap, m, sizeof(int32_t))) < 0)
        return rc;
    if ((rc = kw_grow((void **)&ds->k, &ds->k_cap, (int64_t)m * Hk * hd, sizeof(float))) < 0
        || (rc = kw_grow((void **)&ds->res, &ds->res_cap, (int64_t)m * D, sizeof(float))) < 0)
        return rc;
    float *k = ds->k, *v = ds->res; /* v: one head's rows for now */
    for (int h = 0; h < Hk && rc == 0; h++) {
        if ((rc = kw_kvseq_rows_f32(s->kv, l, h, j0, m, 0, v)) == 0)
            for (int t = 0; t < m; t++)
                memcpy(k + ((int64_t)t * Hk + h) * hd, v + (int64_t)t * hd, sizeof(float) * hd);
        if (rc == 0 && (rc = kw_kvseq_rows_f32(s->kv, l, h, j0, m, 1, v)) == 0)
            for (int t = 0; t < m; t++)
                memcpy(ds->x + (int64_t)t * D + Hk * hd + h * hd, v + (int64_t)t * hd,
                       sizeof(float) * hd);
    }
    for (int t = 0; t < m; t++)
        ds->pos[t] = -kw__key_pos(s->kv, &mem, l, 0, j0 + t); /* rotate back */
    if (rc == 0)
        rc = kw_k_rope(KW_BK_CPU, NULL, k, ds->pos, m, Hk, hd, st->inv_freq, cf->rope_layout);
    for (int t = 0; t < m; t++) {
        memcpy(ds->x + (int64_t)t * D, k + (int64_t)t * Hk * hd, sizeof(float) * Hk * hd);
        ds->pos[t] = -ds->pos[t];
    }
    if (rc < 0)
        return rc;
    /* the references first (in position order; they are kept whole) */
    const int n_c0 = ly->n_c;
    for (int t = 0; t < m; t++) {
        if (!kw__deltakv_center(ds->pos[t], DP(st)->sink, DP(st)->every))
            continue;
        int cc = ly->cap_c; /* cx and cpos grow together */
        if ((rc = grow_i((void **)&ly->cpos, &cc, ly->n_c + 1, sizeof(int32_t))) < 0
            || (rc = grow_i((void **)&ly->cx, &ly->cap_c, ly->n_c + 1, sizeof(float) * D)) < 0)
            return rc;
        memcpy(ly->cx + (int64_t)ly->n_c * D, ds->x + (int64_t)t * D, sizeof(float) * D);
        ly->cpos[ly->n_c++] = ds->pos[t];
        ly->n_sink += ds->pos[t] < DP(st)->sink;
    }
    if (st->c->down && (rc = centers_down(st, ds, ly, l, n_c0)) < 0)
        return rc;
    /* then every other token's residual against its nearest preceding reference */
    float *res = ds->res;
    if ((rc = kw_grow((void **)&ds->ref, &ds->ref_cap, m, sizeof(int32_t))) < 0 ||
        (rc = kw__deltakv_refs(ds->x, ds->pos, m, ly->cx, ly->cpos, ly->n_c, D, ds->ref)) < 0)
        return rc;
    int n_res = 0, l0 = ly->n_l;
    for (int t = 0; t < m && rc == 0; t++) {
        int32_t p = ds->pos[t];
        if (kw__deltakv_center(p, DP(st)->sink, DP(st)->every))
            continue;
        int ref = ds->ref[t];
        if (ref < 0) { /* cannot happen: position 0 is a sink */
            rc = KW_EINTERNAL;
            break;
        }
        int need = ly->n_l + 1, cap = ly->cap_l;
        if ((rc = grow_i((void **)&ly->lref, &cap, need, sizeof(int32_t))) < 0)
            break;
        cap = ly->cap_l;
        if ((rc = grow_i((void **)&ly->lpos, &cap, need, sizeof(int32_t))) < 0)
            break;
        cap = ly->cap_l;
        if (DP(st)->int8 || DP(st)->int4) {
            if ((rc = grow_i((void **)&ly->li, &cap, need,
                             (size_t)kw__dkv_latent_bytes(DP(st), r))) < 0)
                break;
            cap = ly->cap_l;
            if ((rc = grow_i((void **)&ly->ls, &cap, need, sizeof(float))) < 0)
                break;
        } else if ((rc = grow_i((void **)&ly->lf, &cap, need, sizeof(float) * r)) < 0)
            break;
        ly->cap_l = cap;
        ly->lref[ly->n_l] = ref;
        ly->lpos[ly->n_l++] = p;
        const float *xt = ds->x + (int64_t)t * D, *cr = ly->cx + (int64_t)ref * D;
        for (int j = 0; j < D; j++) /* trained: x itself (down(x) - down(ref) below) */
            res[(int64_t)n_res * D + j] = st->c->down ? xt[j] : xt[j] - cr[j];
        n_res++;
    }
    if (rc < 0)
        return rc;
    if (n_res > 0) { /* latents = residuals . U */
        bool quant = DP(st)->int8 || DP(st)->int4;
        float *lat = quant ? malloc(sizeof(float) * (size_t)n_res * r) : ly->lf + (int64_t)l0 * r;
        if (!lat)
            return KW_ENOMEM;
        if (st->c->down) { /* down(x) - down(ref) */
            if ((rc = kw__dkv_trained_scratch(ds, &st->c->down[l], n_res)) < 0) {
                if (quant)
                    free(lat);
                return rc;
            }
            kw__deltakv_proj_apply(&st->c->down[l], res, n_res, lat, ds->scr);
            for (int t = 0; t < n_res; t++)
                for (int j = 0; j < r; j++)
                    lat[(int64_t)t * r + j] -= ly->cdown[(int64_t)ly->lref[l0 + t] * r + j];
        } else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n_res, r, D, 1.f, res, D,
                        st->c->u + (int64_t)l * D * r, r, 0.f, lat, r);
        if (quant) { /* symmetric, absmax / 127 (int8) or / 7 (int4) per token */
            int L = DP(st)->int4 ? 7 : 127;
            int64_t rb = kw__dkv_latent_bytes(DP(st), r);
            for (int t = 0; t < n_res; t++) {
                const float *a = lat + (int64_t)t * r;
                float mx = 0;
                for (int j = 0; j < r; j++)
                    mx = fabsf(a[j]) > mx ? fabsf(a[j]) : mx;
                float sc = mx / (float)L, inv = sc > 0 ? 1.f / sc : 0;
                int8_t *q = ly->li + (int64_t)(l0 + t) * rb;
                ly->ls[l0 + t] = sc;
                if (DP(st)->int4)
                    memset(q, 0, (size_t)rb);
                for (int j = 0; j < r; j++) {
                    long code = lrintf(a[j] * inv);
                    code = code < -L ? -L : code > L ? L : code;
                    if (DP(st)->int4) /* + 8 in a nibble, the lower first */
                        q[j >> 1] = (int8_t)((uint8_t)q[j >> 1]
                                             | (uint8_t)((code + 8) << ((j & 1) * 4)));
                    else
                        q[j] = (int8_t)code;
                }
            }
            free(lat);
        }
    }
    /* their pool slots go */
    for (int h = 0; h < Hk; h++) {
        int nh = kw_kvseq_len(s->kv, l, h), nk = 0;
        if ((rc = kw_grow((void **)&ds->keep, &ds->keep_cap, nh, sizeof(int32_t))) < 0)
            return rc;
        for (int j = 0; j < nh; j++)
            if (j < j0 || j >= j1 || ds->pos[j - j0] < DP(st)->sink)
                ds->keep[nk++] = j;
        if ((rc = kw_kvseq_keep(s->kv, l, h, ds->keep, nk)) < 0)
            return rc;
    }
    int64_t held = 0;
    for (int x = 0; x < cf->n_layer; x++)
        held += layer_bytes(st, &ds->ly[x]);
    if (held > s->held_peak_bytes)
        s->held_peak_bytes = held;
    return 0;
}

/* 0, or the sequence failed: the pool is one DeltaKV cannot use */
static int pool_ok(kw_seq *s, const kw_kvpool *pool)
{
    const kw_kvpool_opts *po = kw_kvpool_options(pool);
    if (po->device_pages && po->dtype == KW_KV_I8)
        return kw_seq_fail(s, KW_ENOSYS, "compress.deltakv: on the CUDA engine it needs bf16 "
                           "KV pages (its rebuilt tokens go to the temporary pool, which int8 "
                           "device pages do not take); drop run.kv_pages: int8");
    if (po->pre_rope)
        return kw_seq_fail(s, KW_ENOSYS, "compress.deltakv: a pool that stores K before RoPE "
                           "is not supported");
    return 0;
}

static int d_materialize(void *stp, kw_lctx *c, const kw_batch *b, kw_view **v)
{
    dstate *st = stp;
    st->tmp_mark = kw_kvpool_tmp_used(c->pool);
    int worst = 0;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *s = b->seqs[i];
        if (pool_ok(s, c->pool) < 0) {
            worst = worst ? worst : KW_ENOSYS;
            continue;
        }
        if (v[i]->by_pos > 1 + c->hook_index) {
            kw_seq_fail(s, KW_EINVAL, "compress.deltakv: a SELECT hook after it in the stack "
                        "chose by position; put it (retrieve.omnikv, retrieve.clusterkv) "
                        "before compress.deltakv in the decode stage's inputs");
            worst = worst ? worst : KW_EINVAL;
            continue;
        }
        if (!v[i]->by_pos && !kw_view_is_dense(v[i], s->kv, c->layer)) {
            kw_seq_fail(s, KW_ENOSYS, "compress.deltakv: a SELECT hook chose among the "
                        "pool's tokens only, not seeing DeltaKV's; only hooks that choose by "
                        "position (retrieve.omnikv, retrieve.clusterkv) combine with it");
            worst = worst ? worst : KW_ENOSYS;
            continue;
        }
        int rc = kw__dkv_rebuild(st, c, s, s->hook_seq[c->hook_index], v[i]);
        if (rc < 0) {
            kw_seq_fail(s, rc, "compress.deltakv: %s", kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

/* After attention: the temporary pages go back; tokens that left the recent window are
 * encoded (at the prompt's end, in on_prefill_end instead). */
static int d_after_attn(void *stp, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    (void)a;
    dstate *st = stp;
    kw_kvpool_tmp_truncate(c->pool, st->tmp_mark);
    int worst = 0;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->last_chunk[i])
            continue;
        kw_seq *s = b->seqs[i];
        if (pool_ok(s, c->pool) < 0) {
            worst = worst ? worst : KW_ENOSYS;
            continue;
        }
        int32_t end = b->pos[b->tok_first[i] + b->tok_n[i] - 1] + 1;
        int rc = encode(st, c, s, s->hook_seq[c->hook_index], c->layer, end - DP(st)->recent);
        if (rc < 0) {
            kw_seq_fail(s, rc, "compress.deltakv: %s", kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

static int d_prefill_end(void *stp, kw_lctx *c, const kw_batch *b)
{
    dstate *st = stp;
    int worst = 0;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *s = b->seqs[i];
        int rc = pool_ok(s, c->pool);
        if (rc == 0)
            rc = encode(st, c, s, s->hook_seq[c->hook_index], c->layer,
                        s->n_prompt - DP(st)->recent);
        if (rc < 0) {
            kw_seq_fail(s, rc, "compress.deltakv: %s", kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

static void seq_free(const dstate *st, dseq *ds)
{
    for (int l = 0; ds->ly && l < st->cfg.n_layer; l++) {
        dlayer *ly = &ds->ly[l];
        free(ly->cx), free(ly->cpos), free(ly->lf), free(ly->li), free(ly->ls);
        free(ly->lref), free(ly->lpos), free(ly->cdown);
    }
    free(ds->ly), free(ds->x), free(ds->res), free(ds->k), free(ds->pos), free(ds->keep);
    free(ds->ci), free(ds->li), free(ds->rp), free(ds->sp), free(ds->scr), free(ds->y);
    free(ds->ref), free(ds->u), free(ds->wp), free(ds->ord), free(ds->tp);
    free(ds);
}

static int d_seq_open(void *stp, kw_seq *s, int idx)
{
    const dstate *st = stp;
    dseq *ds = calloc(1, sizeof *ds);
    if (ds && !(ds->ly = calloc((size_t)st->cfg.n_layer, sizeof *ds->ly))) {
        free(ds);
        ds = NULL;
    }
    if (!ds)
        return KW_ENOMEM;
    s->hook_seq[idx] = ds;
    return 0;
}

static void d_seq_close(void *stp, kw_seq *s, int idx)
{
    if (s->hook_seq[idx])
        seq_free(stp, s->hook_seq[idx]);
    s->hook_seq[idx] = NULL;
}

static const kw_kvhook deltakv_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT | KW_ROLE_STORE,
    .needs = 0, .name = "compress.deltakv", .seq_open = d_seq_open,
    .materialize = d_materialize, .after_attn = d_after_attn,
    .on_prefill_end = d_prefill_end, .seq_close = d_seq_close,
    .tail_only = false, /* evicts while the prompt is prefilled */
};

static void params_free(void *pp)
{
    dparams *p = pp;
    if (p)
        kw_value_unref(p->comp);
    free(p);
}

static void state_free(void *sp)
{
    dstate *st = sp;
    if (st)
        free(st->inv_freq);
    free(st);
}

static int state_new(const void *pp, const kw_model_config *cfg, void **out, kw_error *err)
{
    const dparams *p = pp;
    const kw_deltakv_comp *c = kw_value_data(p->comp);
    *out = NULL;
    if (c->n_layer != cfg->n_layer || c->dim != 2 * cfg->n_head_kv * cfg->head_dim)
        return kw_error_set(err, KW_EINVAL, "compress.deltakv: the compressor was fitted for "
                            "%d layers of [K; V] of %d values; this model has %d layers of %d",
                            c->n_layer, c->dim, cfg->n_layer,
                            2 * cfg->n_head_kv * cfg->head_dim);
    dstate *st = calloc(1, sizeof *st);
    if (st)
        st->inv_freq = malloc(sizeof(float) * (size_t)(cfg->head_dim / 2));
    if (!st || !st->inv_freq) {
        state_free(st);
        return kw_error_set(err, KW_ENOMEM, "compress.deltakv: out of memory");
    }
    st->p = p;
    st->c = c;
    st->cfg = *cfg;
    kw_rope_inv_freq(cfg, st->inv_freq);
    *out = st;
    return 0;
}

int kw__deltakv_method(const kw_deltakv_opts *o, kw_value *comp, kw_kvmethod **out,
                       kw_error *err)
{
    *out = NULL;
    const kw_deltakv_comp *c = comp ? kw_value_data(comp) : NULL;
    if (!c || strcmp(kw_value_type(comp), KW_T_COMPRESSOR))
        return kw_error_set(err, KW_EINVAL, "compress.deltakv: no compressor");
    if (o->sink < 1 || o->every < 1 || o->recent < 0)
        return kw_error_set(err, KW_EINVAL, "compress.deltakv: sink %d (want >= 1), center "
                            "every %d positions (want >= 1), recent %d (want >= 0)",
                            o->sink, o->every, o->recent);
    if (o->int8 && o->int4)
        return kw_error_set(err, KW_EINVAL, "compress.deltakv: latent_int8 and latent_int4 "
                            "are both set; set one");
    kw_kvmethod *m = calloc(1, sizeof *m);
    dparams *p = calloc(1, sizeof *p);
    if (!m || !p) {
        free(m), free(p);
        return kw_error_set(err, KW_ENOMEM, "compress.deltakv: out of memory");
    }
    p->o = *o;
    p->comp = kw_value_ref(comp);
    *m = (kw_kvmethod){.hook = &deltakv_hook, .params = p, .params_free = params_free,
                       .state_new = state_new, .state_free = state_free};
    *out = m;
    return 0;
}

/* ---- the operator ---- */

static const kw_port ins[] = {
    {"compressor", KW_T_COMPRESSOR, KW_ONCE, 0,
     "the linear compressor (compress.deltakv_fit, from the calibration phase)"},
};
static const kw_port outs[] = {
    {"kvmethod", KW_T_KVMETHOD, KW_ONCE, 0, "the DeltaKV EVICT + STORE hook"},
};
static const kw_param_spec params[] = {
    {"sink", KW_PARAM_INT, "16", 1, 1 << 20, NULL, "first tokens kept whole in the pool"},
    {"center_ratio", KW_PARAM_FLOAT, "0.1", 1e-6, 1, NULL,
     "reference tokens: every round(1 / center_ratio)-th position (kept whole, outside the "
     "pool)"},
    {"recent", KW_PARAM_INT, "128", 0, 1 << 20, NULL,
     "last tokens kept whole in the pool; older ones are encoded"},
    {"latent_int8", KW_PARAM_BOOL, "false", 0, 0, NULL,
     "latents as int8 with one scale per token (f32 otherwise)"},
    {"latent_int4", KW_PARAM_BOOL, "false", 0, 0, NULL,
     "latents as int4, two a byte, with one scale per token (absmax / 7)"},
};

static int init(kw_opctx *c, void *st, kw_error *err)
{
    (void)st;
    if (kw_param_bool(c, "latent_int8") && kw_param_bool(c, "latent_int4"))
        return kw_error_set(err, KW_EINVAL, "compress.deltakv: latent_int8 and latent_int4 "
                            "are both set; set one");
    return 0;
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    double cr = kw_param_float(c, "center_ratio");
    if (!(cr > 0))
        return kw_task_fail(t, KW_EINVAL, "compress.deltakv: center_ratio %g: want > 0", cr);
    kw_deltakv_opts o = {.sink = (int)kw_param_int(c, "sink"), .every = (int)lround(1 / cr),
                         .recent = (int)kw_param_int(c, "recent"),
                         .int8 = kw_param_bool(c, "latent_int8"),
                         .int4 = kw_param_bool(c, "latent_int4")};
    kw_kvmethod *m;
    kw_error err = {0};
    int rc = kw__deltakv_method(&o, kw_task_in(t, 0), &m, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    kw_ctx_record(c, "kv_memory", "compressed: tokens older than the recent window leave the "
                  "pool as residual latents (held_peak_bytes)");
    return kw_task_out(t, 0, kw_value_kvmethod(m));
}

const kw_op kw_op_compress_deltakv = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.deltakv", .version = 1,
    .doc = "DeltaKV residual compression (EVICT + STORE; CPU and CUDA engines, bf16 pages "
           "on CUDA): tokens leaving the "
           "last `recent` positions leave the pool; every 1/center_ratio-th one (and the "
           "first `sink`, which stay in the pool) is a reference kept whole, any other is "
           "stored as down([K;V]) - down(nearest preceding reference), K before RoPE, with "
           "the compressor from compress.deltakv_fit (down = U^T) or compress.deltakv_load "
           "(trained); before attention every held token is rebuilt (up(latent) + "
           "reference, then RoPE) into the temporary pool, or after retrieve.omnikv (placed "
           "before it) only the tokens OmniKV chose. Saves KV memory (pool payload + "
           "held_peak_bytes), not bandwidth.",
    .lanes = KW_LANE_CPU, .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .init = init, .run = run,
    .kv_roles = KW_ROLE_EVICT | KW_ROLE_STORE,
};
