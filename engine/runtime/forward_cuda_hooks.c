/* The CUDA forward's steps with KV hooks and the pool's device callbacks (see
 * forward_cuda_internal.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kw_config.h"

#if KW_HAVE_CUDA
#include "forward_cuda_internal.h"
#include "hookcall.h"

/* Grows a device buffer to at least n elements of `elem` bytes (contents not kept);
 * cudaFree waits for the device, so nothing in flight still reads the old buffer. */
int kw__cf_dgrow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < n)
        c *= 2;
    cudaFree(*p);
    *p = NULL;
    *cap = 0;
    if (cudaMalloc(p, c * elem) != cudaSuccess)
        return KW_ENOMEM;
    *cap = c;
    return 0;
}

/* kw_kvseq_keep's payload movement on the device (kvpool.h, kw_kvpool_device.compact):
 * queued here and launched by flush_compact as one kernel over every queued table, before
 * anything else touches the pool (a copy-on-write copy, a host read, the next attention).
 * A StreamingLLM or H2O step evicts in every (layer, KV head): one launch instead of
 * one upload and launch per table. */
int kw__cf_dev_compact(void *ud, const int32_t *keep, int n_keep, const int32_t *src, int n_src,
                       const int32_t *dst, int n_dst)
{
    kw_cfwd *c = ud;
    size_t need = c->cq_len + (size_t)n_keep + n_src + n_dst;
    if (need > c->cq_cap) {
        size_t cap = c->cq_cap ? c->cq_cap : 4096;
        while (cap < need)
            cap *= 2;
        int32_t *l = realloc(c->cq_list, cap * sizeof *l);
        if (!l)
            return KW_ENOMEM;
        c->cq_list = l, c->cq_cap = cap;
    }
    if (c->cq_n + 2 > c->cq_off_cap) {
        int cap = c->cq_off_cap ? 2 * c->cq_off_cap : 256;
        int32_t *o = realloc(c->cq_off, (size_t)cap * 3 * sizeof *o);
        if (!o)
            return KW_ENOMEM;
        c->cq_off = o, c->cq_off_cap = cap;
    }
    int32_t *l = c->cq_list + c->cq_len;
    memcpy(l, keep, (size_t)n_keep * 4);
    memcpy(l + n_keep, src, (size_t)n_src * 4);
    memcpy(l + n_keep + n_src, dst, (size_t)n_dst * 4);
    int32_t *o = c->cq_off + (size_t)c->cq_n * 3;
    o[0] = n_keep, o[1] = n_src, o[2] = n_dst; /* counts; offsets made at the flush */
    c->cq_len = need;
    c->cq_n++;
    return 0;
}

/* Launches the queued compactions (one block per table). */
int kw__cf_flush_compact(kw_cfwd *c, kw_error *err)
{
    if (c->cq_n == 0)
        return 0;
    int n = c->cq_n;
    size_t offs = 3 * ((size_t)n + 1), bytes = 4 * (offs + c->cq_len);
    uint8_t *h = NULL, *d = NULL;
    int rc = kw__cf_lst_take(c, bytes, &h, &d, err);
    if (rc < 0)
        return rc;
    int32_t *ko = (int32_t *)h, *so = ko + n + 1, *dof = so + n + 1, *lists = dof + n + 1;
    /* lists regrouped: all keep lists, then all src lists, then all dst lists */
    size_t nk = 0, nsrc = 0, nd = 0;
    for (int t = 0; t < n; t++)
        nk += (size_t)c->cq_off[3 * t], nsrc += (size_t)c->cq_off[3 * t + 1],
            nd += (size_t)c->cq_off[3 * t + 2];
    int32_t *K = lists, *S = K + nk, *D = S + nsrc;
    size_t at = 0, k = 0, sr = 0, ds = 0;
    for (int t = 0; t < n; t++) {
        int a = c->cq_off[3 * t], b = c->cq_off[3 * t + 1], e = c->cq_off[3 * t + 2];
        ko[t] = (int32_t)k, so[t] = (int32_t)sr, dof[t] = (int32_t)ds;
        memcpy(K + k, c->cq_list + at, (size_t)a * 4), k += a, at += a;
        memcpy(S + sr, c->cq_list + at, (size_t)b * 4), sr += b, at += b;
        memcpy(D + ds, c->cq_list + at, (size_t)e * 4), ds += e, at += e;
    }
    ko[n] = (int32_t)k, so[n] = (int32_t)sr, dof[n] = (int32_t)ds;
    c->cq_n = 0;
    c->cq_len = 0;
    CU(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, c->st), "compaction lists");
    c->h2d_bytes += (int64_t)bytes;
    const int32_t *dd = (const int32_t *)d, *dl = dd + offs;
    int hd = c->cfg.head_dim;
    /* int8 pages move their rows' scales too (4 bytes each) */
    rc = kw_cuda_page_compact(c->st, c->kv_base, c->kv_pos, c->page_bytes, c->P,
                              c->i8 ? hd : hd * 2, c->i8 ? 4 : 0, n, dd, dl, dd + n + 1,
                              dl + nk, dd + 2 * (n + 1), dl + nk + nsrc);
    if (rc < 0)
        return kw_error_set(err, rc, "cuda: page compaction: %s", kw_cuda_last_error());
    return 0;
}

