/* compress.deltakv's hook state, shared by deltakv.c (the hook: encoding, the stack's
 * calls) and deltakv_rebuild.c (rebuilding held tokens into the temporary pool before
 * attention). Internal to the operator. */
#ifndef KW_OPS_COMPRESS_DELTAKV_HOOK_H
#define KW_OPS_COMPRESS_DELTAKV_HOOK_H

#include <stdint.h>

#include "deltakv.h"
#include "kvweave/kvhook.h"
#include "kvweave/value.h"

typedef struct dparams {
    kw_deltakv_opts o;
    kw_value *comp; /* a reference */
} dparams;

typedef struct dstate {
    const dparams *p;
    const kw_deltakv_comp *c;
    kw_model_config cfg;
    float *inv_freq;
    int64_t tmp_mark; /* temporary pages in use before this layer's reconstructions */
} dstate;

typedef struct dlayer {
    int n_c, cap_c;
    float *cx;      /* (n_c, dim) centers, K before RoPE */
    int32_t *cpos;
    int n_l, cap_l;
    float *lf;      /* (n_l, latent) f32 latents, or */
    int8_t *li;     /* (n_l, latent_bytes) int8 or int4 latents (kw__dkv_latent) and */
    float *ls;      /* (n_l) their scales */
    int32_t *lref, *lpos;
    float *cdown;   /* (n_c, latent) down(center), with a trained compressor */
    int cap_cd;
    int n_sink;     /* the first n_sink centers are the sinks, which stay in the pool too */
    int32_t enc_to; /* positions below it are encoded (or sinks) */
} dlayer;

typedef struct dseq {
    dlayer *ly;
    float *x, *res, *k;     /* scratch: (m, dim), (m, dim), (m, n_kv, head_dim) */
    int64_t x_cap, res_cap, k_cap;
    int32_t *pos, *keep;
    int64_t pos_cap, keep_cap;
    int32_t *ci, *li, *rp;  /* rebuild: the chosen centers and latents, a view's rows */
    kw_span *sp;            /* rebuild: a chosen view's spans */
    int64_t ci_cap, li_cap, rp_cap, sp_cap;
    float *scr, *y;         /* a trained compressor's hidden rows and outputs */
    int64_t scr_cap, y_cap;
    int32_t *ref;           /* encode: each token's reference */
    int64_t ref_cap;
    int32_t *u, *wp, *ord, *tp; /* rebuild: wanted positions (the union over rows; a
                                   copy of the view's wants per row), the rebuilt tokens
                                   by position, each KV head's temporary pages */
    int64_t u_cap, wp_cap, ord_cap, tp_cap;
    int64_t pairs, pairs_full; /* (token, KV head) pairs rebuilt, and held: kw_seq's
                                  rebuilt / rebuilt_full are these over n_kv */
} dseq;

#define DP(st) (&(st)->p->o)

/* Bytes of one quantized latent of r values (int8: r; int4: two a byte). */
static inline int64_t kw__dkv_latent_bytes(const kw_deltakv_opts *o, int r)
{
    return o->int4 ? (r + 1) / 2 : r;
}

/* Latent i of layer ly as r floats into out: f32, or scale x the int8 / int4 codes
 * (int4: the lower nibble first, each code + 8). */
static inline void kw__dkv_latent(const dstate *st, const dlayer *ly, int i, int r, float *out)
{
    const kw_deltakv_opts *o = DP(st);
    if (!o->int8 && !o->int4) {
        for (int j = 0; j < r; j++)
            out[j] = ly->lf[(int64_t)i * r + j];
        return;
    }
    const int8_t *q = ly->li + (int64_t)i * kw__dkv_latent_bytes(o, r);
    float sc = ly->ls[i];
    for (int j = 0; j < r; j++)
        out[j] = sc * (float)(o->int4 ? ((((uint8_t)q[j >> 1]) >> ((j & 1) * 4)) & 15) - 8
                                      : q[j]);
}

/* A trained projection's scratch for m rows (kw__deltakv_proj_apply). */
int kw__dkv_trained_scratch(dseq *ds, const kw_deltakv_proj *p, int m);

/* Rebuilds what layer c->layer holds into temporary pages and stitches them into the
 * view w (deltakv_rebuild.c says which tokens and rows). */
int kw__dkv_rebuild(dstate *st, kw_lctx *c, kw_seq *s, dseq *ds, kw_view *w);

#endif
