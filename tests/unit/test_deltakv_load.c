/* compress.deltakv_load: trained DeltaKV compressors from safetensors.
 *  - the projections (linear, GELU MLP, SwiGLU, with and without biases) against a plain
 *    double reference on random weights and rows: relative error < 1e-5;
 *  - a checkpoint in the DeltaKV code's names (per layer, F32 and BF16 tensors) loads
 *    back to the values written (BF16 ones as rounded), over one file or a directory of
 *    two; one shared pair (names without "layers.<i>") serves every layer;
 *  - broken checkpoints fail with KW_EFORMAT (or KW_ENOTFOUND) and a message naming the
 *    file, the tensor and the numbers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "compress/deltakv.h"
#include "st_write.h"

static uint64_t rs = 0x1234567;
static float rnd(void)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 11) / 9007199254740992.0 * 2 - 1);
}

static float *rvec(int64_t n, float scale)
{
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        v[i] = scale * rnd();
    return v;
}

/* y = p(x), one row, in double */
static void ref_proj(const kw_deltakv_proj *p, const float *x, double *y)
{
    int ni = p->inter, n1 = p->kind == KW_DKV_LINEAR ? p->out
                          : p->kind == KW_DKV_GELU ? ni : 2 * ni;
    double *a = malloc(sizeof(double) * (size_t)n1), *h = malloc(sizeof(double) * (size_t)(ni + 1));
    for (int j = 0; j < n1; j++) {
        a[j] = p->b1 ? p->b1[j] : 0;
        for (int i = 0; i < p->in; i++)
            a[j] += (double)p->w1[(int64_t)j * p->in + i] * x[i];
    }
    if (p->kind == KW_DKV_LINEAR) {
        memcpy(y, a, sizeof(double) * (size_t)p->out);
        free(a), free(h);
        return;
    }
    for (int j = 0; j < ni; j++)
        h[j] = p->kind == KW_DKV_GELU ? 0.5 * a[j] * (1 + erf(a[j] / sqrt(2.0)))
                                      : a[j] / (1 + exp(-a[j])) * a[ni + j];
    for (int o = 0; o < p->out; o++) {
        y[o] = p->b2 ? p->b2[o] : 0;
        for (int j = 0; j < ni; j++)
            y[o] += (double)p->w2[(int64_t)o * ni + j] * h[j];
    }
    free(a), free(h);
}

static kw_deltakv_proj rproj(int kind, int in, int out, int inter, bool bias)
{
    int n1 = kind == KW_DKV_LINEAR ? out : kind == KW_DKV_GELU ? inter : 2 * inter;
    kw_deltakv_proj p = {.kind = kind, .in = in, .out = out,
                         .inter = kind == KW_DKV_LINEAR ? 0 : inter};
    p.w1 = rvec((int64_t)n1 * in, 0.3f);
    p.b1 = bias ? rvec(n1, 0.5f) : NULL;
    if (kind != KW_DKV_LINEAR) {
        p.w2 = rvec((int64_t)out * inter, 0.3f);
        p.b2 = bias ? rvec(out, 0.5f) : NULL;
    }
    return p;
}

static void pfree(kw_deltakv_proj *p) { free(p->w1), free(p->b1), free(p->w2), free(p->b2); }

static void test_projections_against_a_plain_reference(void **state)
{
    (void)state;
    for (int kind = 0; kind < 3; kind++)
        for (int bias = 0; bias < 2; bias++) {
            int in = 24 + kind, out = 10 + 3 * bias, inter = 17, m = 7;
            kw_deltakv_proj p = rproj(kind, in, out, inter, bias);
            float *x = rvec((int64_t)m * in, 2.f), *y = malloc(sizeof(float) * (size_t)m * out);
            float *scr = malloc(sizeof(float) * (size_t)m * 2 * (inter + 1));
            for (int i = 0; i < m * out; i++)
                y[i] = NAN; /* poisoned */
            kw__deltakv_proj_apply(&p, x, m, y, scr);
            double e = 0, nn = 0, want[64];
            for (int i = 0; i < m; i++) {
                ref_proj(&p, x + (int64_t)i * in, want);
                for (int o = 0; o < out; o++)
                    e += pow(y[i * out + o] - want[o], 2), nn += want[o] * want[o];
            }
            print_message("kind %d bias %d: rel %.3g\n", kind, bias, sqrt(e / nn));
            assert_true(sqrt(e / nn) < 1e-5);
            pfree(&p), free(x), free(y), free(scr);
        }
}

/* ---- checkpoints ---- */

enum { L = 3, D = 32, R = 8, NI = 12 };

static char dir[128];