/* flush_compact where the pool's callbacks have no error to fill: the failure is kept
 * for the step to report (c->cq_rc). */
void kw__cf_flush_quiet(kw_cfwd *c)
{
    kw_error e = {0};
    int rc = kw__cf_flush_compact(c, &e);
    if (rc < 0 && c->cq_rc == 0)
        c->cq_rc = rc;
}

/* Host reads of device pages (kw_kvpool_device.read): rows [first, first + n) of a table's
 * pages, gathered as f32 on the device (kw_cuda_page_rows_f32: bf16 widened, int8 as
 * scale x int8, as kw_kvmem_row does) and copied back in one transfer, however many
 * pages they span. */
int kw__cf_dev_read(void *ud, const int32_t *pages, int first, int n, int which, float *out)
{
    kw_cfwd *c = ud;
    const int hd = c->cfg.head_dim, P = c->P;
    if (first < 0 || first >= P || n < 0 || (which != 0 && which != 1))
        return KW_EINVAL;
    if (n == 0)
        return 0;
    const int np = (first + n + P - 1) / P;
    for (int i = 0; i < np; i++)
        if (pages[i] < 0 || pages[i] >= c->n_pages)
            return KW_EINVAL;
    kw__cf_flush_quiet(c);
    if (c->cq_rc < 0)
        return c->cq_rc;
    const size_t o_rows = align16(4 * (size_t)np), bytes = o_rows + (size_t)n * hd * 4;
    if (kw__cf_dgrow(&c->d_io, &c->io_cap, bytes, 1) < 0)
        return KW_ENOMEM;
    uint8_t *d = c->d_io;
    float *rows = (float *)(void *)(d + o_rows);
    int rc = 0;
    if (cudaMemcpyAsync(d, pages, 4 * (size_t)np, cudaMemcpyHostToDevice, c->st) != cudaSuccess)
        rc = KW_ECUDA;
    if (rc == 0)
        rc = kw_cuda_page_rows_f32(c->st, c->kv_base, c->i8 ? KW_CUDA_KV_I8 : KW_CUDA_KV_BF16,
                                   P, hd, (const int32_t *)(void *)d, first, n, which, rows);
    if (rc == 0 && (cudaMemcpyAsync(out, rows, (size_t)n * hd * 4, cudaMemcpyDeviceToHost,
                                    c->st) != cudaSuccess ||
                    cudaStreamSynchronize(c->st) != cudaSuccess))
        rc = KW_ECUDA;
    c->h2d_bytes += 4 * (int64_t)np;
    c->d2h_bytes += (int64_t)n * hd * 4;
    return rc;
}

/* Host writes of device pages (kw_kvpool_device.write: kw_kvseq_append on the device
 * pool, KVStar's blocks read back from its store): the rows, positions and slots copied
 * in, then written by the page-append kernel of the pool's page type (bf16, or int8
 * quantized as the host pool does). Queued compactions go first: one of them may still
 * read a page the pool has since handed to these tokens. */
int kw__cf_dev_write(void *ud, const int32_t *slots, int n_tok, int n_kv, const float *k,
                     const float *v, const int32_t *pos)
{
    kw_cfwd *c = ud;
    const int hd = c->cfg.head_dim;
    if (n_tok < 0 || n_kv != c->cfg.n_head_kv || !slots || !k || !v || !pos)
        return KW_EINVAL;
    if (n_tok == 0)
        return 0;
    kw__cf_flush_quiet(c);
    if (c->cq_rc < 0)
        return c->cq_rc;
    const size_t nr = (size_t)n_tok * n_kv, kb = nr * hd * 4, o_pos = 2 * kb,
                 o_sl = align16(o_pos + 4 * (size_t)n_tok), bytes = o_sl + 4 * nr;
    if (kw__cf_dgrow(&c->d_io, &c->io_cap, bytes, 1) < 0)
        return KW_ENOMEM;
    uint8_t *d = c->d_io;
    const float *dk = (const float *)(void *)d, *dv = dk + nr * hd;
    const int32_t *dp = (const int32_t *)(void *)(d + o_pos), *ds = (const int32_t *)(void *)(d + o_sl);
    if (cudaMemcpyAsync(d, k, kb, cudaMemcpyHostToDevice, c->st) != cudaSuccess ||
        cudaMemcpyAsync(d + kb, v, kb, cudaMemcpyHostToDevice, c->st) != cudaSuccess ||
        cudaMemcpyAsync(d + o_pos, pos, 4 * (size_t)n_tok, cudaMemcpyHostToDevice, c->st) !=
            cudaSuccess ||
        cudaMemcpyAsync(d + o_sl, slots, 4 * nr, cudaMemcpyHostToDevice, c->st) != cudaSuccess)
        return KW_ECUDA;
    c->h2d_bytes += (int64_t)(2 * kb + 4 * (size_t)n_tok + 4 * nr);
    return c->i8 ? kw_cuda_kv_append_i8(c->st, c->kv_base, c->kv_pos, c->P, hd, n_tok, n_kv, dk,
                                        dv, dp, ds)
                 : kw_cuda_kv_append(c->st, c->kv_base, c->kv_pos, c->P, hd, n_tok, n_kv, dk,
                                     dv, dp, ds);
}

