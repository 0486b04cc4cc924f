/* compress.deltakv and its fit: the basis against a covariance of known eigenvectors; the
 * hook on a small pool: what stays in the pool after the prompt and after a decode step
 * (the sinks and the recent window), every token read back through the view (the pool's
 * pages and the rebuilt temporary ones) equal to the original with a lossless basis, and
 * to a double-precision reference (nearest preceding reference, U U^T of the residual)
 * with a lossy one, f32 and int8 latents; the temporary pages given back after the
 * layer's attention; a compressor of another model refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "compress/deltakv.h"
#include "retrieve/clusterkv.h"
#include "retrieve/kvstar.h"
#include "retrieve/omnikv.h"
#include "runtime/forward.h"
#include "kernels.h"
#include "hook_fixture.h"
#include "st_write.h"
#include "runtime_support.h"

static float rnd(uint64_t *rs) { return (float)(2 * rt_rand01(rs) - 1); }

/* Random orthonormal columns q (n, k) row-major (Gram-Schmidt in double). */
static void orthonormal(uint64_t *rs, int n, int k, double *q)
{
    for (int c = 0; c < k; c++) {
        for (int i = 0; i < n; i++)
            q[i * k + c] = rnd(rs);
        for (int pass = 0; pass < 2; pass++)
            for (int e = 0; e < c; e++) {
                double d = 0;
                for (int i = 0; i < n; i++)
                    d += q[i * k + c] * q[i * k + e];
                for (int i = 0; i < n; i++)
                    q[i * k + c] -= d * q[i * k + e];
            }
        double nn = 0;
        for (int i = 0; i < n; i++)
            nn += q[i * k + c] * q[i * k + c];
        for (int i = 0; i < n; i++)
            q[i * k + c] /= sqrt(nn);
    }
}

static void test_basis_of_a_known_covariance(void **state)
{
    (void)state;
    uint64_t rs = 0xb1;
    int n = 12, k = 3;
    double q[12 * 12], cov[12 * 12] = {0}, lam[12];
    orthonormal(&rs, n, n, q);
    for (int j = 0; j < n; j++)
        lam[j] = 1 + j * 0.5; /* distinct; the top 3 are columns 11, 10, 9 */
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            for (int j = 0; j < n; j++)
                cov[a * n + b] += q[a * n + j] * lam[j] * q[b * n + j];
    float u[12 * 3];
    double kept;
    assert_int_equal(kw__deltakv_basis(cov, n, k, u, &kept), 0);
    for (int c = 0; c < k; c++) {
        double d = 0;
        for (int i = 0; i < n; i++)
            d += u[i * k + c] * q[i * n + (n - 1 - c)];
        if (fabs(fabs(d) - 1) > 1e-5)
            fail_msg("basis column %d: |<u, q>| = %.8f, want 1", c, fabs(d));
    }
    double tot = 0;
    for (int j = 0; j < n; j++)
        tot += lam[j];
    assert_true(fabs(kept - (lam[11] + lam[10] + lam[9]) / tot) < 1e-9);
    /* nearest preceding reference: 1 and 2 tie (the earlier wins), 3 comes after the row,
     * and a row before every reference has none */
    float x[2 * 4] = {1, 1, 0, 0, 1, 1, 0, 0},
          cs[4 * 4] = {0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0};
    int32_t cpos[4] = {2, 3, 4, 9}, xpos[2] = {5, 1}, ref[2];
    assert_int_equal(kw__deltakv_refs(x, xpos, 2, cs, cpos, 4, 4, ref), 0);
    assert_int_equal(ref[0], 1);
    assert_int_equal(ref[1], -1);
}

/* ---- the hook ---- */

enum { NP = 50, SINK = 4, EVERY = 5, RECENT = 8 };

typedef struct dfx {
    hook_fx fx;
    kw_value *comp;
    float *k, *v; /* (L, NP + 4, Hk, hd) as appended (K after RoPE) */
    float *u;     /* the basis, (L, D, r) */
    int r;
    const kw_deltakv_comp *cc; /* the compressor (trained projections or the basis) */
    int enc_limit; /* positions in [SINK, enc_limit) are encoded */
} dfx;

static int64_t off(const dfx *f, int l, int p)
{
    return ((int64_t)l * (NP + 4) + p) * f->fx.cfg.n_head_kv * f->fx.cfg.head_dim;
}

/* 0: dfx_open's compressor is the basis; 1: the same basis written as trained linear
 * weights (down.weight = U^T, up.weight = U, in F32) and loaded by kw__deltakv_load;
 * 2: a trained SwiGLU down and GELU up (random weights, biases), loaded likewise */
static int trained_mode;
/* run_case's quantized latents are int4 instead of int8 */
static bool int4_mode;

