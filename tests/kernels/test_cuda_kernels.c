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

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double uni(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
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

int main(void)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device found; the CUDA kernels were compiled and linked only\n");
        return 77;
    }
    int fails = test_rmsnorm();
    printf("%d passed, %d failed\n", fails ? 0 : 1, fails ? 1 : 0);
    return fails ? 1 : 0;
}
