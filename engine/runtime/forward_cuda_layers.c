/* The building blocks of a CUDA step that the dense step (forward_cuda.c) and steps with
 * KV hooks (forward_cuda_hooks.c) share: pinned list buffers, attention arguments and
 * plans, token placement, and the per-layer kernels around attention (norms, the
 * projections (cuBLAS, or the fused weight-streaming passes at 1-2 rows), RoPE, page
 * append, MLP) and the logit rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda.h"
#include "kernels.h"
#include "kw_config.h"

#if KW_HAVE_CUDA
#include "forward_cuda_internal.h"

/* Grows b to at least bytes (contents not kept). */
int kw__cf_pinbuf_grow(pinbuf *b, size_t bytes, const char *what, kw_error *err)
{
    if (bytes <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : (size_t)1 << 20;
    while (cap < bytes)
        cap *= 2;
    cudaFreeHost(b->h);
    cudaFree(b->d);
    b->h = NULL, b->d = NULL, b->cap = 0;
    CU(cudaMallocHost((void **)&b->h, cap), what);
    CU(cudaMalloc((void **)&b->d, cap), what);
    b->cap = cap;
    return 0;
}

int kw__cf_stage_reserve(kw_cfwd *c, size_t bytes, kw_error *err)
{
    return kw__cf_pinbuf_grow(&c->stage, bytes, "step buffer", err);
}

/* Attention arguments with the pool, the queries, the output and the scale filled in. */
kw_cuda_attn kw__cf_decode_args(const kw_cfwd *c)
{
    kw_cuda_attn a = {0};
    a.base[0] = c->kv_base, a.base[1] = c->d_tmp ? c->d_tmp : c->kv_base;
    a.pos[0] = c->kv_pos, a.pos[1] = c->d_tmp ? c->d_tmp_pos : c->kv_pos;
    a.kv = c->i8 ? KW_CUDA_KV_I8 : KW_CUDA_KV_BF16;
    a.page_tokens = c->P, a.head_dim = c->cfg.head_dim;
    a.q = c->q, a.out = c->att, a.scale = 1.f / sqrtf((float)c->cfg.head_dim);
    a.partial = c->partial;
    return a;
}

kw_cuda_prefill kw__cf_prefill_args(const kw_cfwd *c, int n_seq)
{
    kw_cuda_prefill a = {0};
    a.base[0] = c->kv_base, a.base[1] = c->d_tmp ? c->d_tmp : c->kv_base;
    a.pos[0] = c->kv_pos, a.pos[1] = c->d_tmp ? c->d_tmp_pos : c->kv_pos;
    a.kv = KW_CUDA_KV_BF16, a.page_tokens = c->P, a.head_dim = c->cfg.head_dim;
    a.n_head = c->cfg.n_head, a.n_kv = c->cfg.n_head_kv, a.n_seq = n_seq;
    a.q = c->q, a.out = c->att, a.scale = 1.f / sqrtf((float)c->cfg.head_dim);
    /* cuDNN's kernel runs only where a call says its rows are ordered (run_layers' dense
     * steps); every other call gets the best of kvweave's own */
    a.kernel = c->prefill_kernel == KW_CUDA_PREFILL_CUDNN ? KW_CUDA_PREFILL_AUTO
                                                          : c->prefill_kernel;
    return a;
}

const int32_t *kw__cf_ordered_rows(int n_seq, int n_kv, const int32_t *tok_off,
                                   const int32_t *row_tok, int32_t *kv_len, int cap)
{
    if (n_seq > cap)
        return NULL;
    for (int s = 0; s < n_seq; s++) {
        kv_len[s] = row_tok[s * n_kv];
        for (int h = 1; h < n_kv; h++)
            if (row_tok[s * n_kv + h] != kv_len[s])
                return NULL;
        if (kv_len[s] < tok_off[s + 1] - tok_off[s])
            return NULL;
    }
    return kv_len;
}

/* ---- int8 pages in prefill (forward_cuda_internal.h) ---- */

static int64_t i8_cap_pages(const kw_cfwd *c, int64_t n_pages)
{
    const kw_model_config *f = &c->cfg;
    int64_t cap = n_pages / f->n_layer + 1;
    if (f->n_ctx_train > 0) {
        int64_t seq = (int64_t)f->n_head_kv * ((f->n_ctx_train + c->P - 1) / c->P + 1);
        cap = seq < cap ? seq : cap;
    }
    return cap;
}

int64_t kw__cf_i8_reserve(const kw_cfwd *c, int64_t n_pages, int64_t *cap_pages)
{
    *cap_pages = c->i8 ? i8_cap_pages(c, n_pages) : 0;
    /* bf16 K and V, positions, and the page list's entry */
    return *cap_pages * ((int64_t)2 * c->P * c->cfg.head_dim * 2 + (int64_t)c->P * 4 + 4);
}

/* c->i8_plan, per layer (1 + 5 ns ints): the group count, then per group its first row,
 * rows, largest page count of a row, first prefill item and item count. */
int kw__cf_i8_plan(kw_cfwd *c, int ns, const int32_t *row_tok, const int32_t *tok_off,
                   int32_t *dst, int64_t *need, kw_error *err)
{
    *need = 0;
    const int L = c->cfg.n_layer, nkv = c->cfg.n_head_kv, P = c->P, rows = ns * nkv;
    const size_t per = 1 + 5 * (size_t)ns;
    if ((size_t)L * per > c->i8_plan_cap) {
        int32_t *p = realloc(c->i8_plan, sizeof(int32_t) * (size_t)L * per);
        if (!p)
            return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
        c->i8_plan = p, c->i8_plan_cap = (size_t)L * per;
    }
    int items_before[KW_FWD_MAX_SEQ + 1];
    for (int i = 0; i <= ns; i++)
        items_before[i] = kw_cuda_prefill_items(i, tok_off, NULL);
    for (int l = 0; l < L; l++) {
        const int32_t *rt = row_tok + (size_t)l * rows;
        int32_t *d = dst + (size_t)l * rows, *pl = c->i8_plan + (size_t)l * per, *g = NULL;
        int64_t off = 0;
        pl[0] = 0;
        for (int i = 0; i < ns; i++) {
            int64_t np = 0;
            for (int h = 0; h < nkv; h++)
                np += (rt[i * nkv + h] + P - 1) / P;
            if (np > c->i8_cap)
                return kw_error_set(err, KW_ELIMIT, "cuda: sequence %d of the step holds %lld "
                                    "pages in layer %d, more than the %lld pages of the int8 "
                                    "prefill scratch", i, (long long)np, l,
                                    (long long)c->i8_cap);
            if (!g || off + np > c->i8_cap) {
                g = pl + 1 + 5 * pl[0]++;
                g[0] = i * nkv, g[1] = 0, g[2] = 0, g[3] = items_before[i];
                off = 0;
            }
            for (int h = 0; h < nkv; h++) {
                int np_h = (rt[i * nkv + h] + P - 1) / P;
                d[i * nkv + h] = (int32_t)off;
                off += np_h;
                g[2] = np_h > g[2] ? np_h : g[2];
            }
            g[1] += nkv;
            g[4] = items_before[i + 1] - g[3];
            *need = off > *need ? off : *need;
        }
    }
    return 0;
}

/* Doubling from 1024 pages (capped at i8_cap), so few steps grow it. cudaFree waits for
 * the device: nothing in flight reads the old scratch. */
int kw__cf_i8_grow(kw_cfwd *c, int64_t pages, kw_error *err)
{
    if (pages <= c->i8_have)
        return 0;
    int64_t n = c->i8_have ? c->i8_have : 1024;
    while (n < pages)
        n *= 2;
    n = n < c->i8_cap ? n : c->i8_cap;
    n = n > pages ? n : pages;
    cudaFree(c->i8_pages), cudaFree(c->i8_pos), cudaFree(c->i8_iota);
    c->i8_pages = NULL, c->i8_pos = c->i8_iota = NULL, c->i8_have = 0;
    const size_t P = (size_t)c->P, hd = (size_t)c->cfg.head_dim;
    int32_t *iota = malloc((size_t)n * 4);
    bool ok = iota && cudaMalloc(&c->i8_pages, (size_t)n * 2 * P * hd * 2) == cudaSuccess &&
              cudaMalloc((void **)&c->i8_pos, (size_t)n * P * 4) == cudaSuccess &&
              cudaMalloc((void **)&c->i8_iota, (size_t)n * 4) == cudaSuccess;
    for (int64_t i = 0; ok && i < n; i++)
        iota[i] = (int32_t)i;
    ok = ok && cudaMemcpyAsync(c->i8_iota, iota, (size_t)n * 4, cudaMemcpyHostToDevice, c->st)
                   == cudaSuccess && cudaStreamSynchronize(c->st) == cudaSuccess;
    free(iota);
    if (!ok) {
        (void)cudaGetLastError();
        return kw_error_set(err, KW_ENOMEM, "cuda: no device memory for the int8 prefill "
                            "scratch (%lld bf16 pages, %.0f MiB; at most %lld, counted at "
                            "open)", (long long)n, (double)n * (2 * P * hd * 2 + P * 4 + 4)
                            / 1048576.0, (long long)c->i8_cap);
    }
    c->i8_have = n;
    return 0;
}

int kw__cf_i8_prefill(kw_cfwd *c, const kw_cuda_prefill *a, int l, const int32_t *d_dst,
                      kw_error *err)
{
    const int32_t *pl = c->i8_plan + (size_t)l * (1 + 5 * (size_t)a->n_seq);
    for (int k = 0; k < pl[0]; k++) {
        const int32_t *g = pl + 1 + 5 * k;
        KTRY(kw_cuda_rows_i8_to_bf16(c->st, c->kv_base, c->kv_pos, c->P, c->cfg.head_dim, g[1],
                                     a->pages, a->row_ptr + g[0], a->row_tokens + g[0],
                                     d_dst + g[0], g[2], c->i8_pages, c->i8_pos));
        kw_cuda_prefill b = *a;
        b.base[0] = b.base[1] = c->i8_pages;
        b.pos[0] = b.pos[1] = c->i8_pos;
        b.pages = c->i8_iota, b.row_ptr = d_dst;
        b.items = a->items + 2 * (size_t)g[3], b.n_items = g[4];
        KTRY(kw_cuda_attn_prefill(c->st, &b));
    }
    return 0;
}

/* The split-K item size for a decode call over rows of these lengths: whole waves of the
 * device's concurrent decode blocks (kw_cuda_attn_plan_tokens). */
int kw__cf_plan_tokens(const kw_cfwd *c, int n_rows, const int32_t *row_tokens, int cap)
{
    return kw_cuda_attn_plan_tokens(n_rows, row_tokens, c->attn_slots, cap);
}

/* 1. of a step: every step token placed in the pool for every layer (slots). */
void kw__cf_place_tokens(kw_cfwd *c, kw_fwd_step *s, int n_tok)
{
    const int L = c->cfg.n_layer, nkv = c->cfg.n_head_kv;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < s->n_seq; i++) {
            int32_t *sl = c->slots + ((size_t)l * n_tok + s->tok_first[i]) * nkv;
            int ra = kw_kvseq_append_slots(s->seqs[i]->kv, l, s->pos + s->tok_first[i],
                                           s->tok_n[i], sl);
            if (ra < 0) {
                if (s->seq_rc[i] == 0)
                    s->seq_rc[i] = ra;
                for (int j = 0; j < s->tok_n[i] * nkv; j++)
                    sl[j] = -1;
            }
        }
}

