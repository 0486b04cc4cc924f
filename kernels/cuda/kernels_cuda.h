/* CUDA launchers behind kernels.h, callable from C. Each takes a cudaStream_t (as void *),
 * device pointers, checks its shapes, launches, checks the launch, and returns a status;
 * a CUDA failure is KW_ECUDA with the call and file:line in kw_cuda_last_error(). */
#ifndef KW_KERNELS_CUDA_H
#define KW_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no device or no driver. */
int kw_cuda_device_count(void);
/* The message of the last failure on this thread ("" if none). */
const char *kw_cuda_last_error(void);
/* Programmatic dependent launch of the decode-path kernels (a kernel's start overlaps the
 * end of the one before it on the stream; weight loads are issued before the wait), on
 * compute capability 9.0 only. KVWEAVE_CUDA_PDL=1 turns it on for every launch, =0 off;
 * unset (or any other value) leaves the choice to the caller, per group of launches:
 * kw_cuda_pdl_step(1) / (0) on this thread (the CUDA engine turns it on for decode
 * steps), (-1) clears it (off). kw_cuda_set_pdl(1) / (0) forces it on /
 * off whatever the environment says, (-1) returns to the environment's choice.
 * kw_cuda_pdl_auto: whether nothing forces a choice; kw_cuda_pdl_on: whether this
 * thread's launches use it now. */
void kw_cuda_set_pdl(int on);
int kw_cuda_pdl_auto(void);
void kw_cuda_pdl_step(int on);
int kw_cuda_pdl_on(void);

/* rmsnorm.cu */
int kw_cuda_rmsnorm(void *stream, const float *x, const float *g, float *y, int rows, int dim,
                    float eps);
/* rope.cu: interleaved != 0 for pairs (2i, 2i+1), else (i, i + d/2) */
int kw_cuda_rope(void *stream, float *x, const int32_t *pos, int n_tok, int n_heads,
                 int head_dim, const float *inv_freq, int interleaved);
/* elementwise.cu */
int kw_cuda_swiglu(void *stream, const float *gate, const float *up, float *out, int64_t n);
int kw_cuda_add(void *stream, float *y, const float *x, int64_t n);
/* synchronizes the stream to report an id out of range (KW_ERANGE) */
int kw_cuda_embed(void *stream, const float *table, int64_t n_rows, int dim,
                  const int32_t *ids, int n, float *out);
/* softmax.cu */
int kw_cuda_softmax(void *stream, float *x, int rows, int n);
/* out(rows): index of each row's max, ties to the lowest index */
int kw_cuda_argmax(void *stream, const float *x, int rows, int n, int32_t *out);

/* attn_decode.cu: one query token per row group, reading a view of a paged pool.
 * Pool page g of pool b holds K (P, head_dim) then V (P, head_dim) at
 * base[b] + g * 2 * P * head_dim elements (f32 or bf16; int8 pages: KW_CUDA_KV_I8
 * below), and P positions at pos[b] + g * P. A row r serves g_per_row consecutive query
 * heads starting at q row q_row[r] (its KV head's group, or one head when the view is per
 * query head); it reads spans [row_ptr[r], row_ptr[r+1]) and only stored tokens with
 * position <= q_pos[r]. */
typedef struct kw_cuda_span {
    int32_t page;
    uint16_t first, n;
    uint8_t pool;
} kw_cuda_span;

/* KW_CUDA_KV_I8: kvpool.h's int8 pages (kw_cuda_i8_page_bytes each): K (P, head_dim) and
 * V (P, head_dim) as int8, then the P K scales and the P V scales as f32 (row = scale x
 * int8); both pools of a call in that layout. page_tokens must be even, so that every
 * page and row starts on a 16-byte line (KW_EINVAL otherwise). */
typedef enum kw_cuda_kvtype {
    KW_CUDA_KV_F32 = 0,
    KW_CUDA_KV_BF16 = 1,
    KW_CUDA_KV_I8 = 2,
} kw_cuda_kvtype;

