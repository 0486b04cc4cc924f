// Page append: scatters the K and V rows of a step into bf16 pages at slots the host's
// pool chose (kw_kvseq_append_slots), and writes the positions beside them.
#include <cuda_bf16.h>

#include "common.cuh"
#include "kvpage.cuh"

// One block per (token, kv head); slot < 0: skipped (the host could not place it).
__global__ void kv_append_bf16(__nv_bfloat16 *__restrict__ base, int32_t *__restrict__ pos_base,
                               int P, int hd, int n_kv, const float *__restrict__ k,
                               const float *__restrict__ v, const int32_t *__restrict__ pos,
                               const int32_t *__restrict__ slots)
{
    int t = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
    int32_t s = slots[blockIdx.x];
    if (s < 0)
        return;
    int64_t page = s / P, slot = s % P;
    __nv_bfloat16 *pg = base + page * 2 * P * hd;
    const float *kr = k + ((int64_t)t * n_kv + h) * hd, *vr = v + ((int64_t)t * n_kv + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        pg[slot * hd + i] = __float2bfloat16_rn(kr[i]);
        pg[(P + slot) * hd + i] = __float2bfloat16_rn(vr[i]);
    }
    if (threadIdx.x == 0)
        pos_base[s] = pos[t];
}

extern "C" int kw_cuda_kv_append(void *stream, void *base, int32_t *pos_base, int page_tokens,
                                 int head_dim, int n_tok, int n_kv, const float *k,
                                 const float *v, const int32_t *pos, const int32_t *slots)
{
    if (n_tok <= 0 || n_kv <= 0 || page_tokens <= 0 || head_dim <= 0 || !base || !pos_base)
        return KW_EINVAL;
    kv_append_bf16<<<n_tok * n_kv, head_dim < 128 ? head_dim : 128, 0, (cudaStream_t)stream>>>(
        (__nv_bfloat16 *)base, pos_base, page_tokens, head_dim, n_kv, k, v, pos, slots);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// RoPE and append in one launch (a decode step's layer had three): blocks (t, h) with
// h < n_head rotate query head h of token t in place; the others rotate K head
// h - n_head in place (as kw_cuda_rope does) and write it and the V row to the token's
// slot. A thread owns one rotated pair; the arithmetic is kw_cuda_rope's.
__global__ void rope_append_bf16(float *__restrict__ q, float *__restrict__ k,
                                 const float *__restrict__ v, const int32_t *__restrict__ pos,
                                 const float *__restrict__ inv_freq, int n_head, int n_kv,
                                 int hd, int interleaved, __nv_bfloat16 *__restrict__ base,
                                 int32_t *__restrict__ pos_base, int P,
                                 const int32_t *__restrict__ slots)
{
    const int t = blockIdx.x, y = blockIdx.y, half = hd / 2;
    const bool is_k = y >= n_head;
    const int h = is_k ? y - n_head : y;
    kw_grid_wait();
    kw_grid_dependents();
    float *x = is_k ? k + ((size_t)t * n_kv + h) * hd : q + ((size_t)t * n_head + h) * hd;
    const float p = (float)pos[t];
    const int32_t s = is_k ? slots[(size_t)t * n_kv + h] : -1;
    __nv_bfloat16 *kp = nullptr, *vp = nullptr;
    const float *vr = nullptr;
    if (s >= 0) {
        vr = v + ((size_t)t * n_kv + h) * hd;
        __nv_bfloat16 *pg = base + (int64_t)(s / P) * 2 * P * hd;
        kp = pg + (int64_t)(s % P) * hd, vp = pg + (int64_t)(P + s % P) * hd;
        if (threadIdx.x == 0)
            pos_base[s] = pos[t];
    }
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, c;
        sincosf(p * inv_freq[i], &sn, &c);
        const int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
        const float a = x[i0], b = x[i1];
        const float r0 = a * c - b * sn, r1 = a * sn + b * c;
        x[i0] = r0, x[i1] = r1;
        if (kp) {
            kp[i0] = __float2bfloat16_rn(r0), kp[i1] = __float2bfloat16_rn(r1);
            vp[i0] = __float2bfloat16_rn(vr[i0]), vp[i1] = __float2bfloat16_rn(vr[i1]);
        }
    }
}

extern "C" int kw_cuda_rope_append(void *stream, float *q, float *k, const float *v,
                                   const int32_t *pos, int n_tok, int n_head, int n_kv,
                                   int head_dim, const float *inv_freq, int interleaved,
                                   void *base, int32_t *pos_base, int page_tokens,
                                   const int32_t *slots)
{
    if (n_tok <= 0 || n_head <= 0 || n_kv <= 0 || head_dim <= 0 || head_dim % 2 ||
        n_head + n_kv > 65535 || page_tokens <= 0 || !q || !k || !v || !pos || !inv_freq ||
        !base || !pos_base || !slots)
        return KW_EINVAL;
    const int threads = head_dim / 2 < 128 ? ((head_dim / 2 + 31) / 32) * 32 : 128;
    KW_CUDA_TRY(kw_launch(rope_append_bf16, dim3(n_tok, n_head + n_kv), threads, 0,
                          (cudaStream_t)stream, q, k, v, pos, inv_freq, n_head, n_kv, head_dim,
                          interleaved, (__nv_bfloat16 *)base, pos_base, page_tokens, slots));
    return KW_OK;
}
