// RMSNorm over rows (f32). One block per row; the sum of squares in f32 with a tree
// reduction (the CPU reference accumulates in f64; the test bound is 1e-5 relative).
#include "common.cuh"
#include "rmsnorm.cuh"
#include <cuda_bf16.h>

template <int THREADS, typename TO>
__global__ void rmsnorm_f32(const float *__restrict__ x, const float *__restrict__ g,
                            TO *__restrict__ y, int dim, float eps)
{
    const float *xr = x + (size_t)blockIdx.x * dim;
    TO *yr = y + (size_t)blockIdx.x * dim;
    kw_grid_wait();
    kw_grid_dependents();
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += THREADS)
        ss += xr[i] * xr[i];
    __shared__ float part[THREADS / 32];
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x % 32 == 0)
        part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        ss = threadIdx.x < THREADS / 32 ? part[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (threadIdx.x == 0)
            part[0] = rsqrtf(ss / dim + eps);
    }
    __syncthreads();
    float inv = part[0];
    for (int i = threadIdx.x; i < dim; i += THREADS)
        yr[i] = (TO)(xr[i] * inv * g[i]);
}

extern "C" int kw_cuda_rmsnorm(void *stream, const float *x, const float *g, float *y,
                               int rows, int dim, float eps)
{
    if (rows <= 0 || dim <= 0 || !x || !g || !y)
        return KW_EINVAL;
    KW_CUDA_TRY(kw_launch(rmsnorm_f32<256, float>, rows, 256, 0, (cudaStream_t)stream, x, g, y,
                          dim, eps));
    return KW_OK;
}

extern "C" int kw_cuda_rmsnorm_bf16(void *stream, const float *x, const float *g, void *y,
                                    int rows, int dim, float eps)
{
    if (rows <= 0 || dim <= 0 || !x || !g || !y)
        return KW_EINVAL;
    KW_CUDA_TRY(kw_launch(rmsnorm_f32<256, __nv_bfloat16>, rows, 256, 0, (cudaStream_t)stream, x,
                          g, (__nv_bfloat16 *)y, dim, eps));
    return KW_OK;
}

// The folded norm's input from a residual no GEMV wrote (kernels_cuda.h): a thread per
// KW_GEMV_NORM_PART values writes bf16(h * g) and their sum of squares, as the GEMV
// epilogue that writes a residual does.
__global__ void norm_parts(const float *__restrict__ h, const float *__restrict__ g,
                           __nv_bfloat16 *__restrict__ xg, float *__restrict__ ss, int M, int K)
{
    constexpr int NP = KW_GEMV_NORM_PART;
    const int n_ss = (K + NP - 1) / NP;
    kw_grid_wait();
    kw_grid_dependents();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M * n_ss)
        return;
    const int m = i / n_ss, p = i % n_ss;
    float q[NP];
#pragma unroll
    for (int j = 0; j < NP; j++) {
        const int k = p * NP + j;
        const float v = k < K ? h[(size_t)m * K + k] : 0.f;
        if (k < K)
            xg[(size_t)m * K + k] = __float2bfloat16_rn(v * g[k]);
        q[j] = v * v;
    }
    ss[i] = (q[0] + q[1]) + (q[2] + q[3]);
}

extern "C" int kw_cuda_norm_parts(void *stream, const float *h, const float *g, void *xg,
                                  float *ss, int M, int K)
{
    static_assert(KW_GEMV_NORM_PART == 4, "norm_parts adds four squares");
    if (M <= 0 || K <= 0 || !h || !g || !xg || !ss)
        return KW_EINVAL;
    const int n = M * ((K + KW_GEMV_NORM_PART - 1) / KW_GEMV_NORM_PART);
    KW_CUDA_TRY(kw_launch(norm_parts, (n + 127) / 128, 128, 0, (cudaStream_t)stream, h, g,
                          (__nv_bfloat16 *)xg, ss, M, K));
    return KW_OK;
}