/* Bytes of one page of kvpool.h's int8 pages (positions apart): K (P, head_dim) and V
 * (P, head_dim) as int8, then the P K scales and the P V scales as f32. */
static inline int64_t kw_cuda_i8_page_bytes(int page_tokens, int head_dim)
{
    return 2 * (int64_t)page_tokens * head_dim + 8 * (int64_t)page_tokens;
}

typedef struct kw_cuda_attn {
    /* device: main and temporary pool (nullable), each of fewer than 2^32 K/V rows
     * (pages x 2 x page_tokens) */
    const void *base[2];
    const int32_t *pos[2];        /* device */
    kw_cuda_kvtype kv;            /* table mode: BF16 or I8 */
    int page_tokens, head_dim;    /* head_dim: 64 or 128 */
    int n_rows, g_per_row;        /* g_per_row <= 8 */
    const int32_t *row_ptr;       /* device (n_rows + 1) */
    const kw_cuda_span *spans;    /* device */
    const int32_t *q_row;         /* device (n_rows) */
    const int32_t *q_pos;         /* device (n_rows) */
    const float *q;               /* device (n_q_rows, head_dim) */
    float *out;                   /* device (n_q_rows, head_dim) */
    void *out_bf16;               /* nullable, device bf16 (n_q_rows, head_dim): written
                                     instead of out (the next GEMM's input) */
    float *lse;                   /* device (n_q_rows), nullable */
    float scale;
    /* split-K plan (kw_cuda_attn_plan): work items over span ranges */
    int n_items;
    const int32_t *items;         /* device (n_items, 4): row, span_begin, span_end, part
                                     (part -1: the item is the whole row) */
    const int32_t *row_part;      /* device (n_rows, 2): first part, part count (0: unsplit) */
    float *partial;               /* device (n_parts, g_per_row, head_dim + 2) */
    int n_parts;
    /* Table mode (pages non-NULL; bf16 or int8 pages): row r holds tokens
     * 0 .. row_tokens[r] - 1 of its page list pages[row_ptr[r] ..]: token t at page
     * pages[row_ptr[r] + t / P], slot t % P, main pool (a sequence's dense view, no span
     * list). spans is unused and the items hold token ranges (kw_cuda_attn_plan_table). */
    const int32_t *pages;         /* device */
    const int32_t *row_tokens;    /* device (n_rows) */
    /* Nullable, device: the plan's item count, when n_items is a capacity at least as
     * large (a CUDA graph replays one launch for plans of any size up to n_items: bf16
     * pages launch one wave of resident blocks that loop over the live items, f32 pages
     * n_items blocks of which those past the count exit; the merge runs whenever
     * n_parts > 0). */
    const int32_t *live_items;
    /* Table mode, with programmatic dependent launch: early = k > 0 says the kernel ahead
     * on the stream writes nothing the call reads but the queries and the last k tokens of
     * each row (their K, V and positions), and that the plan, the page table and the row
     * lengths were written before it started. A block then finds its first item's pages
     * and starts copying the K and V of its other tokens before that kernel ends (the
     * decode step: the token it appends). 0: nothing is read before it ends. */
    int early;
} kw_cuda_attn;

/* Host-side plan from host copies of row_ptr and spans: cuts each row into items of at
 * most max_tokens tokens (whole spans; a row is never split below one span), so short
 * and long rows both fill the GPU. kw_cuda_attn_plan_size gives the item count to size
 * items (4 ints each); row_part has 2 ints per row. Returns the part count. */
int kw_cuda_attn_plan_size(int n_rows, const int32_t *row_ptr, const kw_cuda_span *spans,
                           int max_tokens);
int kw_cuda_attn_plan(int n_rows, const int32_t *row_ptr, const kw_cuda_span *spans,
                      int max_tokens, int32_t *items, int32_t *row_part);
/* The plan of a table-mode call from host row lengths: items (row, token_begin, token_end,
 * part) of at most max_tokens tokens (rounded down to a multiple of 32, at least 32). */