/* c as a checkpoint in the DeltaKV code's names, loaded back (c is freed). */
static kw_deltakv_comp *trained(kw_deltakv_comp *c, int mode, uint64_t *rs)
{
    int L = c->n_layer, D = c->dim, r = c->latent, ni = 12;
    char dir[128], path[200], names[8][96];
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kw_dkv_XXXXXX", td && *td ? td : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/compressor.safetensors", dir);
    st_item it[8 * 4];
    float *buf[8 * 4] = {0};
    int n = 0;
    for (int l = 0; l < L; l++) {
        const char *sub[4] = {"compress_down.weight", "compress_up.weight", NULL, NULL};
        if (mode == 2)
            sub[0] = "compress_down.w12.weight", sub[1] = "compress_down.w3.weight",
            sub[2] = "compress_up.0.weight", sub[3] = "compress_up.2.bias";
        int64_t shp[4][2] = {{r, D}, {D, r}};
        if (mode == 2)
            memcpy(shp, (int64_t[4][2]){{2 * ni, D}, {r, ni}, {ni, r}, {D, 0}}, sizeof shp);
        for (int k = 0; k < 4 && sub[k]; k++) {
            snprintf(names[k], sizeof names[k], "model.layers.%d.self_attn.%s", l, sub[k]);
            int64_t cnt = shp[k][1] ? shp[k][0] * shp[k][1] : shp[k][0];
            float *v = buf[n] = malloc(sizeof(float) * (size_t)cnt);
            for (int64_t i = 0; i < cnt; i++) { /* mode 1: U^T, then U */
                int64_t a = i / (shp[k][1] ? shp[k][1] : 1), b = i % (shp[k][1] ? shp[k][1] : 1);
                v[i] = mode == 1 ? c->u[(int64_t)l * D * r + (k == 0 ? b * r + a : a * r + b)]
                                 : (float)(0.4 * rnd(rs));
            }
            it[n] = (st_item){strdup(names[k]), 0, shp[k][1] ? 2 : 1, {shp[k][0], shp[k][1]}, v};
            n++;
        }
        if (mode == 2) { /* up's second linear */
            snprintf(names[4], sizeof names[4], "model.layers.%d.self_attn.compress_up.2.weight", l);
            float *v = buf[n] = malloc(sizeof(float) * (size_t)D * ni);
            for (int64_t i = 0; i < (int64_t)D * ni; i++)
                v[i] = (float)(0.4 * rnd(rs));
            it[n++] = (st_item){strdup(names[4]), 0, 2, {D, ni}, v};
        }
    }
    assert_int_equal(st_write(path, it, n), 0);
    kw_deltakv_comp *t;
    kw_error err = {0};
    assert_int_equal(kw__deltakv_load(path, L, D, &t, &err), 0);
    assert_int_equal(t->latent, r);
    if (mode == 1) { /* keep the basis beside, for expected()'s lossless check */
        t->u = c->u;
        c->u = NULL;
    }
    for (int i = 0; i < n; i++)
        free(buf[i]), free((char *)it[i].name);
    unlink(path);
    rmdir(dir);
    kw__compressor_free(c);
    return t;
}

static void dfx_open(dfx *f, int r, bool int8, uint64_t seed, bool device)
{
    memset(f, 0, sizeof *f);
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    int L = cfg.n_layer, kd = cfg.n_head_kv * cfg.head_dim, D = 2 * kd;
    uint64_t rs = seed;
    kw_deltakv_comp *c = calloc(1, sizeof *c);
    c->n_layer = L, c->dim = D, c->latent = r;
    c->u = malloc(sizeof(float) * (size_t)L * D * r);
    double *q = malloc(sizeof(double) * (size_t)D * r);
    for (int l = 0; l < L; l++) {
        orthonormal(&rs, D, r, q);
        for (int i = 0; i < D * r; i++)
            c->u[(int64_t)l * D * r + i] = (float)q[i];
    }
    free(q);
    f->u = c->u, f->r = r;
    if (trained_mode) { /* the same basis as trained linear weights, or other weights */
        c = trained(c, trained_mode, &rs);
        f->u = c->u;
    }
    f->cc = c;
    f->comp = kw__value_compressor(c);
    kw_deltakv_opts o = {.sink = SINK, .every = EVERY, .recent = RECENT,
                         .int8 = int8 && !int4_mode, .int4 = int8 && int4_mode};
    kw_kvmethod *m;
    kw_error err = {0};
    assert_int_equal(kw__deltakv_method(&o, f->comp, &m, &err), 0);
    hfx_open_on(&f->fx, &cfg, 4, 1024, m, 0, NP, device);
    size_t sz = sizeof(float) * (size_t)L * (NP + 4) * kd;
    f->k = malloc(sz), f->v = malloc(sz);
    for (size_t i = 0; i < sz / sizeof(float); i++)
        f->k[i] = rnd(&rs), f->v[i] = rnd(&rs);
    int32_t pos[NP];
    for (int t = 0; t < NP; t++)
        pos[t] = t;
    for (int l = 0; l < L; l++)
        assert_int_equal(kw_kvseq_append(f->fx.seq.kv, l, f->k + off(f, l, 0),
                                         f->v + off(f, l, 0), pos, NP), 0);
}

