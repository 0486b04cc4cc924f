/* kvweave — the paged KV pool and views (engine/runtime/kvpool.c).
 *
 *   kw_kvpool_opts o = kw_kvpool_defaults();          // P = 16 tokens a page
 *   o.n_pages = 4096;
 *   kw_kvpool *p; kw_kvpool_new(&cfg, &o, &p, &err);
 *   kw_kvseq *s = kw_kvseq_new(p);
 *   kw_kvseq_append(s, layer, k, v, pos, n_tok);      // k, v: (n_tok, n_kv, head_dim)
 *   kw_kvseq *b = kw_kvseq_fork(s);                   // shares all full pages
 *   kw_view *w = kw_view_new();
 *   kw_view_dense(w, s, layer, 0);                    // rows = KV heads, whole pages
 *   ... kw_k_attn_view(...) reads any view ...
 *   s = kw_kvseq_free(s); b = kw_kvseq_free(b); p = kw_kvpool_free(p);
 *
 * Layout. The pool is one arena of pages. A page holds P tokens of one (layer, KV head):
 * K (P, head_dim) then V (P, head_dim), plus the P stored positions beside it. Pages are
 * per KV head (not grouped over the heads of a layer) so that an EVICT hook can keep a
 * different set of tokens per head and really free pages by compacting each head's
 * table. Each (sequence, layer, KV head) has a page table; its tokens are packed: token j
 * is slot j % P of page j / P. Pages are reference counted: fork shares every full page
 * and copies only the last partial one; any write to a shared page copies it first.
 *
 * Positions. Every stored token keeps its position, so eviction and selection never
 * lose them; attention masks causally by position (a query at position p reads stored
 * tokens with position <= p), and a pool made with pre_rope = true stores K before RoPE
 * and the attention kernel rotates K at read from the stored position.
 *
 * The temporary pool is a second, smaller arena with the same page layout for tokens
 * that live one step (reconstructed or loaded by a STORE hook); it is reset by
 * kw_kvpool_tmp_reset at the end of each step, and a hook may give its pages back
 * earlier (kw_kvpool_tmp_truncate). Views may point into either.
 */
#ifndef KVWEAVE_KVPOOL_H
#define KVWEAVE_KVPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kw_kvdtype {
    KW_KV_F32 = 0,
    KW_KV_I8 = 1,  /* int8 with one f32 scale per token row (absmax / 127) */
    /* KIVI's layout (host pools only): K quantized per channel over the P tokens of a
     * page, V per token, both asymmetric (min and scale = (max - min) / (2^bits - 1),
     * code = round((x - min) / scale)). A page's K is quantized when the page fills; until
     * then its K rows stay f32 beside the pool (kw_kvmem.stage), as KIVI keeps its
     * residual tokens whole. */
    KW_KV_I8K = 2, /* int8 codes */
    KW_KV_I4K = 3, /* int4 codes, two a byte */
} kw_kvdtype;

/* Whether d quantizes K per channel (KW_KV_I8K, KW_KV_I4K). */
static inline bool kw_kvdtype_kchan(kw_kvdtype d) { return d == KW_KV_I8K || d == KW_KV_I4K; }

typedef struct kw_kvpool_opts {
    int page_tokens;   /* P; default 16 */
    int64_t n_pages;   /* main pool capacity in pages */
    int64_t n_tmp_pages; /* temporary pool capacity in pages; default 256 */
    kw_kvdtype dtype;
    bool pre_rope;     /* K stored before RoPE; rotated at read */
    int residual;      /* per-channel-K pools: a table's latest `residual` tokens keep their
                          K rows f32 (KIVI's residual): a full page is quantized once that
                          many tokens follow it; 0: as soon as it fills */
    bool device_pages; /* page payloads live outside the pool (a device arena with the same
                          page numbering): the pool keeps page tables, reference counts and
                          positions; writes go through kw_kvseq_append_slots, page copies,
                          compaction and host reads through kw_kvpool_set_device */
} kw_kvpool_opts;

typedef struct kw_kvpool kw_kvpool;
typedef struct kw_kvseq kw_kvseq;

enum { KW_POOL_MAIN = 0, KW_POOL_TMP = 1 };