int kw_cuda_attn_plan_table_size(int n_rows, const int32_t *row_tokens, int page_tokens,
                                 int max_tokens);
int kw_cuda_attn_plan_table(int n_rows, const int32_t *row_tokens, int page_tokens,
                            int max_tokens, int32_t *items, int32_t *row_part);
/* The item size (max_tokens for the plans above) for a call over rows of these lengths
 * on `slots` concurrent blocks: the size whose whole waves of items cost least (an item
 * costs its tokens plus a fixed amount), a multiple of 64 from 64 to cap (0: no cap). */
int kw_cuda_attn_plan_tokens(int n_rows, const int32_t *row_tokens, int slots, int cap);
/* Concurrent blocks of the bf16 decode kernel on the current device (multiprocessors x
 * blocks per multiprocessor), or a negative code; kw_cuda_attn_slots_kv: of the kernel for
 * pages of type kv (KW_CUDA_KV_BF16 or KW_CUDA_KV_I8). */
int kw_cuda_attn_slots(int head_dim);
int kw_cuda_attn_slots_kv(int head_dim, kw_cuda_kvtype kv);
int kw_cuda_attn_decode(void *stream, const kw_cuda_attn *a);

/* gemm.cu (cuBLAS): y(M,N) = x(M,K) w(N,K)^T (+ bias(N), nullable), row-major.
 * kw_cuda_linear: all f32 (plain f32 math, no TF32). kw_cuda_linear_bf16: x and w bf16,
 * f32 accumulation and f32 y. kw_cuda_to_bf16: y(n) = bf16(x) (round to nearest even). */
int kw_cuda_linear(void *stream, const float *x, const float *w, const float *bias, float *y,
                   int M, int N, int K);
int kw_cuda_linear_bf16(void *stream, const void *x, const void *w, const float *bias,
                        float *y, int M, int N, int K);
int kw_cuda_to_bf16(void *stream, const float *x, void *y, int64_t n);
/* kw_cuda_linear_bf16_ex: the same product with an epilogue in cuBLAS: KW_LIN_ADD adds it
 * (and bias) to the f32 y (y += x w^T + bias; a residual), KW_LIN_BF16 stores y as bf16
 * (bias must be NULL); not both (KW_EINVAL). flags = 0 is kw_cuda_linear_bf16. */
enum { KW_LIN_ADD = 1, KW_LIN_BF16 = 2 };
int kw_cuda_linear_bf16_ex(void *stream, const void *x, const void *w, const float *bias,
                           void *y, int M, int N, int K, int flags);
/* kw_cuda_gemv_bf16: the same product for M <= 8 rows (K a multiple of 8, x and w 16-byte
 * aligned; else KW_EINVAL) as a weight-streaming kernel; kw_cuda_linear_bf16 takes it for
 * M <= the rows set by kw_cuda_set_gemv_rows (default KW_GEMV_MAX_ROWS, 0: always cuBLAS;
 * process-wide, for benchmarks). */
#define KW_GEMV_MAX_ROWS 2
int kw_cuda_gemv_bf16(void *stream, const void *x, const void *w, const float *bias, float *y,
                      int M, int N, int K);
void kw_cuda_set_gemv_rows(int max_rows);
int kw_cuda_gemv_rows(void);
/* Fused decode GEMVs (M <= 8, K a multiple of 8, x and weights 16-byte aligned; else
 * KW_EINVAL). kw_cuda_gemv_multi_bf16: n_out (1..3) products y_i(M, n_i) = x(M,K)
 * w_i(n_i,K)^T (+ bias_i) in one launch (the Q, K and V projections); add != 0 adds to
 * y_i instead of storing (a residual). kw_cuda_gemv_swiglu_bf16: out(M,N) =
 * bf16(silu(x w_gate^T) * (x w_up^T)), the MLP's first half in one pass. */
typedef struct kw_cuda_gemv_out {
    const void *w;
    const float *bias; /* nullable */
    float *y;
    int n;
} kw_cuda_gemv_out;
int kw_cuda_gemv_multi_bf16(void *stream, const void *x, int M, int K,
                            const kw_cuda_gemv_out *outs, int n_out, int add);