static void mkdir_tmp(void)
{
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kw_dkvload_XXXXXX", td && *td ? td : "/tmp");
    assert_non_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* The tensors of one layer: SwiGLU down (w12 and w3, biases), linear up (weight, bias),
 * named with "model.layers.<l>.self_attn."; w1 of the down one stored as BF16. */
typedef struct layer_w {
    float *w12, *b12, *w3, *b3, *uw, *ub;
    char names[6][96];
} layer_w;

static void layer_items(layer_w *w, const char *prefix, st_item *it)
{
    const char *sub[6] = {"compress_down.w12.weight", "compress_down.w12.bias",
                          "compress_down.w3.weight", "compress_down.w3.bias",
                          "compress_up.weight", "compress_up.bias"};
    for (int i = 0; i < 6; i++)
        snprintf(w->names[i], sizeof w->names[i], "%s%s", prefix, sub[i]);
    it[0] = (st_item){w->names[0], 1, 2, {2 * NI, D}, w->w12};
    it[1] = (st_item){w->names[1], 0, 1, {2 * NI}, w->b12};
    it[2] = (st_item){w->names[2], 0, 2, {R, NI}, w->w3};
    it[3] = (st_item){w->names[3], 0, 1, {R}, w->b3};
    it[4] = (st_item){w->names[4], 0, 2, {D, R}, w->uw};
    it[5] = (st_item){w->names[5], 0, 1, {D}, w->ub};
}

static void layer_new(layer_w *w)
{
    w->w12 = rvec(2 * NI * D, 0.3f), w->b12 = rvec(2 * NI, 0.3f), w->w3 = rvec(R * NI, 0.3f);
    w->b3 = rvec(R, 0.3f), w->uw = rvec(D * R, 0.3f), w->ub = rvec(D, 0.3f);
}

static void layer_free(layer_w *w)
{
    free(w->w12), free(w->b12), free(w->w3), free(w->b3), free(w->uw), free(w->ub);
}

static void check_layer(const kw_deltakv_comp *c, int l, const layer_w *w)
{
    const kw_deltakv_proj *d = &c->down[l], *u = &c->up[l];
    assert_int_equal(d->kind, KW_DKV_SWIGLU);
    assert_int_equal(u->kind, KW_DKV_LINEAR);
    assert_int_equal(d->inter, NI);
    for (int i = 0; i < 2 * NI * D; i++)
        assert_true(d->w1[i] == st_bf16_value(w->w12[i]));
    assert_memory_equal(d->b1, w->b12, sizeof(float) * 2 * NI);
    assert_memory_equal(d->w2, w->w3, sizeof(float) * R * NI);
    assert_memory_equal(d->b2, w->b3, sizeof(float) * R);
    assert_memory_equal(u->w1, w->uw, sizeof(float) * D * R);
    assert_memory_equal(u->b1, w->ub, sizeof(float) * D);
}

static void test_a_checkpoint_loads_back(void **state)
{
    (void)state;
    mkdir_tmp();
    layer_w w[L];
    st_item it[6 * L];
    char prefix[64], path[200];
    for (int l = 0; l < L; l++) {
        layer_new(&w[l]);
        snprintf(prefix, sizeof prefix, "model.layers.%d.self_attn.", l);
        layer_items(&w[l], prefix, it + 6 * l);
    }
    /* one file, and a directory of two files (layer 0, then layers 1-2) */
    snprintf(path, sizeof path, "%s/one.safetensors", dir);
    assert_int_equal(st_write(path, it, 6 * L), 0);
    kw_deltakv_comp *c;
    kw_error err = {0};
    assert_int_equal(kw__deltakv_load(path, L, D, &c, &err), 0);
    assert_int_equal(c->latent, R);
    assert_null(c->u);
    for (int l = 0; l < L; l++)
        check_layer(c, l, &w[l]);
    kw__compressor_free(c);
    char sub[160];
    snprintf(sub, sizeof sub, "%s/two", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/a.safetensors", sub);
    assert_int_equal(st_write(path, it, 6), 0);
    snprintf(path, sizeof path, "%s/b.safetensors", sub);
    assert_int_equal(st_write(path, it + 6, 6 * (L - 1)), 0);
    assert_int_equal(kw__deltakv_load(sub, L, D, &c, &err), 0);
    for (int l = 0; l < L; l++)
        check_layer(c, l, &w[l]);
    kw__compressor_free(c);
    /* a shared pair: every layer gets it */
    layer_items(&w[0], "", it);
    snprintf(path, sizeof path, "%s/shared.safetensors", dir);
    assert_int_equal(st_write(path, it, 6), 0);
    assert_int_equal(kw__deltakv_load(path, L, D, &c, &err), 0);
    for (int l = 0; l < L; l++)
        check_layer(c, l, &w[0]);
    kw__compressor_free(c);
    for (int l = 0; l < L; l++)
        layer_free(&w[l]);
    rm_tmp();
}

/* A checkpoint of all layers with one change, and the error it must give. */
static void expect_broken(const char *what, void (*spoil)(st_item *it, int *n, layer_w *w),
                          int want_rc, const char *want_msg)
{
    mkdir_tmp();
    layer_w w[L];
    st_item it[6 * L + 1];
    char prefix[64], path[200];
    for (int l = 0; l < L; l++) {
        layer_new(&w[l]);
        snprintf(prefix, sizeof prefix, "model.layers.%d.self_attn.", l);
        layer_items(&w[l], prefix, it + 6 * l);
    }
    int n = 6 * L;
    spoil(it, &n, w);
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    assert_int_equal(st_write(path, it, n), 0);
    kw_deltakv_comp *c = NULL;
    kw_error err = {0};
    int rc = kw__deltakv_load(path, L, D, &c, &err);
    print_message("%s: %d %s\n", what, rc, err.msg);
    assert_int_equal(rc, want_rc);
    assert_null(c);
    assert_non_null(strstr(err.msg, want_msg));
    for (int l = 0; l < L; l++)
        layer_free(&w[l]);
    rm_tmp();
}

static void drop_up_of_2(st_item *it, int *n, layer_w *w)
{
    (void)it, (void)w;
    *n -= 2; /* the last two: layer 2's up weight and bias */
}
static void bad_shape(st_item *it, int *n, layer_w *w)
{
    (void)n, (void)w;
    it[6 + 4].shape[1] = R - 1; /* layer 1's up weight (D, R - 1) */
}
static void split_kv(st_item *it, int *n, layer_w *w)
{
    it[*n] = (st_item){"model.layers.0.self_attn.k_compress_down.weight", 0, 2, {R, D / 2}, w[0].uw};
    (*n)++;
}
static void unknown_part(st_item *it, int *n, layer_w *w)
{
    it[*n] = (st_item){"model.layers.1.self_attn.compress_down.w99.weight", 0, 1, {R}, w[0].b3};
    (*n)++;
}
static void mixed_kinds(st_item *it, int *n, layer_w *w)
{
    it[*n] = (st_item){"model.layers.1.self_attn.compress_down.weight", 0, 2, {R, D}, w[0].uw};
    (*n)++;
}
static void no_compressor(st_item *it, int *n, layer_w *w)
{
    (void)w;
    it[0] = (st_item){"model.embed_tokens.weight", 0, 1, {R}, it[3].data};
    *n = 1;
}
static void latent_too_big(st_item *it, int *n, layer_w *w)
{
    (void)w;
    static float big[(D + 1) * NI];
    for (int i = 0; i < (D + 1) * NI; i++)
        big[i] = 0.1f;
    for (int l = 0; l < L; l++) /* w3: (D + 1, NI) */
        it[6 * l + 2].shape[0] = D + 1, it[6 * l + 2].data = big;
    (void)n;
}
static void not_finite(st_item *it, int *n, layer_w *w)
{
    (void)it, (void)n;
    w[2].ub[5] = INFINITY;
}
static void layer_out_of_range(st_item *it, int *n, layer_w *w)
{
    it[*n] = (st_item){"model.layers.7.self_attn.compress_up.bias", 0, 1, {D}, w[0].ub};
    (*n)++;
}

static void test_broken_checkpoints_fail_clearly(void **state)
{
    (void)state;
    expect_broken("missing layer", drop_up_of_2, KW_EFORMAT, "layer 2 has no compress_up");
    expect_broken("shape", bad_shape, KW_EFORMAT, "has shape [32, 7], want [32, 8]");
    expect_broken("split_kv", split_kv, KW_EFORMAT, "split_kv");
    expect_broken("unknown part", unknown_part, KW_EFORMAT, "'w99.weight' is no part");
    expect_broken("mixed kinds", mixed_kinds, KW_EFORMAT, "layer 1's compress_down has SwiGLU");
    expect_broken("nothing", no_compressor, KW_EFORMAT, "no compress_down or compress_up");
    expect_broken("latent", latent_too_big, KW_EFORMAT, "gives 33 values per token");
    expect_broken("inf", not_finite, KW_EFORMAT, "non-finite value at element 5");
    expect_broken("layer index", layer_out_of_range, KW_EFORMAT, "not in 0..2");
    /* and paths that hold no checkpoint */
    kw_deltakv_comp *c = NULL;
    kw_error err = {0};
    assert_int_equal(kw__deltakv_load("/nonexistent/kw.safetensors", L, D, &c, &err),
                     KW_ENOTFOUND);
    mkdir_tmp();
    assert_int_equal(kw__deltakv_load(dir, L, D, &c, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no .safetensors file"));
    char path[200];
    snprintf(path, sizeof path, "%s/junk.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    fputs("not a safetensors file", fp);
    fclose(fp);
    assert_true(kw__deltakv_load(path, L, D, &c, &err) < 0);
    assert_null(c);
    rm_tmp();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projections_against_a_plain_reference),
        cmocka_unit_test(test_a_checkpoint_loads_back),
        cmocka_unit_test(test_broken_checkpoints_fail_clearly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
