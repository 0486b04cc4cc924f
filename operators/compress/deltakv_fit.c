/* compress.deltakv_fit — fits DeltaKV's linear compressor in closed form (a reduce of the
 * calibration phase). For each sample it runs the prompt's prefill on the device engine
 * with a probe hook that sees each layer's [K; V] before RoPE (on_kv); per layer it
 * keeps the references (the first `sink` tokens and every 1/center_ratio-th) and adds
 * every other token's residual against its nearest preceding reference (L2, one
 * neighbour, as compress.deltakv encodes) to the layer's second-moment matrix
 * sum r r^T. At finish, per layer, the `latent` eigenvectors of largest eigenvalue
 * (LAPACK dsyev) are the basis U: down = U^T, up = U, the least-squares optimal linear
 * map of that rank for those residuals. The share of the residuals' energy it keeps is
 * recorded (energy_kept). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "deltakv.h"
#include "mini_prefill/probe.h"
#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "kvweave/util.h"

typedef struct fit_state {
    pthread_mutex_t mu;
    bool mu_ok;
    int sink, every, latent;
    kw_hookstack hs;
    int n_layer, dim;
    double *cov;      /* (n_layer, dim, dim) */
    int64_t *n_res;   /* (n_layer) */
    int samples;
} fit_state;

typedef struct fit_layer {
    float *cx;     /* (n_c, dim) references */
    int32_t *cpos; /* (n_c) their positions */
    int n_c, cap_c, cap_cp;
} fit_layer;

typedef struct fit_seq {
    fit_layer *ly;
    double *res;
    int64_t res_cap;
    float *x;       /* the chunk's [K; V] rows */
    int32_t *ref;   /* their references */
    int64_t x_cap, ref_cap;
} fit_seq;


static int probe_on_kv(void *stp, kw_lctx *c, const kw_batch *b, const float *k,
                       const float *v)
{
    fit_state *st = stp;
    const kw_model_config *cf = c->cfg;
    int Hk = cf->n_head_kv, hd = cf->head_dim, D = 2 * Hk * hd, l = c->layer, rc;
    for (int i = 0; i < b->n_seq; i++) {
        fit_seq *fs = b->seqs[i]->hook_seq[c->hook_index];
        fit_layer *ly = &fs->ly[l];
        int n = b->tok_n[i], t0 = b->tok_first[i], n_res = 0;
        const int32_t *pos = b->pos + t0;
        if ((rc = kw_grow((void **)&fs->res, &fs->res_cap, (int64_t)n * D, sizeof(double))) < 0
            || (rc = kw_grow((void **)&fs->x, &fs->x_cap, (int64_t)n * D, sizeof(float))) < 0
            || (rc = kw_grow((void **)&fs->ref, &fs->ref_cap, n, sizeof(int32_t))) < 0)
            return rc;
        /* the chunk's references first, then each other token's nearest preceding one,
         * chosen as compress.deltakv chooses it (kw__deltakv_refs) */
        for (int t = 0; t < n; t++) {
            float *x = fs->x + (int64_t)t * D;
            memcpy(x, k + (int64_t)(t0 + t) * Hk * hd, sizeof(float) * Hk * hd);
            memcpy(x + Hk * hd, v + (int64_t)(t0 + t) * Hk * hd, sizeof(float) * Hk * hd);
            if (!kw__deltakv_center(pos[t], st->sink, st->every))
                continue;
            int64_t cap = ly->cap_c, cp = ly->cap_cp;
            if ((rc = kw_grow((void **)&ly->cx, &cap, ly->n_c + 1, sizeof(float) * D)) < 0 ||
                (rc = kw_grow((void **)&ly->cpos, &cp, ly->n_c + 1, sizeof(int32_t))) < 0)
                return rc;
            ly->cap_c = (int)cap, ly->cap_cp = (int)cp;
            memcpy(ly->cx + (int64_t)ly->n_c * D, x, sizeof(float) * D);
            ly->cpos[ly->n_c++] = pos[t];
        }
        int32_t *ref = fs->ref;
        if ((rc = kw__deltakv_refs(fs->x, pos, n, ly->cx, ly->cpos, ly->n_c, D, ref)) < 0)
            return rc;
        for (int t = 0; t < n; t++) { /* no reference before it: cannot happen (position 0
                                         is a sink), so such a token is left out */
            if (kw__deltakv_center(pos[t], st->sink, st->every) || ref[t] < 0)
                continue;
            const float *x = fs->x + (int64_t)t * D, *cr = ly->cx + (int64_t)ref[t] * D;
            for (int j = 0; j < D; j++)
                fs->res[(int64_t)n_res * D + j] = (double)x[j] - cr[j];
            n_res++;
        }
        if (n_res > 0) {
            pthread_mutex_lock(&st->mu);
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, n_res, 1.0, fs->res, D, 1.0,
                        st->cov + (int64_t)l * D * D, D);
            st->n_res[l] += n_res;
            pthread_mutex_unlock(&st->mu);
        }
    }
    return 0;
}

