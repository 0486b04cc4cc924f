// Decode attention over a view (one query token per row): the entry points, the merge of
// split rows, and the kernel over f32 pages.
//
// bf16 and int8 pages (the engine's) go to the tensor-core kernel in attn_stream.cu.
//
// f32 pages (tests and references): attn_decode_kernel, scalar f32 math with K/V read
// straight from global memory: a lane per token for the scores, lanes over channels for
// the values.
//
// Both: scores use exp2 with the scale folded into log2(e); per-warp (max, sum, acc) are
// merged in shared memory; a whole-row item writes the normalized output, a part writes
// (max, sum, unnormalized acc) for the combine kernel. Spans hold at most 255 tokens.
#include <cfloat>
#include <cstdint>
#include <cuda_bf16.h>

#include "attn_decode_common.cuh"
#include "common.cuh"

namespace {

template <typename T, int E> struct loader;
template <> struct loader<float, 4> {
    __device__ static void load(const float *p, float *x)
    {
        float4 v = *reinterpret_cast<const float4 *>(p);
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    }
};
template <> struct loader<float, 2> {
    __device__ static void load(const float *p, float *x)
    {
        float2 v = *reinterpret_cast<const float2 *>(p);
        x[0] = v.x, x[1] = v.y;
    }
};

template <typename T, int D>
__device__ float dot_row(const T *k, const float *q);
template <> __device__ float dot_row<float, 128>(const float *k, const float *q)
{
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 128; i += 4) {
        float4 v = *reinterpret_cast<const float4 *>(k + i);
        s += v.x * q[i] + v.y * q[i + 1] + v.z * q[i + 2] + v.w * q[i + 3];
    }
    return s;
}
template <> __device__ float dot_row<float, 64>(const float *k, const float *q)
{
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 64; i += 4) {
        float4 v = *reinterpret_cast<const float4 *>(k + i);
        s += v.x * q[i] + v.y * q[i + 1] + v.z * q[i + 2] + v.w * q[i + 3];
    }
    return s;
}

// Scores: a lane per token (its whole K row against every query head, q from shared
// memory). Values: lanes split the channels and walk the warp's 32 tokens, so V rows are
// read coalesced.
template <typename T, int D, int G>
__global__ void __launch_bounds__(WARPS * 32)
attn_decode_kernel(const kw_cuda_attn a)
{
    constexpr int E = D / 32;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    kw_grid_wait();
    kw_grid_dependents();
    if (a.live_items && (int)blockIdx.x >= *a.live_items)
        return; // a fixed grid (CUDA graph) larger than this call's plan
    const int32_t *it = a.items + 4 * blockIdx.x;
    const int row = it[0], s0 = it[1], s1 = it[2], part = it[3];
    const int P = a.page_tokens;
    const int32_t qrow = a.q_row[row], qpos = a.q_pos[row];
    const float sc = a.scale * LOG2E;

    __shared__ float qs[G][D];
    __shared__ token_list tl;
    for (int i = threadIdx.x; i < G * D; i += WARPS * 32)
        qs[i / D][i % D] = a.q[(size_t)qrow * D + i] * sc;
    flatten_spans(a, s0, s1, tl);

    float acc[G][E], m[G], l[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
#pragma unroll
        for (int e = 0; e < E; e++)
            acc[j][e] = 0.f;
        m[j] = -FLT_MAX;
        l[j] = 0.f;
    }
    const T *base[2] = {(const T *)a.base[0], (const T *)a.base[1]};
    for (int t0 = warp * 32; t0 < tl.n; t0 += WARPS * 32) {
        const int t = t0 + lane;
        const bool live =
            t < tl.n && a.pos[tl.pool[t]][token_pos(tl.row[t], P, -1)] <= qpos;
        float s[G];
        if (live) {
            const T *k = base[tl.pool[t]] + (size_t)tl.row[t] * D;
#pragma unroll
            for (int j = 0; j < G; j++)
                s[j] = dot_row<T, D>(k, qs[j]);
        }
        float p[G];
#pragma unroll
        for (int j = 0; j < G; j++) {
            float mx = live ? s[j] : -FLT_MAX;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mn = fmaxf(m[j], mx), corr = exp2f(m[j] - mn);
            p[j] = live ? exp2f(s[j] - mn) : 0.f;
            float ps = p[j];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                ps += __shfl_xor_sync(0xffffffffu, ps, o);
            l[j] = l[j] * corr + ps;
#pragma unroll
            for (int e = 0; e < E; e++)
                acc[j][e] *= corr;
            m[j] = mn;
        }
        const int nt = tl.n - t0 < 32 ? tl.n - t0 : 32;
#pragma unroll 4
        for (int u = 0; u < nt; u++) {
            float v[E];
            loader<T, E>::load(base[tl.pool[t0 + u]] + ((size_t)tl.row[t0 + u] + P) * D
                                   + lane * E,
                               v);
#pragma unroll
            for (int j = 0; j < G; j++) {
                const float pu = __shfl_sync(0xffffffffu, p[j], u);
#pragma unroll
                for (int e = 0; e < E; e++)
                    acc[j][e] += pu * v[e];
            }
        }
    }

    // merge the warps: (m, l, acc) per head through shared memory
    __shared__ float sm[WARPS][G][D + 2];
#pragma unroll
    for (int j = 0; j < G; j++) {
#pragma unroll
        for (int e = 0; e < E; e++)
            sm[warp][j][2 + lane * E + e] = acc[j][e];
        if (lane == 0)
            sm[warp][j][0] = m[j], sm[warp][j][1] = l[j];
    }
    __syncthreads();
    merge_write<D, G>(a, &sm[0][0][0], part, qrow);
}