/* The host pool's temporary pages in use, [0, kw_kvpool_tmp_used), copied to the device's
 * temporary pool as bf16 pages (the same element order: K (P, head_dim), then V), with
 * their positions, through the I/O buffer in pieces of at most 64 MiB of f32. */
static int tmp_upload(kw_cfwd *c, kw_kvpool *pool, kw_error *err)
{
    const int64_t n = kw_kvpool_tmp_used(pool);
    if (n <= 0)
        return 0;
    int32_t *hpos = NULL;
    const float *h = kw_kvpool_tmp_page(pool, 0, &hpos);
    const size_t per = (size_t)2 * c->P * c->cfg.head_dim; /* values a page */
    const int64_t fit = (int64_t)((64u << 20) / (per * 4)), piece = fit > 0 ? fit : 1;
    const int64_t first = n < piece ? n : piece;
    if (!h || kw__cf_dgrow(&c->d_tmp, &c->tmp_cap, (size_t)n * per * 2, 1) < 0 ||
        kw__cf_dgrow((void **)&c->d_tmp_pos, &c->tmp_pos_cap, (size_t)n * c->P, 4) < 0 ||
        kw__cf_dgrow(&c->d_io, &c->io_cap, (size_t)first * per * 4, 1) < 0)
        return kw_error_set(err, KW_ENOMEM, "cuda: no device memory for %lld temporary "
                            "pages (%.0f MiB)", (long long)n, n * per * 2 / 1048576.0);
    for (int64_t g = 0; g < n; g += piece) {
        const int64_t m = n - g < piece ? n - g : piece;
        CU(cudaMemcpyAsync(c->d_io, h + (size_t)g * per, (size_t)m * per * 4,
                           cudaMemcpyHostToDevice, c->st), "temporary pages");
        KTRY(kw_cuda_to_bf16(c->st, (const float *)c->d_io,
                             (uint16_t *)c->d_tmp + (size_t)g * per, (int64_t)m * (int64_t)per));
    }
    CU(cudaMemcpyAsync(c->d_tmp_pos, hpos, (size_t)n * c->P * 4, cudaMemcpyHostToDevice, c->st),
       "temporary positions");
    c->h2d_bytes += n * (int64_t)(per * 4 + (size_t)c->P * 4);
    return 0;
}

/* ---- steps with KV hooks ----
 * The layer loop of forward.c with the device doing the arithmetic: hooks run on the
 * host as on the CPU, and get host copies of what they need (K and V before RoPE for
 * on_kv, Q for select, attention probabilities and LSE for after_attn, recomputed by
 * attn_probs.cu), each copied only when some hook of the step has that callback or need.
 * Views are built per layer after the SELECT hooks; sequences that bring several tokens
 * go through the prefill kernel (rows per KV head), single tokens through the split-K
 * decode kernel (rows per KV head, or per query head when a view is, or when the group
 * is too large for one row). EVICT hooks compact device pages through the pool's device
 * callbacks (dev_compact). The host waits for the device where a hook needs a copy, so
 * a step with hooks overlaps less than a dense one. */

/* A region of the per-layer list buffer; waits for the device before reusing it. */
int kw__cf_lst_take(kw_cfwd *c, size_t bytes, uint8_t **h, uint8_t **d, kw_error *err)
{
    bytes = align16(bytes);
    if (c->lst.off + bytes > c->lst.cap) {
        CU(cudaStreamSynchronize(c->st), "list buffer");
        c->lst.off = 0;
        int rc = kw__cf_pinbuf_grow(&c->lst, bytes, "list buffer", err);
        if (rc < 0)
            return rc;
    }
    *h = c->lst.h + c->lst.off;
    *d = c->lst.d + c->lst.off;
    c->lst.off += bytes;
    return 0;
}

static int d2h(kw_cfwd *c, float *h, const float *d, size_t n, kw_error *err)
{
    CU(cudaMemcpyAsync(h, d, n * 4, cudaMemcpyDeviceToHost, c->st), "copy for hooks");
    c->d2h_bytes += (int64_t)n * 4;
    CU(cudaStreamSynchronize(c->st), "copy for hooks");
    return 0;
}

static void seq_fail(kw_fwd_step *s, int i, int rc)
{
    if (s->seq_rc[i] == 0)
        s->seq_rc[i] = rc;
}

/* Int8 pages in a hooked step: the attention and probability kernels of views read a bf16
 * copy of the pages a view names. i8_view_pages walks view w's rows: the pages its spans
 * name, a row's pages in the order its spans name them (a page named by consecutive spans
 * once), into pg (when not NULL) with row offsets rp and row lengths in tokens rt (whole
 * pages), and map[j], the copy's page of span j. Returns the page count; *maxp the most of
 * a row. */
static int64_t i8_view_pages(const kw_view *w, int P, int32_t *map, int32_t *pg, int32_t *rp,
                             int32_t *rt, int *maxp)
{
    int64_t k = 0;
    *maxp = 0;
    for (int r = 0; r < w->n_rows; r++) {
        const int64_t k0 = k;
        int32_t last = -1;
        for (int j = w->row_ptr[r]; j < w->row_ptr[r + 1]; j++) {
            if (k == k0 || w->spans[j].page != last) {
                last = w->spans[j].page;
                if (pg)
                    pg[k] = last;
                k++;
            }
            map[j] = (int32_t)(k - 1);
        }
        if (rp)
            rp[r] = (int32_t)k0, rt[r] = (int32_t)((k - k0) * P);
        *maxp = k - k0 > *maxp ? (int)(k - k0) : *maxp;
    }
    if (rp)
        rp[w->n_rows] = (int32_t)k;
    return k;
}

