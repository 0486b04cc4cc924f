// Element-wise kernels: grid-stride loops, float4 where aligned.
#include "common.cuh"
#include "elementwise.cuh"
#include <cuda_bf16.h>

__global__ void swiglu_f32(const float *__restrict__ g, const float *__restrict__ u,
                           float *__restrict__ o, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float a = g[i];
        o[i] = a / (1.f + __expf(-a)) * u[i];
    }
}

__global__ void add_f32(float *__restrict__ y, const float *__restrict__ x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

// One block per token; ids are checked on the device and a bad one is reported in *bad.
__global__ void embed_f32(const float *__restrict__ table, int64_t n_rows, int dim,
                          const int32_t *__restrict__ ids, float *__restrict__ out, int *bad)
{
    int32_t id = ids[blockIdx.x];
    if (id < 0 || id >= n_rows) {
        if (threadIdx.x == 0)
            *bad = 1;
        return;
    }
    const float *row = table + (size_t)id * dim;
    float *dst = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        dst[i] = row[i];
}

extern "C" int kw_cuda_swiglu(void *stream, const float *gate, const float *up, float *out,
                              int64_t n)
{
    if (n <= 0)
        return KW_EINVAL;
    swiglu_f32<<<kw_blocks_for(n), 256, 0, (cudaStream_t)stream>>>(gate, up, out, n);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

extern "C" int kw_cuda_add(void *stream, float *y, const float *x, int64_t n)
{
    if (n <= 0)
        return KW_EINVAL;
    add_f32<<<kw_blocks_for(n), 256, 0, (cudaStream_t)stream>>>(y, x, n);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

extern "C" int kw_cuda_embed(void *stream, const float *table, int64_t n_rows, int dim,
                             const int32_t *ids, int n, float *out)
{
    if (n <= 0 || dim <= 0)
        return KW_EINVAL;
    int *bad = nullptr, hbad = 0;
    KW_CUDA_TRY(cudaMallocAsync((void **)&bad, sizeof(int), (cudaStream_t)stream));
    KW_CUDA_TRY(cudaMemsetAsync(bad, 0, sizeof(int), (cudaStream_t)stream));
    embed_f32<<<n, 256, 0, (cudaStream_t)stream>>>(table, n_rows, dim, ids, out, bad);
    KW_CUDA_LAUNCHED();
    KW_CUDA_TRY(cudaMemcpyAsync(&hbad, bad, sizeof(int), cudaMemcpyDeviceToHost,
                                (cudaStream_t)stream));
    KW_CUDA_TRY(cudaFreeAsync(bad, (cudaStream_t)stream));
    KW_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)stream));
    return hbad ? KW_ERANGE : KW_OK;
}

__global__ void swiglu_bf16(const float *__restrict__ g, const float *__restrict__ u,
                            __nv_bfloat16 *__restrict__ o, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float a = g[i];
        o[i] = __float2bfloat16_rn(a / (1.f + __expf(-a)) * u[i]);
    }
}

extern "C" int kw_cuda_swiglu_bf16(void *stream, const float *gate, const float *up, void *out,
                                   int64_t n)
{
    if (n <= 0)
        return KW_EINVAL;
    swiglu_bf16<<<kw_blocks_for(n), 256, 0, (cudaStream_t)stream>>>(gate, up,
                                                                   (__nv_bfloat16 *)out, n);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

__global__ void swiglu_bf16_in(const __nv_bfloat162 *__restrict__ g,
                               const __nv_bfloat162 *__restrict__ u,
                               __nv_bfloat162 *__restrict__ o, int64_t n2)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n2;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float2 a = __bfloat1622float2(g[i]), b = __bfloat1622float2(u[i]);
        o[i] = __floats2bfloat162_rn(a.x / (1.f + __expf(-a.x)) * b.x,
                                     a.y / (1.f + __expf(-a.y)) * b.y);
    }
}

extern "C" int kw_cuda_swiglu_bf16_in(void *stream, const void *gate, const void *up,
                                      void *out, int64_t n)
{
    if (n <= 0 || n % 2 || !gate || !up || !out || ((uintptr_t)gate | (uintptr_t)up |
                                                     (uintptr_t)out) % 4)
        return KW_EINVAL;
    swiglu_bf16_in<<<kw_blocks_for(n / 2), 256, 0, (cudaStream_t)stream>>>(
        (const __nv_bfloat162 *)gate, (const __nv_bfloat162 *)up, (__nv_bfloat162 *)out, n / 2);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// Ids are checked by the caller (the engine checks them on the host before the step).
__global__ void embed_bf16(const __nv_bfloat16 *__restrict__ table, int64_t n_rows, int dim,
                           const int32_t *__restrict__ ids, float *__restrict__ out)
{
    int32_t id = ids[blockIdx.x];
    float *dst = out + (size_t)blockIdx.x * dim;
    if (id < 0 || id >= n_rows) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            dst[i] = __int_as_float(0x7fc00000); // NaN: never silently a valid row
        return;
    }
    const __nv_bfloat16 *row = table + (size_t)id * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        dst[i] = __bfloat162float(row[i]);
}

extern "C" int kw_cuda_embed_bf16(void *stream, const void *table, int64_t n_rows, int dim,
                                  const int32_t *ids, int n, float *out)
{
    if (n <= 0 || dim <= 0 || !table || !ids || !out)
        return KW_EINVAL;
    embed_bf16<<<n, 256, 0, (cudaStream_t)stream>>>((const __nv_bfloat16 *)table, n_rows, dim,
                                                     ids, out);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

__global__ void gather_rows_f32(const float *__restrict__ x, const int32_t *__restrict__ rows,
                                int dim, float *__restrict__ out)
{
    const float *src = x + (size_t)rows[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = src[i];
}

extern "C" int kw_cuda_gather_rows(void *stream, const float *x, const int32_t *rows, int n,
                                   int dim, float *out)
{
    if (n <= 0 || dim <= 0)
        return KW_EINVAL;
    gather_rows_f32<<<n, 256, 0, (cudaStream_t)stream>>>(x, rows, dim, out);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
