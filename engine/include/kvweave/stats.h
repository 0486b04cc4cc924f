/* kvweave — per-layer, per-KV-head key importance: the payload of a "stats" value.
 *
 * Made by a calibration reduce (mini_prefill.snap) from a few samples and read by budget
 * solvers (layer_budget.xkv). Two views of the same scores:
 *
 *   importance (n_layer, n_kv_head): each head's share of its layer's total score,
 *              averaged over the samples (each layer's row sums to 1);
 *   profiles   per sample s: (n_layer, n_kv_head, n_keys[s]) each head's scores sorted
 *              in decreasing order and divided by the layer's total, so that summing
 *              over heads the p-th entries gives the share of the layer's score that
 *              the p-th kept token adds (XKV's gain).
 *
 *   kw_stats *s = kw_stats_new(L, Hk);
 *   kw_stats_add_sample(s, n_keys, profile);     // takes profile (L * Hk * n_keys)
 *   kw_stats_finish(s);                          // averages importance
 *   kw_value *v = kw_value_stats(s);
 *
 * Canonical bytes (serialize): little-endian "KWST" u32 version (1), i32 n_layer,
 * n_kv_head, n_samples, window, kernel, then per sample i32 n_keys and its floats; the
 * importance is recomputed at deserialize from the profiles.
 */
#ifndef KVWEAVE_STATS_H
#define KVWEAVE_STATS_H

#include <stdint.h>

#include "status.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kw_stats {
    int n_layer, n_kv_head;
    int window, kernel;    /* the scoring settings, for the record */
    int n_samples;
    int *n_keys;           /* (n_samples) */
    float **profiles;      /* (n_samples) each (n_layer, n_kv_head, n_keys[s]) */
    double *importance;    /* (n_layer, n_kv_head) after kw_stats_finish */
} kw_stats;

kw_stats *kw_stats_new(int n_layer, int n_kv_head);
kw_stats *kw_stats_free(kw_stats *s); /* accepts NULL; returns NULL */
/* Appends one sample's profile (transfer full: freed with s, also on error). */
int kw_stats_add_sample(kw_stats *s, int n_keys, float *profile);
/* importance from the profiles. */
void kw_stats_finish(kw_stats *s);

extern const kw_type kw_type_stats;
kw_value *kw_value_stats(kw_stats *s); /* (transfer full) */

#ifdef __cplusplus
}
#endif
#endif
