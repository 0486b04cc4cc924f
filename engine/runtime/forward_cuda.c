/* The CUDA forward pass (see forward_cuda.h). One step:
 *  1. host: place every step token in the pool for every layer (kw_kvseq_append_slots),
 *     gather every layer's page lists and row lengths (the dense views in the attention
 *     kernels' table mode: 4 bytes per page, no span list), the attention work lists
 *     (prefill tiles, or the split-K plan of decode steps), and send them in one copy;
 *  2. device, per layer: RMSNorm (bf16 out) -> Q, K, V GEMMs (cuBLAS, bf16 x bf16, f32
 *     out, + bias) -> RoPE -> page append (bf16) -> attention over the views (the prefill
 *     kernel when any sequence brings more than one token, else the decode kernel) ->
 *     output GEMM -> residual -> RMSNorm -> gate, up GEMMs -> SwiGLU (bf16) -> down GEMM
 *     -> residual (at 1-2 rows: fused weight-streaming passes, see kw__cf_layer_*); a
 *     dense decode step replays a CUDA graph of this part (run_graph);
 *  3. the logit rows: RMSNorm -> output GEMM -> copied to the host (sampling stays in
 *     batch.c), then the stream is synchronized.
 * Numerics: weights and KV in bf16, activations f32 between kernels, GEMM inputs rounded
 * to bf16, all accumulation in f32. Steps with KV hooks take forward_cuda_hooks.c's
 * per-layer path instead.
 * Int8 pages (a KW_KV_I8 host pool): the same page numbering with kvpool.h's int8 page
 * layout on the device (int8 K and V rows, then their f32 scales), quantized by the
 * append as the host pool would; decode attention reads them directly; prefill attention
 * reads each layer's pages dequantized into a bf16 scratch first (kw__cf_i8_prefill);
 * RoPE and the append are not folded into the Q/K/V pass; steps with KV hooks read a
 * bf16 copy of the pages each view names (forward_cuda_hooks.c). The engine's open
 * (weights, memory admission, allocation) is in forward_cuda_open.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda.h"
#include "kernels.h"
#include "kw_config.h"

#if KW_HAVE_CUDA
#include "forward_cuda_internal.h"

#define KW_CUDA_MAX_KV 256

/* ---- one step ---- */

/* Before a step: compactions queued since the last one are launched, and the list
 * buffer starts over once nothing in flight reads it. */
static int step_begin(kw_cfwd *c, kw_error *err)
{
    int rc = kw__cf_flush_compact(c, err);
    if (rc == 0 && c->cq_rc < 0)
        rc = kw_error_set(err, c->cq_rc, "cuda: a queued page compaction failed: %s",
                          kw_cuda_last_error());
    c->cq_rc = 0;
    if (rc == 0 && c->lst.off) {
        CU(cudaStreamSynchronize(c->st), "step start");
        c->lst.off = 0;
    }
    return rc;
}

/* What the layers of a dense step read from the uploaded step buffer. */
typedef struct stepargs {
    const uint8_t *ds;
    size_t o_pos, o_slots, o_rowptr, o_rowtok, o_tokoff, o_qrow, o_qpos, o_nitems,
        o_items;
    int n_tok, ns, rows, gpr, decode, fixed_grid, n_items, shared_plan;
    const int *plan_items, *plan_parts;
    const size_t *plan_off, *row_part_off;
    size_t o_i8rp; /* int8 pages in prefill: each layer's rows' first scratch pages */
    const int32_t *h_tokoff, *h_rowtok; /* host copies of the step buffer's sections */
} stepargs;

/* 2. of a dense step: embedding and every layer, all on the stream. With fixed_grid
 * (decode steps that a CUDA graph replays) every decode-attention launch has n_items
 * blocks, reads its live item count from the step buffer and always merges, so the
 * launches do not depend on the step's plan. */
