/* kvweave — the one kernel dispatch API. Every kernel takes a backend and a stream
 * (NULL on the CPU) and returns a status. CPU implementations: kernels/cpu (OpenMP +
 * SIMD; OpenBLAS for GEMM), with plain references in kernels/cpu/reference.c that the
 * tests compare against. Layouts are row-major; shapes are given on each call.
 * With KW_BK_CUDA every array argument is a device pointer, the stream a cudaStream_t
 * (NULL: the default stream), and the call returns once the work is queued.
 *
 *   kw_k_linear(KW_BK_CPU, NULL, x, w, b, y, M, N, K);   // y(M,N) = x(M,K) w(N,K)^T + b
 */
#ifndef KW_KERNELS_H
#define KW_KERNELS_H

#include <stdint.h>

#include "kvweave/kvpool.h"
#include "kvweave/model.h"
#include "kvweave/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kw_backend { KW_BK_CPU = 0, KW_BK_CUDA = 1 } kw_backend;

/* y(M,N) = x(M,K) . w(N,K)^T (+ bias(N), nullable). */
int kw_k_linear(kw_backend bk, void *stream, const float *x, const float *w,
                const float *bias, float *y, int M, int N, int K);
/* A weight matrix (N, K) in blocks of 32 along K, split by kw_split_blocks: element j of
 * row n is (float)code * scale[(n K + j) / group] + min[...]; int4 codes two a byte
 * (16 bytes a block: element j < 16 of a block the low nibble of its byte j, j + 16 the
 * high nibble), int8 codes signed (32 bytes a block). */
typedef struct kw_qmat {
    int bits;             /* 4 or 8 */
    int group;            /* elements a scale and minimum cover: 32 (0 reads as 32) or 16 */
    const uint8_t *codes; /* (N, K * bits / 8) */
    const float *scale, *min; /* (N, K / group) */
} kw_qmat;
/* y(M,N) = x(M,K) . w^T (+ bias) over a block-quantized w, dequantized as it is read
 * (CPU only; for the few rows of decode steps): the same products as kw_k_linear over
 * the dequantized matrix, summed in another order. K a multiple of 32. */
int kw_k_linear_q(kw_backend bk, void *stream, const float *x, const kw_qmat *w,
                  const float *bias, float *y, int M, int N, int K);
/* The same product for many rows (prefill chunks): w's rows are dequantized
 * tile_floats / K at a time into tile, the caller's scratch (at least K floats), and
 * multiplied by sgemm (CPU only). */
int kw_k_linear_qt(kw_backend bk, void *stream, const float *x, const kw_qmat *w,
                   const float *bias, float *y, int M, int N, int K, float *tile,
                   int64_t tile_floats);
/* y(rows,dim) = x / rms(x) * g ; y may equal x. */
int kw_k_rmsnorm(kw_backend bk, void *stream, const float *x, const float *g, float *y,
                 int rows, int dim, float eps);
/* Rotates x(n_tok, n_heads, head_dim) in place at positions pos(n_tok), with
 * inv_freq(head_dim/2) from kw_rope_inv_freq. layout: pairs (2i,2i+1) or (i,i+d/2). */
int kw_k_rope(kw_backend bk, void *stream, float *x, const int32_t *pos, int n_tok,
              int n_heads, int head_dim, const float *inv_freq, kw_rope_layout layout);
/* inv_freq(head_dim/2) from theta and the model's scaling (none, linear, llama3). */
void kw_rope_inv_freq(const kw_model_config *cfg, float *inv_freq);
/* out(n) = silu(gate) * up */
int kw_k_swiglu(kw_backend bk, void *stream, const float *gate, const float *up, float *out,
                int64_t n);
/* out(n,dim) = table[ids[i]] ; ids checked against n_rows. */
int kw_k_embed(kw_backend bk, void *stream, const float *table, int64_t n_rows, int dim,
               const int32_t *ids, int n, float *out);
/* out(n,dim) = row ids[i] of a block-quantized table, dequantized (CPU only); dim a
 * multiple of 32. */
int kw_k_embed_q(kw_backend bk, void *stream, const kw_qmat *table, int64_t n_rows, int dim,
                 const int32_t *ids, int n, float *out);
/* y += x */
int kw_k_add(kw_backend bk, void *stream, float *y, const float *x, int64_t n);
/* In-place softmax of each row of x(rows, n). */
int kw_k_softmax(kw_backend bk, void *stream, float *x, int rows, int n);
/* log-softmax of logits(n) into out(n) (nullable: only the log-sum-exp is returned). */
double kw_k_logsumexp(const float *logits, int n);
/* Index of the max (ties: lowest index). */
int kw_k_argmax(const float *x, int n);

