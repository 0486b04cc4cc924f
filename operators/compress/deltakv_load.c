/* compress.deltakv_load — a DeltaKV compressor from trained weights (METHODS.md: "can also
 * load a trained compressor's weights from safetensors"), and the projections' arithmetic
 * (kw__deltakv_proj_apply) that compress.deltakv runs with them.
 *
 * A checkpoint names its tensors as the DeltaKV training code's modules do: each
 * attention layer holds compress_down ([K; V] -> latent) and compress_up (latent ->
 * [K; V]), each a linear map, a GELU MLP (a Sequential: 0 linear, 1 GELU, 2 linear) or
 * SwiGLU (w12: gate and up stacked, w3). A name with "layers.<i>" belongs to layer i;
 * one without is shared by every layer. Checkpoints that compress K and V apart
 * (k_compress_down, ...) are refused, as are layers without a pair: kvweave's DeltaKV
 * compresses every layer. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cblas.h>

#include "deltakv.h"
#include "model/safetensors.h"
#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "kvweave/util.h"

/* ---- the projections ---- */

/* y (m, n) = x (m, k) W^T (+ b), W (n, k) */
static void affine(const float *x, int m, int k, const float *w, const float *b, int n,
                   float *y)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            y[(int64_t)i * n + j] = b ? b[j] : 0.f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, x, k, w, k, 1.f, y, n);
}

void kw__deltakv_proj_apply(const kw_deltakv_proj *p, const float *x, int m, float *y,
                            float *scratch)
{
    if (m <= 0)
        return;
    if (p->kind == KW_DKV_LINEAR) {
        affine(x, m, p->in, p->w1, p->b1, p->out, y);
        return;
    }
    int ni = p->inter;
    if (p->kind == KW_DKV_GELU) {
        affine(x, m, p->in, p->w1, p->b1, ni, scratch);
        for (int64_t i = 0; i < (int64_t)m * ni; i++) {
            float v = scratch[i];
            scratch[i] = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
        }
    } else { /* SwiGLU: [g; u] per row, then silu(g) * u packed into the first ni */
        affine(x, m, p->in, p->w1, p->b1, 2 * ni, scratch);
        for (int64_t i = 0; i < m; i++) {
            const float *gu = scratch + i * 2 * ni;
            float *h = scratch + i * ni; /* row i's ni values, behind what row i still reads */
            for (int j = 0; j < ni; j++) {
                float g = gu[j], u = gu[ni + j];
                h[j] = g / (1.f + expf(-g)) * u;
            }
        }
    }
    affine(scratch, m, ni, p->w2, p->b2, p->out, y);
}

static void proj_free(kw_deltakv_proj *p)
{
    if (p)
        free(p->w1), free(p->b1), free(p->w2), free(p->b2);
}

void kw__deltakv_projs_free(kw_deltakv_comp *c)
{
    for (int l = 0; c->down && l < c->n_layer; l++)
        proj_free(&c->down[l]), proj_free(&c->up[l]);
    free(c->down), free(c->up);
    c->down = c->up = NULL;
}

/* ---- the checkpoint ---- */

typedef struct side { /* one module of one layer, as found */
    const kw_st_tensor *t[4]; /* w1, b1, w2, b2 */
    const kw_st *file[4];
    int kind; /* -1: nothing seen */
} side;

/* Which tensor of a module sub-name is: 0 w1, 1 b1, 2 w2, 3 b2, and the kind it implies;
 * -1 for a name no module has. */
static int slot_of(const char *sub, int *kind)
{
    static const struct { const char *name; int slot, kind; } m[] = {
        {"weight", 0, KW_DKV_LINEAR}, {"bias", 1, KW_DKV_LINEAR},
        {"0.weight", 0, KW_DKV_GELU}, {"0.bias", 1, KW_DKV_GELU},
        {"2.weight", 2, KW_DKV_GELU}, {"2.bias", 3, KW_DKV_GELU},
        {"w12.weight", 0, KW_DKV_SWIGLU}, {"w12.bias", 1, KW_DKV_SWIGLU},
        {"w3.weight", 2, KW_DKV_SWIGLU}, {"w3.bias", 3, KW_DKV_SWIGLU}};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        if (!strcmp(sub, m[i].name))
            return *kind = m[i].kind, m[i].slot;
    return -1;
}

static const char *kind_name(int k)
{
    return k == KW_DKV_LINEAR ? "linear" : k == KW_DKV_GELU ? "GELU MLP" : "SwiGLU";
}