static void dfx_close(dfx *f)
{
    hfx_close(&f->fx);
    kw_value_unref(f->comp);
    free(f->k), free(f->v);
}

static int call(dfx *f, int l, int which, int32_t pos, bool prefill, bool last)
{
    hfx_batch hb;
    hfx_batch_init(&f->fx, &hb, l, prefill);
    hb.pos = pos, hb.last = last;
    kw_view *out[1] = {f->fx.w};
    const kw_kvhook *h = f->fx.m->hook;
    kw_attn_stats a = {.n_head = f->fx.cfg.n_head};
    switch (which) {
    case 0:
        assert_int_equal(kw_view_dense(f->fx.w, f->fx.seq.kv, l, false), 0);
        return h->materialize(f->fx.st, &hb.lc, &hb.b, out);
    case 1:
        return h->after_attn(f->fx.st, &hb.lc, &hb.b, &a);
    default:
        return h->on_prefill_end(f->fx.st, &hb.lc, &hb.b);
    }
}

/* Stored positions of (l, h) in the pool, as flags. */
static void pool_positions(const dfx *f, int l, int h, char *in, int n)
{
    memset(in, 0, (size_t)n);
    for (int j = 0; j < kw_kvseq_len(f->fx.seq.kv, l, h); j++) {
        int32_t p;
        assert_int_equal(kw_kvseq_token_f32(f->fx.seq.kv, l, h, j, NULL, NULL, &p), 0);
        assert_true(p >= 0 && p < n);
        in[p] = 1;
    }
}

/* The expected rebuilt [K (after RoPE); V] of token p of layer l: x = [K before RoPE; V];
 * references are the sinks and every EVERY-th position below `encoded`; a reference is
 * exact, any other token is ref + U U^T (x - ref), ref its nearest preceding reference. */
static void expected(const dfx *f, int l, int p, float *kout, float *vout)
{
    const kw_model_config *c = &f->fx.cfg;
    int Hk = c->n_head_kv, hd = c->head_dim, kd = Hk * hd, D = 2 * kd, r = f->r;
    float inv[4], *xs = malloc(sizeof(float) * (size_t)(p + 1) * D);
    kw_rope_inv_freq(c, inv);
    for (int t = 0; t <= p; t++) { /* every token up to p before RoPE */
        memcpy(xs + (int64_t)t * D, f->k + off(f, l, t), sizeof(float) * kd);
        int32_t neg = -t;
        kw_k_rope(KW_BK_CPU, NULL, xs + (int64_t)t * D, &neg, 1, Hk, hd, inv, c->rope_layout);
        memcpy(xs + (int64_t)t * D + kd, f->v + off(f, l, t), sizeof(float) * kd);
    }
    double x[32];
    const float *xp = xs + (int64_t)p * D;
    if (p < SINK || p >= f->enc_limit) { /* whole in the pool */
        memcpy(kout, f->k + off(f, l, p), sizeof(float) * kd);
        memcpy(vout, f->v + off(f, l, p), sizeof(float) * kd);
        free(xs);
        return;
    }
    if (kw__deltakv_center(p, SINK, EVERY)) {
        for (int i = 0; i < D; i++)
            x[i] = xp[i];
    } else {
        int best = -1;
        double bd = INFINITY;
        for (int t = 0; t < p; t++) {
            if (!kw__deltakv_center(t, SINK, EVERY))
                continue;
            double d = 0;
            for (int i = 0; i < D; i++)
                d += ((double)xp[i] - xs[(int64_t)t * D + i]) * ((double)xp[i] - xs[(int64_t)t * D + i]);
            if (d < bd)
                bd = d, best = t;
        }
        const float *ref = xs + (int64_t)best * D;
        if (f->cc->down) { /* trained: up(down(x) - down(ref)) + ref, the projections' own
                              arithmetic (test_deltakv_load checks it) */
            float dx[32], dr[32], lt[32], y[32], scr[2 * 64];
            kw__deltakv_proj_apply(&f->cc->down[l], xp, 1, dx, scr);
            kw__deltakv_proj_apply(&f->cc->down[l], ref, 1, dr, scr);
            for (int j = 0; j < r; j++)
                lt[j] = dx[j] - dr[j];
            kw__deltakv_proj_apply(&f->cc->up[l], lt, 1, y, scr);
            for (int i = 0; i < D; i++)
                x[i] = (double)ref[i] + y[i];
        } else {
            const float *u = f->u + (int64_t)l * D * r;
            double lat[32] = {0};
            for (int j = 0; j < r; j++)
                for (int i = 0; i < D; i++)
                    lat[j] += u[i * r + j] * ((double)xp[i] - ref[i]);
            for (int i = 0; i < D; i++) {
                x[i] = ref[i];
                for (int j = 0; j < r; j++)
                    x[i] += u[i * r + j] * lat[j];
            }
        }
    }
    float kf[16];
    for (int i = 0; i < kd; i++)
        kf[i] = (float)x[i];
    int32_t pp = p;
    kw_k_rope(KW_BK_CPU, NULL, kf, &pp, 1, Hk, hd, inv, c->rope_layout);
    memcpy(kout, kf, sizeof(float) * kd);
    for (int i = 0; i < kd; i++)
        vout[i] = (float)x[kd + i];
    free(xs);
}