int kw__cf_ensure_partial(kw_cfwd *c, size_t need, kw_error *err)
{
    if (need <= c->partial_cap)
        return 0;
    cudaFree(c->partial);
    c->partial = NULL;
    c->partial_cap = 0;
    CU(cudaMalloc((void **)&c->partial, need * 2 * 4), "split-K partials");
    c->partial_cap = need * 2;
    return 0;
}

/* Whether a dense decode step of n_tok rows takes the folded forms: the weight-streaming
 * passes serve it (n_tok <= kw_cuda_gemv_rows()), its rows are few enough for them to
 * pay (KW_CF_FOLD_ROWS) and KVWEAVE_CUDA_FOLD is not 0. */
bool kw__cf_fold_ok(const kw_cfwd *c, int n_tok)
{
    const kw_model_config *f = &c->cfg;
    int qd = f->n_head * f->head_dim;
    return c->fold_on && c->xg && n_tok <= kw_cuda_gemv_rows() && n_tok <= KW_CF_FOLD_ROWS &&
           f->n_embd % 8 == 0 && qd % 8 == 0 && f->n_ff % 8 == 0;
}

/* The first layer's folded norm input, from the embedded rows. */
int kw__cf_fold_first(kw_cfwd *c, int n_tok, kw_error *err)
{
    KTRY(kw_cuda_norm_parts(c->st, c->x, c->L[0].attn_norm, c->xg, c->ss, n_tok,
                            c->cfg.n_embd));
    return 0;
}