/* Files of path: itself, or a directory's *.safetensors in name order. */
static int list_files(const char *path, char ***out, int *n, kw_error *err)
{
    struct stat sb;
    *out = NULL, *n = 0;
    if (stat(path, &sb) != 0)
        return kw_error_set(err, KW_ENOTFOUND, "compress.deltakv_load: %s: no such file or "
                            "directory", path);
    char **v = NULL;
    int k = 0;
    if (!S_ISDIR(sb.st_mode)) {
        v = malloc(sizeof *v);
        if (!v || !(v[0] = strdup(path)))
            return free(v), kw_error_set(err, KW_ENOMEM, "compress.deltakv_load: out of memory");
        *out = v, *n = 1;
        return 0;
    }
    struct dirent **ents = NULL;
    int ne = scandir(path, &ents, NULL, alphasort);
    for (int i = 0; i < ne; i++) {
        size_t L = strlen(ents[i]->d_name);
        if (L > 12 && !strcmp(ents[i]->d_name + L - 12, ".safetensors")) {
            char **g = realloc(v, sizeof *v * (size_t)(k + 1));
            if (g) {
                v = g;
                v[k] = malloc(strlen(path) + L + 2);
                if (v[k])
                    sprintf(v[k++], "%s/%s", path, ents[i]->d_name);
            }
        }
        free(ents[i]);
    }
    free(ents);
    if (k == 0) {
        free(v);
        return kw_error_set(err, KW_ENOTFOUND, "compress.deltakv_load: %s: no .safetensors "
                            "file in the directory", path);
    }
    *out = v, *n = k;
    return 0;
}

/* A tensor's values as f32 (F32, F16 or BF16), checked against the shape wanted. */
static int take(const kw_st *f, const kw_st_tensor *t, int64_t d0, int64_t d1, float **out,
                kw_error *err)
{
    int64_t n = d1 ? d0 * d1 : d0;
    bool shape_ok = d1 ? t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1
                       : t->ndim == 1 && t->shape[0] == d0;
    if (!shape_ok)
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s' has shape "
                            "[%lld%s%lld], want [%lld%s%lld]", kw_st_label(f), t->name,
                            (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                            t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)d0,
                            d1 ? ", " : "", d1 ? (long long)d1 : 0LL);
    if (t->dtype != KW_DT_F32 && t->dtype != KW_DT_F16 && t->dtype != KW_DT_BF16)
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s' is %s; "
                            "want F32, F16 or BF16", kw_st_label(f), t->name,
                            kw_dtype_name(t->dtype));
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v)
        return kw_error_set(err, KW_ENOMEM, "compress.deltakv_load: out of memory");
    /* element by element through memcpy: a safetensors file need not align its tensors */
    const uint8_t *d = t->data;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        if (t->dtype == KW_DT_F32)
            memcpy(&v[i], d + 4 * i, 4);
        else {
            memcpy(&h, d + 2 * i, 2);
            v[i] = t->dtype == KW_DT_BF16 ? kw_bf16_to_f32(h) : kw_f16_to_f32(h);
        }
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            free(v);
            return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s' "
                                "holds a non-finite value at element %lld", kw_st_label(f),
                                t->name, (long long)i);
        }
    *out = v;
    return 0;
}

/* The projection of one module from what was found: in -> out; inter from the shapes. */
static int build(const side *s, const char *what, int layer, int in, int out,
                 kw_deltakv_proj *p, kw_error *err)
{
    *p = (kw_deltakv_proj){.kind = s->kind, .in = in, .out = out};
    if (!s->t[0] || (s->kind != KW_DKV_LINEAR && !s->t[2]))
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: layer %d's %s (%s) has "
                            "no %s weight", layer, what, kind_name(s->kind),
                            s->t[0] ? "second" : "first");
    int rc;
    if (s->kind == KW_DKV_LINEAR)
        rc = take(s->file[0], s->t[0], out, in, &p->w1, err);
    else {
        int64_t rows = s->t[0]->ndim == 2 ? s->t[0]->shape[0] : 0;
        p->inter = (int)(s->kind == KW_DKV_SWIGLU ? rows / 2 : rows);
        if (p->inter < 1 || (s->kind == KW_DKV_SWIGLU && rows % 2))
            return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s': %lld "
                                "rows, want %s", kw_st_label(s->file[0]), s->t[0]->name,
                                (long long)rows, s->kind == KW_DKV_SWIGLU
                                    ? "an even count (gate and up stacked)" : "at least 1");
        int r1 = s->kind == KW_DKV_SWIGLU ? 2 * p->inter : p->inter;
        rc = take(s->file[0], s->t[0], r1, in, &p->w1, err);
        if (rc == 0 && s->t[1])
            rc = take(s->file[1], s->t[1], r1, 0, &p->b1, err);
        if (rc == 0)
            rc = take(s->file[2], s->t[2], out, p->inter, &p->w2, err);
        if (rc == 0 && s->t[3])
            rc = take(s->file[3], s->t[3], out, 0, &p->b2, err);
        return rc;
    }
    if (rc == 0 && s->t[1])
        rc = take(s->file[1], s->t[1], out, 0, &p->b1, err);
    return rc;
}