int kw_cuda_gemv_swiglu_bf16(void *stream, const void *x, const void *w_gate, const void *w_up,
                             void *out, int M, int N, int K);
/* The decode step's RMSNorm and RoPE folded into the GEMVs around them (the _ext forms;
 * ext NULL: as above). A norm of residual rows h (M, K) with weight g is applied as
 * y = (bf16(h * g) w^T) / sqrt(mean(h^2) + eps) (the same as bf16(h / sqrt(..) * g) w^T up
 * to rounding), so the kernel that writes h also writes the GEMV's input: with g_out
 * (kw_cuda_gemv_multi_ext, add != 0, one output), xg_out = bf16(y * g_out) from the new
 * residual y and ss_out (M, ceil(n / KW_GEMV_NORM_PART)), the sums of y^2 over each
 * KW_GEMV_NORM_PART outputs; kw_cuda_norm_parts writes the same for a residual no GEMV
 * wrote (the first layer's). The GEMV on xg then takes ss_in (those sums, K = n) and eps
 * and scales each row's products before the bias. With pos (store, three outputs: q, k,
 * v of head_dim-wide heads): RoPE with interleaved pairs (2i, 2i + 1) on q and k, and k
 * and v appended as bf16 at slots, as kw_cuda_rope_append does. KW_EINVAL where a field
 * does not fit the call. */
#define KW_GEMV_NORM_PART 4
typedef struct kw_cuda_gemv_ext {
    const float *ss_in; /* (M, ceil(K / KW_GEMV_NORM_PART)) */
    float eps;
    const float *g_out; /* (n) */
    void *xg_out;       /* bf16 (M, n), 16-byte aligned for the GEMV that reads it */
    float *ss_out;      /* (M, ceil(n / KW_GEMV_NORM_PART)) */
    const int32_t *pos, *slots; /* (M), (M, n_kv) */
    const float *inv_freq;      /* (head_dim / 2) */
    int head_dim, page_tokens;
    void *kv_base;
    int32_t *kv_pos;
} kw_cuda_gemv_ext;
int kw_cuda_gemv_multi_ext(void *stream, const void *x, int M, int K,
                           const kw_cuda_gemv_out *outs, int n_out, int add,
                           const kw_cuda_gemv_ext *ext);
int kw_cuda_gemv_swiglu_ext(void *stream, const void *x, const void *w_gate, const void *w_up,
                            void *out, int M, int N, int K, const kw_cuda_gemv_ext *ext);
int kw_cuda_norm_parts(void *stream, const float *h, const float *g, void *xg, float *ss,
                       int M, int K);
/* rmsnorm.cu: as kw_cuda_rmsnorm with a bf16 y (the input of the next GEMM) */
int kw_cuda_rmsnorm_bf16(void *stream, const float *x, const float *g, void *y, int rows,
                         int dim, float eps);
/* elementwise.cu: swiglu into bf16; embedding gather from a bf16 table into f32 (ids
 * checked by the caller; a bad id gives a NaN row); out(n, dim) = x[rows[i]] */
int kw_cuda_swiglu_bf16(void *stream, const float *gate, const float *up, void *out,
                        int64_t n);
/* the same from bf16 gate and up (n even, 4-byte aligned pointers; else KW_EINVAL) */
int kw_cuda_swiglu_bf16_in(void *stream, const void *gate, const void *up, void *out,
                           int64_t n);
int kw_cuda_embed_bf16(void *stream, const void *table, int64_t n_rows, int dim,
                       const int32_t *ids, int n, float *out);
int kw_cuda_gather_rows(void *stream, const float *x, const int32_t *rows, int n, int dim,
                        float *out);

/* kvpage.cu: K and V (n_tok, n_kv, head_dim) f32 into bf16 pages (kvpool.c's layout:
 * page g at base + g * 2 * P * head_dim, K rows then V rows) at global slots
 * slots[t * n_kv + h] = page * P + slot (< 0: skipped), positions into pos_base[slot]. */