/* The lists of i8_view_pages for view w in a region of the layer's list buffer: its
 * bytes (i8_lists_bytes), filled (i8_lists_fill: the page count, *maxp) before the region
 * is uploaded, then the copy made from the uploaded region d (i8_lists_copy: the pages of
 * the view dequantized into the int8 scratch, c->i8_pages and c->i8_pos, as bf16 pages
 * through kw_cuda_rows_i8_to_bf16; the scratch holds one view at a time, and a later copy
 * overwrites it in stream order). One region with the attention's or the probabilities'
 * lists: a second region taken later could wrap the buffer over the first before the
 * kernels that read it have run. */
static size_t i8_lists_layout(const kw_view *w, size_t *o_rp, size_t *o_rt)
{
    *o_rp = align16(4 * (size_t)w->row_ptr[w->n_rows] + 4); /* pages, then row offsets */
    *o_rt = *o_rp + align16(4 * ((size_t)w->n_rows + 1));  /* then row lengths */
    return *o_rt + 4 * (size_t)w->n_rows;
}

static size_t i8_lists_bytes(const kw_view *w)
{
    size_t o_rp, o_rt;
    return i8_lists_layout(w, &o_rp, &o_rt);
}

static int64_t i8_lists_fill(const kw_cfwd *c, const kw_view *w, uint8_t *h, int32_t *map,
                             int *maxp)
{
    size_t o_rp, o_rt;
    i8_lists_layout(w, &o_rp, &o_rt);
    return i8_view_pages(w, c->P, map, (int32_t *)h, (int32_t *)(h + o_rp),
                         (int32_t *)(h + o_rt), maxp);
}

static int i8_lists_copy(kw_cfwd *c, const kw_view *w, int i, const uint8_t *d, int64_t np,
                         int maxp, kw_error *err)
{
    if (np == 0)
        return 0;
    if (np > c->i8_cap)
        return kw_error_set(err, KW_ELIMIT, "cuda: the view of sequence %d names %lld int8 "
                            "pages, more than the %lld pages of the int8 scratch", i,
                            (long long)np, (long long)c->i8_cap);
    int rc = kw__cf_i8_grow(c, np, err);
    if (rc < 0)
        return rc;
    size_t o_rp, o_rt;
    i8_lists_layout(w, &o_rp, &o_rt);
    /* a row's copy starts at its first page in the list: rp doubles as the destinations */
    KTRY(kw_cuda_rows_i8_to_bf16(c->st, c->kv_base, c->kv_pos, c->P, c->cfg.head_dim,
                                 w->n_rows, (const int32_t *)d, (const int32_t *)(d + o_rp),
                                 (const int32_t *)(d + o_rt), (const int32_t *)(d + o_rp), maxp,
                                 c->i8_pages, c->i8_pos));
    return 0;
}

/* The span map's buffer (c->i8_map) at least n entries. */
static int i8_map_grow(kw_cfwd *c, int64_t n, kw_error *err)
{
    if ((size_t)n <= c->i8_map_cap)
        return 0;
    int32_t *m = realloc(c->i8_map, sizeof(int32_t) * (size_t)n);
    if (!m)
        return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
    c->i8_map = m, c->i8_map_cap = (size_t)n;
    return 0;
}

/* Attention of layer l over c->views: prefill kernel for sequences of several tokens,
 * decode kernel for single tokens. */
