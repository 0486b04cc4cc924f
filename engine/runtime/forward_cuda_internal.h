/* The CUDA forward's internals, shared by forward_cuda.c (weights, pool, dense steps and
 * their graphs), forward_cuda_layers.c (the per-layer kernels and helpers both kinds of
 * step use) and forward_cuda_hooks.c (steps with KV hooks, the pool's device callbacks).
 * Only built with CUDA. */
#ifndef KW_RUNTIME_FORWARD_CUDA_INTERNAL_H
#define KW_RUNTIME_FORWARD_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "cuda/kernels_cuda.h"
#include "forward_cuda.h"

typedef struct clw {
    float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    void *wq, *wk, *wv, *wo, *wgate, *wup, *wdown; /* bf16 (N, K) */
} clw;

/* A pinned host buffer and its device twin: lists are built in h and copied to d. */
typedef struct pinbuf {
    uint8_t *h, *d;
    size_t cap, off;
} pinbuf;

/* A captured decode step (run_graph in forward_cuda.c), per batch size. */
typedef struct kw_cgraph {
    cudaGraphExec_t exec;
    const void *ds, *partial, *ptab, *tmp, *tmp_pos; /* the buffers it was captured with */
    int shared_plan;                 /* every layer read the first layer's plan */
    int pdl;                         /* its launches overlap (kw_cuda_pdl_on) */
    int seen, failed;
} kw_cgraph;

/* What the device page table holds of one sequence's lists (forward_cuda_ptab.c). */
typedef struct kw_pmir {
    uint64_t uid;     /* kw_kvseq_uid; 0: none */
    int64_t used_at;  /* the step that last used it */
    int32_t *off, *cap, *n; /* per (layer, KV head): region, its room, pages there */
    uint32_t *ed;     /* kw_kvseq_pages_edits when the region was filled */
} kw_pmir;

/* A patch of a step: pages [from, from + count) of table tab of step sequence seq, to
 * d_ptab[dst ..]. */
typedef struct kw_prun {
    int seq, tab, from, count;
    int32_t dst;
} kw_prun;

#define KW_CF_MIRRORS (2 * KW_FWD_MAX_SEQ)

struct kw_cfwd {
    kw_model_config cfg;
    int max_tok, max_seq, dev;
    cudaStream_t st;
    void *tok_embd, *output; /* bf16 (n_vocab, n_embd); output == tok_embd when tied */
    float *out_norm, *inv_freq;
    clw *L;
    int64_t weight_bytes;
    /* the device pool: pages numbered as the host pool's */
    void *kv_base;
    int32_t *kv_pos;
    int64_t n_pages;
    int P;
    int i8;             /* int8 pages (a KW_KV_I8 host pool), else bf16 */
    int64_t page_bytes; /* one page (positions apart): bf16 2 P head_dim x 2 bytes, or
                           kw_cuda_i8_page_bytes */
    /* int8 pages in prefill steps (kw__cf_i8_prefill): each layer's rows dequantized into
     * bf16 pages i8_pages (positions i8_pos), read through the identity page list i8_iota */
    void *i8_pages;
    int32_t *i8_pos, *i8_iota;
    int64_t i8_cap;     /* pages at most (counted at open) */
    int64_t i8_have;    /* pages allocated (grown by the prefill steps that need them) */
    int32_t *i8_plan;   /* host: the step's groups, per layer (kw__cf_i8_plan) */
    size_t i8_plan_cap; /* ints */
    int32_t *i8_map;    /* host: a hooked step's view spans -> pages of their bf16 copy */
    size_t i8_map_cap;  /* ints */
    /* activations */
    float *x, *q, *k, *v, *att, *rows, *logits;
    void *gate, *up; /* bf16 (max_tok, n_ff): the MLP's gate and up, then SwiGLU's output */
    void *xb; /* bf16 GEMM input (max_tok, max(n_embd, n_head * head_dim, n_ff)) */
    /* dense decode steps' folded norms (kw_cuda_gemv_ext): bf16(h * g) of the residual
     * and its partial sums of squares, for KW_CF_FOLD_ROWS rows */
    void *xg;
    float *ss;
    int fold_on;        /* KVWEAVE_CUDA_FOLD=0: off */
    /* per-step work lists: built in stage.h (pinned), copied to stage.d */
    pinbuf stage;
    float *partial;
    size_t partial_cap; /* floats */
    int32_t *slots;     /* host (n_layer, max_tok, n_kv) */
    int dec_g;          /* g_per_row for decode: n_head / n_kv when 1, 2, 4 or 8, else 1 */
    int attn_slots;     /* concurrent decode-attention blocks (kw_cuda_attn_slots) */
    /* CUDA graphs of dense decode steps, by batch size (KVWEAVE_CUDA_GRAPHS=0: off) */
    kw_cgraph graphs[KW_FWD_MAX_SEQ + 1];
    int graphs_on;
    int prefill_kernel; /* kw_cuda_prefill_kernel: KVWEAVE_CUDA_PREFILL, else AUTO */
    int64_t graph_captures, graph_launches;
    /* bytes copied host -> device and device -> host by steps (not the weights at open) */
    int64_t h2d_bytes, d2h_bytes;
    /* steps with hooks (see run_hooked) */
    kw_view *views[KW_FWD_MAX_SEQ];
    pinbuf lst;                  /* per-layer lists, used front to back (lst.off) */
    float *hq, *hk, *hv, *hlse;  /* host copies for hooks (max_tok rows) */
    float *d_pout, *d_pscr, *d_lse; /* attention probabilities for hooks */
    size_t pout_cap, pscr_cap;   /* floats */
    /* the temporary pool on the device (bf16 pages only): the host pool's temporary pages
     * (f32, written by MATERIALIZE hooks) copied as bf16 pages before a layer's attention
     * reads them (tmp_upload); allocated by the first view that names one, grown to the
     * most pages a layer used */
    void *d_tmp;
    int32_t *d_tmp_pos;
    size_t tmp_cap, tmp_pos_cap; /* bytes, ints */
    /* host reads and writes of device pages (dev_read, dev_write): page lists and rows */
    void *d_io;
    size_t io_cap;               /* bytes */
    /* compactions queued by kw_kvseq_keep (dev_compact), launched together by
     * flush_compact: per table offsets into the keep, src and dst lists */
    int32_t *cq_off;             /* (cq_n + 1) * 3: keep, src, dst offsets */
    int32_t *cq_list;            /* keep..., src..., dst... of each table in turn */
    int cq_n, cq_off_cap, cq_rc;
    size_t cq_len, cq_cap;
    int32_t *h_list;             /* host scratch: prefill items (hooked steps), every
                                    layer's row lengths (dense steps) */
    size_t h_list_cap;
    /* dense steps' page lists, kept on the device (forward_cuda_ptab.c) */
    int32_t *d_ptab;
    int64_t ptab_cap, ptab_used, step_no; /* ints */
    int64_t ptab_min, ptab_resets;        /* smallest size (0: 1 << 20); rebuilds */
    kw_pmir mir[KW_CF_MIRRORS];
    kw_prun *prun;               /* this step's patches */
    int32_t *pstart;             /* this step's regions: (ns, n_layer * n_kv) */
    int n_prun, prun_cap;        /* prun_cap: entries of prun and pstart */
};

