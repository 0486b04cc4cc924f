/* retrieve.kvstar: KVStar's multi-step sparse retrieval with offloading to a block store
 * (kvstar.c says what it does). */
#ifndef KW_OPS_RETRIEVE_KVSTAR_H
#define KW_OPS_RETRIEVE_KVSTAR_H

#include <stdbool.h>

#include <string.h>

#include "kvweave/kvhook.h"
#include "kvweave/op.h"
#include "kvweave/status.h"

#define KW_KVSTAR_MAX_THREADS 64 /* KW_TPOOL_MAX */

typedef struct kw_kvstar_opts {
    int block;              /* tokens per block (128) */
    int init_window;        /* first blocks always in the pool (1) */
    int local_window;       /* last full prompt blocks always in the pool (2) */
    double sparse_ratio;    /* of the middle blocks in the pool (0.25) */
    double dim_prune_ratio; /* channels kept per KV head for the vote (0.25) */
    int inner_token_merge;  /* tokens averaged into one sub-vector (2) */
    int retrieval_stride;   /* queries per vote, decode steps between votes (8) */
    int threads;            /* retrieval and load threads; 0: inline, on the engine thread */
    const char *store;      /* the block store's root; NULL or "": a new temporary one */
    bool persist;           /* keep the block files after the sequences close */
} kw_kvstar_opts;

kw_kvstar_opts kw__kvstar_defaults(void);
/* A kvmethod of KVStar with o (copied); KW_EINVAL with the bad value in err. */
int kw__kvstar_method(const kw_kvstar_opts *o, kw_kvmethod **out, kw_error *err);
extern const kw_kvhook kw__kvstar_hook;

/* What is wrong with o's block and vote options (a message naming the option), or NULL. */
const char *kw__kvstar_bad(const kw_kvstar_opts *o);

/* The block and vote options both operators take (block, init_window, local_window,
 * sparse_ratio, dim_prune_ratio, inner_token_merge, retrieval_stride) from c's params. */
void kw__kvstar_params(kw_opctx *c, kw_kvstar_opts *o);

/* A query at position p of a sequence's prompt (n_prompt tokens): kept in qbuf (stride,
 * qn floats) when among the prompt's last `stride`, for the first vote (*nq: how many
 * rows of qbuf hold one). false: p is a decode position. */
static inline bool kw__kvstar_prompt_query(float *qbuf, int *nq, int n_prompt, int stride,
                                           int32_t p, const float *q, int qn)
{
    if (p >= n_prompt)
        return false;
    int base = n_prompt > stride ? n_prompt - stride : 0;
    if (p >= base) {
        memcpy(qbuf + (size_t)(p - base) * qn, q, sizeof(float) * (size_t)qn);
        *nq = p - base + 1 > *nq ? p - base + 1 : *nq;
    }
    return true;
}

/* KVStar's block selection without the block store, a SELECT hook by position
 * (kvstar_select.c); o's threads, store and persist are unused. */
int kw__kvstar_select_method(const kw_kvstar_opts *o, kw_kvmethod **out, kw_error *err);
extern const kw_kvhook kw__kvstar_select_hook;

/* The blocks of a prompt of n_prompt tokens: *n_full whole blocks, of which *n_mid
 * middle ones (neither in the init nor the local window) and *k in the pool. */
void kw__kvstar_blocks(const kw_kvstar_opts *o, int n_prompt, int *n_full, int *n_mid, int *k);

/* The block representation of one KV head (METHODS.md): from the K rows of the middle
 * blocks, k (n_tok, head_dim) after RoPE, n_tok a multiple of merge: chan (dk) the dk
 * channels of largest mean |K| (ties to the lower channel), increasing; sub (n_tok /
 * merge, dk) fp16 bits, the mean of each merge consecutive rows over those channels. */
void kw__kvstar_represent(const float *k, int n_tok, int head_dim, int dk, int merge,
                          int32_t *chan, uint16_t *sub);

#endif
