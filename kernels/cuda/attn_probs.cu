// Attention probabilities of a sequence's queries over its view rows, for the hooks that
// ask for them (observation-window probabilities, per-step sums, LSE). The forward pass
// does not keep attention probabilities, so this recomputes the scores: a block per
// (query, head) computes q.k for every token of the head's row (a thread per token, the
// K row read as bf16 pairs, from the main or the temporary pool), the row's max and sum by block reductions, then writes
// exp(s - lse). Masked tokens (stored position above the query's) get 0. Per-step sums
// are taken in query tiles and added in a second kernel, in query order, so the result
// does not depend on scheduling.
#include <cfloat>
#include <cuda_bf16.h>

#include "attn_probs.cuh"
#include "common.cuh"

namespace {

constexpr int THREADS = 256;

__device__ float block_reduce(float v, bool is_max, float *sh)
{
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < THREADS / 32 ? sh[lane] : (is_max ? -INFINITY : 0.f);
        for (int o = 16; o > 0; o >>= 1) {
            float w = __shfl_xor_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, w) : v + w;
        }
        if (lane == 0)
            sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

// Block (j, h): query j of the tile (query index q0 + j), head h. probs: (nt, H, len).
__global__ void __launch_bounds__(THREADS)
    view_probs(const __nv_bfloat16 *__restrict__ base, const int32_t *__restrict__ pos,
               const __nv_bfloat16 *__restrict__ base_tmp, const int32_t *__restrict__ pos_tmp,
               int P, int hd, int H, int g, int per_q, const int32_t *__restrict__ row_off,
               const int32_t *__restrict__ slots, const float *__restrict__ q,
               const int32_t *__restrict__ qpos, int q0, int len, float scale,
               float *__restrict__ probs, float *__restrict__ lse)
{
    extern __shared__ float qs[]; // hd
    __shared__ float red[THREADS / 32];
    int j = blockIdx.x, h = blockIdx.y, qi = q0 + j;
    int r = per_q ? h : h / g;
    int b = row_off[r], n = row_off[r + 1] - b;
    const float *qv = q + ((int64_t)qi * H + h) * hd;
    for (int x = threadIdx.x; x < hd; x += THREADS)
        qs[x] = qv[x];
    __syncthreads();
    int32_t qp = qpos[qi];
    float *out = probs + ((int64_t)j * H + h) * len;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < n; c += THREADS) {
        int32_t sl = slots[b + c];
        const __nv_bfloat16 *kb = base;
        const int32_t *pb = pos;
        if (sl < 0) // the temporary pool's
            sl &= 0x7fffffff, kb = base_tmp, pb = pos_tmp;
        float s = -INFINITY;
        if (pb[sl] <= qp) {
            const __nv_bfloat162 *k = reinterpret_cast<const __nv_bfloat162 *>(
                kb + ((int64_t)(sl / P) * 2 * P + sl % P) * hd);
            float d = 0.f;
            for (int x = 0; x < hd / 2; x++) {
                float2 f = __bfloat1622float2(k[x]);
                d += qs[2 * x] * f.x + qs[2 * x + 1] * f.y;
            }
            s = d * scale;
        }
        out[c] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_reduce(mx, true, red);
    float sum = 0.f;
    if (mx != -INFINITY)
        for (int c = threadIdx.x; c < n; c += THREADS)
            sum += __expf(out[c] - mx);
    sum = block_reduce(sum, false, red);
    float l = mx == -INFINITY ? -INFINITY : mx + __logf(sum);
    for (int c = threadIdx.x; c < len; c += THREADS)
        out[c] = c < n && l != -INFINITY ? __expf(out[c] - l) : 0.f;
    if (lse && threadIdx.x == 0)
        lse[(int64_t)qi * H + h] = l;
}

// out(H, len) += sum over the tile's nt queries of probs(nt, H, len), in query order.
__global__ void sum_queries(const float *__restrict__ probs, int nt, int64_t hl,
                            float *__restrict__ out)
{
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= hl)
        return;
    float acc = out[e];
    for (int j = 0; j < nt; j++)
        acc += probs[(int64_t)j * hl + e];
    out[e] = acc;
}

} // namespace

extern "C" int kw_cuda_view_probs(void *stream, const kw_cuda_view_probs_args *a)
{
    if (!a || !a->base || !a->pos || a->page_tokens < 1 || a->head_dim < 2 ||
        a->head_dim % 2 || a->head_dim > 1024 || a->n_head < 1 || a->group < 1 ||
        a->n_head % a->group || a->n_q < 0 || a->len < 0 ||
        (a->mode != KW_CUDA_PROBS_EACH && a->mode != KW_CUDA_PROBS_SUM) ||
        (a->mode == KW_CUDA_PROBS_SUM && a->tile < 1))
        return KW_EINVAL;
    if (a->n_q == 0 || a->len == 0)
        return KW_OK;
    cudaStream_t s = (cudaStream_t)stream;
    const __nv_bfloat16 *base = static_cast<const __nv_bfloat16 *>(a->base),
                        *tbase = static_cast<const __nv_bfloat16 *>(a->base_tmp);
    size_t shm = (size_t)a->head_dim * sizeof(float);
    int64_t hl = (int64_t)a->n_head * a->len;
    if (a->mode == KW_CUDA_PROBS_EACH) {
        view_probs<<<dim3(a->n_q, a->n_head), THREADS, shm, s>>>(
            base, a->pos, tbase, a->pos_tmp, a->page_tokens, a->head_dim, a->n_head, a->group, a->per_qhead,
            a->row_off, a->slots, a->q, a->q_pos, 0, a->len, a->scale, a->out, a->lse);
        KW_CUDA_LAUNCHED();
        return KW_OK;
    }
    KW_CUDA_TRY(cudaMemsetAsync(a->out, 0, (size_t)hl * sizeof(float), s));
    for (int q0 = 0; q0 < a->n_q; q0 += a->tile) {
        int nt = a->n_q - q0 < a->tile ? a->n_q - q0 : a->tile;
        view_probs<<<dim3(nt, a->n_head), THREADS, shm, s>>>(
            base, a->pos, tbase, a->pos_tmp, a->page_tokens, a->head_dim, a->n_head, a->group, a->per_qhead,
            a->row_off, a->slots, a->q, a->q_pos, q0, a->len, a->scale, a->scratch, a->lse);
        KW_CUDA_LAUNCHED();
        sum_queries<<<(unsigned)((hl + 255) / 256), 256, 0, s>>>(a->scratch, nt, hl, a->out);
        KW_CUDA_LAUNCHED();
    }
    return KW_OK;
}