int kw_cuda_kv_append(void *stream, void *base, int32_t *pos_base, int page_tokens,
                      int head_dim, int n_tok, int n_kv, const float *k, const float *v,
                      const int32_t *pos, const int32_t *slots);
/* kw_cuda_rope then kw_cuda_kv_append in one launch: q (n_tok, n_head, head_dim) and k
 * (n_tok, n_kv, head_dim) rotated in place (kw_cuda_rope's arithmetic), then k and v
 * appended as kw_cuda_kv_append does. */
int kw_cuda_rope_append(void *stream, float *q, float *k, const float *v, const int32_t *pos,
                        int n_tok, int n_head, int n_kv, int head_dim, const float *inv_freq,
                        int interleaved, void *base, int32_t *pos_base, int page_tokens,
                        const int32_t *slots);
/* The same two into int8 pages (kvpool.h's int8 layout, kw_cuda_i8_page_bytes a page):
 * each K and V row quantized as the host pool does (kvpool.c: absmax over the row, scale
 * = absmax / 127, int8 = round-to-nearest-even(x * (127 / absmax)) clamped to
 * [-127, 127], scale 0 and zeros for a zero row), so a finite row's bytes and scale equal
 * the host pool's. head_dim even. */
int kw_cuda_kv_append_i8(void *stream, void *base, int32_t *pos_base, int page_tokens,
                         int head_dim, int n_tok, int n_kv, const float *k, const float *v,
                         const int32_t *pos, const int32_t *slots);
int kw_cuda_rope_append_i8(void *stream, float *q, float *k, const float *v,
                           const int32_t *pos, int n_tok, int n_head, int n_kv, int head_dim,
                           const float *inv_freq, int interleaved, void *base,
                           int32_t *pos_base, int page_tokens, const int32_t *slots);
/* A table's rows for the host (kvpool.h, kw_kvpool_device.read): rows [first, first + n)
 * of the pages pages[0..] (row j at slot j % P of pages[j / P]; first < P), K (which 0)
 * or V (1) of bf16 pages (kw_cuda_kv_append's layout) or int8 pages (KW_CUDA_KV_I8) as
 * f32 into out (n, head_dim): bf16 widened exactly, int8 as scale x int8 in f32 (the
 * host pool's kw_kvmem_row). */
int kw_cuda_page_rows_f32(void *stream, const void *base, kw_cuda_kvtype kv, int page_tokens,
                          int head_dim, const int32_t *pages, int first, int n, int which,
                          float *out);
/* Dequantizes the pages of view rows of an int8 pool into bf16 pages (kw_cuda_kv_append's
 * layout) for the prefill kernels: row r (< n_rows) holds tokens 0 .. row_tokens[r] - 1
 * of pages[row_ptr[r] ..] (table mode's rows); its page i goes to bf16 page
 * dst_ptr[r] + i of dst, its positions to dst_pos (slots past the row's end: zeros and
 * position 0x7f7f7f7f); rows with dst_ptr[r] < 0 are skipped. Each value is
 * bf16(scale x int8) (f32 product, round to nearest even). max_pages: at least the page
 * count of every row. page_tokens even, head_dim a multiple of 16, src and dst 16-byte
 * aligned (else KW_EINVAL). */
int kw_cuda_rows_i8_to_bf16(void *stream, const void *src, const int32_t *src_pos,
                            int page_tokens, int head_dim, int n_rows, const int32_t *pages,
                            const int32_t *row_ptr, const int32_t *row_tokens,
                            const int32_t *dst_ptr, int max_pages, void *dst,
                            int32_t *dst_pos);

/* attn_prefill.cu: causal attention of chunks of query tokens over views (bf16 pages,
 * head_dim 64 or 128; an int8 pool's rows go through kw_cuda_rows_i8_to_bf16 first).
 * Sequence s has query tokens [tok_off[s], tok_off[s+1]) of q and reads row
 * s * n_kv + kvh of the concatenated views (rows per KV head). A query at
 * position p reads stored tokens with position <= p (stored positions below INT_MAX);
 * a query that reads nothing gets zeros. Work items (seq, first query token) in tiles of
 * 128 queries come from kw_cuda_prefill_items (items NULL: count only). KW_EINVAL unless
 * page_tokens < 65535, q and the pool bases are 16-byte aligned and out 8-byte aligned. */
