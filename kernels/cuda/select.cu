// Selection kernels for eviction methods (kernels.h, "selection") on device pointers:
// observation-window scores, 1-D pooling, and exact top-k by radix select with ties to
// the lower index and indices written in increasing order.
#include <cfloat>
#include <cstdint>

#include "common.cuh"
#include "select.cuh"

// ---- window scores ----

// Thread per (KV row r, key j): reads of one (query, head) row are coalesced over j.
__global__ void window_scores_f32(const float *__restrict__ probs, int n_q, int n_head, int len,
                                  int group, int n_key, float *__restrict__ out)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y;
    if (j >= n_key)
        return;
    size_t qstride = (size_t)n_head * len;
    const float *p = probs + (size_t)r * group * len + j;
    float s = 0.f;
#pragma unroll 4
    for (int q = 0; q < n_q; q++) {
        const float *pq = p + q * qstride;
        for (int g = 0; g < group; g++)
            s += __ldg(pq + (size_t)g * len);
    }
    out[(size_t)r * n_key + j] = s * (1.f / (float)group);
}

extern "C" int kw_cuda_window_scores(void *stream, const float *probs, int n_q, int n_head,
                                     int len, int group, int n_key, float *out)
{
    if (n_q < 0 || n_head < 1 || group < 1 || n_head % group || n_key < 0 || n_key > len)
        return KW_EINVAL;
    int rows = n_head / group;
    if (rows > 65535)
        return KW_EINVAL;
    if (n_key == 0)
        return KW_OK;
    dim3 grid((n_key + 255) / 256, rows);
    window_scores_f32<<<grid, 256, 0, (cudaStream_t)stream>>>(probs, n_q, n_head, len, group,
                                                              n_key, out);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// ---- 1-D pooling ----

constexpr int POOL_TILE = 1024;
constexpr int POOL_MAX_KERNEL = 8192; // tile + halo stays under 48 KB of shared memory

// One block per (row, tile of POOL_TILE outputs): the tile and its halo are staged in
// shared memory with the padding (0 for the average, -inf for the max) filled in.
template <bool MAX>
__global__ void pool1d_f32(const float *__restrict__ x, int n, int n_tiles, int kernel,
                           float *__restrict__ out)
{
    extern __shared__ float tile[];
    int row = blockIdx.x / n_tiles, t0 = (blockIdx.x % n_tiles) * POOL_TILE;
    int lo = kernel / 2, span = POOL_TILE + kernel - 1;
    const float *v = x + (size_t)row * n;
    float pad = MAX ? -INFINITY : 0.f;
    for (int t = threadIdx.x; t < span; t += blockDim.x) {
        int j = t0 - lo + t;
        tile[t] = j >= 0 && j < n ? v[j] : pad;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < POOL_TILE && t0 + t < n; t += blockDim.x) {
        float a = pad;
        for (int u = 0; u < kernel; u++)
            a = MAX ? fmaxf(a, tile[t + u]) : a + tile[t + u];
        out[(size_t)row * n + t0 + t] = MAX ? a : a / (float)kernel;
    }
}

extern "C" int kw_cuda_pool1d(void *stream, const float *x, int rows, int n, int kernel,
                              int max_mode, float *out)
{
    if (rows < 0 || n < 0 || kernel < 1 || kernel > POOL_MAX_KERNEL || x == out)
        return KW_EINVAL;
    if (rows == 0 || n == 0)
        return KW_OK;
    int n_tiles = (n + POOL_TILE - 1) / POOL_TILE;
    if ((int64_t)rows * n_tiles > INT32_MAX)
        return KW_EINVAL;
    size_t sh = (size_t)(POOL_TILE + kernel - 1) * sizeof(float);
    cudaStream_t s = (cudaStream_t)stream;
    if (max_mode)
        pool1d_f32<true><<<rows * n_tiles, 256, sh, s>>>(x, n, n_tiles, kernel, out);
    else
        pool1d_f32<false><<<rows * n_tiles, 256, sh, s>>>(x, n, n_tiles, kernel, out);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// ---- top-k ----

constexpr int TOPK_THREADS = 512;
constexpr unsigned FULL = 0xffffffffu;

// Unsigned keys in the order of the floats: a larger float has a larger key, and -0 has
// the key of +0 (they compare equal, so the lower index must win between them too).
__device__ __forceinline__ uint32_t order_key(float f)
{
    uint32_t u = __float_as_uint(f);
    if (u == 0x80000000u)
        u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One block per row. Four passes of 8-bit radix select find T, the key of the k-th
// largest value, and need, how many values equal to T are kept (the lowest-index ones).
// Then each warp counts its contiguous span's values above T and equal to T, the block
// scans the counts, and each warp writes its selected indices in index order: the output
// comes out sorted without a sort. A NaN anywhere in the row gives k indices of -1.
__global__ void __launch_bounds__(TOPK_THREADS, 2)
    topk_radix_f32(const float *__restrict__ x, int n, int k, int32_t *__restrict__ idx)
{
    __shared__ uint32_t hist[256];
    __shared__ uint32_t s_prefix, s_need;
    __shared__ int s_nan;
    __shared__ uint32_t w_gt[TOPK_THREADS / 32], w_eq[TOPK_THREADS / 32];
    const float *v = x + (size_t)blockIdx.x * n;
    int32_t *o = idx + (size_t)blockIdx.x * k;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0)
        s_nan = 0;
    uint32_t prefix = 0, mask = 0, need = (uint32_t)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += blockDim.x)
            hist[b] = 0;
        __syncthreads();
        for (int base = 0; base < n; base += blockDim.x) {
            int i = base + tid;
            bool cand = false;
            uint32_t d = 0;
            if (i < n) {
                float f = v[i];
                if (shift == 24 && f != f)
                    s_nan = 1;
                uint32_t key = order_key(f);
                cand = (key & mask) == prefix;
                d = (key >> shift) & 255u;
            }
            // lanes with the same digit add once: the first pass sees few distinct digits
            unsigned peers = __match_any_sync(FULL, cand ? d : 256u);
            if (cand && lane == __ffs(peers) - 1)
                atomicAdd(&hist[d], (uint32_t)__popc(peers));
        }
        __syncthreads();
        if (warp == 0) {
            // lane l holds bins 255 - 8l down to 248 - 8l: lane 0 the largest digits
            uint32_t c[8], tot = 0;
#pragma unroll
            for (int b = 0; b < 8; b++) {
                c[b] = hist[255 - (lane * 8 + b)];
                tot += c[b];
            }
            uint32_t incl = tot;
            for (int off = 1; off < 32; off <<= 1) {
                uint32_t y = __shfl_up_sync(FULL, incl, off);
                if (lane >= off)
                    incl += y;
            }
            uint32_t cum = incl - tot;
            if (cum < need && need <= incl) {
                for (int b = 0; b < 8; b++) {
                    if (cum + c[b] >= need) {
                        s_prefix = prefix | ((uint32_t)(255 - (lane * 8 + b)) << shift);
                        s_need = need - cum;
                        break;
                    }
                    cum += c[b];
                }
            }
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
        if (s_nan) {
            for (int i = tid; i < k; i += blockDim.x)
                o[i] = -1;
            return;
        }
    }
    const uint32_t T = prefix;
    int nw = blockDim.x / 32;
    int span = ((n + nw - 1) / nw + 31) & ~31;
    int start = warp * span, end = min(start + span, n);
    uint32_t gt = 0, eq = 0;
    for (int b = start; b < end; b += 32) {
        int i = b + lane;
        uint32_t key = i < end ? order_key(v[i]) : 0u;
        gt += __popc(__ballot_sync(FULL, i < end && key > T));
        eq += __popc(__ballot_sync(FULL, i < end && key == T));
    }
    if (lane == 0) {
        w_gt[warp] = gt;
        w_eq[warp] = eq;
    }
    __syncthreads();
    uint32_t gt_before = 0, eq_before = 0;
    for (int w = 0; w < warp; w++) {
        gt_before += w_gt[w];
        eq_before += w_eq[w];
    }
    uint32_t out_at = gt_before + min(eq_before, need);
    unsigned lt = (1u << lane) - 1;
    for (int b = start; b < end; b += 32) {
        int i = b + lane;
        uint32_t key = i < end ? order_key(v[i]) : 0u;
        bool is_gt = i < end && key > T, is_eq = i < end && key == T;
        unsigned eqm = __ballot_sync(FULL, is_eq);
        bool sel = is_gt || (is_eq && eq_before + __popc(eqm & lt) < need);
        unsigned selm = __ballot_sync(FULL, sel);
        if (sel)
            o[out_at + __popc(selm & lt)] = i;
        out_at += __popc(selm);
        eq_before += __popc(eqm);
    }
}

extern "C" int kw_cuda_topk(void *stream, const float *x, int rows, int n, int k, int32_t *idx)
{
    if (rows < 0 || n < 0 || k < 0 || k > n)
        return KW_EINVAL;
    if (rows == 0 || k == 0)
        return KW_OK;
    topk_radix_f32<<<rows, TOPK_THREADS, 0, (cudaStream_t)stream>>>(x, n, k, idx);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