/* The part of the pool the attention kernel reads. Page g of pool b starts at
 * base[b] + g * page_bytes[b]: f32 pages hold K (P, head_dim) then V (P, head_dim);
 * int8 pages hold K (P, head_dim) and V (P, head_dim) as int8, then the P K scales and
 * the P V scales as f32; per-channel-K pages (bits 8 or 4) hold the K codes (P, head_dim)
 * and the V codes (P, head_dim), P * head_dim * bits / 8 bytes each (int4: the lower
 * nibble first), then K's head_dim scales and head_dim minima, then V's P scales and P
 * minima, as f32; while a per-channel-K page is not full its K rows are f32 at stage[g]
 * (P, head_dim) instead. Positions at pos[b] + g * P. The temporary pool is always f32.
 * Read rows with kw_kvmem_row. */
typedef struct kw_kvmem {
    const uint8_t *base[2];
    int64_t page_bytes[2];
    kw_kvdtype dtype[2];
    const int32_t *pos[2];
    int page_tokens;
    int head_dim;
    bool pre_rope;
    float *const *stage; /* per-channel-K main pools: per page, its f32 K rows or NULL */
} kw_kvmem;


/* Page `page` of a pool. */
static inline const uint8_t *kw_kvmem_page(const kw_kvmem *m, int pool, int32_t page)
{
    return m->base[pool] + (int64_t)page * m->page_bytes[pool];
}

/* A quantized page holds its K codes, then its V codes (kw_kvmem_code_bytes each), then,
 * from the next multiple of 4 bytes (kw_kvpage_params_offset: aligned floats for any page
 * size and head_dim), f32 parameters (kw_kvmem_params): for KW_KV_I8 a scale per row (K's
 * P rows, then V's); for the per-channel-K types K's scale and minimum per channel
 * (head_dim each), then V's scale and minimum per row (P each). */
static inline int64_t kw_kvpage_params_offset(int64_t code_bytes)
{
    return (2 * code_bytes + 3) & ~(int64_t)3;
}

static inline int64_t kw_kvmem_code_bytes(const kw_kvmem *m, int pool)
{
    return (int64_t)m->page_tokens * m->head_dim * (m->dtype[pool] == KW_KV_I4K ? 4 : 8) / 8;
}

static inline const float *kw_kvmem_params(const kw_kvmem *m, int pool, const uint8_t *pg)
{
    int64_t off = kw_kvpage_params_offset(kw_kvmem_code_bytes(m, pool));
    return (const float *)(const void *)(pg + off);
}

/* Row `slot` of K (which = 0) or V (which = 1) of a page as f32: a pointer into an f32
 * page, or the int8 row dequantized into buf (head_dim floats). */
static inline const float *kw_kvmem_row(const kw_kvmem *m, int pool, int32_t page, int slot,
                                        int which, float *buf)
{
    const uint8_t *pg = kw_kvmem_page(m, pool, page);
    int64_t P = m->page_tokens, hd = m->head_dim, r = which * P + slot;
    if (m->dtype[pool] == KW_KV_F32)
        return (const float *)(const void *)pg + r * hd;
    if (kw_kvdtype_kchan(m->dtype[pool])) {
        if (which == 0 && m->stage[page])
            return m->stage[page] + slot * hd;
        bool i4 = m->dtype[pool] == KW_KV_I4K;
        int64_t cb = kw_kvmem_code_bytes(m, pool);
        const uint8_t *c = pg + which * cb + (i4 ? slot * hd / 2 : slot * hd);
        const float *kp = kw_kvmem_params(m, pool, pg), *vp = kp + 2 * hd;
        /* x = scale * code + min: per channel for K, per row for V; the loops kept plain
         * (two codes a byte for int4) so that they vectorize */
        const float *sc = kp, *mn = kp + hd;
        float s1 = vp[slot], m1 = vp[P + slot];
        if (i4 && which == 0)
            for (int64_t i = 0; i < hd / 2; i++) {
                buf[2 * i] = sc[2 * i] * (float)(c[i] & 15) + mn[2 * i];
                buf[2 * i + 1] = sc[2 * i + 1] * (float)(c[i] >> 4) + mn[2 * i + 1];
            }
        else if (i4)
            for (int64_t i = 0; i < hd / 2; i++) {
                buf[2 * i] = s1 * (float)(c[i] & 15) + m1;
                buf[2 * i + 1] = s1 * (float)(c[i] >> 4) + m1;
            }
        else if (which == 0)
            for (int64_t i = 0; i < hd; i++)
                buf[i] = sc[i] * (float)c[i] + mn[i];
        else
            for (int64_t i = 0; i < hd; i++)
                buf[i] = s1 * (float)c[i] + m1;
        return buf;
    }
    const int8_t *q = (const int8_t *)pg + r * hd;
    float sc = kw_kvmem_params(m, pool, pg)[r];
    for (int64_t i = 0; i < hd; i++)
        buf[i] = sc * (float)q[i];
    return buf;
}