/* The prefill kernel: AUTO picks CUDNN for a view of ordered rows (host_kv_len set) whose
 * every sequence has at least 2^22 query-key pairs, where cuDNN loads and has an engine
 * for the shape, else WGMMA (attn_prefill_ws.cu: Hopper
 * warpgroup MMA, warp-specialized; compute capability 9.0, head_dim 128) where it runs,
 * else MMA (attn_prefill.cu: mma.sync, sm_80 and later). CUDNN (attn_cudnn.cu): cuDNN's
 * fused flash attention over bf16 copies of the queries and of the rows' K and V, for
 * such views only. Asking for a kernel that cannot run returns KW_ENOSYS. */
typedef enum {
    KW_CUDA_PREFILL_AUTO = 0,
    KW_CUDA_PREFILL_MMA = 1,
    KW_CUDA_PREFILL_WGMMA = 2,
    KW_CUDA_PREFILL_CUDNN = 3,
} kw_cuda_prefill_kernel;
typedef struct kw_cuda_prefill {
    const void *base[2];          /* device: main and temporary pool */
    const int32_t *pos[2];
    kw_cuda_kvtype kv;            /* KW_CUDA_KV_BF16 */
    int page_tokens, head_dim;
    int n_head, n_kv, n_seq;
    const int32_t *tok_off;       /* device (n_seq + 1) */
    const int32_t *row_ptr;       /* device (n_seq * n_kv + 1) */
    const kw_cuda_span *spans;    /* device */
    const int32_t *q_pos;         /* device (n_tok) */
    const float *q;               /* device (n_tok, n_head, head_dim), RoPE applied */
    float *out;                   /* device (n_tok, n_head, head_dim) */
    float scale;
    int n_items;
    const int32_t *items;         /* device (n_items, 2) */
    /* table mode as in kw_cuda_attn (pages non-NULL): row_ptr indexes pages, row r holds
     * tokens 0 .. row_tokens[r] - 1; spans is unused */
    const int32_t *pages;         /* device */
    const int32_t *row_tokens;    /* device (n_seq * n_kv) */
    int kernel;                   /* kw_cuda_prefill_kernel */
    int no_tma;                   /* 1: the WGMMA kernel copies K/V by cp.async in table
                                   * mode too (it uses TMA there otherwise), to compare */
    /* Ordered rows (table mode; nullable, host): the caller knows that each row of
     * sequence s holds host_kv_len[s] tokens whose positions increase along the row, and
     * that query j of the n_q queries of sequence s (host_tok_off: a host copy of tok_off)
     * has the position of the row's token host_kv_len[s] - n_q + j, so that a query reads
     * exactly the row's tokens up to that one (a causal mask aligned bottom right).
     * Needed by CUDNN; AUTO uses it to choose CUDNN. */
    const int32_t *host_tok_off, *host_kv_len;
} kw_cuda_prefill;
int kw_cuda_prefill_items(int n_seq, const int32_t *tok_off, int32_t *items);
/* The kernel named "auto", "mma", "wgmma" or "cudnn", or -1 for any other name. */
int kw_cuda_prefill_kernel_parse(const char *name);
/* 1 when that kernel runs on the current device for this head_dim (AUTO always does,
 * MMA for head_dim 64 and 128). */
int kw_cuda_prefill_kernel_runs(int kernel, int head_dim);
int kw_cuda_attn_prefill(void *stream, const kw_cuda_prefill *a);
/* cuDNN's version (e.g. 91300) when libcudnn.so.9 loads and a handle is created on the
 * current device, else 0 with the reason in why (KVWEAVE_CUDNN=0 turns it off); once
 * loaded, why holds the last failure to build a plan or to run one ("" if none). */