/* Attention over views (kernels/cpu/attention.c). Sequence i has query tokens
 * [tok_off[i], tok_off[i+1]) and reads views[i]: a query head h reads row h when the
 * view is per query head, else row h / (n_head / n_kv). A query at position p reads only
 * stored tokens with position <= p (causal by stored position: chunked prefill appends
 * the chunk first, then attends). With inv_freq set (pre-RoPE pools) K is rotated at
 * read from its stored position. Online softmax; rows longer than split_min tokens are
 * split (split-K) and merged. A query that reads no token gets zeros and lse -inf. */
typedef struct kw_attn_args {
    kw_kvmem mem;
    int n_seq;
    const kw_view *const *views; /* (n_seq) */
    const int *tok_off;          /* (n_seq + 1) */
    const float *q;              /* (n_tok, n_head, head_dim), RoPE applied */
    const int32_t *q_pos;        /* (n_tok) */
    int n_head, n_kv;
    float scale;                 /* usually 1/sqrt(head_dim) */
    const float *inv_freq;       /* (head_dim/2) nullable: K stored after RoPE */
    kw_rope_layout layout;
    float *out;                  /* (n_tok, n_head, head_dim) */
    float *lse;                  /* (n_tok, n_head) nullable */
} kw_attn_args;
int kw_k_attn_view(kw_backend bk, void *stream, const kw_attn_args *a);
/* The plain reference (double accumulation, one query head at a time). */
void kw_ref_attn_view(const kw_attn_args *a);

/* Plain references (kernels/cpu/reference.c): the same contracts, written for
 * clarity; tests compare every kernel with these. */
void kw_ref_linear(const float *x, const float *w, const float *bias, float *y, int M, int N,
                   int K);
void kw_ref_rmsnorm(const float *x, const float *g, float *y, int rows, int dim, float eps);
void kw_ref_rope(float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
                 const float *inv_freq, kw_rope_layout layout);
void kw_ref_swiglu(const float *gate, const float *up, float *out, int64_t n);
void kw_ref_softmax(float *x, int rows, int n);

/* ---- selection, for eviction methods (kernels/cpu/select.c) ----
 * Observation-window scores: probs (n_q, n_head, len) as after_attn hands them (the
 * probabilities of n_q queries over len view tokens); out (n_head / group, n_key):
 *   out[r][j] = (1 / group) * sum over heads h of group r, over queries q, of probs[q][h][j]
 * for key j < n_key <= len. group = n_head / n_kv averages a GQA group's heads (scores
 * per KV head); group = 1 scores each query head. */
int kw_k_window_scores(kw_backend bk, void *stream, const float *probs, int n_q, int n_head,
                       int len, int group, int n_key, float *out);
/* 1-D pooling of each row of x (rows, n) into out (rows, n) (out != x), stride 1: out[i]
 * covers x[i - kernel/2, i - kernel/2 + kernel). AVG divides by kernel, the padding
 * counting as zeros (avg_pool1d with padding kernel/2, count_include_pad); MAX ignores
 * the padding. For an odd kernel the window is centred. */
typedef enum kw_pooling { KW_POOLING_AVG = 0, KW_POOLING_MAX = 1 } kw_pooling;
int kw_k_pool1d(kw_backend bk, void *stream, const float *x, int rows, int n, int kernel,
                kw_pooling mode, float *out);
/* Top-k of each row of x (rows, n): idx (rows, k) the indices of the k largest values,
 * ties to the lower index (-0 ties with +0), listed in increasing index order (ready for
 * kw_kvseq_keep). 0 <= k <= n; KW_EINVAL on a NaN. CUDA (exact radix select, one block
 * per row): a NaN is not reported (that would synchronize); the row holding it gets k
 * indices of -1 instead, which kw_kvseq_keep rejects. CUDA pooling takes kernel <= 8192. */
int kw_k_topk(kw_backend bk, void *stream, const float *x, int rows, int n, int k,
              int32_t *idx);
void kw_ref_window_scores(const float *probs, int n_q, int n_head, int len, int group,
                          int n_key, float *out);
void kw_ref_pool1d(const float *x, int rows, int n, int kernel, kw_pooling mode, float *out);
void kw_ref_topk(const float *x, int rows, int n, int k, int32_t *idx);