/* Every token of layer l through the view after materialize: positions 0 .. n-1 once
 * per KV head, K and V against expected() within tol (relative to the row's norm). */
static double check_view(dfx *f, int l, int n, double tol)
{
    const kw_model_config *c = &f->fx.cfg;
    int Hk = c->n_head_kv, hd = c->head_dim, kd = Hk * hd;
    kw_kvmem mem = kw_kvpool_mem(f->fx.pool);
    double worst = 0;
    for (int h = 0; h < Hk; h++) {
        char seen[NP + 4] = {0};
        for (int s = f->fx.w->row_ptr[h]; s < f->fx.w->row_ptr[h + 1]; s++) {
            const kw_span *sp = &f->fx.w->spans[s];
            for (int x = sp->first; x < sp->first + sp->n; x++) {
                int32_t p = mem.pos[sp->pool][(int64_t)sp->page * mem.page_tokens + x];
                assert_true(p >= 0 && p < n);
                assert_int_equal(seen[p], 0);
                seen[p] = 1;
                float buf[8] = {0}, ke[16], ve[16];
                bool dev = f->fx.dev && sp->pool == KW_POOL_MAIN; /* the device's page */
                const float *kr = dev ? mir_row(f->fx.dev, sp->page, 0, x)
                                      : kw_kvmem_row(&mem, sp->pool, sp->page, x, 0, buf);
                float kk[8];
                memcpy(kk, kr, sizeof kk);
                const float *vr = dev ? mir_row(f->fx.dev, sp->page, 1, x)
                                      : kw_kvmem_row(&mem, sp->pool, sp->page, x, 1, buf);
                expected(f, l, p, ke, ve);
                double e = 0, nn = 0;
                for (int i = 0; i < hd; i++) {
                    e += pow(kk[i] - ke[h * hd + i], 2) + pow(vr[i] - ve[h * hd + i], 2);
                    nn += pow(ke[h * hd + i], 2) + pow(ve[h * hd + i], 2);
                }
                if (f->r == 2 * kd) { /* lossless: the original rows, RoPE round trip */
                    double eo = 0;
                    for (int i = 0; i < hd; i++)
                        eo += pow(kk[i] - f->k[off(f, l, p) + h * hd + i], 2)
                              + pow(vr[i] - f->v[off(f, l, p) + h * hd + i], 2);
                    if (sqrt(eo / nn) > tol)
                        fail_msg("layer %d head %d position %d: rel %.3g from the original",
                                 l, h, p, sqrt(eo / nn));
                }
                double rel = sqrt(e / nn);
                worst = rel > worst ? rel : worst;
                if (rel > tol)
                    fail_msg("layer %d head %d position %d (%s pool): rel %.3g > %.3g", l, h, p,
                             sp->pool ? "temporary" : "main", rel, tol);
            }
        }
        for (int p = 0; p < n; p++)
            if (!seen[p])
                fail_msg("layer %d head %d: position %d not in the view", l, h, p);
    }
    (void)kd;
    return worst;
}

/* device: the pool's pages sit behind a device (the CUDA engine's kind of pool; a host
 * mirror stands in for it): the rows DeltaKV encodes are read back through it. */
static void run_case(int r, bool int8, double tol, bool device)
{
    dfx f;
    dfx_open(&f, r, int8, 0xd0 + (uint64_t)r, device);
    const kw_model_config *c = &f.fx.cfg;
    char in[NP + 4];
    for (int l = 0; l < c->n_layer; l++) {
        assert_int_equal(call(&f, l, 1, NP - 1, true, true), 0); /* the last chunk: no-op */
        assert_int_equal(call(&f, l, 2, NP - 1, true, true), 0);
        for (int h = 0; h < c->n_head_kv; h++) { /* the sinks and the last RECENT */
            pool_positions(&f, l, h, in, NP);
            for (int p = 0; p < NP; p++)
                if (in[p] != (p < SINK || p >= NP - RECENT))
                    fail_msg("layer %d head %d position %d: in the pool %d", l, h, p, in[p]);
        }
    }
    assert_true(f.fx.seq.held_peak_bytes > 0);
    f.enc_limit = NP - RECENT;
    /* a decode step: position NP joins, NP - RECENT leaves the pool after attention */
    for (int l = 0; l < c->n_layer; l++) {
        int32_t p = NP;
        assert_int_equal(kw_kvseq_append(f.fx.seq.kv, l, f.k + off(&f, l, NP),
                                         f.v + off(&f, l, NP), &p, 1), 0);
        int64_t mark = kw_kvpool_tmp_used(f.fx.pool);
        assert_int_equal(call(&f, l, 0, NP, false, false), 0);
        assert_true(kw_kvpool_tmp_used(f.fx.pool) > mark);
        double w = check_view(&f, l, NP + 1, tol);
        print_message("latent %d%s layer %d: worst rel %.3g (bound %.0e)\n", r,
                      int8 ? (int4_mode ? " int4" : " int8") : "", l, w, tol);
        assert_int_equal(call(&f, l, 1, NP, false, false), 0);
        assert_int_equal(kw_kvpool_tmp_used(f.fx.pool), mark); /* given back */
        if (l == c->n_layer - 1) { /* position NP - RECENT is encoded now: read it back */
            f.enc_limit = NP + 1 - RECENT;
            for (int x = 0; x < c->n_layer; x++) {
                assert_int_equal(call(&f, x, 0, NP, false, false), 0);
                check_view(&f, x, NP + 1, tol);
                kw_kvpool_tmp_truncate(f.fx.pool, mark);
            }
        }
        pool_positions(&f, l, 0, in, NP + 1);
        for (int q = 0; q <= NP; q++)
            assert_int_equal(in[q], q < SINK || q >= NP + 1 - RECENT);
    }
    dfx_close(&f);
}