static int run_layers(kw_cfwd *c, const stepargs *a, kw_error *err)
{
    const kw_model_config *f = &c->cfg;
    const uint8_t *ds = a->ds;
    const int32_t *d_pos = (const int32_t *)(ds + a->o_pos);
    void *st = c->st;
    int rc;
    KTRY(kw_cuda_embed_bf16(st, c->tok_embd, f->n_vocab, f->n_embd, (const int32_t *)ds,
                            a->n_tok, c->x));
    /* decode: the norms (and RoPE with the append) folded into the weight-streaming passes */
    const bool fold = a->decode && kw__cf_fold_ok(c, a->n_tok);
    if (fold && (rc = kw__cf_fold_first(c, a->n_tok, err)) < 0)
        return rc;
    const int32_t *d_slots = (const int32_t *)(ds + a->o_slots);
    for (int l = 0; l < f->n_layer; l++) {
        const kw_cf_fold fl = {d_pos, d_slots + (size_t)l * a->n_tok * f->n_head_kv};
        if ((rc = kw__cf_layer_qkv(c, l, a->n_tok, fold ? &fl : NULL, err)) < 0 ||
            (rc == 0 && (rc = kw__cf_layer_rope_append(c, l, a->n_tok, d_pos, d_slots, err)) < 0))
            return rc;
        const int32_t *d_rp = (const int32_t *)(ds + a->o_rowptr) + (size_t)l * (a->rows + 1);
        const int32_t *d_pg = c->d_ptab;
        const int32_t *d_rt = (const int32_t *)(ds + a->o_rowtok) + (size_t)l * a->rows;
        const int32_t *d_it = (const int32_t *)(ds + a->o_items);
        if (a->decode) {
            kw_cuda_attn at = kw__cf_decode_args(c);
            at.n_rows = a->rows, at.g_per_row = a->gpr;
            at.row_ptr = d_rp, at.pages = d_pg, at.row_tokens = d_rt;
            at.q_row = (const int32_t *)(ds + a->o_qrow);
            at.q_pos = (const int32_t *)(ds + a->o_qpos);
            at.items = d_it + a->plan_off[l], at.row_part = d_it + a->row_part_off[l];
            if (a->fixed_grid) {
                at.n_items = a->n_items, at.n_parts = 1;
                at.live_items = (const int32_t *)(ds + a->o_nitems) + l;
            } else {
                at.n_items = a->plan_items[l], at.n_parts = a->plan_parts[l];
            }
            at.out_bf16 = c->xb; /* the output projection's input, no conversion pass */
            /* the kernel ahead (Q/K/V pass or RoPE append) writes each row's new token and
             * the queries; the plan is in the uploaded step buffer, and the page table's
             * runs were scattered before the embedding, which launches without overlap */
            at.early = 1;
            KTRY(kw_cuda_attn_decode(st, &at));
        } else {
            kw_cuda_prefill at = kw__cf_prefill_args(c, a->ns);
            at.tok_off = (const int32_t *)(ds + a->o_tokoff), at.row_ptr = d_rp;
            at.pages = d_pg, at.row_tokens = d_rt;
            at.q_pos = d_pos;
            at.n_items = a->n_items, at.items = d_it;
            if (c->i8) {
                const int32_t *d_dst = (const int32_t *)(ds + a->o_i8rp) + (size_t)l * a->rows;
                if ((rc = kw__cf_i8_prefill(c, &at, l, d_dst, err)) < 0)
                    return rc;
            } else {
                int32_t kv_len[256];
                at.host_kv_len = kw__cf_ordered_rows(a->ns, f->n_head_kv, a->h_tokoff,
                                                     a->h_rowtok + (size_t)l * a->rows, kv_len,
                                                     256);
                at.host_tok_off = at.host_kv_len ? a->h_tokoff : NULL;
                if (at.host_kv_len)
                    at.kernel = c->prefill_kernel; /* cudnn where asked for */
                KTRY(kw_cuda_attn_prefill(st, &at));
            }
        }
        if ((rc = kw__cf_layer_post(c, l, a->n_tok, a->decode, fold, err)) < 0)
            return rc;
    }
    return 0;
}

/* Decode steps of one batch size replay a CUDA graph of run_layers (fixed grid): the
 * second step of a batch size captures it (the first runs eagerly, so lazy set-up such
 * as cuBLAS handles and kernel attributes happens outside the capture), and a step whose
 * buffers moved (the step buffer, the split-K partials, the page table or the temporary
 * pool's device copy grew) or whose layers stopped sharing one plan (or started), or
 * whose launches' overlap (kw_cuda_pdl_on) changed, recaptures. A capture that fails
 * leaves that batch size eager. */
