/* DeltaKV (METHODS.md): the linear compressor, its fit (compress.deltakv_fit) and the
 * hook that keeps evicted tokens as residual latents (compress.deltakv); deltakv.c says
 * what they do. */
#ifndef KW_OPS_COMPRESS_DELTAKV_H
#define KW_OPS_COMPRESS_DELTAKV_H

#include <stdbool.h>
#include <stdint.h>

#include "kvweave/kvhook.h"
#include "kvweave/value.h"

/* One trained projection of a compressor (compress.deltakv_load): a linear map
 * y = W x + b (w1 (out, in), b1), a GELU MLP y = W2 gelu(W1 x + b1) + b2 (w1 (inter, in),
 * w2 (out, inter); GELU with erf), or SwiGLU y = W2 (silu(g) * u) + b2 where [g; u] =
 * W12 x + b12 (w1 (2 inter, in): the gate's rows first). Biases may be NULL. */
enum { KW_DKV_LINEAR = 0, KW_DKV_GELU = 1, KW_DKV_SWIGLU = 2 };
typedef struct kw_deltakv_proj {
    int kind, in, out, inter;
    float *w1, *b1, *w2, *b2;
} kw_deltakv_proj;

/* The payload of a "compressor" value, dim = 2 x n_kv x head_dim ([K; V] of all KV heads,
 * K before RoPE). Either per layer an orthonormal basis U (dim, latent), down = U^T, up =
 * U (compress.deltakv_fit), or trained projections down (dim -> latent) and up (latent
 * -> dim) per layer (down non-NULL; u NULL). A token is stored as down(x) - down(ref) and
 * rebuilt as up(latent) + ref, which for the basis is U^T (x - ref) and U latent + ref. */
typedef struct kw_deltakv_comp {
    int n_layer, dim, latent;
    float *u;         /* (n_layer, dim, latent) row-major */
    kw_deltakv_proj *down, *up; /* (n_layer) each, or NULL */
    double kept;      /* share of the fit residuals' energy the latent keeps (all layers) */
    int64_t n_tokens; /* residuals the fit saw, per layer */
} kw_deltakv_comp;

/* y (m, p->out) = p(x (m, p->in)); scratch: at least m x 2 x p->inter floats (nullable
 * for a linear one). */
void kw__deltakv_proj_apply(const kw_deltakv_proj *p, const float *x, int m, float *y,
                            float *scratch);
/* A compressor from trained weights: the safetensors file at path, or every *.safetensors
 * file of the directory at path. Names as the DeltaKV code saves them: per layer
 * "....layers.<i>....compress_down.<sub>" and "...compress_up.<sub>" (or without
 * "layers.<i>": one pair shared by all layers), sub "weight"/"bias" (linear), "0.weight",
 * "0.bias", "2.weight", "2.bias" (GELU MLP) or "w12.weight", "w12.bias", "w3.weight",
 * "w3.bias" (SwiGLU); F32, F16 or BF16. n_layer layers of [K; V] of dim values each must
 * all be there, with consistent shapes. KW_EFORMAT with the file, the name and the
 * numbers otherwise. */
int kw__deltakv_load(const char *path, int n_layer, int dim, kw_deltakv_comp **out,
                     kw_error *err);
/* kw__deltakv_load over safetensors readers already open (label names them in
 * messages); the fuzz target's entry. */
struct kw_st;
int kw__deltakv_from_st(struct kw_st *const *st, int nf, const char *label, int n_layer,
                        int dim, kw_deltakv_comp **out, kw_error *err);
/* Frees c's trained projections (the compressor's free calls it). */
void kw__deltakv_projs_free(kw_deltakv_comp *c);
extern const kw_type kw__type_compressor;
kw_value *kw__value_compressor(kw_deltakv_comp *c); /* transfer full */
void kw__compressor_free(void *c);

/* Which tokens are references ("centers"): the first `sink` positions and, after them,
 * every `every`-th position (p % every == 0). */
static inline bool kw__deltakv_center(int32_t pos, int sink, int every)
{
    return pos < sink || pos % every == 0;
}

/* Each row of x (m, dim), at position pos[t], against the centers cx (n_c, dim) at
 * increasing positions cpos: ref[t] = the nearest center by L2 among those before pos[t]
 * (ties: the earlier), -1 if none. Distances as |c|^2 - 2 x.c in f32, the dot products
 * of a block of rows in one GEMM; compress.deltakv's encoding and compress.deltakv_fit
 * both choose with it, so the fit sees the residuals the encoding stores. */
int kw__deltakv_refs(const float *x, const int32_t *pos, int m, const float *cx,
                     const int32_t *cpos, int n_c, int dim, int32_t *ref);

/* The top `latent` eigenvectors of the symmetric cov (dim, dim), largest first, into u
 * (dim, latent) row-major; *kept gets their share of the trace. KW_EINVAL when LAPACK
 * fails. */
int kw__deltakv_basis(const double *cov, int dim, int latent, float *u, double *kept);

typedef struct kw_deltakv_opts {
    int sink;    /* first tokens kept whole (16) */
    int every;   /* a center every `every` positions (1 / center_ratio: 10) */
    int recent;  /* last tokens kept whole in the pool (128) */
    bool int8;   /* latents as int8 with a scale per token (absmax / 127) */
    bool int4;   /* or as int4, two a byte, with a scale per token (absmax / 7) */
} kw_deltakv_opts;

/* A kvmethod of DeltaKV over compressor comp (a reference is taken). */
int kw__deltakv_method(const kw_deltakv_opts *o, kw_value *comp, kw_kvmethod **out,
                       kw_error *err);

#endif
