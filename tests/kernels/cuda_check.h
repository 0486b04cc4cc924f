/* Helpers shared by the CUDA kernel tests that check device results against host
 * references: a seeded generator, device copies (an output buffer without host data is
 * poisoned with NaNs), relative L2 error, a report line per case, bf16 rounding, and
 * running the test groups named on the command line (exit 77 without a device). */
#ifndef KW_TESTS_CUDA_CHECK_H
#define KW_TESTS_CUDA_CHECK_H

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels_cuda.h"
#include "kvweave/tensor.h"
#include "kvweave/util.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static inline double uni(void)
{
    return (double)(kw_splitmix64(&rng) >> 11) * 0x1.0p-53;
}

#define CK(x)                                                                            \
    do {                                                                                 \
        if ((x) != cudaSuccess) {                                                        \
            fprintf(stderr, "%s failed at line %d\n", #x, __LINE__);                     \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

static inline void *dput(const void *h, size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes ? bytes : 1));
    if (h)
        CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    else
        CK(cudaMemset(d, 0xff, bytes)); /* poison: NaN for f32 and bf16 */
    return d;
}

static inline void dget(void *h, const void *d, size_t bytes)
{
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

static inline float *randv(size_t n, float scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((uni() * 2 - 1) * scale);
    return v;
}

static inline double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += isfinite(a[i]) ? d * d : INFINITY;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static inline int report(const char *what, int rc, double err, double bound, const char *shape)
{
    int ok = rc == 0 && err < bound;
    printf("%s %-12s %s rel_l2=%.3g (bound %.0e)%s%s\n", ok ? "ok  " : "FAIL", what, shape, err,
           bound, rc ? " " : "", rc ? kw_cuda_last_error() : "");
    return !ok;
}

static inline uint16_t *to_bf16(const float *x, size_t n, float *rounded)
{
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        h[i] = kw_f32_to_bf16(x[i]);
        if (rounded)
            rounded[i] = kw_bf16_to_f32(h[i]);
    }
    return h;
}

/* A test group: its name on the command line and the function that returns its
 * failures. */
typedef struct cuda_check_group {
    const char *name;
    int (*run)(void);
} cuda_check_group;

/* Runs every group, or those named in argv; prints the failure count. Returns the exit
 * code: 0, 1 on failures, 2 for a name that is no group, 77 without a CUDA device. */
static inline int cuda_check_main(const char *prog, const cuda_check_group *groups, int n,
                                  int argc, char **argv)
{
    int want[16] = {0};
    for (int i = 1; i < argc; i++) {
        int g = 0;
        while (g < n && strcmp(argv[i], groups[g].name))
            g++;
        if (g == n) {
            fprintf(stderr, "%s: no test group '%s' (", prog, argv[i]);
            for (int k = 0; k < n; k++)
                fprintf(stderr, "%s%s", k ? ", " : "", groups[k].name);
            fprintf(stderr, ")\n");
            return 2;
        }
        want[g] = 1;
    }
    if (kw_cuda_device_count() < 1) {
        printf("SKIP: no CUDA device (%s needs one)\n", prog);
        return 77;
    }
    int fails = 0;
    for (int g = 0; g < n && g < 16; g++)
        if (argc == 1 || want[g])
            fails += groups[g].run();
    printf("%s: %d failure(s)\n", fails ? "FAIL" : "ok", fails);
    return fails ? 1 : 0;
}

#endif