/* Memory figures, in bytes unless said. */
typedef struct kw_kvmem_stats {
    int64_t pages_used, pages_total, tmp_pages_used, tmp_pages_total;
    int64_t page_bytes;       /* one page: K + V + positions */
    int64_t alloc_bytes;      /* pages_used * page_bytes */
    int64_t tmp_bytes;        /* tmp_pages_used * page_bytes */
    int64_t meta_bytes;       /* page tables and refcounts */
} kw_kvmem_stats;

kw_kvpool_opts kw_kvpool_defaults(void);
int kw_kvpool_new(const kw_model_config *cfg, const kw_kvpool_opts *o, kw_kvpool **out,
                  kw_error *err);
/* Accepts NULL; returns NULL. All sequences must be freed first. */
kw_kvpool *kw_kvpool_free(kw_kvpool *p);
const kw_kvpool_opts *kw_kvpool_options(const kw_kvpool *p);
kw_kvmem kw_kvpool_mem(const kw_kvpool *p);
int64_t kw_kvpool_free_pages(const kw_kvpool *p);
void kw_kvpool_stats(const kw_kvpool *p, kw_kvmem_stats *out);
/* Pages a sequence of n tokens needs at most (all layers and KV heads). */
int64_t kw_kvpool_pages_for(const kw_kvpool *p, int64_t n_tokens);
/* Bytes of one main-pool page of dtype (payload and its scales; positions apart). */
int64_t kw_kvpool_page_bytes(kw_kvdtype dtype, int page_tokens, int head_dim);

/* ---- sequences ---- */
kw_kvseq *kw_kvseq_new(kw_kvpool *p);               /* NULL on out of memory */
kw_kvseq *kw_kvseq_free(kw_kvseq *s);               /* releases its pages */
/* New sequence sharing s's pages; only each table's last partial page is copied.
 * NULL when the pool has no page left for the copies. */
kw_kvseq *kw_kvseq_fork(kw_kvseq *s);
/* fork for one layer: dst's (empty) tables of `layer` share src's pages; only each
 * table's last partial page is copied. The engine forks a full-attention reference
 * branch layer by layer, before a method's on_prefill_end evicts. KW_EINVAL when dst
 * already holds tokens in that layer, KW_ELIMIT when the pool has no page for a copy. */
int kw_kvseq_share_layer(kw_kvseq *dst, kw_kvseq *src, int layer);
/* Appends n_tok tokens to every KV head of one layer. k, v: (n_tok, n_kv, head_dim);
 * pos: (n_tok). KW_ELIMIT when the pool is full. A device_pages pool places them as
 * kw_kvseq_append_slots does and hands them to its device's write. */
int kw_kvseq_append(kw_kvseq *s, int layer, const float *k, const float *v,
                    const int32_t *pos, int n_tok);
/* As kw_kvseq_append for a device_pages pool: places the tokens (same page rules) and
 * writes the global slot (page * P + slot) of token i of KV head h to
 * slots[i * n_kv + h]; the caller writes K and V there. Positions are kept on the host. */
int kw_kvseq_append_slots(kw_kvseq *s, int layer, const int32_t *pos, int n_tok,
                          int32_t *slots);