static int hooked_attention(kw_cfwd *c, kw_kvpool *pool, kw_fwd_step *s, int n_tok, int l,
                            const int32_t *d_tokoff, const int32_t *d_pos, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    const int nkv = f->n_head_kv, H = f->n_head, hd = f->head_dim, ns = s->n_seq, g = H / nkv;
    int n_pre = 0, n_dec = 0;
    bool dq = c->dec_g == 1 && g > 1; /* decode rows per query head */
    bool tmp = false;
    for (int i = 0; i < ns; i++) {
        const kw_view *w = c->views[i];
        for (int j = 0; j < w->row_ptr[w->n_rows]; j++)
            if (w->spans[j].pool != KW_POOL_MAIN && c->i8) {
                kw_seq_fail(s->seqs[i], KW_ENOSYS, "cuda: a view reads temporary-pool tokens "
                            "(a MATERIALIZE hook's, such as DeltaKV's rebuilt ones), which "
                            "int8 KV pages do not take on the device; use bf16 pages");
                seq_fail(s, i, KW_ENOSYS);
                kw_view_reset(c->views[i], nkv, false);
                break;
            } else if (w->spans[j].pool != KW_POOL_MAIN)
                tmp = true;
        if (s->tok_n[i] > 1 && w->per_qhead) {
            seq_fail(s, i, KW_ENOSYS); /* the prefill kernel reads rows per KV head */
            kw_view_reset(c->views[i], nkv, false);
        }
        if (s->tok_n[i] > 1)
            n_pre++;
        else {
            n_dec++;
            dq = dq || c->views[i]->per_qhead;
        }
        int64_t nv = kw_view_tokens(c->views[i]);
        s->attended[i] += c->views[i]->per_qhead ? nv / g : nv;
    }
    int rc = tmp ? tmp_upload(c, pool, err) : 0;
    if (rc < 0)
        return rc;
    int64_t pre_spans = 0, dec_spans = 0;
    int dec_rows = n_dec * (dq ? H : nkv);
    for (int i = 0; i < ns; i++) {
        const kw_view *w = c->views[i];
        int64_t n = w->row_ptr[w->n_rows];
        if (s->tok_n[i] > 1)
            pre_spans += n;
        else
            dec_spans += dq && !w->per_qhead ? n * g : n;
    }
    int n_items = 0;
    if (n_pre) {
        int32_t tok_off[KW_FWD_MAX_SEQ + 1];
        for (int i = 0; i < ns; i++)
            tok_off[i] = s->tok_first[i];
        tok_off[ns] = n_tok;
        int all = kw_cuda_prefill_items(ns, tok_off, NULL);
        if ((size_t)all * 2 > c->h_list_cap) {
            free(c->h_list);
            c->h_list = malloc((size_t)all * 2 * sizeof *c->h_list);
            c->h_list_cap = c->h_list ? (size_t)all * 2 : 0;
            if (!c->h_list)
                return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
        }
        kw_cuda_prefill_items(ns, tok_off, c->h_list);
        for (int k = 0; k < all; k++)
            if (s->tok_n[c->h_list[2 * k]] > 1) {
                c->h_list[2 * n_items] = c->h_list[2 * k];
                c->h_list[2 * n_items + 1] = c->h_list[2 * k + 1];
                n_items++;
            }
    }
    size_t plan_max = (size_t)dec_spans + dec_rows + 1;
    size_t o_prp = 0, o_psp = align16(o_prp + 4 * ((size_t)ns * nkv + 1)),
           o_pit = align16(o_psp + sizeof(kw_cuda_span) * (size_t)(pre_spans + 1)),
           o_drp = align16(o_pit + 8 * (size_t)(n_items + 1)),
           o_dsp = align16(o_drp + 4 * ((size_t)dec_rows + 1)),
           o_qrow = align16(o_dsp + sizeof(kw_cuda_span) * (size_t)(dec_spans + 1)),
           o_qpos = align16(o_qrow + 4 * ((size_t)dec_rows + 1)),
           o_dit = align16(o_qpos + 4 * ((size_t)dec_rows + 1)),
           o_rpart = align16(o_dit + 16 * plan_max), o_i8 = align16(o_rpart + 8 * ((size_t)dec_rows + 1));
    /* int8 pages: then the lists of each prefill sequence's view copy */
    size_t i8_off[KW_FWD_MAX_SEQ + 1], total = o_i8;
    for (int i = 0; i < ns; i++) {
        i8_off[i] = total;
        if (c->i8 && s->tok_n[i] > 1)
            total = align16(total + i8_lists_bytes(c->views[i]));
    }
    uint8_t *h = NULL, *d = NULL;
    if ((rc = kw__cf_lst_take(c, total, &h, &d, err)) < 0)
        return rc;
    int64_t i8_np[KW_FWD_MAX_SEQ];
    int i8_maxp[KW_FWD_MAX_SEQ];
    int32_t *prp = (int32_t *)(h + o_prp), *drp = (int32_t *)(h + o_drp);
    kw_cuda_span *psp = (kw_cuda_span *)(h + o_psp), *dsp = (kw_cuda_span *)(h + o_dsp);
    int32_t *qrow = (int32_t *)(h + o_qrow), *qpos = (int32_t *)(h + o_qpos);
    int64_t pk = 0, dk = 0;
    int ri = 0, di = 0;
    for (int i = 0; i < ns; i++) {
        const kw_view *w = c->views[i];
        bool pre = s->tok_n[i] > 1;
        if (pre && c->i8) { /* spans of the view's int8 copy (made below) */
            if ((rc = i8_map_grow(c, w->row_ptr[w->n_rows] + 1, err)) < 0)
                return rc;
            i8_np[i] = i8_lists_fill(c, w, h + i8_off[i], c->i8_map, &i8_maxp[i]);
        }
        for (int r = 0; pre && r < nkv; r++) {
            prp[ri++] = (int32_t)pk;
            for (int j = w->row_ptr[r]; j < w->row_ptr[r + 1]; j++) {
                kw_span x = w->spans[j];
                psp[pk++] = c->i8 ? (kw_cuda_span){c->i8_map[j], x.first, x.n, 0}
                                  : (kw_cuda_span){x.page, x.first, x.n, x.pool};
            }
        }
        for (int r = 0; !pre && r < nkv; r++)
            prp[ri++] = (int32_t)pk;
        if (pre)
            continue;
        int nr = dq ? H : nkv;
        for (int r = 0; r < nr; r++) {
            int vr = w->per_qhead ? r : dq ? r / g : r;
            drp[di] = (int32_t)dk;
            qrow[di] = s->tok_first[i] * H + r * (dq ? 1 : g);
            qpos[di] = s->pos[s->tok_first[i]];
            di++;
            for (int j = w->row_ptr[vr]; j < w->row_ptr[vr + 1]; j++) {
                kw_span x = w->spans[j];
                dsp[dk++] = (kw_cuda_span){x.page, x.first, x.n, x.pool};
            }
        }
    }
    prp[ri] = (int32_t)pk;
    drp[di] = (int32_t)dk;
    memcpy(h + o_pit, c->h_list, 8 * (size_t)n_items);
    int plan_items = 0, plan_parts = 0;
    if (n_dec) {
        int32_t *rt = malloc(sizeof(int32_t) * (size_t)dec_rows);
        if (!rt)
            return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
        for (int r = 0; r < dec_rows; r++) {
            rt[r] = 0;
            for (int j = drp[r]; j < drp[r + 1]; j++)
                rt[r] += dsp[j].n;
        }
        /* span-mode items flatten into the kernel's 1024-token list */
        int max_tok = kw__cf_plan_tokens(c, dec_rows, rt, 768);
        free(rt);
        plan_items = kw_cuda_attn_plan_size(dec_rows, drp, dsp, max_tok);
        if ((size_t)plan_items > plan_max)
            return kw_error_set(err, KW_EINTERNAL, "cuda: decode plan larger than reserved");
        plan_parts = kw_cuda_attn_plan(dec_rows, drp, dsp, max_tok, (int32_t *)(h + o_dit),
                                       (int32_t *)(h + o_rpart));
        if ((rc = kw__cf_ensure_partial(c, (size_t)(plan_parts + 1) * (dq ? 1 : g) * (hd + 2), err)) < 0)
            return rc;
    }
    CU(cudaMemcpyAsync(d, h, total, cudaMemcpyHostToDevice, c->st), "layer lists");
    c->h2d_bytes += (int64_t)total;
    if (n_pre) {
        kw_cuda_prefill a = kw__cf_prefill_args(c, ns);
        a.tok_off = d_tokoff, a.row_ptr = (const int32_t *)(d + o_prp);
        a.spans = (const kw_cuda_span *)(d + o_psp);
        a.q_pos = d_pos;
        a.n_items = n_items, a.items = (const int32_t *)(d + o_pit);
        if (!c->i8)
            KTRY(kw_cuda_attn_prefill(c->st, &a));
        /* int8 pages: a sequence at a time, over its view's copy (the items of a sequence
         * are consecutive) */
        for (int i = 0, k = 0; c->i8 && i < ns; i++) {
            int k0 = k;
            while (k < n_items && c->h_list[2 * k] == i)
                k++;
            if (k == k0)
                continue;
            if ((rc = i8_lists_copy(c, c->views[i], i, d + i8_off[i], i8_np[i], i8_maxp[i],
                                    err)) < 0)
                return rc;
            kw_cuda_prefill b = a;
            b.base[0] = b.base[1] = c->i8_pages;
            b.pos[0] = b.pos[1] = c->i8_pos;
            b.items = a.items + 2 * (size_t)k0, b.n_items = k - k0;
            KTRY(kw_cuda_attn_prefill(c->st, &b));
        }
    }
    if (n_dec) {
        kw_cuda_attn a = kw__cf_decode_args(c);
        a.n_rows = dec_rows, a.g_per_row = dq ? 1 : g;
        a.row_ptr = (const int32_t *)(d + o_drp), a.spans = (const kw_cuda_span *)(d + o_dsp);
        a.q_row = (const int32_t *)(d + o_qrow), a.q_pos = (const int32_t *)(d + o_qpos);
        a.n_items = plan_items, a.items = (const int32_t *)(d + o_dit);
        a.row_part = (const int32_t *)(d + o_rpart);
        a.n_parts = plan_parts;
        KTRY(kw_cuda_attn_decode(c->st, &a));
    }
    return 0;
}

