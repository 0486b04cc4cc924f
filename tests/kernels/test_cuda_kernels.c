/* CUDA kernels against the CPU references on random shapes and data, with poisoned
 * outputs. Skipped (exit 77, with a line saying why) without a CUDA device. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels_cuda.h"
#include "kernels.h"
#include "kvweave/util.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double uni(void)
{
    return (double)(kw_splitmix64(&rng) >> 11) * 0x1.0p-53;
}

static float *dev_copy(const float *h, size_t n)
{
    float *d = NULL;
    if (cudaMalloc((void **)&d, n * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc/cudaMemcpy failed\n");
        exit(1);
    }
    return d;
}

static int test_rmsnorm(void)
{
    int fails = 0;
    for (int trial = 0; trial < 10; trial++) {
        int rows = 1 + (int)(uni() * 40), dim = 1 + (int)(uni() * 5000);
        size_t n = (size_t)rows * dim;
        float *x = malloc(n * 4), *g = malloc((size_t)dim * 4), *y = malloc(n * 4),
              *r = malloc(n * 4);
        for (size_t i = 0; i < n; i++)
            x[i] = (float)(uni() * 4 - 2);
        for (int i = 0; i < dim; i++)
            g[i] = (float)(uni() * 2 - 1);
        for (size_t i = 0; i < n; i++)
            y[i] = NAN; /* poison */
        float *dx = dev_copy(x, n), *dg = dev_copy(g, (size_t)dim), *dy = dev_copy(y, n);
        int rc = kw_k_rmsnorm(KW_BK_CUDA, NULL, dx, dg, dy, rows, dim, 1e-5f);
        cudaDeviceSynchronize();
        cudaMemcpy(y, dy, n * 4, cudaMemcpyDeviceToHost);
        kw_ref_rmsnorm(x, g, r, rows, dim, 1e-5f);
        double num = 0, den = 0;
        for (size_t i = 0; i < n; i++) {
            num += ((double)y[i] - r[i]) * ((double)y[i] - r[i]);
            den += (double)r[i] * r[i];
        }
        double err = sqrt(num / den);
        int ok = rc == 0 && err < 1e-5;
        printf("%s rmsnorm rows=%d dim=%d rel_l2=%.3g%s%s\n", ok ? "ok  " : "FAIL", rows, dim,
               err, rc ? " " : "", rc ? kw_cuda_last_error() : "");
        fails += !ok;
        cudaFree(dx), cudaFree(dg), cudaFree(dy);
        free(x), free(g), free(y), free(r);
    }
    return fails;
}


static double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static float *randv(size_t n, float scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((uni() * 2 - 1) * scale);
    return v;
}

static void fetch(float *h, const float *d, size_t n)
{
    cudaDeviceSynchronize();
    cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost);
}

static int report(const char *what, int rc, double err, double bound, const char *shape)
{
    int ok = rc == 0 && err < bound;
    printf("%s %-8s %s rel_l2=%.3g (bound %.0e)%s%s\n", ok ? "ok  " : "FAIL", what, shape, err,
           bound, rc ? " " : "", rc ? kw_cuda_last_error() : "");
    return !ok;
}

static int test_rope(void)
{
    int fails = 0;
    for (int trial = 0; trial < 8; trial++) {
        kw_model_config cfg = {.head_dim = 2 * (1 + (int)(uni() * 64)), .rope_theta = 10000.f};
        int n_tok = 1 + (int)(uni() * 300), nh = 1 + (int)(uni() * 32);
        kw_rope_layout layout = trial % 2 ? KW_ROPE_INTERLEAVED : KW_ROPE_HALF;
        size_t n = (size_t)n_tok * nh * cfg.head_dim;
        float inv[128], *x = randv(n, 1), *r = malloc(n * 4);
        kw_rope_inv_freq(&cfg, inv);
        int32_t *pos = malloc(sizeof(int32_t) * n_tok), *dpos;
        for (int t = 0; t < n_tok; t++)
            pos[t] = (int32_t)(uni() * 32768);
        memcpy(r, x, n * 4);
        float *dx = dev_copy(x, n), *dinv = dev_copy(inv, (size_t)cfg.head_dim / 2);
        cudaMalloc((void **)&dpos, sizeof(int32_t) * n_tok);
        cudaMemcpy(dpos, pos, sizeof(int32_t) * n_tok, cudaMemcpyHostToDevice);
        int rc = kw_k_rope(KW_BK_CUDA, NULL, dx, dpos, n_tok, nh, cfg.head_dim, dinv, layout);
        fetch(x, dx, n);
        kw_ref_rope(r, pos, n_tok, nh, cfg.head_dim, inv, layout);
        char shape[64];
        snprintf(shape, sizeof shape, "tok=%d heads=%d d=%d %s", n_tok, nh, cfg.head_dim,
                 layout == KW_ROPE_HALF ? "half" : "interleaved");
        fails += report("rope", rc, rel_l2(x, r, n), 1e-5, shape);
        cudaFree(dx), cudaFree(dinv), cudaFree(dpos);
        free(x), free(r), free(pos);
    }
    return fails;
}

