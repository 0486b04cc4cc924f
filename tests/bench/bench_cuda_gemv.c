/* Decode-shaped linear layers on the GPU: y(M,N) = x(M,K) w(N,K)^T in bf16 for M = 1, 2,
 * 4, 8 rows at the Llama-3.1-8B shapes (q/o 4096x4096, k/v 1024x4096, gate/up 14336x4096,
 * down 4096x14336, head 128256x4096), the weight-streaming kernel (kw_cuda_gemv_bf16)
 * beside cuBLAS (cublasGemmEx, bf16 in, f32 out) in the same run. Bytes = weights + x + y;
 * CUDA events around 16 calls back to back (each on the next copy of the weights),
 * warm-up, medians. Prints CSV. A benchmark, never a test. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"
#include "cuda/kernels_cuda.h"

#define CK KWB_CK

typedef struct lin {
    void **w;
    int nw, i, M, N, K;
    const void *x;
    float *y;
} lin;

static int launch_linear(void *p)
{
    lin *l = p;
    return kw_cuda_linear_bf16(NULL, l->x, l->w[l->i++ % l->nw], NULL, l->y, l->M, l->N, l->K);
}

/* median ms of calls of kw_cuda_linear_bf16, each on the next of nw copies of w, so the
 * weights are never served from L2 */
static double time_linear(void **w, int nw, const void *x, float *y, int M, int N, int K)
{
    lin l = {w, nw, 0, M, N, K, x, y};
    return kwb_time_ms_batch(launch_linear, &l, 3, 15, 16);
}

/* A device buffer of `bytes` filled with the 2 MB pattern h (repeated). */
static void *pattern_buffer(const uint16_t *h, size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes));
    for (size_t off = 0; off < bytes; off += (size_t)1 << 21)
        CK(cudaMemcpy((uint8_t *)d + off, h,
                      bytes - off < ((size_t)1 << 21) ? bytes - off : ((size_t)1 << 21),
                      cudaMemcpyHostToDevice));
    return d;
}

/* The fused decode passes at the 8B shapes: Q/K/V (4096 + 1024 + 1024 rows of 4096) in
 * one launch vs three kw_cuda_linear_bf16 calls, and gate/up/SwiGLU (2 x 14336 rows of
 * 4096, bf16 out) vs two calls and the separate SwiGLU kernel, M = 1 and 2 rows. */
typedef struct fused {
    void **w; /* 6 matrices per copy: q k v gate up (and a spare) */
    int nw, i, M, kind, split;
    const void *x;
    float *y[3];
    void *yb;
} fused;

static int launch_fused(void *p)
{
    fused *f = p;
    void **w = f->w + 6 * (f->i++ % f->nw);
    const int E = 4096, KD = 1024, F = 14336;
    int rc;
    if (f->kind == 0) {
        if (!f->split) {
            kw_cuda_gemv_out o[3] = {{w[0], NULL, f->y[0], E}, {w[1], NULL, f->y[1], KD},
                                     {w[2], NULL, f->y[2], KD}};
            return kw_cuda_gemv_multi_bf16(NULL, f->x, f->M, E, o, 3, 0);
        }
        if ((rc = kw_cuda_linear_bf16(NULL, f->x, w[0], NULL, f->y[0], f->M, E, E)) ||
            (rc = kw_cuda_linear_bf16(NULL, f->x, w[1], NULL, f->y[1], f->M, KD, E)))
            return rc;
        return kw_cuda_linear_bf16(NULL, f->x, w[2], NULL, f->y[2], f->M, KD, E);
    }
    if (!f->split)
        return kw_cuda_gemv_swiglu_bf16(NULL, f->x, w[3], w[4], f->yb, f->M, F, E);
    if ((rc = kw_cuda_linear_bf16(NULL, f->x, w[3], NULL, f->y[0], f->M, F, E)) ||
        (rc = kw_cuda_linear_bf16(NULL, f->x, w[4], NULL, f->y[1], f->M, F, E)))
        return rc;
    return kw_cuda_swiglu_bf16(NULL, f->y[0], f->y[1], f->yb, (int64_t)f->M * F);
}