/* Norm and the Q, K, V projections of layer l (K before RoPE in c->k), or with fold the
 * folded forms (see kw__cf_layer_qkv in forward_cuda_internal.h). */
int kw__cf_layer_qkv(kw_cfwd *c, int l, int n_tok, const kw_cf_fold *fold, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    const clw *w = &c->L[l];
    int E = f->n_embd, qd = f->n_head * f->head_dim, kd = f->n_head_kv * f->head_dim;
    void *st = c->st;
    kw_cuda_gemv_out o[3] = {{w->wq, w->bq, c->q, qd}, {w->wk, w->bk, c->k, kd},
                             {w->wv, w->bv, c->v, kd}};
    if (fold) {
        /* int8 pages: a row's scale needs the whole row, which the pass writes element by
         * element, so RoPE and the append stay a kernel of their own */
        const bool rope = f->rope_layout == KW_ROPE_INTERLEAVED && !c->i8;
        kw_cuda_gemv_ext e = {.ss_in = c->ss, .eps = f->norm_eps};
        if (rope)
            e.pos = fold->pos, e.slots = fold->slots, e.inv_freq = c->inv_freq,
            e.head_dim = f->head_dim, e.page_tokens = c->P, e.kv_base = c->kv_base,
            e.kv_pos = c->kv_pos;
        KTRY(kw_cuda_gemv_multi_ext(st, c->xg, n_tok, E, o, 3, 0, &e));
        return rope;
    }
    KTRY(kw_cuda_rmsnorm_bf16(st, c->x, w->attn_norm, c->xb, n_tok, E, f->norm_eps));
    if (n_tok <= kw_cuda_gemv_rows() && E % 8 == 0) { /* decode: one weight-streaming pass */
        KTRY(kw_cuda_gemv_multi_bf16(st, c->xb, n_tok, E, o, 3, 0));
        return 0;
    }
    KTRY(kw_cuda_linear_bf16(st, c->xb, w->wq, w->bq, c->q, n_tok, qd, E));
    KTRY(kw_cuda_linear_bf16(st, c->xb, w->wk, w->bk, c->k, n_tok, kd, E));
    KTRY(kw_cuda_linear_bf16(st, c->xb, w->wv, w->bv, c->v, n_tok, kd, E));
    return 0;
}

