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
