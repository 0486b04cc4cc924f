// GEMMs through cuBLAS. Row-major y(M,N) = x(M,K) w(N,K)^T is, column-major, the product
// y^T(N,M) = w^T^T x^T: cuBLAS gets opA = T on w (ld K), opB = N on x (ld K), ldc = N.
// One cuBLAS handle per thread (created on first use); each call sets its stream.
//
// bf16 with few rows (decode: M = batch <= KW_GEMV_MAX_ROWS) goes to gemv_bf16 instead:
// the step is bound by reading the weights once, so a warp streams R weight rows with
// 16-byte loads, several in flight per lane, and applies them to all M rows of x (read
// through L1), with the bias added at the end.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cstdint>
#include <cstdio>

#include "common.cuh"
#include "gemm.cuh"

static thread_local cublasHandle_t handle;

static int blas_fail(cublasStatus_t s, const char *what, int line)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s: cuBLAS status %d", what, (int)s);
    return kw__cuda_fail(cudaErrorUnknown, msg, __FILE__, line);
}

static int get_handle(cudaStream_t st, cublasHandle_t *out)
{
    if (!handle) {
        cublasStatus_t s = cublasCreate(&handle);
        if (s != CUBLAS_STATUS_SUCCESS) {
            handle = nullptr;
            return blas_fail(s, "cublasCreate", __LINE__);
        }
    }
    cublasSetStream(handle, st);
    *out = handle;
    return KW_OK;
}

__global__ void add_bias_f32(float *__restrict__ y, const float *__restrict__ b, int64_t M, int N)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < M * N;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % N];
}

__global__ void to_bf16(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

static int blocks_for(int64_t n)
{
    int64_t b = (n + 255) / 256;
    return (int)(b > 65536 ? 65536 : b < 1 ? 1 : b);
}

static int bias(cudaStream_t st, float *y, const float *b, int M, int N)
{
    if (!b)
        return KW_OK;
    add_bias_f32<<<blocks_for((int64_t)M * N), 256, 0, st>>>(y, b, M, N);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

extern "C" int kw_cuda_linear(void *stream, const float *x, const float *w, const float *b,
                              float *y, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0 || !x || !w || !y)
        return KW_EINVAL;
    cudaStream_t st = (cudaStream_t)stream;
    cublasHandle_t h;
    int rc = get_handle(st, &h);
    if (rc)
        return rc;
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH); // plain f32: no TF32
    const float one = 1.f, zero = 0.f;
    cublasStatus_t s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, K, x, K, &zero,
                                   y, N);
    if (s != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasSgemm", __LINE__);
    return bias(st, y, b, M, N);
}

namespace {

constexpr int GEMV_WARPS = 4;

__device__ __forceinline__ void bf16x8(const uint4 &u, float *f)
{
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float2 t = __bfloat1622float2(h[e]);
        f[2 * e] = t.x, f[2 * e + 1] = t.y;
    }
}

// A warp computes R output columns (weight rows n0 .. n0 + R - 1) for all M rows of x.
template <int M, int R, int U>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_bf16(const __nv_bfloat16 *__restrict__ x, const __nv_bfloat16 *__restrict__ w,
          const float *__restrict__ b, float *__restrict__ y, int N, int K)
{
    const int lane = threadIdx.x % 32;
    const int n0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * R;
    if (n0 >= N)
        return;
    const int nch = K / 8; // 16-byte chunks per row
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        wr[r] = reinterpret_cast<const uint4 *>(w + (size_t)min(n0 + r, N - 1) * K);
    const uint4 *xr = reinterpret_cast<const uint4 *>(x);
    float acc[M][R];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[m][r] = 0.f;
    for (int c0 = lane; c0 < nch; c0 += 32 * U) {
        uint4 wv[U][R];
#pragma unroll
        for (int u = 0; u < U; u++) // all weight loads first: bytes in flight
#pragma unroll
            for (int r = 0; r < R; r++)
                if (c0 + 32 * u < nch)
                    wv[u][r] = __ldcs(wr[r] + c0 + 32 * u); // streamed: read once
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + 32 * u;
            if (c >= nch)
                break;
            float wf[R][8];
#pragma unroll
            for (int r = 0; r < R; r++)
                bf16x8(wv[u][r], wf[r]);
#pragma unroll
            for (int m = 0; m < M; m++) {
                float xf[8];
                bf16x8(xr[(size_t)m * nch + c], xf);
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[m][r] += wf[r][e] * xf[e];
            }
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = acc[m][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0 && n0 + r < N)
                y[(size_t)m * N + n0 + r] = v + (b ? b[n0 + r] : 0.f);
        }
}

template <int M> int gemv_launch(cudaStream_t st, const void *x, const void *w, const float *b,
                                 float *y, int N, int K)
{
    constexpr int R = M <= 2 ? 2 : 4, U = M <= 2 ? 8 : 4; // U: 16-byte loads in flight per row
    const int blocks = (N + GEMV_WARPS * R - 1) / (GEMV_WARPS * R);
    gemv_bf16<M, R, U><<<blocks, GEMV_WARPS * 32, 0, st>>>(
        (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)w, b, y, N, K);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

int gemv_max_rows = KW_GEMV_MAX_ROWS;

} // namespace

extern "C" void kw_cuda_set_gemv_rows(int max_rows)
{
    gemv_max_rows = max_rows < 0 ? 0 : max_rows > 8 ? 8 : max_rows;
}

extern "C" int kw_cuda_gemv_bf16(void *stream, const void *x, const void *w, const float *b,
                                 float *y, int M, int N, int K)
{
    if (M <= 0 || M > 8 || N <= 0 || K <= 0 || K % 8 || !x || !w || !y
        || ((uintptr_t)x | (uintptr_t)w) % 16)
        return KW_EINVAL;
    cudaStream_t st = (cudaStream_t)stream;
    switch (M) {
    case 1: return gemv_launch<1>(st, x, w, b, y, N, K);
    case 2: return gemv_launch<2>(st, x, w, b, y, N, K);
    case 3: return gemv_launch<3>(st, x, w, b, y, N, K);
    case 4: return gemv_launch<4>(st, x, w, b, y, N, K);
    case 5: return gemv_launch<5>(st, x, w, b, y, N, K);
    case 6: return gemv_launch<6>(st, x, w, b, y, N, K);
    case 7: return gemv_launch<7>(st, x, w, b, y, N, K);
    default: return gemv_launch<8>(st, x, w, b, y, N, K);
    }
}

extern "C" int kw_cuda_linear_bf16(void *stream, const void *x, const void *w, const float *b,
                                   float *y, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0 || !x || !w || !y)
        return KW_EINVAL;
    if (M <= gemv_max_rows && K % 8 == 0 && ((uintptr_t)x | (uintptr_t)w) % 16 == 0)
        return kw_cuda_gemv_bf16(stream, x, w, b, y, M, N, K);
    cudaStream_t st = (cudaStream_t)stream;
    cublasHandle_t h;
    int rc = get_handle(st, &h);
    if (rc)
        return rc;
    const float one = 1.f, zero = 0.f;
    cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF,
                                    K, x, CUDA_R_16BF, K, &zero, y, CUDA_R_32F, N,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasGemmEx(bf16)", __LINE__);
    return bias(st, y, b, M, N);
}

extern "C" int kw_cuda_to_bf16(void *stream, const float *x, void *y, int64_t n)
{
    if (n <= 0 || !x || !y)
        return KW_EINVAL;
    to_bf16<<<blocks_for(n), 256, 0, (cudaStream_t)stream>>>(x, (__nv_bfloat16 *)y, n);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