/* device_pages pools: how the pool reaches the payloads it does not hold. Every call
 * is made in the order the pool needs it (a device queues them on one stream):
 *  copy    copy-on-write of a whole page (dst <- src: payload and positions), before the
 *          page is written;
 *  compact kw_kvseq_keep's data movement for one table: kept token i comes from token
 *          keep[i] of the table's pages src[0..n_src) (as they were) and goes to slot
 *          i % P of dst[i / P] (the table's pages after copy-on-write; n_dst of them);
 *          kept tokens with keep[i] == i may be left in place; returns 0 or a status;
 *  read    rows [first, first + n) of K (which 0) or V (1) of a table whose pages are
 *          pages[0..]: row j is slot j % P of pages[j / P] (first < P); as f32 into out
 *          (n, head_dim); returns 0 or a status;
 *  write   K and V (n_tok, n_kv, head_dim) as f32, token t of KV head h to the global
 *          slot slots[t * n_kv + h] (page * P + slot), with position pos[t], after
 *          everything queued before it; the caller's arrays may be reused once it
 *          returns; returns 0 or a status.
 * A NULL compact, read or write makes kw_kvseq_keep, the host reads or kw_kvseq_append
 * answer KW_ENOSYS. */
typedef struct kw_kvpool_device {
    void *ud;
    void (*copy)(void *ud, int32_t dst, int32_t src);
    int (*compact)(void *ud, const int32_t *keep, int n_keep, const int32_t *src, int n_src,
                   const int32_t *dst, int n_dst);
    int (*read)(void *ud, const int32_t *pages, int first, int n, int which, float *out);
    int (*write)(void *ud, const int32_t *slots, int n_tok, int n_kv, const float *k,
                 const float *v, const int32_t *pos);
} kw_kvpool_device;
void kw_kvpool_set_device(kw_kvpool *p, const kw_kvpool_device *d);
/* Tokens stored in (layer, kv head). */
int kw_kvseq_len(const kw_kvseq *s, int layer, int kvh);
/* Pages of one table (transfer none); *n gets the count. */
const int32_t *kw_kvseq_pages(const kw_kvseq *s, int layer, int kvh, int *n);
/* Changes to one table's page list other than appends (a copy-on-write page replaced,
 * a compaction): a copy of its first n pages stays a prefix of the list while this count
 * is unchanged (the CUDA forward keeps page lists on the device this way). */
uint32_t kw_kvseq_pages_edits(const kw_kvseq *s, int layer, int kvh);
/* A number no other sequence of the process has had. */
uint64_t kw_kvseq_uid(const kw_kvseq *s);
/* Reads token j of (layer, kvh): pointers into an f32 pool (transfer none); with an
 * int8 pool k and v must be NULL (KW_ENOSYS otherwise): use kw_kvseq_token_f32. */
int kw_kvseq_token(const kw_kvseq *s, int layer, int kvh, int j, const float **k,
                   const float **v, int32_t *pos);
/* Token j of (layer, kvh) as f32 copies (k, v: head_dim floats each, nullable); on a
 * device_pages pool through the device's read. */
int kw_kvseq_token_f32(const kw_kvseq *s, int layer, int kvh, int j, float *k, float *v,
                       int32_t *pos);
/* K (which 0) or V (1) rows of tokens [j0, j0 + n) of (layer, kvh) as f32 into out
 * (n, head_dim): the bulk form of kw_kvseq_token_f32 (one device read for them all). */
int kw_kvseq_rows_f32(const kw_kvseq *s, int layer, int kvh, int j0, int n, int which,
                      float *out);
/* Keeps tokens keep[0..n_keep) (strictly increasing indices) of (layer, kvh), packs
 * them and frees the pages left over: the EVICT primitive. */
int kw_kvseq_keep(kw_kvseq *s, int layer, int kvh, const int32_t *keep, int n_keep);
/* Pages this sequence holds (shared pages count once per holder). */
int64_t kw_kvseq_pages_held(const kw_kvseq *s);
/* Bytes holding its tokens' K and V: per token its rows (f32; int8 with the two row
 * scales; per-channel K: the codes and V's scale and minimum), plus per-channel-K pages'
 * K scales and minima and the f32 K rows of pages not yet full. */
int64_t kw_kvseq_payload_bytes(const kw_kvseq *s);
int64_t kw_kvseq_tokens_stored(const kw_kvseq *s); /* sum over layers and KV heads */

/* ---- temporary pool ---- */
/* Allocates a page in the temporary pool (f32 whatever the main pool's type); write it
 * through kw_kvpool_tmp_page: K (P, head_dim), then V (P, head_dim). */