static void test_lossless_basis_rebuilds_every_token(void **state)
{
    (void)state;
    run_case(32, false, 2e-6, false); /* U square: x = ref + (x - ref) up to rounding */
}

static void test_lossy_basis_against_reference(void **state)
{
    (void)state;
    run_case(10, false, 2e-6, false);
}

static void test_int8_latents(void **state)
{
    (void)state;
    run_case(10, true, 0.03, false); /* the f32 case's plus int8 rounding: sqrt(10) / 254 of
                                        the residual's norm at most */
}

static void test_int4_latents(void **state)
{
    (void)state;
    int4_mode = true; /* int4 rounding: sqrt(10) / 14 of the residual's norm at most */
    run_case(10, true, 0.25, false);
    run_case(10, true, 0.25, true); /* on a device pool */
    int4_mode = false;
}

/* Trained weights through compress.deltakv_load's loader: the basis written as linear
 * weights gives the basis's tokens; a SwiGLU down and a GELU up give up(down(x) -
 * down(ref)) + ref (the projections' arithmetic is test_deltakv_load's). */
static void test_trained_compressors(void **state)
{
    (void)state;
    trained_mode = 1;
    run_case(10, false, 2e-6, false);
    run_case(32, false, 2e-6, false);
    trained_mode = 2;
    run_case(10, false, 1e-5, false);
    run_case(10, true, 0.03, true); /* int8 latents, on a device pool */
    trained_mode = 0;
}

static void test_a_device_pool(void **state)
{
    (void)state;
    run_case(32, false, 2e-6, true);
    run_case(10, false, 2e-6, true);
}

static void test_a_select_hook_before_it_is_refused(void **state)
{
    (void)state;
    dfx f;
    dfx_open(&f, 10, false, 0xe1, false);
    for (int l = 0; l < f.fx.cfg.n_layer; l++)
        assert_int_equal(call(&f, l, 2, NP - 1, true, true), 0);
    hfx_batch hb;
    hfx_batch_init(&f.fx, &hb, 0, false);
    hb.pos = NP - 1;
    int npg; /* a view of the first page of each head only */
    assert_int_equal(kw_view_reset(f.fx.w, f.fx.cfg.n_head_kv, false), 0);
    for (int h = 0; h < f.fx.cfg.n_head_kv; h++) {
        const int32_t *pg = kw_kvseq_pages(f.fx.seq.kv, 0, h, &npg);
        assert_int_equal(kw_view_begin_row(f.fx.w, h), 0);
        assert_int_equal(kw_view_add(f.fx.w, KW_POOL_MAIN, pg[0], 0, 4), 0);
    }
    kw_view *out[1] = {f.fx.w};
    assert_true(f.fx.m->hook->materialize(f.fx.st, &hb.lc, &hb.b, out) < 0);
    assert_non_null(strstr(f.fx.seq.error, "chose among the pool's tokens only"));
    dfx_close(&f);
}

/* A view a SELECT hook chose by position (OmniKV's, kvpool.h): the pool's tokens it
 * chose stay, and only the held positions it wants are rebuilt and added, each equal to
 * expected(); a position DeltaKV does not hold is not added. The same view from a hook
 * placed after DeltaKV in the stack is refused. */