/* Files a name to its (layer, module) entry of sides (n_layer + 1 entries per module,
 * the last for shared names); 0 when the name is no compressor's, 1 when filed. */
static int file_name(const kw_st *f, const kw_st_tensor *t, int n_layer, side *down, side *up,
                     kw_error *err)
{
    const char *nm = t->name;
    if (strstr(nm, "k_compress_") || strstr(nm, "v_compress_"))
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s' compresses "
                            "K and V apart (split_kv); kvweave's DeltaKV takes compress_down and "
                            "compress_up over [K; V]", kw_st_label(f), nm);
    const char *cd = strstr(nm, "compress_down."), *cu = strstr(nm, "compress_up.");
    if (!cd && !cu)
        return 0;
    const char *sub = cd ? cd + 14 : cu + 12;
    int layer = n_layer; /* shared */
    const char *ly = strstr(nm, "layers.");
    if (ly && ly < (cd ? cd : cu)) {
        char *end;
        long v = strtol(ly + 7, &end, 10);
        if (end == ly + 7 || *end != '.' || v < 0 || v >= n_layer)
            return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s': layer "
                                "index not in 0..%d (the model's layers)", kw_st_label(f), nm,
                                n_layer - 1);
        layer = (int)v;
    }
    int kind, slot = slot_of(sub, &kind);
    if (slot < 0)
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s': '%s' is "
                            "no part of a linear, GELU MLP or SwiGLU compressor", kw_st_label(f),
                            nm, sub);
    side *s = (cd ? down : up) + layer;
    if (s->kind >= 0 && s->kind != kind)
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s' is part of "
                            "a %s, but layer %d's %s has %s parts", kw_st_label(f), nm,
                            kind_name(kind), layer, cd ? "compress_down" : "compress_up",
                            kind_name(s->kind));
    if (s->t[slot])
        return kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: tensor '%s' repeats "
                            "'%s' (also in %s)", kw_st_label(f), nm, s->t[slot]->name,
                            kw_st_label(s->file[slot]));
    s->kind = kind, s->t[slot] = t, s->file[slot] = f;
    return 1;
}