static int run_graph(kw_cfwd *c, const stepargs *a, kw_error *err)
{
    kw_cgraph *g = &c->graphs[a->ns];
    if (g->exec && (g->ds != a->ds || g->partial != c->partial || g->ptab != c->d_ptab ||
                    g->tmp != c->d_tmp || g->tmp_pos != c->d_tmp_pos ||
                    g->shared_plan != a->shared_plan || g->pdl != kw_cuda_pdl_on())) {
        cudaGraphExecDestroy(g->exec);
        g->exec = NULL;
    }
    if (!g->exec && !g->failed && g->seen++ > 0) {
        cudaGraph_t gr = NULL;
        if (cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            kw_error scratch = {0};
            int rc = run_layers(c, a, &scratch);
            cudaError_t e = cudaStreamEndCapture(c->st, &gr);
            if (rc == 0 && e == cudaSuccess && gr)
                e = cudaGraphInstantiate(&g->exec, gr, 0);
            if (gr)
                cudaGraphDestroy(gr);
            if (rc < 0 || e != cudaSuccess) {
                g->exec = NULL;
                (void)cudaGetLastError();
            }
        }
        g->failed = g->exec == NULL;
        g->ds = a->ds, g->partial = c->partial, g->ptab = c->d_ptab;
        g->tmp = c->d_tmp, g->tmp_pos = c->d_tmp_pos; /* the decode arguments' pool 1 */
        g->shared_plan = a->shared_plan, g->pdl = kw_cuda_pdl_on();
        c->graph_captures++;
    }
    if (!g->exec)
        return run_layers(c, a, err);
    CU(cudaGraphLaunch(g->exec, c->st), "decode graph launch");
    c->graph_launches++;
    return 0;
}