static void bench_fused(const uint16_t *h, double bw)
{
    const int E = 4096, KD = 1024, F = 14336, nw = 4;
    const size_t sz[6] = {(size_t)E * E, (size_t)KD * E, (size_t)KD * E, (size_t)F * E,
                          (size_t)F * E, 8};
    void *w[6 * 4], *x, *yb;
    float *y[3];
    for (int i = 0; i < 6 * nw; i++)
        w[i] = pattern_buffer(h, sz[i % 6] * 2);
    x = pattern_buffer(h, (size_t)8 * E * 2);
    for (int i = 0; i < 3; i++)
        CK(cudaMalloc((void **)&y[i], (size_t)8 * F * 4));
    CK(cudaMalloc(&yb, (size_t)8 * F * 2));
    for (int kind = 0; kind < 2; kind++)
        for (int M = 1; M <= 2; M++)
            for (int split = 0; split < 2; split++) {
                fused f = {w, nw, 0, M, kind, split, x, {y[0], y[1], y[2]}, yb};
                double ms = kwb_time_ms_batch(launch_fused, &f, 3, 15, 16);
                double bytes = kind ? 2.0 * F * E * 2 : (double)(E + 2 * KD) * E * 2;
                printf("%s,%d,%d,%d,%s,%.4f,%.1f,%.1f\n", kind ? "gate_up_swiglu" : "qkv", M,
                       kind ? 2 * F : E + 2 * KD, E, split ? "separate" : "fused", ms,
                       bytes / (ms * 1e-3) / 1e9, 100.0 * bytes / (ms * 1e-3) / bw);
            }
    for (int i = 0; i < 6 * nw; i++)
        cudaFree(w[i]);
    for (int i = 0; i < 3; i++)
        cudaFree(y[i]);
    cudaFree(x), cudaFree(yb);
}

int main(void)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    double bw = kwb_copy_bandwidth();
    printf("copy_bandwidth_GBps,%.1f\n", bw / 1e9);
    printf("bench,M,N,K,kernel,ms,GBps,pct_copy_bw\n");
    const int shapes[][2] = {{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336},
                             {128256, 4096}};
    const int rows[] = {1, 2, 4, 8};
    uint16_t *h = malloc((size_t)1 << 21);
    for (int i = 0; i < 1 << 20; i++)
        h[i] = (uint16_t)(0x3c00 + (rand() & 0x1ff)); /* bf16 in [2^-7, 2^-6): not zeros */
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int N = shapes[si][0], K = shapes[si][1];
        size_t wb = (size_t)N * K * 2;
        int nw = (int)(((size_t)512 << 20) / wb) + 1; /* > 50 MB of L2 per rotation */
        if (nw > 8)
            nw = 8;
        void *w[8], *x;
        float *y;
        for (int i = 0; i < nw; i++)
            w[i] = pattern_buffer(h, wb);
        x = pattern_buffer(h, (size_t)8 * K * 2);
        CK(cudaMalloc((void **)&y, (size_t)8 * N * 4));
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
            int M = rows[ri];
            double bytes = (double)wb + (double)M * K * 2 + (double)M * N * 4;
            for (int k = 0; k < 2; k++) {
                kw_cuda_set_gemv_rows(k ? 0 : 8);
                double ms = time_linear(w, nw, x, y, M, N, K);
                printf("linear,%d,%d,%d,%s,%.4f,%.1f,%.1f\n", M, N, K, k ? "cublas" : "gemv", ms,
                       bytes / (ms * 1e-3) / 1e9, 100.0 * bytes / (ms * 1e-3) / bw);
            }
        }
        for (int i = 0; i < nw; i++)
            cudaFree(w[i]);
        cudaFree(x), cudaFree(y);
    }
    kw_cuda_set_gemv_rows(KW_GEMV_MAX_ROWS);
    bench_fused(h, bw);
    free(h);
    return 0;
}