/* Probabilities (and LSE) that the step's hooks asked for, for sequence i of layer l:
 * observation window (its last min(tok_n, obs_window) queries) when the prompt ends here,
 * per-step sums over all its queries, LSE of all its queries. */
static int hooked_probs(kw_cfwd *c, kw_hookcall *hc, kw_fwd_step *s, int i,
                        const int32_t *d_pos, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    const int H = f->n_head, hd = f->head_dim, g = H / f->n_head_kv;
    const kw_view *w = c->views[i];
    bool lse = hc->needs & KW_NEED_LSE;
    if (!hc->want_obs[i] && !hc->want_step[i] && !lse)
        return 0;
    int64_t n_slots = 0;
    int len = 0;
    for (int r = 0; r < w->n_rows; r++) {
        int rl = kw_view_row_tokens(w, r);
        n_slots += rl;
        len = rl > len ? rl : len;
    }
    uint8_t *h = NULL, *d = NULL;
    size_t o_off = 0, o_sl = align16(4 * ((size_t)w->n_rows + 1)),
           o_i8 = align16(o_sl + 4 * (size_t)(n_slots + 1)),
           total = o_i8 + (c->i8 ? i8_lists_bytes(w) : 0);
    int rc = kw__cf_lst_take(c, total, &h, &d, err);
    if (rc < 0)
        return rc;
    int32_t *off = (int32_t *)(h + o_off), *sl = (int32_t *)(h + o_sl);
    /* int8 pages: the view's pages copied as bf16 first, its spans renamed to the copy's */
    int64_t i8_np = 0;
    int i8_maxp = 0;
    if (c->i8) {
        if ((rc = i8_map_grow(c, w->row_ptr[w->n_rows] + 1, err)) < 0)
            return rc;
        i8_np = i8_lists_fill(c, w, h + o_i8, c->i8_map, &i8_maxp);
    }
    int64_t k = 0;
    for (int r = 0; r < w->n_rows; r++) { /* temporary pages: slots with the high bit set */
        off[r] = (int32_t)k;
        for (int j = w->row_ptr[r]; j < w->row_ptr[r + 1]; j++) {
            const uint32_t tmp = w->spans[j].pool != KW_POOL_MAIN ? 0x80000000u : 0;
            for (int t = 0; t < w->spans[j].n; t++)
                sl[k++] = (int32_t)(tmp | (uint32_t)((c->i8 ? c->i8_map[j] : w->spans[j].page)
                                                     * c->P + w->spans[j].first + t));
        }
    }
    off[w->n_rows] = (int32_t)k;
    CU(cudaMemcpyAsync(d, h, total, cudaMemcpyHostToDevice, c->st), "probability lists");
    c->h2d_bytes += (int64_t)total;
    if (c->i8 && (rc = i8_lists_copy(c, w, i, d + o_i8, i8_np, i8_maxp, err)) < 0)
        return rc;
    int t0 = s->tok_first[i], nq = s->tok_n[i], tile = 64;
    kw_cuda_view_probs_args a = {.base = c->i8 ? c->i8_pages : c->kv_base,
                                 .pos = c->i8 ? c->i8_pos : c->kv_pos, .base_tmp = c->d_tmp,
                                 .pos_tmp = c->d_tmp_pos, .page_tokens = c->P,
                                 .head_dim = hd, .n_head = H, .group = g,
                                 .per_qhead = w->per_qhead, .row_off = (const int32_t *)(d + o_off),
                                 .slots = (const int32_t *)(d + o_sl), .len = len,
                                 .scale = 1.f / sqrtf((float)hd)};
    size_t hl = (size_t)H * (len ? len : 1);
    if (kw__cf_dgrow((void **)&c->d_pscr, &c->pscr_cap, (size_t)tile * hl, 4) < 0 ||
        kw__cf_dgrow((void **)&c->d_pout, &c->pout_cap, (size_t)(nq > tile ? nq : tile) * hl, 4) < 0 ||
        (!c->d_lse && cudaMalloc((void **)&c->d_lse, (size_t)c->max_tok * H * 4) != cudaSuccess))
        return kw_error_set(err, KW_ENOMEM, "cuda: no device memory for attention "
                            "probabilities (%d queries x %d heads x %d tokens)", nq, H, len);
    if (hc->want_obs[i]) {
        int n = nq < s->obs_window ? nq : s->obs_window;
        a.q = c->q + ((size_t)(t0 + nq - n)) * H * hd, a.q_pos = d_pos + t0 + nq - n;
        a.n_q = n, a.mode = KW_CUDA_PROBS_EACH, a.out = c->d_pout, a.lse = NULL;
        KTRY(kw_cuda_view_probs(c->st, &a));
        free(hc->probs[i]);
        hc->probs[i] = malloc((size_t)n * hl * 4);
        if (!hc->probs[i])
            return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
        hc->obs_n[i] = n;
        hc->obs_len[i] = len;
        if ((rc = d2h(c, hc->probs[i], c->d_pout, (size_t)n * hl, err)) < 0)
            return rc;
    }
    if (hc->want_step[i] || lse) {
        a.q = c->q + (size_t)t0 * H * hd, a.q_pos = d_pos + t0;
        a.n_q = nq, a.mode = KW_CUDA_PROBS_SUM, a.tile = tile, a.out = c->d_pout;
        a.scratch = c->d_pscr, a.lse = c->d_lse + (size_t)t0 * H;
        KTRY(kw_cuda_view_probs(c->st, &a));
        if (hc->want_step[i]) {
            free(hc->sprobs[i]);
            hc->sprobs[i] = malloc(hl * 4);
            if (!hc->sprobs[i])
                return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
            hc->slen[i] = len;
            if ((rc = d2h(c, hc->sprobs[i], c->d_pout, hl, err)) < 0)
                return rc;
        }
        if (lse && (rc = d2h(c, c->hlse + (size_t)t0 * H, c->d_lse + (size_t)t0 * H,
                             (size_t)nq * H, err)) < 0)
            return rc;
    }
    return 0;
}