int kw__cfwd_run(kw_cfwd *c, kw_kvpool *pool, kw_fwd_step *s, int n_tok, kw_error *err)
{
    int rc0 = step_begin(c, err);
    if (rc0 < 0)
        return rc0;
    for (int i = 0; s->stacks && i < s->n_seq; i++)
        if (s->stacks[i] && s->stacks[i]->n > 0)
            return kw__cf_run_hooked(c, pool, s, n_tok, err);
    const kw_model_config *f = &c->cfg;
    const int L = f->n_layer, nkv = f->n_head_kv, H = f->n_head, hd = f->head_dim, ns = s->n_seq;
    const int g = H / nkv;
    bool decode = true;
    for (int i = 0; i < ns; i++)
        decode = decode && s->tok_n[i] == 1;
    if (L > 512 || nkv > KW_CUDA_MAX_KV)
        return kw_error_set(err, KW_ELIMIT, "cuda: at most 512 layers and %d KV heads",
                            KW_CUDA_MAX_KV);
    /* 1. place the step's tokens in every layer */
    kw__cf_place_tokens(c, s, n_tok);
    /* Views in table mode: each row is its sequence's page list for (layer, KV head) and
     * a length, so no per-page span list is built. Rows per KV head (prefill, decode with
     * g in 1/2/4/8) or per query head (rows of one KV head share its page list). */
    const bool per_q = decode && c->dec_g == 1 && g > 1;
    const int rows = ns * (per_q ? H : nkv), gpr = per_q ? 1 : g;
    /* the page lists live on the device between steps: this step sends what changed */
    if (ns > KW_FWD_MAX_SEQ)
        return kw_error_set(err, KW_ELIMIT, "cuda: at most %d sequences per step",
                            KW_FWD_MAX_SEQ);
    int64_t patch_ints = 0;
    int rc = kw__cf_ptab_plan(c, s->seqs, ns, &patch_ints, err);
    if (rc < 0)
        return rc;
    const int32_t *start = c->pstart; /* region of (sequence, layer, KV head) */
    int32_t *row_tok = c->h_list; /* host copy of every layer's row lengths, for the plan */
    if ((size_t)L * rows > c->h_list_cap) {
        row_tok = realloc(c->h_list, sizeof(int32_t) * (size_t)L * rows);
        if (!row_tok)
            return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
        c->h_list = row_tok, c->h_list_cap = (size_t)L * rows;
    }
    for (int l = 0; l < L; l++)
        for (int i = 0, ri = 0; i < ns; i++)
            for (int h = 0; h < (per_q ? H : nkv); h++)
                row_tok[(size_t)l * rows + ri++] = kw_kvseq_len(s->seqs[i]->kv, l, per_q ? h / g : h);
    /* the plan: decode items per layer at a fixed stride (the graph's grid when every
     * layer's plan fits it), or the prefill tiles */
    int n_items = 0, plan_items[512], plan_parts[512], max_parts = 0, max_items = 0;
    int max_tok[512];
    bool same[512];
    size_t plan_off[512], row_part_off[512], plan_ints = 0;
    int tok_off[KW_FWD_MAX_SEQ + 1];
    for (int i = 0; i < ns; i++)
        tok_off[i] = s->tok_first[i];
    tok_off[ns] = n_tok;
    bool fixed = false, shared_plan = false;
    if (decode) {
        for (int l = 0; l < L; l++) {
            const int32_t *rt = row_tok + (size_t)l * rows;
            /* dense views: every layer's rows alike, so one plan serves them all */
            same[l] = l > 0 && memcmp(rt, rt - rows, 4 * (size_t)rows) == 0;
            if (same[l]) {
                max_tok[l] = max_tok[l - 1], plan_items[l] = plan_items[l - 1];
                continue;
            }
            max_tok[l] = kw__cf_plan_tokens(c, rows, rt, 0);
            plan_items[l] = kw_cuda_attn_plan_table_size(rows, rt, c->P, max_tok[l]);
            max_items = plan_items[l] > max_items ? plan_items[l] : max_items;
        }
        /* plans of up to four waves plus a short row each fit a graph (its attention
         * launches are one wave of resident blocks that loop over the live items) */
        const int cap = 4 * c->attn_slots + rows;
        fixed = c->graphs_on && ns <= KW_FWD_MAX_SEQ && max_items <= cap && s->n_logits <= n_tok;
        n_items = fixed ? cap : max_items;
        /* layers with equal row lengths (all of them, in a dense view) read one copy */
        shared_plan = true;
        for (int l = 1; l < L; l++)
            shared_plan = shared_plan && same[l];
        for (int l = 0; l < L; l++) {
            plan_off[l] = (size_t)(shared_plan ? 0 : l) * (4 * (size_t)n_items + 2 * (size_t)rows);
            row_part_off[l] = plan_off[l] + 4 * (size_t)n_items;
        }
        plan_ints = (size_t)(shared_plan ? 1 : L) * (4 * (size_t)n_items + 2 * (size_t)rows);
    } else {
        n_items = kw_cuda_prefill_items(ns, tok_off, NULL);
        plan_ints = (size_t)2 * n_items;
    }
    /* stage layout: sections whose offsets depend only on the batch shape first (a
     * captured graph finds them at the same addresses every step), the page lists last */
    const int n_lrows = n_tok > s->n_logits ? n_tok : s->n_logits; /* n_tok in decode */
    size_t o_ids = 0, o_pos = align16(o_ids + 4 * (size_t)n_tok),
           o_slots = align16(o_pos + 4 * (size_t)n_tok),
           o_rowptr = align16(o_slots + 4 * (size_t)L * n_tok * nkv),
           o_rowtok = align16(o_rowptr + 4 * (size_t)L * (rows + 1)),
           o_logit = align16(o_rowtok + 4 * (size_t)L * rows),
           o_tokoff = align16(o_logit + 4 * (size_t)(n_lrows + 1)),
           o_qrow = align16(o_tokoff + 4 * (size_t)(ns + 1)),
           o_qpos = align16(o_qrow + 4 * (size_t)rows),
           o_nitems = align16(o_qpos + 4 * (size_t)rows),
           o_items = align16(o_nitems + 4 * (size_t)L),
           o_i8rp = align16(o_items + 4 * plan_ints),
           o_runs = align16(o_i8rp + (!decode && c->i8 ? 4 * (size_t)L * rows : 0)),
           o_pdata = align16(o_runs + 12 * (size_t)c->n_prun);
    size_t total = o_pdata + 4 * (size_t)patch_ints + 64;
    if ((rc = kw__cf_stage_reserve(c, total, err)) < 0)
        return rc;
    uint8_t *hs = c->stage.h;
    memcpy(hs + o_ids, s->ids, 4 * (size_t)n_tok);
    memcpy(hs + o_pos, s->pos, 4 * (size_t)n_tok);
    memcpy(hs + o_slots, c->slots, 4 * (size_t)L * n_tok * nkv);
    memcpy(hs + o_rowtok, row_tok, 4 * (size_t)L * rows);
    /* row_ptr: each row's region of the device page table (a query head reads KV head
     * h / g); the patch that brings the table up to date */
    int32_t *rp = (int32_t *)(hs + o_rowptr);
    for (int l = 0; l < L; l++) {
        int32_t *r = rp + (size_t)l * (rows + 1);
        int ri = 0;
        for (int i = 0; i < ns; i++)
            for (int h = 0; h < (per_q ? H : nkv); h++)
                r[ri++] = start[((size_t)i * L + l) * nkv + (per_q ? h / g : h)];
        r[ri] = 0; /* unused in table mode */
    }
    const int n_runs = kw__cf_ptab_write(c, s->seqs, (int32_t *)(hs + o_runs),
                                         (int32_t *)(hs + o_pdata));
    memcpy(hs + o_logit, s->logit_tok, 4 * (size_t)s->n_logits);
    memcpy(hs + o_tokoff, tok_off, 4 * (size_t)(ns + 1));
    int32_t *qrow = (int32_t *)(hs + o_qrow), *qpos = (int32_t *)(hs + o_qpos);
    int32_t *items = (int32_t *)(hs + o_items);
    if (decode) {
        int rpr = per_q ? H : nkv;
        for (int i = 0; i < ns; i++)
            for (int h = 0; h < rpr; h++) {
                qrow[i * rpr + h] = s->tok_first[i] * H + h * gpr;
                qpos[i * rpr + h] = s->pos[s->tok_first[i]];
            }
        for (int l = 0; l < L; l++) {
            if (same[l]) {
                if (!shared_plan) {
                    memcpy(items + plan_off[l], items + plan_off[l - 1],
                           16 * (size_t)plan_items[l]);
                    memcpy(items + row_part_off[l], items + row_part_off[l - 1], 8 * (size_t)rows);
                }
                plan_parts[l] = plan_parts[l - 1];
            } else {
                plan_parts[l] = kw_cuda_attn_plan_table(rows, row_tok + (size_t)l * rows, c->P,
                                                        max_tok[l], items + plan_off[l],
                                                        items + row_part_off[l]);
            }
            max_parts = plan_parts[l] > max_parts ? plan_parts[l] : max_parts;
            ((int32_t *)(hs + o_nitems))[l] = plan_items[l];
        }
        if (fixed)
            max_parts = n_items; /* a graph's partials stay put for any plan that fits */
        if ((rc = kw__cf_ensure_partial(c, (size_t)(max_parts + 1) * gpr * (hd + 2), err)) < 0)
            return rc;
    } else {
        kw_cuda_prefill_items(ns, tok_off, items);
        int64_t need = 0;
        if (c->i8 && ((rc = kw__cf_i8_plan(c, ns, row_tok, tok_off, (int32_t *)(hs + o_i8rp),
                                           &need, err)) < 0 ||
                      (rc = kw__cf_i8_grow(c, need, err)) < 0))
            return rc;
    }
    CU(cudaMemcpyAsync(c->stage.d, hs, total, cudaMemcpyHostToDevice, c->st), "step upload");
    c->h2d_bytes += (int64_t)total;
    KTRY(kw_cuda_scatter_runs(c->st, c->d_ptab, (const int32_t *)(c->stage.d + o_runs), n_runs,
                              (const int32_t *)(c->stage.d + o_pdata)));
    /* 2. layers */
    stepargs a = {c->stage.d, o_pos, o_slots, o_rowptr, o_rowtok, o_tokoff, o_qrow,
                  o_qpos, o_nitems, o_items, n_tok, ns, rows, gpr, decode, fixed, n_items,
                  shared_plan, plan_items, plan_parts, plan_off, row_part_off, o_i8rp,
                  (const int32_t *)(hs + o_tokoff), (const int32_t *)(hs + o_rowtok)};
    if (kw_cuda_pdl_auto())
        kw_cuda_pdl_step(decode); /* KW_CF_PDL */
    rc = fixed ? run_graph(c, &a, err) : run_layers(c, &a, err);
    kw_cuda_pdl_step(-1);
    if (rc < 0)
        return rc;
    /* 3. logits */
    if ((rc = kw__cf_logits_out(c, s, (const int32_t *)(c->stage.d + o_logit), err)) < 0)
        return rc;
    for (int i = 0; i < ns; i++) {
        int64_t nv = 0;
        for (int h = 0; h < nkv; h++)
            nv += (int64_t)L * kw_kvseq_len(s->seqs[i]->kv, 0, h);
        s->attended[i] = nv;
    }
    return 0;
}

