/* Benchmark helpers (bench_common.h). */
#include "bench_common.h"
#include "cuda/kernels_cuda.h"
#include "kvweave/util.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double kwb_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double kwb_uni(uint64_t *state)
{
    return (double)(kw_splitmix64(state) >> 11) * 0x1.0p-53;
}

double kwb_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int kwb_parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c)
            break;
        s = c + 1;
    }
    return n;
}

double kwb_copy_bandwidth(void)
{
    size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
        cudaFree(a);
        return 0;
    }
    cudaMemset(a, 1, n);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double t[10];
    for (int i = 0; i < 12; i++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 2)
            t[i - 2] = ms * 1e-3;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b);
    return 2.0 * (double)n / kwb_median(t, 10);
}

double kwb_time_ms(int (*fn)(void *), void *arg, int warmup, int reps)
{
    return kwb_time_ms_batch(fn, arg, warmup, reps, 1);
}

double kwb_time_ms_batch(int (*fn)(void *), void *arg, int warmup, int reps, int batch)
{
    cudaEvent_t e0, e1;
    KWB_CK(cudaEventCreate(&e0));
    KWB_CK(cudaEventCreate(&e1));
    double *t = malloc(sizeof(double) * (size_t)(reps > 0 ? reps : 1));
    if (!t)
        exit(1);
    for (int i = 0; i < warmup + reps; i++) {
        KWB_CK(cudaEventRecord(e0, 0));
        for (int b = 0; b < batch; b++)
            if (fn(arg) < 0) {
                fprintf(stderr, "launch failed: %s\n", kw_cuda_last_error());
                exit(1);
            }
        KWB_CK(cudaEventRecord(e1, 0));
        KWB_CK(cudaEventSynchronize(e1));
        float ms;
        KWB_CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= warmup)
            t[i - warmup] = ms / batch;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    double m = kwb_median(t, reps);
    free(t);
    return m;
}