static int test_elementwise(void)
{
    int fails = 0;
    for (int trial = 0; trial < 4; trial++) {
        size_t n = 1 + (size_t)(uni() * 3e6);
        float *g = randv(n, 8), *u = randv(n, 2), *y = randv(n, 1), *r = malloc(n * 4);
        float *dg = dev_copy(g, n), *du = dev_copy(u, n), *dy = dev_copy(y, n);
        char shape[64];
        snprintf(shape, sizeof shape, "n=%zu", n);
        int rc = kw_k_swiglu(KW_BK_CUDA, NULL, dg, du, dy, (int64_t)n);
        fetch(y, dy, n);
        kw_ref_swiglu(g, u, r, (int64_t)n);
        fails += report("swiglu", rc, rel_l2(y, r, n), 1e-5, shape);
        rc = kw_k_add(KW_BK_CUDA, NULL, dg, du, (int64_t)n);
        fetch(y, dg, n);
        for (size_t i = 0; i < n; i++)
            r[i] = g[i] + u[i];
        fails += report("add", rc, rel_l2(y, r, n), 1e-7, shape);
        cudaFree(dg), cudaFree(du), cudaFree(dy);
        free(g), free(u), free(y), free(r);
    }
    /* embedding gather, and an out-of-range id */
    int rows = 1000, dim = 576, n = 77;
    float *tab = randv((size_t)rows * dim, 1), *out = malloc((size_t)n * dim * 4);
    int32_t ids[77], *dids;
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(uni() * rows);
    float *dtab = dev_copy(tab, (size_t)rows * dim), *dout = dev_copy(out, (size_t)n * dim);
    cudaMalloc((void **)&dids, sizeof ids);
    cudaMemcpy(dids, ids, sizeof ids, cudaMemcpyHostToDevice);
    int rc = kw_k_embed(KW_BK_CUDA, NULL, dtab, rows, dim, dids, n, dout);
    fetch(out, dout, (size_t)n * dim);
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad |= memcmp(out + (size_t)i * dim, tab + (size_t)ids[i] * dim, (size_t)dim * 4) != 0;
    fails += report("embed", rc, bad, 0.5, "rows=1000 dim=576 n=77");
    ids[5] = rows;
    cudaMemcpy(dids, ids, sizeof ids, cudaMemcpyHostToDevice);
    rc = kw_k_embed(KW_BK_CUDA, NULL, dtab, rows, dim, dids, n, dout);
    fails += report("embed-oob", rc == KW_ERANGE ? 0 : -1, 0, 1, "id=1000 of 1000 -> KW_ERANGE");
    cudaFree(dtab), cudaFree(dout), cudaFree(dids);
    free(tab), free(out);
    return fails;
}

static int test_softmax_argmax(void)
{
    int fails = 0;
    for (int trial = 0; trial < 6; trial++) {
        int rows = 1 + (int)(uni() * 16), n = 1 + (int)(uni() * 50000);
        size_t tot = (size_t)rows * n;
        float *x = randv(tot, 12), *r = malloc(tot * 4);
        memcpy(r, x, tot * 4);
        int32_t *dam, am[16];
        float *dx = dev_copy(x, tot);
        cudaMalloc((void **)&dam, sizeof am);
        int rc = kw_cuda_argmax(NULL, dx, rows, n, dam);
        cudaMemcpy(am, dam, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost);
        int bad = 0;
        for (int i = 0; i < rows; i++)
            bad |= am[i] != kw_k_argmax(x + (size_t)i * n, n);
        char shape[64];
        snprintf(shape, sizeof shape, "rows=%d n=%d", rows, n);
        fails += report("argmax", rc, bad, 0.5, shape);
        rc = kw_k_softmax(KW_BK_CUDA, NULL, dx, rows, n);
        fetch(x, dx, tot);
        kw_ref_softmax(r, rows, n);
        fails += report("softmax", rc, rel_l2(x, r, tot), 1e-5, shape);
        cudaFree(dx), cudaFree(dam);
        free(x), free(r);
    }
    return fails;
}

int main(void)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device found; the CUDA kernels were compiled and linked only\n");
        return 77;
    }
    int fails = test_rmsnorm() + test_rope() + test_elementwise() + test_softmax_argmax();
    printf("cuda kernels: %d checks failed\n", fails);
    return fails ? 1 : 0;
}