int kw_cuda_cudnn_version(char *why, size_t why_size);
/* Plans built for the CUDNN prefill kernel so far, and the seconds spent building them. */
void kw_cuda_cudnn_stats(int *plans_built, double *build_seconds);

/* select.cu: kernels.h "selection" on device pointers. pool1d: max_mode != 0 for the max,
 * kernel <= 8192. topk: a row holding a NaN gets k indices of -1 (no synchronization). */
int kw_cuda_window_scores(void *stream, const float *probs, int n_q, int n_head, int len,
                          int group, int n_key, float *out);
int kw_cuda_pool1d(void *stream, const float *x, int rows, int n, int kernel, int max_mode,
                   float *out);
int kw_cuda_topk(void *stream, const float *x, int rows, int n, int k, int32_t *idx);

/* pages.cu: kernels.h "page metadata" and page compaction on device pointers.
 * page_scores: head_dim <= 256. page_compact: kw_k_page_compact with the layout's fields
 * spelled out; kept indices that are out of their table, not increasing, or without a
 * destination page are skipped (not reported). */
int kw_cuda_page_bounds(void *stream, const float *k, int n_tok, int head_dim, int page,
                        float *kmin, float *kmax);
int kw_cuda_page_scores(void *stream, const float *q, int n_q, int head_dim,
                        const float *kmin, const float *kmax, int n_pages, float *scores);
int kw_cuda_page_compact(void *stream, uint8_t *base, int32_t *pos, int64_t page_bytes,
                         int page_tokens, int row_bytes, int scale_bytes, int n_tab,
                         const int32_t *keep_off, const int32_t *keep, const int32_t *src_off,
                         const int32_t *src, const int32_t *dst_off, const int32_t *dst);
/* Copies runs of ints: runs (n_runs, 3) of (dst offset, src offset, count) from src into
 * dst (a device page table patched with what a step added). */
int kw_cuda_scatter_runs(void *stream, int32_t *dst, const int32_t *runs, int n_runs,
                         const int32_t *src);

/* attn_probs.cu: attention probabilities of one sequence's queries over its view, for
 * hooks (bf16 pages). Row r of the view reads the global slots (page * P + slot, in view
 * order) slots[row_off[r] .. row_off[r+1]); query head h reads row h (per_qhead) or
 * h / group. Query i is row i of q (n_q, n_head, head_dim; RoPE applied) at position
 * q_pos[i]; it sees stored tokens with position <= q_pos[i] (others get 0).
 *  KW_CUDA_PROBS_EACH: out (n_q, n_head, len): each query's probabilities, rows padded
 *                      with zeros to len (>= the longest row);
 *  KW_CUDA_PROBS_SUM:  out (n_head, len): summed over the queries, in tiles of `tile`
 *                      queries through scratch (tile, n_head, len).
 * lse (n_q, n_head), nullable: the log-sum-exp of each query's scaled scores (-inf when
 * it sees nothing). */
enum { KW_CUDA_PROBS_EACH = 0, KW_CUDA_PROBS_SUM = 1 };
typedef struct kw_cuda_view_probs_args {
    const void *base;        /* device bf16 pages (kvpool.c's layout) */
    const int32_t *pos;      /* device (n_pages * P) stored positions */
    const void *base_tmp;    /* nullable: the temporary pool's pages and positions, read */
    const int32_t *pos_tmp;  /* by slots with the high bit set (slot & 0x7fffffff) */
    int page_tokens, head_dim, n_head, group, per_qhead;
    const int32_t *row_off;  /* device (n_rows + 1) */
    const int32_t *slots;    /* device */
    const float *q;          /* device (n_q, n_head, head_dim) */
    const int32_t *q_pos;    /* device (n_q) */
    int n_q, len, mode, tile;
    float scale;
    float *out, *scratch, *lse;
} kw_cuda_view_probs_args;
int kw_cuda_view_probs(void *stream, const kw_cuda_view_probs_args *a);

#ifdef __cplusplus
}
#endif
#endif
