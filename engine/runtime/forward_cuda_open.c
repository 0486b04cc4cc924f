/* The CUDA forward's open and close (see forward_cuda.h): the weights uploaded once as
 * bf16, the device's memory admitted against cudaMemGetInfo (weights, KV pool, the
 * temporary pool at its bound, activations, workspace) and allocated, the pool's device
 * callbacks installed; forward_cuda.c runs the steps. Only built with CUDA. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda.h"
#include "kernels.h"
#include "kw_config.h"

#if KW_HAVE_CUDA
#include "forward_cuda_internal.h"

static int dmalloc(void **p, size_t bytes, const char *what, kw_error *err)
{
    CU(cudaMalloc(p, bytes ? bytes : 1), what);
    return 0;
}

/* A weight (d0, d1) (or a vector of d0 when d1 == 0) on the device: matrices as bf16
 * (BF16 tensors copied as they are, others dequantized then rounded), vectors as f32. */
static int upload(kw_cfwd *c, const kw_model *m, const char *name, int64_t d0, int64_t d1,
                  bool opt, void **out, kw_error *err)
{
    *out = NULL;
    const kw_tensor *t = kw_model_tensor(m, name);
    if (!t)
        return opt ? 0 : kw_error_set(err, KW_ENOTFOUND, "model: tensor '%s' is missing", name);
    int64_t n = kw_tensor_nelems(t);
    bool ok = d1 ? (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1) : n == d0;
    if (!ok)
        return kw_error_set(err, KW_EFORMAT, "model: tensor '%s' has an unexpected shape", name);
    size_t bytes = (size_t)n * (d1 ? 2 : 4);
    int rc = dmalloc(out, bytes, name, err);
    if (rc < 0)
        return rc;
    c->weight_bytes += (int64_t)bytes;
    if (d1 && t->dtype == KW_DT_BF16) {
        CU(cudaMemcpy(*out, t->data, bytes, cudaMemcpyHostToDevice), name);
        return 0;
    }
    float *f;
    if ((rc = kw_tensor_to_f32(t, &f, err)) < 0)
        return kw_error_prefix(err, "model: tensor '%s': ", name);
    if (d1) {
        uint16_t *h = (uint16_t *)f; /* in place: element i written after it is read */
        for (int64_t i = 0; i < n; i++)
            h[i] = kw_f32_to_bf16(f[i]);
    }
    cudaError_t e = cudaMemcpy(*out, f, bytes, cudaMemcpyHostToDevice);
    free(f);
    CU(e, name);
    return 0;
}

static int64_t matrix_bytes(const kw_model_config *c)
{
    int64_t E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim,
            kd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    int64_t per_layer = (qd * E + 2 * kd * E + E * qd + 3 * F * E) * 2 + (2 * E + qd + 2 * kd) * 4;
    return per_layer * c->n_layer + (int64_t)c->n_vocab * E * 2 * (c->tie_embeddings ? 1 : 2)
           + E * 4;
}

static size_t act_floats(const kw_cfwd *c)
{
    const kw_model_config *f = &c->cfg;
    size_t T = (size_t)c->max_tok, E = (size_t)f->n_embd, qd = (size_t)f->n_head * f->head_dim,
           kd = (size_t)f->n_head_kv * f->head_dim, F = (size_t)f->n_ff;
    /* x, q, k, v, att; gate and up as bf16 (half a float each); rows, logits */
    return T * (E + 2 * qd + 2 * kd + F) + (size_t)c->max_seq * ((size_t)f->n_vocab + E);
}