int kw__cf_run_hooked(kw_cfwd *c, kw_kvpool *pool, kw_fwd_step *s, int n_tok, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    const int L = f->n_layer, nkv = f->n_head_kv, H = f->n_head, hd = f->head_dim, ns = s->n_seq;
    size_t T = (size_t)c->max_tok;
    if (!c->hq) {
        c->hq = malloc(T * H * hd * 4);
        c->hk = malloc(T * nkv * hd * 4);
        c->hv = malloc(T * nkv * hd * 4);
        c->hlse = malloc(T * H * 4);
        if (!c->hq || !c->hk || !c->hv || !c->hlse) {
            free(c->hq), free(c->hk), free(c->hv), free(c->hlse);
            c->hq = c->hk = c->hv = c->hlse = NULL;
            return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
        }
    }
    kw__cf_place_tokens(c, s, n_tok);
    size_t o_ids = 0, o_pos = align16(4 * (size_t)n_tok),
           o_slots = align16(o_pos + 4 * (size_t)n_tok),
           o_logit = align16(o_slots + 4 * (size_t)L * n_tok * nkv),
           o_tokoff = align16(o_logit + 4 * (size_t)(s->n_logits + 1)),
           total = o_tokoff + 4 * (size_t)(ns + 1);
    int rc = kw__cf_stage_reserve(c, total, err);
    if (rc < 0)
        return rc;
    uint8_t *hs = c->stage.h, *ds = c->stage.d;
    memcpy(hs + o_ids, s->ids, 4 * (size_t)n_tok);
    memcpy(hs + o_pos, s->pos, 4 * (size_t)n_tok);
    memcpy(hs + o_slots, c->slots, 4 * (size_t)L * n_tok * nkv);
    memcpy(hs + o_logit, s->logit_tok, 4 * (size_t)s->n_logits);
    int32_t *tok_off = (int32_t *)(hs + o_tokoff);
    for (int i = 0; i < ns; i++)
        tok_off[i] = s->tok_first[i];
    tok_off[ns] = n_tok;
    CU(cudaMemcpyAsync(ds, hs, total, cudaMemcpyHostToDevice, c->st), "step upload");
    c->h2d_bytes += (int64_t)total;
    const int32_t *d_pos = (const int32_t *)(ds + o_pos);
    kw_hookcall hc = {.cfg = f, .pool = pool, .s = s, .views = c->views, .stream = c->st};
    if ((rc = kw__hooks_begin(&hc)) < 0)
        return kw_error_set(err, rc, "cuda: out of memory");
    bool want_q = hc.any[KW_HC_SELECT] || hc.any[KW_HC_MATERIALIZE];
    bool want_lse = hc.needs & KW_NEED_LSE;
    rc = kw_cuda_embed_bf16(c->st, c->tok_embd, f->n_vocab, f->n_embd,
                            (const int32_t *)(ds + o_ids), n_tok, c->x);
    if (rc < 0)
        kw_error_set(err, rc, "cuda: embedding: %s", kw_cuda_last_error());
    for (int l = 0; rc == 0 && l < L; l++) {
        kw__hooks_layer(&hc, l);
        if ((rc = kw__cf_layer_qkv(c, l, n_tok, NULL, err)) < 0)
            break;
        if (hc.any[KW_HC_ON_KV]) {
            if ((rc = d2h(c, c->hk, c->k, (size_t)n_tok * nkv * hd, err)) < 0 ||
                (rc = d2h(c, c->hv, c->v, (size_t)n_tok * nkv * hd, err)) < 0)
                break;
            kw__hooks_call(&hc, l, KW_HC_ON_KV, NULL, c->hk, c->hv, NULL);
            if ((rc = kw__cf_flush_compact(c, err)) < 0)
                break;
        }
        if ((rc = kw__cf_layer_rope_append(c, l, n_tok, d_pos, (const int32_t *)(ds + o_slots),
                                    err)) < 0)
            break;
        for (int i = 0; i < ns && rc == 0; i++)
            if ((rc = kw_view_dense(c->views[i], s->seqs[i]->kv, l, false)) < 0)
                kw_error_set(err, rc, "cuda: view of sequence %d", i);
        if (rc < 0)
            break;
        if (want_q) {
            if ((rc = d2h(c, c->hq, c->q, (size_t)n_tok * H * hd, err)) < 0)
                break;
            kw__hooks_call(&hc, l, KW_HC_SELECT, c->hq, NULL, NULL, NULL);
            kw__hooks_call(&hc, l, KW_HC_MATERIALIZE, NULL, NULL, NULL, NULL);
            if ((rc = kw__cf_flush_compact(c, err)) < 0)
                break;
        }
        if ((rc = hooked_attention(c, pool, s, n_tok, l, (const int32_t *)(ds + o_tokoff),
                                   d_pos, err)) < 0)
            break;
        for (int i = 0; i < ns && rc == 0; i++)
            rc = hooked_probs(c, &hc, s, i, d_pos, err);
        if (rc < 0)
            break;
        kw_attn_stats st = {.lse = want_lse ? c->hlse : NULL, .n_head = H};
        kw__hooks_call(&hc, l, KW_HC_AFTER_ATTN, NULL, NULL, NULL, &st);
        kw__hooks_twins(&hc, l);
        kw__hooks_call(&hc, l, KW_HC_PREFILL_END, NULL, NULL, NULL, NULL);
        if ((rc = kw__cf_flush_compact(c, err)) < 0)
            break;
        rc = kw__cf_layer_post(c, l, n_tok, false, false, err);
    }
    if (rc == 0) {
        kw__hooks_step_end(&hc);
        rc = kw__cf_flush_compact(c, err);
    }
    if (rc == 0)
        rc = kw__cf_logits_out(c, s, (const int32_t *)(ds + o_logit), err);
    kw__hooks_end(&hc);
    return rc;
}

#else
typedef int kw__cf_hooks_none; /* nothing without CUDA: forward_cuda.c answers KW_ENOSYS */
#endif