static int probe_seq_open(void *stp, kw_seq *s, int idx)
{
    fit_state *st = stp;
    fit_seq *fs = calloc(1, sizeof *fs);
    if (fs && !(fs->ly = calloc((size_t)st->n_layer, sizeof *fs->ly))) {
        free(fs);
        fs = NULL;
    }
    if (!fs)
        return KW_ENOMEM;
    s->hook_seq[idx] = fs;
    return 0;
}

static void probe_seq_close(void *stp, kw_seq *s, int idx)
{
    fit_state *st = stp;
    fit_seq *fs = s->hook_seq[idx];
    if (!fs)
        return;
    for (int l = 0; l < st->n_layer; l++)
        free(fs->ly[l].cx), free(fs->ly[l].cpos);
    free(fs->ly), free(fs->res), free(fs->x), free(fs->ref);
    free(fs);
    s->hook_seq[idx] = NULL;
}

/* The probe changes nothing attention sees; it declares SELECT (the role that stacks
 * freely) without a select callback. */
static const kw_kvhook probe_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_PRE_ROPE_K, .name = "compress.deltakv_fit", .seq_open = probe_seq_open,
    .on_kv = probe_on_kv, .seq_close = probe_seq_close,
};

/* ---- the operator ---- */

static const kw_port ins[] = {
    {"tokens", KW_T_TOKENS, KW_EACH, 0, "the tokenized prompt of a calibration sample"},
};
static const kw_port outs[] = {
    {"compressor", KW_T_COMPRESSOR, KW_ONCE, 0,
     "per layer the basis U (2 n_kv head_dim, latent): down = U^T, up = U"},
};
static const kw_param_spec params[] = {
    {"latent", KW_PARAM_INT, "256", 1, 1 << 16, NULL,
     "latent_dim: values stored per token and layer (DeltaKV: 256 or 512 for 7-8B models; "
     "at most 2 n_kv head_dim)"},
    {"sink", KW_PARAM_INT, "16", 1, 1 << 20, NULL, "first tokens that are references"},
    {"center_ratio", KW_PARAM_FLOAT, "0.1", 1e-6, 1, NULL,
     "references: every round(1 / center_ratio)-th position"},
};

static int init(kw_opctx *c, void *state, kw_error *err)
{
    fit_state *st = state;
    double cr = kw_param_float(c, "center_ratio");
    if (!(cr > 0))
        return kw_error_set(err, KW_EINVAL, "compress.deltakv_fit: center_ratio %g: want > 0",
                            cr);
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return kw_error_set(err, KW_EINTERNAL, "compress.deltakv_fit: cannot make a mutex");
    st->mu_ok = true;
    st->sink = (int)kw_param_int(c, "sink");
    st->every = (int)(1 / cr + 0.5);
    st->latent = (int)kw_param_int(c, "latent");
    st->hs = (kw_hookstack){.n = 1, .hooks = {&probe_hook}, .states = {st}};
    return 0;
}

static void fini(kw_opctx *c, void *state)
{
    (void)c;
    fit_state *st = state;
    free(st->cov), free(st->n_res);
    st->cov = NULL, st->n_res = NULL;
    if (st->mu_ok)
        pthread_mutex_destroy(&st->mu);
    st->mu_ok = false;
}

