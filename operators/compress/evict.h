/* The eviction hooks behind compress.streaming, compress.h2o, compress.snapkv and
 * compress.pyramidkv (internal to operators/compress): one EVICT hook whose policy is
 * chosen by kind. Tokens are dropped with kw_kvseq_keep, so their pages are freed.
 *
 * Capacity of (layer, KV head) for a prompt of n tokens, in this order:
 *   a budget value (budget.h) when one is wired: its entry for (layer, head);
 *   else ratio > 0: round(ratio * n), at least 1;
 *   else capacity.
 * PyramidKV turns that uniform capacity into its layer schedule (pyramid_keep). A
 * capacity counts every prompt token kept, sink and window included; generated tokens
 * are not counted by SnapKV/PyramidKV (they all stay), while StreamingLLM and H2O keep
 * the stored tokens at the capacity during decoding too (attention reads the capacity
 * plus the current token). */
#ifndef KW_OPS_COMPRESS_EVICT_H
#define KW_OPS_COMPRESS_EVICT_H

#include <stdbool.h>

#include "kernels.h"
#include "kvweave/budget.h"
#include "kvweave/kvhook.h"
#include "kvweave/op.h"

typedef enum kw__evict_kind {
    KW_EVICT_STREAMING,
    KW_EVICT_H2O,
    KW_EVICT_SNAPKV,
    KW_EVICT_PYRAMID,
} kw__evict_kind;

typedef struct kw__evict_params {
    kw__evict_kind kind;
    int capacity;        /* tokens per (layer, KV head) when ratio is 0 and no budget */
    double ratio;        /* > 0: capacity = round(ratio * prompt tokens) */
    kw_value *budget;    /* nullable: a "budget" value (a reference, dropped on free) */
    int window, kernel;  /* SnapKV, PyramidKV: observation window, pooling kernel */
    kw_pooling pooling;
    double beta;         /* PyramidKV */
    int sink;            /* StreamingLLM: first tokens always kept */
    bool prefill_evict;  /* StreamingLLM: also evict after every prompt chunk */
    double heavy_share;  /* H2O: share of the capacity for heavy hitters (0.5) */
    bool per_qhead;      /* SnapKV, PyramidKV: each query head picks its own tokens (the
                            pool keeps their union per KV head and each query head reads
                            its own); else the group's scores are averaged per KV head */
} kw__evict_params;

/* A kvmethod for p (transfer full of p, which must be malloc'd; freed with the method,
 * with its budget reference). NULL on out of memory (p is freed). */
kw_kvmethod *kw__evict_method(kw__evict_params *p);

/* Capacity of (layer, kvh) for a prompt of n tokens, before the method's minimum
 * (SnapKV/PyramidKV keep at least their window). */
int kw__evict_capacity(const kw__evict_params *p, const kw_budget *b, int n_layer,
                       int n_prompt, int layer, int kvh);

/* PyramidKV's schedule (METHODS.md): with B = capacity - window, min = B / beta,
 * max = 2B - min (when max >= n - window: max = n - window, min = 2B - max), layer i
 * keeps max - i * ((max - min) / (L - 1)) tokens plus the window (integer division as
 * in KVCache-Factory's PyramidKV). */
int kw__pyramid_keep(int capacity, int window, double beta, int n_layer, int n_prompt,
                     int layer);

/* Shared by the four operators: reads capacity/ratio and the optional budget input
 * (port 0 when has_budget_port), records what the budget counts, and emits the
 * kvmethod on output 0. A ratio > 0 set in the pipeline wins over the capacity (so a
 * sweep can --set ratio on a pipeline that names a capacity); with neither set and a
 * capacity of 0, default_capacity (> 0) applies. p: (transfer full). */
int kw__evict_emit(kw_opctx *c, kw_task *t, kw__evict_params *p, bool has_budget_port,
                   int default_capacity, const char *counts);

#endif
