// RoPE: one thread per rotated pair; blocks over (token, head).
#include "common.cuh"
#include "rope.cuh"

__global__ void rope_f32(float *__restrict__ x, const int32_t *__restrict__ pos,
                         const float *__restrict__ inv_freq, int n_heads, int head_dim,
                         int interleaved)
{
    int half = head_dim / 2;
    int t = blockIdx.x, h = blockIdx.y;
    float *v = x + ((size_t)t * n_heads + h) * head_dim;
    float p = (float)pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf(p * inv_freq[i], &s, &c);
        int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
        float a = v[i0], b = v[i1];
        v[i0] = a * c - b * s;
        v[i1] = a * s + b * c;
    }
}

extern "C" int kw_cuda_rope(void *stream, float *x, const int32_t *pos, int n_tok, int n_heads,
                            int head_dim, const float *inv_freq, int interleaved)
{
    if (n_tok <= 0 || n_heads <= 0 || head_dim <= 0 || head_dim % 2 || n_heads > 65535)
        return KW_EINVAL;
    int threads = head_dim / 2 < 128 ? ((head_dim / 2 + 31) / 32) * 32 : 128;
    rope_f32<<<dim3(n_tok, n_heads), threads, 0, (cudaStream_t)stream>>>(x, pos, inv_freq,
                                                                         n_heads, head_dim,
                                                                         interleaved);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