#define CU(call, what)                                                                     \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess)                                                             \
            return kw_error_set(err, KW_ECUDA, "cuda: %s: %s", what, cudaGetErrorString(e_)); \
    } while (0)

#define KTRY(call)                                                                         \
    do {                                                                                   \
        int r_ = (call);                                                                   \
        if (r_ < 0)                                                                        \
            return kw_error_set(err, r_, "cuda: %s failed: %s", #call, kw_cuda_last_error()); \
    } while (0)

static inline size_t align16(size_t x) { return (x + 15) & ~(size_t)15; }

/* forward_cuda_layers.c */
int kw__cf_pinbuf_grow(pinbuf *b, size_t bytes, const char *what, kw_error *err);
int kw__cf_stage_reserve(kw_cfwd *c, size_t bytes, kw_error *err);
void kw__cf_place_tokens(kw_cfwd *c, kw_fwd_step *s, int n_tok);
int kw__cf_ensure_partial(kw_cfwd *c, size_t need, kw_error *err);
/* The folded forms of a dense decode step (kw_cuda_gemv_ext): the norms go into the
 * GEMVs (each residual-writing pass also writes the next norm's input), and RoPE with the
 * page append into the Q/K/V pass where the model pairs dimensions (2i, 2i + 1). Steps of
 * one sequence only (KW_CF_FOLD_ROWS): on the 8B shape (H200) they took a batch-1 step
 * from 5.76 to 5.63 ms at 32k, but a batch-2 step from 7.22 to 7.41 ms. */
#define KW_CF_FOLD_ROWS 1
/* The launch-overlap policy (comments elsewhere refer to it as KW_CF_PDL): decode steps
 * launch their layers with programmatic dependent launch unless KVWEAVE_CUDA_PDL says
 * otherwise (kw__cfwd_run sets kw_cuda_pdl_step), except the gate/up pass of a step of
 * one sequence on the folded path (kw__cf_layer_post). On the 8B shape (H200, two rounds
 * in one run each): steps of 2, 4 and 8 sequences 1-4% faster with every pass
 * overlapping (batch 2 at 8k 5.54 -> 5.29 ms); a step of one 2% slower so, but 0-1.7%
 * faster with every pass but gate/up, the only pass that was slower alone with it (32k:
 * 5.61 and 5.63 against 5.69 and 5.64 ms). */
typedef struct kw_cf_fold {
    const int32_t *pos, *slots; /* the step's positions, this layer's slots */
} kw_cf_fold;
bool kw__cf_fold_ok(const kw_cfwd *c, int n_tok);
int kw__cf_fold_first(kw_cfwd *c, int n_tok, kw_error *err);
/* Returns 1 when fold took RoPE and the append as well (kw__cf_layer_rope_append is then
 * not called), 0 when not; fold NULL: the plain norm and projections. */
int kw__cf_layer_qkv(kw_cfwd *c, int l, int n_tok, const kw_cf_fold *fold, kw_error *err);
int kw__cf_layer_rope_append(kw_cfwd *c, int l, int n_tok, const int32_t *d_pos,
                             const int32_t *d_slots, kw_error *err);
int kw__cf_layer_post(kw_cfwd *c, int l, int n_tok, bool att_bf16, bool fold,
                      kw_error *err);
int kw__cf_logits_out(kw_cfwd *c, kw_fwd_step *s, const int32_t *d_logit, kw_error *err);
kw_cuda_attn kw__cf_decode_args(const kw_cfwd *c);
kw_cuda_prefill kw__cf_prefill_args(const kw_cfwd *c, int n_seq);
/* The host_kv_len of a dense step's prefill call (kernels_cuda.h) over one layer's rows
 * (row_tok: n_seq * n_kv host lengths; tok_off: the host token offsets): the rows are
 * the sequences' pages in order and their last tokens the step's queries, so the call
 * may say so where every KV head of a sequence holds the same count. kv_len, or NULL
 * where they differ or for more sequences than cap. */
const int32_t *kw__cf_ordered_rows(int n_seq, int n_kv, const int32_t *tok_off,
                                   const int32_t *row_tok, int32_t *kv_len, int cap);
int kw__cf_plan_tokens(const kw_cfwd *c, int n_rows, const int32_t *row_tokens, int cap);
/* Int8 pages in prefill. The prefill kernels read bf16 pages, so before each layer's
 * prefill attention the rows' pages are dequantized (kw_cuda_rows_i8_to_bf16) into a bf16
 * scratch of at most i8_cap pages, which the kernels then read in table mode through an
 * identity page list. Sequences go in groups whose pages fit i8_cap, one gather and one
 * prefill launch per group. kw__cf_i8_reserve: the scratch's largest size in device
 * bytes for a pool of n_pages (counted by the memory admission at open) and in pages (0
 * and 0 for bf16 pages): no more than one layer of the pool holds (a sequence's pages of
 * a layer are distinct and as many in every layer, so one sequence always fits) nor than
 * a sequence of the model's whole context needs. The scratch is allocated by the first
 * prefill step that needs it and grown as steps need more (never past i8_cap).
 * kw__cf_i8_plan (host only): per layer l, from every layer's row lengths (rows per KV
 * head) and the step's tok_off, writes each row's first scratch page (dst: (L, rows)) and
 * the groups into c->i8_plan, and the largest group's pages to *need; KW_ELIMIT when a
 * sequence does not fit. kw__cf_i8_grow: the scratch made at least `pages` pages.
 * kw__cf_i8_prefill: the gathers and launches of layer l, given the arguments of the
 * whole step's launch (pages, row_ptr, row_tokens, items) and layer l's dst on the
 * device. */
int64_t kw__cf_i8_reserve(const kw_cfwd *c, int64_t n_pages, int64_t *cap_pages);
int kw__cf_i8_plan(kw_cfwd *c, int ns, const int32_t *row_tok, const int32_t *tok_off,
                   int32_t *dst, int64_t *need, kw_error *err);
int kw__cf_i8_grow(kw_cfwd *c, int64_t pages, kw_error *err);
int kw__cf_i8_prefill(kw_cfwd *c, const kw_cuda_prefill *a, int l, const int32_t *d_dst,
                      kw_error *err);

/* forward_cuda_ptab.c: kw__cf_ptab_plan brings the device table's regions up to date
 * for a step's sequences (c->pstart: (ns, n_layer * n_kv) region offsets) and counts the
 * page ids to send; kw__cf_ptab_write writes the patch (runs of (dst, src, count) and
 * the ids) for kw_cuda_scatter_runs and returns the run count. */
int kw__cf_ptab_plan(kw_cfwd *c, kw_seq *const *seqs, int ns, int64_t *patch_ints,
                     kw_error *err);
int kw__cf_ptab_write(const kw_cfwd *c, kw_seq *const *seqs, int32_t *runs, int32_t *data);
void kw__cf_ptab_free(kw_cfwd *c);

/* forward_cuda_hooks.c */
int kw__cf_dgrow(void **p, size_t *cap, size_t n, size_t elem);
int kw__cf_dev_compact(void *ud, const int32_t *keep, int n_keep, const int32_t *src, int n_src,
                       const int32_t *dst, int n_dst);
int kw__cf_dev_read(void *ud, const int32_t *pages, int first, int n, int which, float *out);
int kw__cf_dev_write(void *ud, const int32_t *slots, int n_tok, int n_kv, const float *k,
                     const float *v, const int32_t *pos);
int kw__cf_flush_compact(kw_cfwd *c, kw_error *err);
void kw__cf_flush_quiet(kw_cfwd *c);
int kw__cf_lst_take(kw_cfwd *c, size_t bytes, uint8_t **h, uint8_t **d, kw_error *err);
int kw__cf_run_hooked(kw_cfwd *c, kw_kvpool *pool, kw_fwd_step *s, int n_tok, kw_error *err);

#endif