static void test_a_choice_by_position_rebuilds_only_the_chosen(void **state)
{
    (void)state;
    dfx f;
    dfx_open(&f, 10, false, 0xe3, false);
    const kw_model_config *c = &f.fx.cfg;
    for (int l = 0; l < c->n_layer; l++)
        assert_int_equal(call(&f, l, 2, NP - 1, true, true), 0);
    f.enc_limit = NP - RECENT;
    /* chosen: sink 1, held 10 (a center), 13 and 27 (latents), recent NP - 2; wanted:
     * the held ones and NP + 5 (nobody holds it) */
    const int32_t want[] = {10, 13, 27, NP + 5};
    int l = 1;
    hfx_batch hb;
    hfx_batch_init(&f.fx, &hb, l, false);
    hb.pos = NP - 1;
    kw_view *w = f.fx.w;
    assert_int_equal(kw_view_reset(w, c->n_head_kv, false), 0);
    for (int h = 0; h < c->n_head_kv; h++) {
        assert_int_equal(kw_view_begin_row(w, h), 0);
        assert_int_equal(kw_view_add_token(w, f.fx.seq.kv, l, h, 1), 0); /* position 1 */
        int n = kw_kvseq_len(f.fx.seq.kv, l, h);
        assert_int_equal(kw_view_add_token(w, f.fx.seq.kv, l, h, n - 2), 0); /* NP - 2 */
    }
    w->by_pos = 1; /* chosen by the hook at stack index 0, DeltaKV's own index here: a
                      choice made at or before DeltaKV's place in the stack is taken */
    for (int i = 0; i < 4; i++)
        assert_int_equal(kw_view_want(w, want[i]), 0);
    int64_t mark = kw_kvpool_tmp_used(f.fx.pool), before = f.fx.seq.rebuilt;
    kw_view *out[1] = {w};
    assert_int_equal(f.fx.m->hook->materialize(f.fx.st, &hb.lc, &hb.b, out), 0);
    assert_int_equal(f.fx.seq.rebuilt - before, 3);
    assert_true(f.fx.seq.rebuilt_full - before > 3);
    assert_true(kw_kvpool_tmp_used(f.fx.pool) > mark);
    kw_kvmem mem = kw_kvpool_mem(f.fx.pool);
    int hd = c->head_dim;
    for (int h = 0; h < c->n_head_kv; h++) {
        const int32_t expect_pos[] = {1, NP - 2, 10, 13, 27};
        int k = 0;
        for (int s = w->row_ptr[h]; s < w->row_ptr[h + 1]; s++) {
            const kw_span *sp = &w->spans[s];
            for (int x = sp->first; x < sp->first + sp->n; x++, k++) {
                assert_true(k < 5);
                int32_t p = mem.pos[sp->pool][(int64_t)sp->page * mem.page_tokens + x];
                assert_int_equal(p, expect_pos[k]);
                float buf[8] = {0}, ke[16], ve[16];
                const float *kr = kw_kvmem_row(&mem, sp->pool, sp->page, x, 0, buf);
                float kk[8];
                memcpy(kk, kr, sizeof kk);
                const float *vr = kw_kvmem_row(&mem, sp->pool, sp->page, x, 1, buf);
                expected(&f, l, p, ke, ve);
                for (int i = 0; i < hd; i++) {
                    assert_float_equal(kk[i], ke[h * hd + i], 1e-5);
                    assert_float_equal(vr[i], ve[h * hd + i], 1e-5);
                }
            }
        }
        assert_int_equal(k, 5);
    }
    kw_kvpool_tmp_truncate(f.fx.pool, mark);
    /* the same choice from a hook after DeltaKV (stack index 1) is refused */
    assert_int_equal(kw_view_reset(w, c->n_head_kv, false), 0);
    w->by_pos = 2;
    assert_true(f.fx.m->hook->materialize(f.fx.st, &hb.lc, &hb.b, out) < 0);
    assert_non_null(strstr(f.fx.seq.error, "before compress.deltakv"));
    dfx_close(&f);
}

/* A SELECT method stacked before DeltaKV on the CPU engine (METHODS.md's compositions):
 * a tiny model, 80 prompt tokens in chunks of 16, 30 decode steps, the method made by
 * make(). With a lossless basis (U square), the logits equal the method's alone within
 * 1e-4 (the same choices, the chosen tokens rebuilt exactly), DeltaKV's pool holds its
 * sinks and window only, and it rebuilt fewer tokens than it held. */
typedef int (*make_select)(kw_kvmethod **out, kw_error *err);

