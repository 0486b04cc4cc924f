/* retrieve.clusterkv's hook, for the operator and its tests: recall of keys by semantic
 * clusters (METHODS.md, ClusterKV) as a SELECT kvmethod. */
#ifndef KW_OPS_RETRIEVE_CLUSTERKV_H
#define KW_OPS_RETRIEVE_CLUSTERKV_H

#include <stdint.h>

#include "kvweave/budget.h"
#include "kvweave/kvhook.h"

typedef struct kw_clusterkv_opts {
    int budget;          /* tokens read per query head and layer: the sink and the recalled
                            clustered tokens (the unclustered recent ones come on top) */
    int sink;            /* the first tokens: never clustered, always read */
    int clusters;        /* k-means clusters of the prompt's keys per layer and KV head */
    int iters;           /* k-means iterations */
    int window;          /* generated tokens clustered together once there are this many */
    int window_clusters; /* clusters each window adds */
    int dense_layers;    /* layers [0, dense_layers) read everything */
    double ratio;        /* > 0: each sequence's budget is round(ratio x its prompt tokens),
                            at least 1 (budget is then unused); in [0, 1] */
} kw_clusterkv_opts;

/* k-means of the m rows of x (m, d) into k <= m clusters, iters rounds of: assign each
 * row to the centroid of highest cosine similarity (ties: the lower cluster), then each
 * centroid = the mean of its members' raw rows (a cluster left empty keeps its
 * centroid). Centroids start at k distinct rows drawn with seed. label (m), cent (k, d). */
int kw__ckv_kmeans(const float *x, int m, int d, int k, int iters, uint64_t seed,
                   int32_t *label, float *cent);

/* A new kvmethod (transfer full) for o; per_layer (nullable, copied) replaces
 * o->budget by its (layer, KV head) token counts. */
int kw__clusterkv_method(const kw_clusterkv_opts *o, const kw_budget *per_layer,
                         kw_kvmethod **out, kw_error *err);
extern const kw_kvhook kw__clusterkv_hook;

#endif