// The merge of a split row's parts: a block per (row, query head), CQ groups of D threads,
// group q taking parts q, q + CQ, ... with 8 loads in flight per thread, so a row of about
// 32 parts (a batch-1 decode at 32k) costs one round trip to memory instead of the four
// of a single group; the groups' (max, sum, acc) then meet in shared memory.
constexpr int CQ = 4;

template <int D, int G>
__global__ void __launch_bounds__(CQ * D) attn_combine_kernel(const kw_cuda_attn a)
{
    __shared__ float red[CQ][D + 2];
    const int row = blockIdx.x, j = blockIdx.y, d = threadIdx.x % D, q = threadIdx.x / D;
    kw_grid_wait();
    kw_grid_dependents();
    const int p0 = a.row_part[2 * row], np = a.row_part[2 * row + 1];
    if (np == 0)
        return;
    const int32_t qrow = a.q_row[row];
    const size_t stride = (size_t)G * (D + 2);
    const float *base = a.partial + ((size_t)p0 * G + j) * (D + 2);
    float mx = -FLT_MAX, ls = 0.f, as = 0.f;
    auto add = [&](float m, float l, float v) {
        if (l > 0.f) {
            const float nm = fmaxf(mx, m), so = exp2f(mx - nm), sn = exp2f(m - nm);
            ls = ls * so + l * sn, as = as * so + v * sn, mx = nm;
        }
    };
    int p = q;
    for (; p + 7 * CQ < np; p += 8 * CQ) {
        float m[8], l[8], v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const float *pt = base + (size_t)(p + u * CQ) * stride;
            m[u] = pt[0], l[u] = pt[1], v[u] = pt[2 + d];
        }
#pragma unroll
        for (int u = 0; u < 8; u++)
            add(m[u], l[u], v[u]);
    }
    for (; p < np; p += CQ) {
        const float *pt = base + (size_t)p * stride;
        add(pt[0], pt[1], pt[2 + d]);
    }
    if (q > 0) {
        if (d == 0)
            red[q][0] = mx, red[q][1] = ls;
        red[q][2 + d] = as;
    }
    __syncthreads();
    if (q > 0)
        return;
#pragma unroll
    for (int k = 1; k < CQ; k++)
        add(red[k][0], red[k][1], red[k][2 + d]);
    put_out(a, (size_t)(qrow + j) * D + d, ls > 0.f ? as / ls : 0.f);
    if (d == 0 && a.lse)
        a.lse[qrow + j] = ls > 0.f ? (mx + log2f(ls)) / LOG2E : -INFINITY;
}

template <typename T, int D, int G>
int launch(cudaStream_t st, const kw_cuda_attn &a)
{
    if (a.n_items > 0) {
        if constexpr (sizeof(T) <= 2) { // bf16, or int8 (made bf16 in shared memory)
            int rc = kw__attn_stream(st, a);
            if (rc < 0)
                return rc;
        } else {
            KW_CUDA_TRY(kw_launch(attn_decode_kernel<T, D, G>, a.n_items, WARPS * 32, 0, st, a));
        }
    }
    KW_CUDA_LAUNCHED();
    if (a.n_parts > 0)
        KW_CUDA_TRY(kw_launch(attn_combine_kernel<D, G>, dim3(a.n_rows, G), CQ * D, 0, st, a));
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

template <typename T, int D>
int launch_g(cudaStream_t st, const kw_cuda_attn &a)
{
    switch (a.g_per_row) {
    case 1: return launch<T, D, 1>(st, a);
    case 2: return launch<T, D, 2>(st, a);
    case 4: return launch<T, D, 4>(st, a);
    case 8: return launch<T, D, 8>(st, a);
    default: return KW_EINVAL;
    }
}

} // namespace

extern "C" int kw_cuda_attn_slots(int head_dim)
{
    return kw__attn_stream_slots(head_dim, false);
}

extern "C" int kw_cuda_attn_slots_kv(int head_dim, kw_cuda_kvtype kv)
{
    if (kv == KW_CUDA_KV_BF16)
        return kw_cuda_attn_slots(head_dim);
    if (kv != KW_CUDA_KV_I8)
        return KW_EINVAL;
    return kw__attn_stream_slots(head_dim, true);
}

extern "C" int kw_cuda_attn_decode(void *stream, const kw_cuda_attn *a)
{
    if (!a || a->n_rows < 0 || a->page_tokens <= 0 || (a->n_parts > 0 && !a->partial)
        || (!a->out && !a->out_bf16) || (a->pages && (a->kv == KW_CUDA_KV_F32 || !a->row_ptr)))
        return KW_EINVAL;
    // int8 pages: rows of whole 16-byte lines (a page is P (2 head_dim + 8) bytes: P even)
    if (a->kv == KW_CUDA_KV_I8 && (a->page_tokens % 2 || (uintptr_t)a->base[0] % 16 ||
                                   (uintptr_t)a->base[1] % 16))
        return KW_EINVAL;
    cudaStream_t st = (cudaStream_t)stream;
    if (a->kv == KW_CUDA_KV_F32) {
        if (a->head_dim == 128) return launch_g<float, 128>(st, *a);
        if (a->head_dim == 64) return launch_g<float, 64>(st, *a);
    } else if (a->kv == KW_CUDA_KV_BF16) {
        if (a->head_dim == 128) return launch_g<__nv_bfloat16, 128>(st, *a);
        if (a->head_dim == 64) return launch_g<__nv_bfloat16, 64>(st, *a);
    } else if (a->kv == KW_CUDA_KV_I8) {
        if (a->head_dim == 128) return launch_g<int8_t, 128>(st, *a);
        if (a->head_dim == 64) return launch_g<int8_t, 64>(st, *a);
    }
    return KW_EINVAL;
}
