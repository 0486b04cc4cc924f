/* XKV's per-layer allocation (METHODS.md, XKV): the exact greedy with a heap. */
#ifndef KW_OPS_XKV_ALLOC_H
#define KW_OPS_XKV_ALLOC_H

#include <stdint.h>

#include "kvweave/stats.h"

typedef enum kw_xkv_mode {
    KW_XKV_TOTAL_SIZE = 0, /* stop after `value` tokens in total over the layers */
    KW_XKV_SET_VALUE = 1,  /* stop once the mean over layers of the retained share of each
                              layer's score reaches `value` */
} kw_xkv_mode;

/* gain[l] (n[l] entries, non-increasing): what the p-th token given to layer l adds to
 * the share of its score that layer l retains. Repeatedly gives one token to the layer
 * whose next gain is largest (ties: the lower layer), O(tokens log L). Exact: the
 * objective sum_l sum_{p < alloc[l]} gain[l][p] is separable and concave, so every
 * prefix of the greedy is an optimum for its total. Stops early when every layer has
 * all its tokens. alloc (L) out; retained (L, nullable) out: each layer's retained
 * share. Returns the tokens given. */
int64_t kw__xkv_allocate(const double *const *gain, const int *n, int L, kw_xkv_mode mode,
                         double value, int32_t *alloc, double *retained);

/* One sample's gains from a stats profile: gain (n_layer, n_keys) = the sum over heads
 * of the sorted shares. */
void kw__xkv_gains(const kw_stats *s, int sample, double *gain);

/* Allocation of every sample of s, averaged over samples and rounded to integers by
 * largest remainders (the rounded total is the rounded mean total). alloc (n_layer). */
int kw__xkv_solve(const kw_stats *s, kw_xkv_mode mode, double value, int32_t *alloc);
/* The same with a value per sample: values (s->n_samples). */
int kw__xkv_solve_each(const kw_stats *s, kw_xkv_mode mode, const double *values,
                       int32_t *alloc);

/* Prompt tokens of calibration sample i: its scored keys plus the window the scores
 * were taken with (s->window; a prompt whose last chunk was shorter than the window
 * counts a few tokens too many). */
int64_t kw__xkv_prompt(const kw_stats *s, int sample);
/* total_size of sample i for a share `ratio` of its prompt: the tokens of a uniform
 * capacity of round(ratio x prompt) per layer with the budget's window included,
 * n_layer x max(0, round(ratio x prompt) - window). */
int64_t kw__xkv_ratio_total(const kw_stats *s, int sample, double ratio, int window);

/* PyramidKV's budget of one layer (schedules.c): prompt tokens kept, window included. */
int kw__pyramid_layer(int64_t capacity, int window, double beta, int64_t prompt, int L,
                      int layer);

#endif