/* ---- KVStar's multi-query vote (kernels/cpu/kvstar.c; CPU only: it runs on host threads
 * beside the device) ----
 * For each of n_q queries q (n_q, n_head, head_dim) and each query head h, with KV head
 * kvh = h / (n_head / n_kv): the query cut to its KV head's kept channels chan (n_kv, dk)
 * scores every sub-vector of that KV head, sub (n_kv, n_sub, dk) as IEEE fp16 bits, by
 * a plain dot product (no 1/sqrt(d) scaling); a softmax over the n_sub logits; and
 * score[s / per_block] += its probability, for every query and head. score: (n_sub /
 * per_block), overwritten. Thread-safe (no OpenMP inside). */
int kw_k_kvstar_vote(const float *q, int n_q, int n_head, int n_kv, int head_dim,
                     const int32_t *chan, int dk, const uint16_t *sub, int n_sub,
                     int per_block, float *score);
/* (fp16 bits: kw_f32_to_f16 and kw_f16_to_f32 in tensor.h) */

/* ---- page metadata for query-aware selection (kernels/cpu/pages.c,
 * kernels/cuda/pages.cu; CUDA page scores take head_dim <= 256) ----
 * k: (n_tok, head_dim) the keys of one KV head in stored order; page p covers rows
 * [p*page, min((p+1)*page, n_tok)). kmin, kmax: (ceil(n_tok/page), head_dim) the
 * per-channel min and max over each page's rows. */
int kw_k_page_bounds(kw_backend bk, void *stream, const float *k, int n_tok, int head_dim,
                     int page, float *kmin, float *kmax);
/* scores(n_q, n_pages): for query row h and page p, sum_i max(q_i*kmin_i, q_i*kmax_i),
 * an upper bound of q.k over every key of the page. q: (n_q, head_dim). */
int kw_k_page_scores(kw_backend bk, void *stream, const float *q, int n_q, int head_dim,
                     const float *kmin, const float *kmax, int n_pages, float *scores);
void kw_ref_page_bounds(const float *k, int n_tok, int head_dim, int page, float *kmin,
                        float *kmax);
void kw_ref_page_scores(const float *q, int n_q, int head_dim, const float *kmin,
                        const float *kmax, int n_pages, float *scores);

/* ---- page compaction: the data movement of kw_kvseq_keep (kernels/cpu/pages.c,
 * kernels/cuda/pages.cu), batched over page tables ----
 * A pool's pages as bytes. Page g starts at base + g * page_bytes and holds K rows
 * (P, row_bytes), then V rows (P, row_bytes), then, when scale_bytes is 4, P K scales
 * and P V scales (f32); its P positions are at pos + g * P (nullable: not moved).
 * kvpool.h's f32 pages: row_bytes = 4 * head_dim, scale_bytes 0; int8 pages:
 * row_bytes = head_dim, scale_bytes 4; bf16 device pages: 2 * head_dim, 0. */
typedef struct kw_page_layout {
    uint8_t *base;
    int32_t *pos;       /* nullable */
    int64_t page_bytes; /* >= 2 * P * (row_bytes + scale_bytes) */
    int page_tokens;    /* P */
    int row_bytes;      /* one K or V row */
    int scale_bytes;    /* 0 or 4 */
} kw_page_layout;
/* Table t (of n_tab) stores its token j in slot j % P of page src[src_off[t] + j / P]
 * and keeps tokens keep[keep_off[t] .. keep_off[t+1]) (strictly increasing). Kept token
 * i is written to slot i % P of page dst[dst_off[t] + i / P]: K row, V row, scales and
 * position. Offsets are CSR: keep_off, src_off, dst_off have n_tab + 1 entries, and
 * table t has dst_off[t+1] - dst_off[t] >= ceil(n_keep / P) destination pages.
 * dst may be the table's own pages (in place, as kw_kvseq_keep does): each destination
 * page is either the source page at the same place of the table or a page no table of
 * the call reads. Slots past the last kept token are left as they were; the pages past
 * ceil(n_keep / P) are the caller's to free. The CPU checks keep (KW_EINVAL); the CUDA
 * path skips a bad index instead (checking would synchronize). On the GPU one block
 * packs one table, so a call should batch every (layer, KV head) table of a step. */
int kw_k_page_compact(kw_backend bk, void *stream, const kw_page_layout *pool, int n_tab,
                      const int32_t *keep_off, const int32_t *keep, const int32_t *src_off,
                      const int32_t *src, const int32_t *dst_off, const int32_t *dst);
void kw_ref_page_compact(const kw_page_layout *pool, int n_tab, const int32_t *keep_off,
                         const int32_t *keep, const int32_t *src_off, const int32_t *src,
                         const int32_t *dst_off, const int32_t *dst);

#ifdef __cplusplus
}
#endif
#endif