static void cow_copy(void *ud, int32_t dst, int32_t src)
{
    kw_cfwd *c = ud;
    kw__cf_flush_quiet(c); /* a queued compaction may write the page being copied */
    size_t pb = (size_t)c->page_bytes;
    cudaMemcpyAsync((uint8_t *)c->kv_base + (size_t)dst * pb,
                    (const uint8_t *)c->kv_base + (size_t)src * pb, pb,
                    cudaMemcpyDeviceToDevice, c->st);
    cudaMemcpyAsync(c->kv_pos + (size_t)dst * c->P, c->kv_pos + (size_t)src * c->P,
                    (size_t)c->P * 4, cudaMemcpyDeviceToDevice, c->st);
}

static int alloc_all(kw_cfwd *c, const kw_model *m, kw_kvpool *pool, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    int64_t E = f->n_embd, qd = (int64_t)f->n_head * f->head_dim,
            kd = (int64_t)f->n_head_kv * f->head_dim, F = f->n_ff;
    kw_kvmem_stats ps;
    kw_kvpool_stats(pool, &ps);
    c->n_pages = ps.pages_total;
    c->P = kw_kvpool_options(pool)->page_tokens;
    c->i8 = kw_kvpool_options(pool)->dtype == KW_KV_I8;
    c->page_bytes = c->i8 ? kw_cuda_i8_page_bytes(c->P, f->head_dim)
                          : (int64_t)2 * c->P * f->head_dim * 2;
    int64_t pool_bytes = c->n_pages * (c->page_bytes + c->P * 4);
    int64_t xb = (int64_t)c->max_tok * (E > qd ? (E > F ? E : F) : (qd > F ? qd : F)) * 2;
    int64_t act = (int64_t)act_floats(c) * 4 + xb + (int64_t)KW_CF_FOLD_ROWS * E * 4;
    /* cuBLAS workspace, step lists, split-K partials; the device page table (at most
     * about 4.5 ints per pool page: its regions' slack, doubled at a reset); int8 pages:
     * the prefill scratch */
    const int64_t i8_scratch = kw__cf_i8_reserve(c, c->n_pages, &c->i8_cap);
    /* KVWEAVE_CUDA_I8_SCRATCH=N: a smaller scratch (pages), so that prefill steps split
     * into groups (tests) */
    const char *se = getenv("KVWEAVE_CUDA_I8_SCRATCH");
    if (c->i8 && se && atoll(se) > 0 && atoll(se) < c->i8_cap)
        c->i8_cap = atoll(se);
    int64_t work = ((int64_t)256 << 20) + 20 * c->n_pages + i8_scratch;
    /* the device's temporary pool (bf16 pages and positions; DeltaKV's rebuilt tokens),
     * allocated on first use and grown up to the host pool's temporary pages: admitted
     * here at that bound. int8 pools have none (DeltaKV is refused on them). */
    const int64_t n_tmp = c->i8 ? 0 : kw_kvpool_options(pool)->n_tmp_pages;
    const int64_t tmp_bytes = n_tmp * ((int64_t)2 * c->P * f->head_dim * 2 + c->P * 4);
    int64_t wb = matrix_bytes(f);
    /* span views address a token as its K row in the pool, in 32 bits */
    if (c->n_pages * 2 * c->P >= ((int64_t)1 << 32))
        return kw_error_set(err, KW_EINVAL, "cuda: a KV pool of %lld pages of %d tokens has "
                            "%lld K/V rows, more than the 2^32 the attention kernels address; "
                            "lower the pool size (engine option pool_mb / n_pages)",
                            (long long)c->n_pages, c->P, (long long)(c->n_pages * 2 * c->P));
    size_t fr = 0, tot = 0;
    CU(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    int64_t need = wb + pool_bytes + tmp_bytes + act + work;
    char scr[64] = "";
    if (c->i8)
        snprintf(scr, sizeof scr, " (%.0f of it the int8 prefill scratch)",
                 i8_scratch / 1048576.0);
    if (need > (int64_t)fr)
        return kw_error_set(err, KW_ENOMEM, "cuda: device %d has %.0f MiB free of %.0f MiB; "
                            "the engine needs %.0f MiB: weights %.0f + KV pool %.0f (%lld %s "
                            "pages of %d tokens) + temporary pool %.0f (%lld pages) + "
                            "activations %.0f + workspace %.0f%s; lower the pool size (engine "
                            "option pool_mb / n_pages), n_tmp_pages, max_batch or chunk",
                            c->dev, fr / 1048576.0, tot / 1048576.0, need / 1048576.0,
                            wb / 1048576.0, pool_bytes / 1048576.0, (long long)c->n_pages,
                            c->i8 ? "int8" : "bf16", c->P, tmp_bytes / 1048576.0,
                            (long long)n_tmp, act / 1048576.0, work / 1048576.0, scr);
    int rc = 0;
    c->L = calloc((size_t)f->n_layer, sizeof *c->L);
    if (!c->L)
        return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
    char nm[96];
    rc = upload(c, m, "token_embd.weight", f->n_vocab, E, false, &c->tok_embd, err);
    if (rc == 0)
        rc = upload(c, m, "output_norm.weight", E, 0, false, (void **)&c->out_norm, err);
    if (rc == 0 && !f->tie_embeddings)
        rc = upload(c, m, "output.weight", f->n_vocab, E, false, &c->output, err);
    if (rc == 0 && f->tie_embeddings)
        c->output = c->tok_embd;
    for (int l = 0; rc == 0 && l < f->n_layer; l++) {
        clw *w = &c->L[l];
#define U(field, suffix, d0, d1, opt)                                                   \
    if (rc == 0) {                                                                      \
        snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                \
        rc = upload(c, m, nm, d0, d1, opt, (void **)&w->field, err);                    \
    }
        U(attn_norm, "attn_norm.weight", E, 0, false)
        U(wq, "attn_q.weight", qd, E, false)
        U(wk, "attn_k.weight", kd, E, false)
        U(wv, "attn_v.weight", kd, E, false)
        U(bq, "attn_q.bias", qd, 0, !f->qkv_bias)
        U(bk, "attn_k.bias", kd, 0, !f->qkv_bias)
        U(bv, "attn_v.bias", kd, 0, !f->qkv_bias)
        U(wo, "attn_output.weight", E, qd, false)
        U(ffn_norm, "ffn_norm.weight", E, 0, false)
        U(wgate, "ffn_gate.weight", F, E, false)
        U(wup, "ffn_up.weight", F, E, false)
        U(wdown, "ffn_down.weight", E, F, false)
#undef U
    }
    if (rc < 0)
        return rc;
    float inv[1024];
    if (f->head_dim / 2 > 1024)
        return kw_error_set(err, KW_EINVAL, "cuda: head_dim %d is too large", f->head_dim);
    kw_rope_inv_freq(f, inv);
    if ((rc = dmalloc((void **)&c->inv_freq, (size_t)f->head_dim / 2 * 4, "inv_freq", err)) < 0)
        return rc;
    CU(cudaMemcpy(c->inv_freq, inv, (size_t)f->head_dim / 2 * 4, cudaMemcpyHostToDevice),
       "inv_freq");
    /* pool */
    if ((rc = dmalloc(&c->kv_base, (size_t)(c->n_pages * c->page_bytes), "KV pool", err)) < 0 ||
        (rc = dmalloc((void **)&c->kv_pos, (size_t)c->n_pages * c->P * 4, "KV positions", err)) < 0)
        return rc;
    CU(cudaMemset(c->kv_pos, 0x7f, (size_t)c->n_pages * c->P * 4), "KV positions");
    kw_kvpool_set_device(pool, &(kw_kvpool_device){.ud = c, .copy = cow_copy,
                                                     .compact = kw__cf_dev_compact,
                                                     .read = kw__cf_dev_read,
                                                     .write = kw__cf_dev_write});
    /* activations */
    size_t T = (size_t)c->max_tok, S = (size_t)c->max_seq;
    struct { float **p; size_t n; } a[] = {
        {&c->x, T * E}, {&c->q, T * qd}, {&c->k, T * kd}, {&c->v, T * kd}, {&c->att, T * qd},
        {&c->rows, S * E}, {&c->logits, S * f->n_vocab}};
    for (size_t i = 0; rc == 0 && i < sizeof a / sizeof *a; i++)
        rc = dmalloc((void **)a[i].p, a[i].n * 4, "activations", err);
    if (rc == 0)
        rc = dmalloc(&c->gate, T * F * 2, "activations", err);
    if (rc == 0)
        rc = dmalloc(&c->up, T * F * 2, "activations", err);
    if (rc == 0)
        rc = dmalloc(&c->xb, (size_t)xb, "activations", err);
    if (rc == 0)
        rc = dmalloc(&c->xg, (size_t)KW_CF_FOLD_ROWS * E * 2, "activations", err);
    if (rc == 0)
        rc = dmalloc((void **)&c->ss, (size_t)KW_CF_FOLD_ROWS * ((E + 3) / 4) * 4, "activations",
                     err);
    c->slots = malloc(sizeof(int32_t) * (size_t)f->n_layer * T * f->n_head_kv);
    bool ok = c->slots != NULL;
    for (int i = 0; i < KW_FWD_MAX_SEQ; i++)
        ok = ok && (c->views[i] = kw_view_new()) != NULL;
    if (rc == 0 && !ok)
        rc = kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
    return rc;
}

int kw__cfwd_new(const kw_model *m, int max_tok, int max_seq, kw_kvpool *pool, int device,
                 kw_cfwd **out, kw_error *err)
{
    *out = NULL;
    const kw_model_config *f = &m->cfg;
    const kw_kvpool_opts *po = kw_kvpool_options(pool);
    if (!po->device_pages || po->pre_rope || (po->dtype != KW_KV_F32 && po->dtype != KW_KV_I8))
        return kw_error_set(err, KW_EINVAL, "cuda: the KV pool must hold device pages, "
                            "stored after RoPE (bf16 on the device, or int8)");
    if (po->dtype == KW_KV_I8 && po->page_tokens % 2)
        return kw_error_set(err, KW_EINVAL, "cuda: int8 KV pages of %d tokens: the CUDA "
                            "kernels need an even page size (whole 16-byte lines per row)",
                            po->page_tokens);
    if (f->head_dim != 64 && f->head_dim != 128)
        return kw_error_set(err, KW_ENOSYS, "cuda: head_dim %d (the attention kernels take 64 "
                            "or 128)", f->head_dim);
    int n = kw_cuda_device_count();
    if (device < 0 || device >= n)
        return kw_error_set(err, KW_ENOSYS, "cuda: device %d not found (%d CUDA devices)",
                            device, n);
    CU(cudaSetDevice(device), "cudaSetDevice");
    kw_cfwd *c = calloc(1, sizeof *c);
    if (!c)
        return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
    c->cfg = *f;
    c->max_tok = max_tok;
    c->max_seq = max_seq;
    c->dev = device;
    int g = f->n_head / f->n_head_kv;
    c->dec_g = (g == 1 || g == 2 || g == 4 || g == 8) ? g : 1;
    c->attn_slots = kw_cuda_attn_slots_kv(f->head_dim, po->dtype == KW_KV_I8 ? KW_CUDA_KV_I8
                                                                             : KW_CUDA_KV_BF16);
    if (c->attn_slots <= 0)
        c->attn_slots = 264; /* an H100's 132 multiprocessors x 2 */
    const char *ge = getenv("KVWEAVE_CUDA_GRAPHS");
    c->graphs_on = !(ge && strcmp(ge, "0") == 0);
    const char *fe = getenv("KVWEAVE_CUDA_FOLD");
    c->fold_on = !(fe && strcmp(fe, "0") == 0);
    int rc = 0;
    /* the prefill attention kernel, where asked for (kernels_cuda.h) */
    const char *pe = getenv("KVWEAVE_CUDA_PREFILL");
    c->prefill_kernel = pe ? kw_cuda_prefill_kernel_parse(pe) : KW_CUDA_PREFILL_AUTO;
    if (c->prefill_kernel < 0)
        rc = kw_error_set(err, KW_EINVAL,
                          "KVWEAVE_CUDA_PREFILL=%s: not a prefill attention kernel (auto, mma, "
                          "wgmma, cudnn)", pe);
    else if (c->prefill_kernel == KW_CUDA_PREFILL_CUDNN &&
             !kw_cuda_prefill_kernel_runs(c->prefill_kernel, f->head_dim)) {
        char why[256];
        kw_cuda_cudnn_version(why, sizeof why);
        rc = kw_error_set(err, KW_EINVAL, "KVWEAVE_CUDA_PREFILL=%s: %s; auto picks a kernel "
                          "that runs", pe, why);
    } else if (c->prefill_kernel == KW_CUDA_PREFILL_WGMMA &&
             !kw_cuda_prefill_kernel_runs(c->prefill_kernel, f->head_dim))
        rc = kw_error_set(err, KW_EINVAL,
                          "KVWEAVE_CUDA_PREFILL=%s: the wgmma kernel needs a device of compute "
                          "capability 9.0 and head_dim 128 (this model's head_dim: %d); "
                          "auto picks one that runs", pe, f->head_dim);
    if (rc < 0) {
        kw__cfwd_free(c);
        return rc;
    }
    if (cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking) != cudaSuccess)
        rc = kw_error_set(err, KW_ECUDA, "cuda: cannot create a stream");
    if (rc == 0)
        rc = alloc_all(c, m, pool, err);
    if (rc < 0) {
        kw__cfwd_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

kw_cfwd *kw__cfwd_free(kw_cfwd *c)
{
    if (!c)
        return NULL;
    if (c->st)
        cudaStreamSynchronize(c->st);
    for (int l = 0; c->L && l < c->cfg.n_layer; l++) {
        clw *w = &c->L[l];
        void *p[] = {w->attn_norm, w->ffn_norm, w->bq, w->bk, w->bv, w->wq, w->wk, w->wv,
                     w->wo, w->wgate, w->wup, w->wdown};
        for (size_t i = 0; i < sizeof p / sizeof *p; i++)
            cudaFree(p[i]);
    }
    free(c->L);
    for (int i = 0; i <= KW_FWD_MAX_SEQ; i++)
        if (c->graphs[i].exec)
            cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->output != c->tok_embd)
        cudaFree(c->output);
    void *p[] = {c->tok_embd, c->out_norm, c->inv_freq, c->kv_base, c->kv_pos, c->x, c->q,
                 c->k, c->v, c->att, c->gate, c->up, c->rows, c->logits, c->xb,
                 c->xg, c->ss, c->stage.d, c->partial, c->i8_pages, c->i8_pos, c->i8_iota};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        cudaFree(p[i]);
    cudaFreeHost(c->stage.h);
    cudaFreeHost(c->lst.h);
    kw__cf_ptab_free(c);
    free(c->cq_off), free(c->cq_list);
    void *q[] = {c->lst.d, c->d_pout, c->d_pscr, c->d_lse, c->d_tmp, c->d_tmp_pos, c->d_io};
    for (size_t i = 0; i < sizeof q / sizeof *q; i++)
        cudaFree(q[i]);
    free(c->hq), free(c->hk), free(c->hv), free(c->hlse), free(c->h_list), free(c->i8_plan);
    free(c->i8_map);
    free(c->slots);
    for (int i = 0; i < KW_FWD_MAX_SEQ; i++)
        kw_view_free(c->views[i]);
    if (c->st)
        cudaStreamDestroy(c->st);
    free(c);
    return NULL;
}

#endif