/* RoPE on q and k, then K and V into their slots of layer l (bf16 or int8 pages). */
int kw__cf_layer_rope_append(kw_cfwd *c, int l, int n_tok, const int32_t *d_pos,
                             const int32_t *d_slots, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    int il = f->rope_layout == KW_ROPE_INTERLEAVED, nkv = f->n_head_kv;
    KTRY((c->i8 ? kw_cuda_rope_append_i8 : kw_cuda_rope_append)(
        c->st, c->q, c->k, c->v, d_pos, n_tok, f->n_head, nkv, f->head_dim, c->inv_freq, il,
        c->kv_base, c->kv_pos, c->P, d_slots + (size_t)l * n_tok * nkv));
    return 0;
}

/* Output projection, residual and the MLP of layer l (attention output in c->att, or
 * already as bf16 in c->xb when att_bf16). With fold (kw__cf_fold_ok): the residual
 * passes write the next norm's input (the MLP's, then the next layer's; the last layer's
 * output norm is not folded) and the gate/up pass takes it. */
int kw__cf_layer_post(kw_cfwd *c, int l, int n_tok, bool att_bf16, bool fold, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    const clw *w = &c->L[l];
    int E = f->n_embd, qd = f->n_head * f->head_dim, F = f->n_ff;
    void *st = c->st;
    if (!att_bf16)
        KTRY(kw_cuda_to_bf16(st, c->att, c->xb, (int64_t)n_tok * qd));
    if (fold) {
        kw_cuda_gemv_ext e = {.g_out = w->ffn_norm, .xg_out = c->xg, .ss_out = c->ss};
        kw_cuda_gemv_out o = {w->wo, NULL, c->x, E};
        KTRY(kw_cuda_gemv_multi_ext(st, c->xb, n_tok, qd, &o, 1, 1, &e));
        e = (kw_cuda_gemv_ext){.ss_in = c->ss, .eps = f->norm_eps};
        /* a one-row step's gate/up pass does not overlap the output pass (KW_CF_PDL) */
        const bool apart = n_tok == 1 && kw_cuda_pdl_auto() && kw_cuda_pdl_on();
        if (apart)
            kw_cuda_pdl_step(0);
        KTRY(kw_cuda_gemv_swiglu_ext(st, c->xg, w->wgate, w->wup, c->gate, n_tok, F, E, &e));
        if (apart) /* kw__cfwd_run clears the choice after the layers, error or not */
            kw_cuda_pdl_step(1);
        const bool last = l + 1 == f->n_layer;
        e = (kw_cuda_gemv_ext){.g_out = last ? NULL : c->L[l + 1].attn_norm,
                               .xg_out = last ? NULL : c->xg, .ss_out = last ? NULL : c->ss};
        o = (kw_cuda_gemv_out){w->wdown, NULL, c->x, E};
        KTRY(kw_cuda_gemv_multi_ext(st, c->gate, n_tok, F, &o, 1, 1, &e));
        return 0;
    }
    if (n_tok <= kw_cuda_gemv_rows() && qd % 8 == 0 && E % 8 == 0 && F % 8 == 0) {
        /* decode: weight-streaming passes with the residual adds and SwiGLU fused in; the
         * SwiGLU output (bf16) lives in the gate buffer, unused on this path */
        kw_cuda_gemv_out o = {w->wo, NULL, c->x, E};
        KTRY(kw_cuda_gemv_multi_bf16(st, c->xb, n_tok, qd, &o, 1, 1));
        KTRY(kw_cuda_rmsnorm_bf16(st, c->x, w->ffn_norm, c->xb, n_tok, E, f->norm_eps));
        KTRY(kw_cuda_gemv_swiglu_bf16(st, c->xb, w->wgate, w->wup, c->gate, n_tok, F, E));
        o = (kw_cuda_gemv_out){w->wdown, NULL, c->x, E};
        KTRY(kw_cuda_gemv_multi_bf16(st, c->gate, n_tok, F, &o, 1, 1));
        return 0;
    }
    /* prefill: cuBLAS adds the output and down products into the residual (beta = 1) and
     * writes gate and up as bf16, so no f32 product makes a round trip through memory */
    KTRY(kw_cuda_linear_bf16_ex(st, c->xb, w->wo, NULL, c->x, n_tok, E, qd, KW_LIN_ADD));
    KTRY(kw_cuda_rmsnorm_bf16(st, c->x, w->ffn_norm, c->xb, n_tok, E, f->norm_eps));
    KTRY(kw_cuda_linear_bf16_ex(st, c->xb, w->wgate, NULL, c->gate, n_tok, F, E, KW_LIN_BF16));
    KTRY(kw_cuda_linear_bf16_ex(st, c->xb, w->wup, NULL, c->up, n_tok, F, E, KW_LIN_BF16));
    KTRY(kw_cuda_swiglu_bf16_in(st, c->gate, c->up, c->xb, (int64_t)n_tok * F));
    KTRY(kw_cuda_linear_bf16_ex(st, c->xb, w->wdown, NULL, c->x, n_tok, E, F, KW_LIN_ADD));
    return 0;
}