void kw__cfwd_graph_stats(const kw_cfwd *c, int64_t *captures, int64_t *launches)
{
    *captures = c->graph_captures, *launches = c->graph_launches;
}

int64_t kw__cfwd_device_used(const kw_cfwd *c)
{
    size_t fr = 0, tot = 0;
    if (cudaSetDevice(c->dev) != cudaSuccess || cudaMemGetInfo(&fr, &tot) != cudaSuccess)
        return -1;
    return (int64_t)(tot - fr);
}

void kw__cfwd_io_stats(const kw_cfwd *c, int64_t *h2d, int64_t *d2h)
{
    *h2d = c->h2d_bytes, *d2h = c->d2h_bytes;
}

int kw__cfwd_fill(kw_cfwd *c, kw_kvseq *kv, int n_past, int n_tok, uint64_t seed,
                  kw_error *err)
{
    int rc0 = step_begin(c, err);
    if (rc0 < 0)
        return rc0;
    const kw_model_config *f = &c->cfg;
    int nkv = f->n_head_kv, kd = nkv * f->head_dim;
    size_t n = (size_t)n_tok * kd;
    float *h = malloc(n * 4), *d = NULL;
    int32_t *pos = malloc((size_t)n_tok * 4), *slots = malloc((size_t)n_tok * nkv * 4), *dp = NULL,
            *ds = NULL;
    if (!h || !pos || !slots) {
        free(h), free(pos), free(slots);
        return kw_error_set(err, KW_ENOMEM, "cuda: out of memory");
    }
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        h[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 2 - 1);
    }
    for (int i = 0; i < n_tok; i++)
        pos[i] = n_past + i;
    int rc = 0;
    if (cudaMalloc((void **)&d, n * 4) != cudaSuccess || cudaMalloc((void **)&dp, (size_t)n_tok * 4) != cudaSuccess
        || cudaMalloc((void **)&ds, (size_t)n_tok * nkv * 4) != cudaSuccess)
        rc = kw_error_set(err, KW_ENOMEM, "cuda: no device memory for the fill");
    if (rc == 0) {
        cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(dp, pos, (size_t)n_tok * 4, cudaMemcpyHostToDevice);
    }
    for (int l = 0; rc == 0 && l < f->n_layer; l++) {
        if ((rc = kw_kvseq_append_slots(kv, l, pos, n_tok, slots)) < 0) {
            kw_error_set(err, rc, "cuda: the pool has no room for %d tokens", n_tok);
            break;
        }
        cudaMemcpy(ds, slots, (size_t)n_tok * nkv * 4, cudaMemcpyHostToDevice);
        if ((rc = (c->i8 ? kw_cuda_kv_append_i8 : kw_cuda_kv_append)(
                 c->st, c->kv_base, c->kv_pos, c->P, f->head_dim, n_tok, nkv, d, d, dp, ds)) < 0)
            kw_error_set(err, rc, "cuda: append: %s", kw_cuda_last_error());
        cudaStreamSynchronize(c->st);
    }
    cudaFree(d), cudaFree(dp), cudaFree(ds);
    free(h), free(pos), free(slots);
    return rc;
}

