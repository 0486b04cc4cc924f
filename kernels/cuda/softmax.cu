// Row softmax: one block per row, max and sum by warp shuffles. Argmax: one block per row,
// (value, index) pairs reduced with the lowest index winning ties.
#include <cfloat>

#include "common.cuh"
#include "softmax.cuh"

template <typename F>
__device__ float block_reduce(float v, F op, float identity, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x % 32 == 0)
        sh[threadIdx.x / 32] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) / 32;
    v = threadIdx.x < nw ? sh[threadIdx.x] : identity;
    if (threadIdx.x < 32)
        for (int o = 16; o > 0; o >>= 1)
            v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0)
        sh[0] = v;
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

__global__ void softmax_f32(float *__restrict__ x, int n)
{
    __shared__ float sh[32];
    float *v = x + (size_t)blockIdx.x * n;
    float mx = -FLT_MAX;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        mx = fmaxf(mx, v[i]);
    mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, -FLT_MAX, sh);
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float e = __expf(v[i] - mx);
        v[i] = e;
        s += e;
    }
    s = block_reduce(s, [](float a, float b) { return a + b; }, 0.f, sh);
    float inv = 1.f / s;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        v[i] *= inv;
}

__global__ void argmax_f32(const float *__restrict__ x, int n, int32_t *__restrict__ out)
{
    __shared__ float sv[1024];
    __shared__ int si[1024];
    const float *v = x + (size_t)blockIdx.x * n;
    float best = -FLT_MAX;
    int bi = n; // beyond any index: loses every tie
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (v[i] > best || (v[i] == best && i < bi)) {
            best = v[i];
            bi = i;
        }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float o = sv[threadIdx.x + s];
            int oi = si[threadIdx.x + s];
            if (o > sv[threadIdx.x] || (o == sv[threadIdx.x] && oi < si[threadIdx.x])) {
                sv[threadIdx.x] = o;
                si[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = si[0] < n ? si[0] : 0;
}

extern "C" int kw_cuda_softmax(void *stream, float *x, int rows, int n)
{
    if (rows <= 0 || n <= 0)
        return KW_EINVAL;
    softmax_f32<<<rows, 256, 0, (cudaStream_t)stream>>>(x, n);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

extern "C" int kw_cuda_argmax(void *stream, const float *x, int rows, int n, int32_t *out)
{
    if (rows <= 0 || n <= 0)
        return KW_EINVAL;
    argmax_f32<<<rows, 1024, 0, (cudaStream_t)stream>>>(x, n, out);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