static void compose_case(const char *name, make_select make, bool as_trained)
{
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&cfg, 21);
    int L = cfg.n_layer, D = 2 * cfg.n_head_kv * cfg.head_dim, V = cfg.n_vocab;
    kw_deltakv_comp *dc = calloc(1, sizeof *dc);
    dc->n_layer = L, dc->dim = D, dc->latent = D;
    dc->u = calloc((size_t)L * D * D, sizeof(float));
    for (int l = 0; l < L; l++)
        for (int i = 0; i < D; i++)
            dc->u[((size_t)l * D + i) * D + i] = 1.f;
    uint64_t rs = 5;
    if (as_trained) /* the basis as trained linear weights: rebuilt through up() */
        dc = trained(dc, 1, &rs);
    kw_value *comp = kw__value_compressor(dc);
    kw_deltakv_opts dopt = {.sink = 4, .every = 5, .recent = 8};
    int n = 110, np = 80, ch = 16;
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(3 + rt_rand_u64(&rs) % (uint64_t)(V - 3));
    float *out[3];
    kw_seq seq[3];
    for (int run = 0; run < 3; run++) { /* the method, with DeltaKV, full attention */
        kw_error err = {0};
        kw_fwd *f;
        kw_kvpool *pool;
        kw_kvpool_opts po = kw_kvpool_defaults();
        po.page_tokens = 4, po.n_pages = 1024;
        assert_int_equal(kw__fwd_new(m, 256, &f, &err), 0);
        assert_int_equal(kw_kvpool_new(&cfg, &po, &pool, &err), 0);
        kw_kvmethod *meth[2] = {NULL, NULL};
        if (run < 2)
            assert_int_equal(make(&meth[0], &err), 0);
        if (run == 1)
            assert_int_equal(kw__deltakv_method(&dopt, comp, &meth[1], &err), 0);
        kw_hookstack hs = {0};
        for (int i = 0; i < 2 && meth[i]; i++) {
            void *st;
            assert_int_equal(meth[i]->state_new(meth[i]->params, &cfg, &st, &err), 0);
            hs.hooks[hs.n] = meth[i]->hook, hs.states[hs.n++] = st;
        }
        assert_int_equal(kw_hookstack_check(&hs, &err), 0);
        seq[run] = (kw_seq){.n_prompt = np, .max_new = n - np, .kv = kw_kvseq_new(pool),
                            .seed = 11};
        for (int h = 0; h < hs.n; h++)
            assert_int_equal(hs.hooks[h]->seq_open(hs.states[h], &seq[run], h), 0);
        kw_seq *sp = &seq[run];
        const kw_hookstack *hsp = &hs;
        out[run] = malloc(sizeof(float) * (size_t)n * V);
        rt_drive(f, pool, 1, &sp, &hsp, &ids, &n, &np, NULL, &ch, &out[run]);
        assert_string_equal(seq[run].error, "");
        if (run == 1) { /* the pool holds DeltaKV's sinks and window (and the last token) */
            int held = kw_kvseq_len(seq[run].kv, 1, 0);
            assert_true(held <= dopt.sink + dopt.recent + 1);
        }
        for (int h = hs.n - 1; h >= 0; h--) {
            hs.hooks[h]->seq_close(hs.states[h], &seq[run], h);
            meth[h]->state_free(hs.states[h]);
            meth[h]->params_free(meth[h]->params);
            free(meth[h]);
        }
        kw_kvseq_free(seq[run].kv);
        kw_kvpool_free(pool);
        kw__fwd_free(f);
    }
    double worst = 0, worst_dec = 0, apart = 0; /* DeltaKV's change; the method's own */
    for (int t = 0; t < n; t++) {
        double e = rt_rel_l2(out[1] + (int64_t)t * V, out[0] + (int64_t)t * V, V);
        worst = e > worst ? e : worst;
        worst_dec = t >= np && e > worst_dec ? e : worst_dec;
        e = rt_rel_l2(out[0] + (int64_t)t * V, out[2] + (int64_t)t * V, V);
        apart = t >= np && e > apart ? e : apart;
    }
    print_message("%s + deltakv vs %s: worst rel_l2 %.3g, %.3g in decoding (%s vs full "
                  "attention: %.3g); rebuilt %lld of %lld\n", name, name, worst, worst_dec,
                  name, apart,
                  (long long)seq[1].rebuilt, (long long)seq[1].rebuilt_full);
    assert_true(worst < 1e-4);
    assert_true(apart > 1e-3); /* the method chose: the comparison is not of dense runs */
    assert_true(seq[1].rebuilt > 0 && seq[1].rebuilt < seq[1].rebuilt_full);
    assert_int_equal(seq[0].rebuilt_full, 0);
    free(out[0]), free(out[1]), free(out[2]), free(ids);
    kw_value_unref(comp);
    rt_tiny_free(m);
}

/* OmniKV observes layer 0 and chooses 10 tokens with 2 sink and 4 recent ones for layers
 * 1 and 2: DeltaKV rebuilds everything at the observation layer, the chosen ones at the
 * others. */
static int make_omnikv(kw_kvmethod **out, kw_error *err)
{
    kw_omnikv_opts oo = {.keep_tokens = 10, .sink = 2, .recent = 4, .kernel = 3};
    return kw__omnikv_method(&oo, "0", out, err);
}

static void test_omnikv_before_it_rebuilds_only_the_chosen_tokens(void **state)
{
    (void)state;
    compose_case("omnikv", make_omnikv, false);
}

/* ClusterKV (layers 1 and 2, 6 clusters of the prompt, 2 more every 8 generated tokens)
 * reads 20 tokens per query head: it indexes the keys attention read (DeltaKV's rebuilt
 * ones with the pool's) and chooses per query head by position; DeltaKV rebuilds for
 * each KV head the union of its query heads' wants (a linear basis), or for a trained
 * compressor the union over the layer's rows, and gives each row its own. */
