/* Decode-shaped linear layers on the GPU: y(M,N) = x(M,K) w(N,K)^T in bf16 for M = 1, 2,
 * 4, 8 rows at the Llama-3.1-8B shapes (q/o 4096x4096, k/v 1024x4096, gate/up 14336x4096,
 * down 4096x14336, head 128256x4096), the weight-streaming kernel (kw_cuda_gemv_bf16)
 * beside cuBLAS (cublasGemmEx, bf16 in, f32 out) in the same run. Bytes = weights + x + y;
 * CUDA events, warm-up, medians. Prints CSV. A benchmark, never a test. */
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
    return kwb_time_ms(launch_linear, &l, 5, 31);
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
        for (int i = 0; i < nw; i++) {
            CK(cudaMalloc(&w[i], wb));
            for (size_t off = 0; off < wb; off += (size_t)1 << 21)
                CK(cudaMemcpy((uint8_t *)w[i] + off, h,
                              wb - off < ((size_t)1 << 21) ? wb - off : ((size_t)1 << 21),
                              cudaMemcpyHostToDevice));
        }
        CK(cudaMalloc(&x, (size_t)8 * K * 2));
        CK(cudaMemcpy(x, h, (size_t)8 * K * 2, cudaMemcpyHostToDevice));
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
    free(h);
    return 0;
}
