// GEMMs through cuBLAS. Row-major y(M,N) = x(M,K) w(N,K)^T is, column-major, the product
// y^T(N,M) = w^T^T x^T: cuBLAS gets opA = T on w (ld K), opB = N on x (ld K), ldc = N.
// One cuBLAS handle per thread (created on first use); each call sets its stream.
#include <cublas_v2.h>
#include <cuda_bf16.h>
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

extern "C" int kw_cuda_linear_bf16(void *stream, const void *x, const void *w, const float *b,
                                   float *y, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0 || !x || !w || !y)
        return KW_EINVAL;
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
