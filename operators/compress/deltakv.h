/* DeltaKV (METHODS.md): the linear compressor, its fit (compress.deltakv_fit) and the
 * hook that keeps evicted tokens as residual latents (compress.deltakv); deltakv.c says
 * what they do. */
#ifndef KW_OPS_COMPRESS_DELTAKV_H
#define KW_OPS_COMPRESS_DELTAKV_H

#include <stdbool.h>
#include <stdint.h>

#include "kvweave/kvhook.h"
#include "kvweave/value.h"

/* The payload of a "compressor" value: per layer an orthonormal basis U (dim, latent),
 * dim = 2 x n_kv x head_dim ([K; V] of all KV heads, K before RoPE); down = U^T, up =
 * U. */
typedef struct kw_deltakv_comp {
    int n_layer, dim, latent;
    float *u;         /* (n_layer, dim, latent) row-major */
    double kept;      /* share of the fit residuals' energy the latent keeps (all layers) */
    int64_t n_tokens; /* residuals the fit saw, per layer */
} kw_deltakv_comp;
extern const kw_type kw__type_compressor;
kw_value *kw__value_compressor(kw_deltakv_comp *c); /* transfer full */
void kw__compressor_free(void *c);

/* Which tokens are references ("centers"): the first `sink` positions and, after them,
 * every `every`-th position (p % every == 0). */
static inline bool kw__deltakv_center(int32_t pos, int sink, int every)
{
    return pos < sink || pos % every == 0;
}

/* The index of the row of c (n_c, dim) nearest to x by L2 (ties: the earlier row). */
int kw__deltakv_nearest(const float *x, const float *c, int n_c, int dim);

/* The top `latent` eigenvectors of the symmetric cov (dim, dim), largest first, into u
 * (dim, latent) row-major; *kept gets their share of the trace. KW_EINVAL when LAPACK
 * fails. */
int kw__deltakv_basis(const double *cov, int dim, int latent, float *u, double *kept);

typedef struct kw_deltakv_opts {
    int sink;    /* first tokens kept whole (16) */
    int every;   /* a center every `every` positions (1 / center_ratio: 10) */
    int recent;  /* last tokens kept whole in the pool (128) */
    bool int8;   /* latents as int8 with a scale per token */
} kw_deltakv_opts;

/* A kvmethod of DeltaKV over compressor comp (a reference is taken). */
int kw__deltakv_method(const kw_deltakv_opts *o, kw_value *comp, kw_kvmethod **out,
                       kw_error *err);

#endif