static int make_clusterkv(kw_kvmethod **out, kw_error *err)
{
    kw_clusterkv_opts o = {.budget = 20, .sink = 2, .clusters = 6, .iters = 5, .window = 8,
                           .window_clusters = 2, .dense_layers = 1};
    return kw__clusterkv_method(&o, NULL, out, err);
}

/* KVStar's selection (retrieve.kvstar_select): prompt blocks of 8, the first and the last
 * two always read, 2 of the 7 middle ones by the vote of 4 queries (half the channels,
 * pairs merged); DeltaKV rebuilds only the picked blocks' tokens it holds. */
static int make_kvstar(kw_kvmethod **out, kw_error *err)
{
    kw_kvstar_opts o = kw__kvstar_defaults();
    o.block = 8, o.retrieval_stride = 4, o.dim_prune_ratio = 0.5;
    return kw__kvstar_select_method(&o, out, err);
}

static void test_kvstar_selection_before_it_rebuilds_only_the_chosen_tokens(void **state)
{
    (void)state;
    compose_case("kvstar", make_kvstar, false);
}

static void test_clusterkv_before_it_rebuilds_only_the_chosen_tokens(void **state)
{
    (void)state;
    compose_case("clusterkv", make_clusterkv, false); /* each KV head its rows' wants */
    compose_case("clusterkv", make_clusterkv, true);  /* the rows' union, through up() */
}

static void test_a_pool_with_k_before_rope_is_refused(void **state)
{
    (void)state;
    dfx f;
    dfx_open(&f, 10, false, 0xe2, false);
    kw_kvseq_free(f.fx.seq.kv); /* the same tokens in a pool that stores K before RoPE */
    kw_kvpool_free(f.fx.pool);
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.n_pages = 1024, po.pre_rope = true;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(&f.fx.cfg, &po, &f.fx.pool, &err), 0);
    f.fx.seq.kv = kw_kvseq_new(f.fx.pool);
    int32_t pos[NP];
    for (int t = 0; t < NP; t++)
        pos[t] = t;
    assert_int_equal(kw_kvseq_append(f.fx.seq.kv, 0, f.k, f.v, pos, NP), 0);
    assert_true(call(&f, 0, 0, NP - 1, true, false) < 0);
    assert_non_null(strstr(f.fx.seq.error, "stores K before RoPE"));
    /* and int8 pages behind a device (the CUDA engine's int8 pool: no temporary pages) */
    kw_kvseq_free(f.fx.seq.kv);
    kw_kvpool_free(f.fx.pool);
    po = kw_kvpool_defaults();
    po.n_pages = 1024, po.device_pages = true, po.dtype = KW_KV_I8;
    assert_int_equal(kw_kvpool_new(&f.fx.cfg, &po, &f.fx.pool, &err), 0);
    f.fx.seq.kv = kw_kvseq_new(f.fx.pool);
    f.fx.seq.error[0] = 0;
    assert_true(call(&f, 0, 0, NP - 1, true, false) < 0);
    assert_non_null(strstr(f.fx.seq.error, "needs bf16 KV pages"));
    dfx_close(&f);
}

static void test_a_compressor_of_another_model(void **state)
{
    (void)state;
    kw_deltakv_comp *c = calloc(1, sizeof *c);
    c->n_layer = 3, c->dim = 48, c->latent = 4;
    c->u = calloc(3 * 48 * 4, sizeof(float));
    kw_value *v = kw__value_compressor(c);
    kw_deltakv_opts o = {.sink = 4, .every = 10, .recent = 8};
    kw_kvmethod *m;
    kw_error err = {0};
    assert_int_equal(kw__deltakv_method(&o, v, &m, &err), 0);
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    void *st;
    assert_int_equal(m->state_new(m->params, &cfg, &st, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "fitted for 3 layers of [K; V] of 48 values; this model "
                                    "has 3 layers of 32"));
    m->params_free(m->params);
    free(m);
    o.every = 0;
    assert_int_equal(kw__deltakv_method(&o, v, &m, &err), KW_EINVAL);
    kw_value_unref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basis_of_a_known_covariance),
        cmocka_unit_test(test_lossless_basis_rebuilds_every_token),
        cmocka_unit_test(test_lossy_basis_against_reference),
        cmocka_unit_test(test_int8_latents),
        cmocka_unit_test(test_int4_latents),
        cmocka_unit_test(test_a_device_pool),
        cmocka_unit_test(test_trained_compressors),
        cmocka_unit_test(test_a_choice_by_position_rebuilds_only_the_chosen),
        cmocka_unit_test(test_omnikv_before_it_rebuilds_only_the_chosen_tokens),
        cmocka_unit_test(test_clusterkv_before_it_rebuilds_only_the_chosen_tokens),
        cmocka_unit_test(test_kvstar_selection_before_it_rebuilds_only_the_chosen_tokens),
        cmocka_unit_test(test_a_select_hook_before_it_is_refused),
        cmocka_unit_test(test_a_pool_with_k_before_rope_is_refused),
        cmocka_unit_test(test_a_compressor_of_another_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