static int run(kw_opctx *c, void *state, kw_task *t)
{
    fit_state *st = state;
    const kw_model_config *cf;
    int rc = kw__probe_model(c, t, "compress.deltakv_fit", &cf);
    if (rc < 0)
        return rc;
    int D = 2 * cf->n_head_kv * cf->head_dim;
    pthread_mutex_lock(&st->mu);
    if (!st->cov) {
        st->n_layer = cf->n_layer;
        st->dim = D;
        st->cov = calloc((size_t)cf->n_layer * D * D, sizeof(double));
        st->n_res = calloc((size_t)cf->n_layer, sizeof(int64_t));
    }
    bool ok = st->cov && st->n_res;
    st->samples++;
    pthread_mutex_unlock(&st->mu);
    if (!ok)
        return kw_task_fail(t, KW_ENOMEM, "compress.deltakv_fit: out of memory");
    if (st->latent > D) /* finish says so too */
        return kw_task_fail(t, KW_EINVAL, "compress.deltakv_fit: latent %d is more than the "
                            "%d values of [K; V] per token and layer", st->latent, D);
    return kw__probe_prefill(c, t, &st->hs, "compress.deltakv_fit");
}

static int finish(kw_opctx *c, void *state, kw_task *t)
{
    fit_state *st = state;
    pthread_mutex_lock(&st->mu);
    int L = st->n_layer, D = st->dim, r = st->latent;
    if (st->dim > 0 && r > D) {
        pthread_mutex_unlock(&st->mu);
        return kw_task_fail(t, KW_EINVAL, "compress.deltakv_fit: latent %d is more than the "
                            "%d values of [K; V] per token and layer of this model", r, D);
    }
    int64_t least = -1;
    for (int l = 0; st->n_res && l < L; l++)
        least = least < 0 || st->n_res[l] < least ? st->n_res[l] : least;
    if (!st->cov || least < r) {
        pthread_mutex_unlock(&st->mu);
        return kw_task_fail(t, KW_EINVAL, "compress.deltakv_fit: %lld residuals in a layer "
                            "from %d calibration samples; a basis of %d needs at least as "
                            "many (more or longer calibration prompts)",
                            (long long)(least < 0 ? 0 : least), st->samples, r);
    }
    kw_deltakv_comp *cp = calloc(1, sizeof *cp);
    if (cp)
        cp->u = malloc(sizeof(float) * (size_t)L * D * r);
    int rc = cp && cp->u ? 0 : KW_ENOMEM;
    double kept = 0;
    for (int l = 0; l < L && rc == 0; l++) {
        double *cv = st->cov + (int64_t)l * D * D, k;
        for (int i = 0; i < D; i++) /* dsyrk filled the upper triangle (row-major) */
            for (int j = 0; j < i; j++)
                cv[(int64_t)i * D + j] = cv[(int64_t)j * D + i];
        rc = kw__deltakv_basis(cv, D, r, cp->u + (int64_t)l * D * r, &k);
        kept += k / L;
    }
    int64_t n_res = st->n_res[0];
    pthread_mutex_unlock(&st->mu);
    if (rc < 0) {
        kw__compressor_free(cp);
        return kw_task_fail(t, rc, "compress.deltakv_fit: the eigen-decomposition failed");
    }
    *cp = (kw_deltakv_comp){.n_layer = L, .dim = D, .latent = r, .u = cp->u, .kept = kept,
                            .n_tokens = n_res};
    char num[64];
    snprintf(num, sizeof num, "%.6f", kept);
    kw_ctx_record(c, "energy_kept", num);
    snprintf(num, sizeof num, "%lld", (long long)n_res);
    kw_ctx_record(c, "residuals_per_layer", num);
    return kw_task_out(t, 0, kw__value_compressor(cp));
}

const kw_op kw_op_compress_deltakv_fit = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.deltakv_fit", .version = 1,
    .doc = "DeltaKV's linear compressor, fitted in closed form (calibration reduce): per "
           "sample a prefill on the device engine whose probe adds, per layer, every "
           "non-reference token's residual [K;V] (K before RoPE) minus its nearest preceding "
           "reference to sum r r^T; at finish the top `latent` eigenvectors per layer are "
           "U (down = U^T, up = U). Records energy_kept.",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL,
    .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .state_size = sizeof(fit_state),
    .init = init, .run = run, .finish = finish, .fini = fini,
};