int kw_kvpool_tmp_alloc(kw_kvpool *p, int32_t *page);
float *kw_kvpool_tmp_page(kw_kvpool *p, int32_t page, int32_t **pos);
void kw_kvpool_tmp_reset(kw_kvpool *p);
/* Pages in use; kw_kvpool_tmp_truncate gives back those allocated after a count that
 * kw_kvpool_tmp_used returned (a hook frees its pages once its layer's attention is
 * done, so a step's layers reuse them). */
int64_t kw_kvpool_tmp_used(const kw_kvpool *p);
void kw_kvpool_tmp_truncate(kw_kvpool *p, int64_t n_used);
/* The most pages in use at once since the last call. */
int64_t kw_kvpool_tmp_peak(kw_kvpool *p);

/* ---- views ----
 * A view is what attention reads for one sequence at one layer: rows (a KV head, or a
 * query head when per_qhead), each a list of spans of consecutive slots of one page. */
typedef struct kw_span {
    int32_t page;
    uint16_t first; /* first slot in the page */
    uint16_t n;     /* slots */
    uint8_t pool;   /* KW_POOL_MAIN or KW_POOL_TMP */
} kw_span;

typedef struct kw_view {
    int n_rows;        /* n_kv, or n_head when per_qhead */
    bool per_qhead;
    int *row_ptr;      /* (n_rows + 1) CSR offsets into spans */
    kw_span *spans;    /* (row_ptr[n_rows]) */
    int cap_rows, cap_spans;
    int cur_row;       /* the row kw_view_add appends to */
    /* Selection by position (a SELECT hook that chooses tokens by their position, such
     * as OmniKV): by_pos (1 + the stack index of the hook that chose; 0: none) says the
     * rows hold the chosen tokens the pool has, and want_pos (n_want, increasing) the
     * chosen positions the pool does not hold, which a MATERIALIZE hook that holds them
     * (DeltaKV) rebuilds and adds to every row. A hook that chooses per row (ClusterKV's
     * query heads) names the row of each wanted position instead (want_by_row; want_row
     * parallel to want_pos, non-decreasing, positions increasing within a row), and the
     * rebuilt tokens go to the rows that want them. kw_view_reset clears all of it. */
    int by_pos;
    int32_t *want_pos;
    int n_want, cap_want;
    bool want_by_row;
    int32_t *want_row;
} kw_view;

kw_view *kw_view_new(void);
kw_view *kw_view_free(kw_view *w);
/* Empties the view and sets its row count. */
int kw_view_reset(kw_view *w, int n_rows, bool per_qhead);
/* Rows are filled in increasing order: begin_row(r) then add spans to it. */
int kw_view_begin_row(kw_view *w, int row);
int kw_view_add(kw_view *w, int pool, int32_t page, int first, int n);
/* Appends pos to w's want_pos, wanted by every row (callers keep it increasing).
 * KW_EINVAL on a view whose wants are per row. */
int kw_view_want(kw_view *w, int32_t pos);
/* Appends pos to the wants of row `row` alone: rows in non-decreasing order, positions
 * increasing within a row. KW_EINVAL on a view with shared wants, or out of order. */
int kw_view_want_row(kw_view *w, int row, int32_t pos);
/* Row r's wanted positions: want_pos[*a .. *b) (every want of a view with shared
 * wants). */
void kw_view_wanted(const kw_view *w, int row, int *a, int *b);
/* All stored tokens of one layer: one row per KV head (or per query head when
 * per_qhead, each query head reading its group's KV head), whole-page spans. */
int kw_view_dense(kw_view *w, const kw_kvseq *s, int layer, bool per_qhead);
/* Token-level span for stored index j of (layer, kvh) in the last begun row; merges
 * with the previous span when contiguous. */
int kw_view_add_token(kw_view *w, const kw_kvseq *s, int layer, int kvh, int j);
int64_t kw_view_tokens(const kw_view *w);
/* true when w reads every token s holds in layer, one row per KV head: no SELECT hook
 * chose among them (a hook that rebuilds the view checks this before it does) */
bool kw_view_is_dense(const kw_view *w, const kw_kvseq *s, int layer);
int kw_view_row_tokens(const kw_view *w, int row);

#ifdef __cplusplus
}
#endif
#endif