#else /* no CUDA in this build */

int kw__cfwd_fill(kw_cfwd *c, kw_kvseq *kv, int n_past, int n_tok, uint64_t seed,
                  kw_error *err)
{
    (void)c, (void)kv, (void)n_past, (void)n_tok, (void)seed;
    return kw_error_set(err, KW_ENOSYS, "engine: this build has no CUDA");
}

int kw__cfwd_new(const kw_model *m, int max_tok, int max_seq, kw_kvpool *pool, int device,
                 kw_cfwd **out, kw_error *err)
{
    (void)m, (void)max_tok, (void)max_seq, (void)pool, (void)device;
    *out = NULL;
    return kw_error_set(err, KW_ENOSYS, "engine: this build has no CUDA (only 'cpu')");
}
kw_cfwd *kw__cfwd_free(kw_cfwd *c)
{
    (void)c;
    return NULL;
}
void kw__cfwd_graph_stats(const kw_cfwd *c, int64_t *captures, int64_t *launches)
{
    (void)c;
    *captures = 0, *launches = 0;
}
void kw__cfwd_io_stats(const kw_cfwd *c, int64_t *h2d, int64_t *d2h)
{
    (void)c;
    *h2d = 0, *d2h = 0;
}
int64_t kw__cfwd_device_used(const kw_cfwd *c)
{
    (void)c;
    return -1;
}
int64_t kw__cfwd_ptab(kw_cfwd *c, int64_t min_ints)
{
    (void)c, (void)min_ints;
    return 0;
}

int kw__cfwd_run(kw_cfwd *c, kw_kvpool *pool, kw_fwd_step *s, int n_tok, kw_error *err)
{
    (void)c, (void)pool, (void)s, (void)n_tok;
    return kw_error_set(err, KW_ENOSYS, "engine: this build has no CUDA");
}
#endif