/* 3. of a step: the logit rows, in blocks of max_seq rows, copied to the host; ends with
 * the stream synchronized. */
int kw__cf_logits_out(kw_cfwd *c, kw_fwd_step *s, const int32_t *d_logit, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    int E = f->n_embd;
    void *st = c->st;
    for (int r0 = 0; r0 < s->n_logits; r0 += c->max_seq) {
        int nr = s->n_logits - r0 < c->max_seq ? s->n_logits - r0 : c->max_seq;
        KTRY(kw_cuda_gather_rows(st, c->x, d_logit + r0, nr, E, c->rows));
        KTRY(kw_cuda_rmsnorm_bf16(st, c->rows, c->out_norm, c->xb, nr, E, f->norm_eps));
        KTRY(kw_cuda_linear_bf16(st, c->xb, c->output, NULL, c->logits, nr, f->n_vocab, E));
        CU(cudaMemcpyAsync(s->logits + (size_t)r0 * f->n_vocab, c->logits,
                           (size_t)nr * f->n_vocab * 4, cudaMemcpyDeviceToHost, c->st),
           "logits copy");
        c->d2h_bytes += (int64_t)nr * f->n_vocab * 4;
        if (r0 + nr < s->n_logits)
            CU(cudaStreamSynchronize(c->st), "logits");
    }
    CU(cudaStreamSynchronize(c->st), "step");
    return 0;
}

#endif
