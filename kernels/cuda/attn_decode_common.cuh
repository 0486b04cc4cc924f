// The pieces both decode attention kernels share (attn_decode.cu: the f32 kernel and the
// merge of split rows; attn_stream.cu: the tensor-core kernel over bf16 and int8 pages):
// span lists flattened into shared memory, and the end of an item, which merges the
// warps' (max, sum, acc) and writes the output or the item's part. Each file has its own
// copy (an anonymous namespace).
#pragma once

#include <cfloat>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "attn_decode.cuh"

namespace {

constexpr int WARPS = 4;
constexpr float LOG2E = 1.4426950408889634f;

// The item's tokens, flattened from its spans into shared memory: the K row of each in
// its pool (page * 2P + slot, in rows of D elements; V is P rows further) and the pool.
// Positions are not copied here: the kernels read them from the pool's position array at
// the token's index (token_pos), so flattening makes no global reads besides the spans.
constexpr int MAX_ITEM_TOKENS = KW_ATTN_MAX_ITEM_TOKENS;
constexpr int FLAT_SPANS = 8; // spans per thread per round of flatten_spans

struct token_list {
    uint32_t row[MAX_ITEM_TOKENS]; // pools of < 2^32 rows (kw_cuda_attn.base)
    unsigned char pool[MAX_ITEM_TOKENS];
    int warp_sum[WARPS];
    int n;
};

// Index of a K row's token in its pool's position array (page * P + slot).
__device__ __forceinline__ int64_t token_pos(uint32_t row, int P, int lp)
{
    const int64_t page = lp >= 0 ? row >> (lp + 1) : row / (2 * P);
    return row - page * P;
}

// Rounds of up to FLAT_SPANS x 128 spans: a thread loads its run of consecutive spans
// (all loads in flight together), the block scans the runs' token counts (warp shuffles,
// then the warps' sums), and each thread writes its runs' tokens.
__device__ void flatten_spans(const kw_cuda_attn &a, int s0, int s1, token_list &tl)
{
    const int P = a.page_tokens, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int total = 0;
    for (int b = s0; b < s1; b += FLAT_SPANS * WARPS * 32) {
        const int left = s1 - b;
        const int per = min(FLAT_SPANS, (left + WARPS * 32 - 1) / (WARPS * 32));
        const int mine = b + (int)threadIdx.x * per;
        kw_cuda_span sp[FLAT_SPANS];
        int cnt = 0;
#pragma unroll
        for (int k = 0; k < FLAT_SPANS; k++) {
            sp[k] = kw_cuda_span{0, 0, 0, 0};
            if (k < per && mine + k < s1)
                sp[k] = a.spans[mine + k];
        }
#pragma unroll
        for (int k = 0; k < FLAT_SPANS; k++)
            cnt += sp[k].n;
        int inc = cnt; // inclusive scan over the warp, then over the warps
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, inc, o);
            if (lane >= o)
                inc += v;
        }
        if (lane == 31)
            tl.warp_sum[warp] = inc;
        __syncthreads();
        int start = total + inc - cnt, round = 0;
#pragma unroll
        for (int w = 0; w < WARPS; w++) {
            start += w < warp ? tl.warp_sum[w] : 0;
            round += tl.warp_sum[w];
        }
#pragma unroll
        for (int k = 0; k < FLAT_SPANS; k++) {
            const uint32_t r0 = (uint32_t)sp[k].page * 2 * P + sp[k].first;
            for (int c = 0; c < sp[k].n && start + c < MAX_ITEM_TOKENS; c++)
                tl.row[start + c] = r0 + c, tl.pool[start + c] = sp[k].pool;
            start += sp[k].n;
        }
        total += round;
        __syncthreads(); // warp_sum is rewritten by the next round
    }
    if (threadIdx.x == 0)
        tl.n = total < MAX_ITEM_TOKENS ? total : MAX_ITEM_TOKENS;
    __syncthreads();
}

// One output value: bf16 into out_bf16 when the caller asked for it, else f32 into out.
__device__ __forceinline__ void put_out(const kw_cuda_attn &a, size_t i, float v)
{
    if (a.out_bf16)
        static_cast<__nv_bfloat16 *>(a.out_bf16)[i] = __float2bfloat16_rn(v);
    else
        a.out[i] = v;
}

// The end of both kernels: merge the warps' (max, sum, acc) per head, mg (WARPS, G, D + 2)
// in shared memory, and write the normalized output (whole-row item) or the part.
template <int D, int G>
__device__ void merge_write(const kw_cuda_attn &a, const float *mg, int part, int32_t qrow)
{
    for (int idx = threadIdx.x; idx < G * D; idx += WARPS * 32) {
        const int j = idx / D, d = idx % D;
        float mx = -FLT_MAX;
        for (int w = 0; w < WARPS; w++)
            mx = fmaxf(mx, mg[((size_t)w * G + j) * (D + 2)]);
        float ls = 0.f, as = 0.f;
        for (int w = 0; w < WARPS; w++) {
            const float *x = mg + ((size_t)w * G + j) * (D + 2);
            const float f = x[1] > 0.f ? exp2f(x[0] - mx) : 0.f;
            ls += x[1] * f;
            as += x[2 + d] * f;
        }
        if (part < 0) {
            put_out(a, (size_t)(qrow + j) * D + d, ls > 0.f ? as / ls : 0.f);
            if (d == 0 && a.lse)
                a.lse[qrow + j] = ls > 0.f ? (mx + log2f(ls)) / LOG2E : -INFINITY;
        } else {
            float *pt = a.partial + ((size_t)part * G + j) * (D + 2);
            pt[2 + d] = as;
            if (d == 0)
                pt[0] = mx, pt[1] = ls;
        }
    }
}

} // namespace

// The tensor-core kernel over bf16 or int8 pages (attn_stream.cu): launches the work items
// of a (whose kv is KW_CUDA_KV_BF16 or KW_CUDA_KV_I8), without the merge of split rows.
int kw__attn_stream(cudaStream_t st, const kw_cuda_attn &a);
// Its concurrent blocks on the current device (kw_cuda_attn_slots_kv).
int kw__attn_stream_slots(int head_dim, bool i8);