int kw__deltakv_from_st(kw_st *const *st, int nf, const char *label, int n_layer, int dim,
                        kw_deltakv_comp **out, kw_error *err)
{
    *out = NULL;
    int rc = 0, found = 0, latent = 0;
    side *down = calloc((size_t)n_layer + 1, sizeof *down),
         *up = calloc((size_t)n_layer + 1, sizeof *up);
    kw_deltakv_comp *c = calloc(1, sizeof *c);
    if (n_layer < 1 || dim < 1)
        rc = kw_error_set(err, KW_EINVAL, "compress.deltakv_load: %d layers of %d values",
                          n_layer, dim);
    else if (!down || !up || !c)
        rc = kw_error_set(err, KW_ENOMEM, "compress.deltakv_load: out of memory");
    for (int i = 0; rc == 0 && i <= n_layer; i++)
        down[i].kind = up[i].kind = -1;
    for (int i = 0; rc == 0 && i < nf; i++)
        for (int j = 0; rc == 0 && j < kw_st_n_tensors(st[i]); j++) {
            int r = file_name(st[i], kw_st_tensor_at(st[i], j), n_layer, down, up, err);
            rc = r < 0 ? r : 0;
            found += r > 0;
        }
    if (rc == 0 && found == 0)
        rc = kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: no compress_down or "
                          "compress_up tensor in %d file(s)", label, nf);
    /* the latent size: compress_down's output */
    for (int l = 0; rc == 0 && l <= n_layer && !latent; l++) {
        const side *s = &down[l];
        const kw_st_tensor *w = s->kind == KW_DKV_LINEAR ? s->t[0] : s->kind >= 0 ? s->t[2] : NULL;
        if (w && w->ndim == 2)
            latent = w->shape[0] > INT32_MAX ? INT32_MAX : (int)w->shape[0];
    }
    if (rc == 0 && (latent < 1 || latent > dim))
        rc = kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: compress_down gives %d "
                          "values per token; want 1 .. %d (the model's [K; V] per token and "
                          "layer)", label, latent, dim);
    if (rc == 0) {
        c->down = calloc((size_t)n_layer, sizeof *c->down);
        c->up = calloc((size_t)n_layer, sizeof *c->up);
        c->n_layer = n_layer, c->dim = dim, c->latent = latent;
        if (!c->down || !c->up)
            rc = kw_error_set(err, KW_ENOMEM, "compress.deltakv_load: out of memory");
    }
    for (int l = 0; rc == 0 && l < n_layer; l++) {
        const side *d = down[l].kind >= 0 ? &down[l] : &down[n_layer],
                   *u = up[l].kind >= 0 ? &up[l] : &up[n_layer];
        if (d->kind < 0 || u->kind < 0) {
            rc = kw_error_set(err, KW_EFORMAT, "compress.deltakv_load: %s: layer %d has no %s "
                              "(every layer of the model needs a compress_down and a "
                              "compress_up, or shared ones)", label, l,
                              d->kind < 0 ? "compress_down" : "compress_up");
            break;
        }
        if ((rc = build(d, "compress_down", l, dim, latent, &c->down[l], err)) == 0)
            rc = build(u, "compress_up", l, latent, dim, &c->up[l], err);
    }
    free(down), free(up);
    if (rc < 0) {
        kw__compressor_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int kw__deltakv_load(const char *path, int n_layer, int dim, kw_deltakv_comp **out,
                     kw_error *err)
{
    *out = NULL;
    char **files = NULL;
    int nf = 0, rc = list_files(path, &files, &nf, err);
    kw_st **st = rc == 0 ? calloc((size_t)nf, sizeof *st) : NULL;
    if (rc == 0 && !st)
        rc = kw_error_set(err, KW_ENOMEM, "compress.deltakv_load: out of memory");
    for (int i = 0; rc == 0 && i < nf; i++)
        rc = kw_st_open(files[i], &st[i], err);
    if (rc == 0)
        rc = kw__deltakv_from_st(st, nf, path, n_layer, dim, out, err);
    for (int i = 0; st && i < nf; i++)
        kw_st_free(st[i]);
    for (int i = 0; i < nf; i++)
        free(files[i]);
    free(files), free(st);
    return rc;
}

/* ---- the operator ---- */

static const kw_port outs[] = {
    {"compressor", KW_T_COMPRESSOR, KW_ONCE, 0,
     "per layer the trained compress_down and compress_up"},
};
static const kw_param_spec params[] = {
    {"path", KW_PARAM_STRING, NULL, 0, 0, NULL,
     "a .safetensors file of DeltaKV compressor weights, or a directory of them"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    const char *path = kw_param_str(c, "path");
    if (!path || !*path)
        return kw_task_fail(t, KW_EINVAL, "compress.deltakv_load: path: name the compressor's "
                            "safetensors file or directory");
    kw_engine *e = kw_ctx_engine(c);
    if (!e)
        return kw_task_fail(t, KW_ENOTFOUND, "compress.deltakv_load: no model for this run");
    const kw_model_config *cf = &kw_engine_model(e)->cfg;
    kw_deltakv_comp *cp;
    kw_error err = {0};
    int rc = kw__deltakv_load(path, cf->n_layer, 2 * cf->n_head_kv * cf->head_dim, &cp, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    char num[64];
    snprintf(num, sizeof num, "%s/%s, latent %d", kind_name(cp->down[0].kind),
             kind_name(cp->up[0].kind), cp->latent);
    kw_ctx_record(c, "compressor", num);
    return kw_task_out(t, 0, kw__value_compressor(cp));
}

const kw_op kw_op_compress_deltakv_load = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.deltakv_load", .version = 1,
    .doc = "A DeltaKV compressor from trained weights: a safetensors file (or a directory of "
           "them) with per-layer compress_down ([K;V] -> latent) and compress_up (latent -> "
           "[K;V]) modules as the DeltaKV code saves them (linear, GELU MLP or SwiGLU; "
           "\"layers.<i>\" in a name for layer i, none for one shared by all). For "
           "compress.deltakv: tokens are stored as down(x) - down(ref) and rebuilt as "
           "up(latent) + ref.",
    .lanes = KW_LANE_IO, .flags = KW_OP_NEEDS_MODEL, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .run = run,
};
