// Page kernels on device pointers: per-page per-channel bounds of K and the Quest upper
// bound of q.k per page (kernels.h, "page metadata"), and page compaction, the data
// movement of kw_kvseq_keep for pools whose pages live on the device.
#include <cstdint>

#include "common.cuh"
#include "pages.cuh"

// ---- page bounds ----

// Thread per (page, channel): the page's rows are read coalesced across channels. The
// comparisons are the CPU's, so the result is bit-identical (a later -0/+0 never
// replaces an earlier one).
__global__ void page_bounds_f32(const float *__restrict__ k, int n_tok, int hd, int page,
                                int64_t total, float *__restrict__ kmin,
                                float *__restrict__ kmax)
{
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total)
        return;
    int64_t p = e / hd;
    int c = (int)(e % hd);
    int64_t t0 = p * page, t1 = min(t0 + page, (int64_t)n_tok);
    const float *r = k + t0 * hd + c;
    float mn = __ldg(r), mx = mn;
#pragma unroll 4
    for (int64_t t = 1; t < t1 - t0; t++) {
        float x = __ldg(r + t * hd);
        mn = x < mn ? x : mn;
        mx = x > mx ? x : mx;
    }
    kmin[e] = mn;
    kmax[e] = mx;
}

extern "C" int kw_cuda_page_bounds(void *stream, const float *k, int n_tok, int head_dim,
                                   int page, float *kmin, float *kmax)
{
    if (n_tok < 0 || head_dim < 1 || page < 1)
        return KW_EINVAL;
    int64_t n_pages = (n_tok + (int64_t)page - 1) / page, total = n_pages * head_dim;
    if (total == 0)
        return KW_OK;
    int64_t blocks = (total + 255) / 256;
    if (blocks > INT32_MAX)
        return KW_EINVAL;
    page_bounds_f32<<<(unsigned)blocks, 256, 0, (cudaStream_t)stream>>>(k, n_tok, head_dim, page,
                                                                       total, kmin, kmax);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// ---- page scores ----

constexpr int SCORE_WARPS = 8;

// Warp per page: each lane holds channels lane, lane + 32, ... of kmin and kmax in
// registers (head_dim <= 32 * SCORE_MAX_PER_LANE) and sums its part for every query row;
// a shuffle tree finishes each row's sum.
constexpr int SCORE_MAX_PER_LANE = 8;

__global__ void page_scores_f32(const float *__restrict__ q, int n_q, int hd,
                                const float *__restrict__ kmin, const float *__restrict__ kmax,
                                int n_pages, float *__restrict__ scores)
{
    int lane = threadIdx.x & 31;
    int64_t p = (int64_t)blockIdx.x * SCORE_WARPS + (threadIdx.x >> 5);
    if (p >= n_pages)
        return;
    float mn[SCORE_MAX_PER_LANE], mx[SCORE_MAX_PER_LANE];
#pragma unroll
    for (int m = 0; m < SCORE_MAX_PER_LANE; m++) {
        int c = lane + 32 * m;
        mn[m] = c < hd ? __ldg(kmin + p * hd + c) : 0.f;
        mx[m] = c < hd ? __ldg(kmax + p * hd + c) : 0.f;
    }
    for (int h = 0; h < n_q; h++) {
        const float *qh = q + (int64_t)h * hd;
        float s = 0.f;
#pragma unroll
        for (int m = 0; m < SCORE_MAX_PER_LANE; m++) {
            int c = lane + 32 * m;
            if (c < hd) {
                float qi = __ldg(qh + c);
                s += fmaxf(qi * mn[m], qi * mx[m]);
            }
        }
        for (int off = 16; off > 0; off >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0)
            scores[(int64_t)h * n_pages + p] = s;
    }
}

extern "C" int kw_cuda_page_scores(void *stream, const float *q, int n_q, int head_dim,
                                   const float *kmin, const float *kmax, int n_pages,
                                   float *scores)
{
    if (n_q < 0 || head_dim < 1 || head_dim > 32 * SCORE_MAX_PER_LANE || n_pages < 0)
        return KW_EINVAL;
    if (n_q == 0 || n_pages == 0)
        return KW_OK;
    int blocks = (n_pages + SCORE_WARPS - 1) / SCORE_WARPS;
    page_scores_f32<<<blocks, 32 * SCORE_WARPS, 0, (cudaStream_t)stream>>>(
        q, n_q, head_dim, kmin, kmax, n_pages, scores);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// ---- page compaction ----

constexpr int COMPACT_THREADS = 256;
constexpr int COMPACT_UNITS = 8; // units each thread holds between the load and the store

// One block per table, in chunks of kept tokens. A chunk loads every unit (16, 4 or 1
// bytes) of its tokens' K and V rows, scales and positions into registers, waits at a
// barrier, then stores them packed. Packing in place is safe chunk by chunk: kept token
// i comes from stored token keep[i] >= i, so a chunk's stores (slots below the chunk's
// end) never touch what a later chunk loads, and the barrier orders the chunk's own
// loads before its stores.
template <typename U>
__global__ void __launch_bounds__(COMPACT_THREADS)
    page_compact(uint8_t *__restrict__ base, int32_t *__restrict__ pos, int64_t page_bytes,
                 int P, int row_bytes, int scale_bytes, const int32_t *__restrict__ keep_off,
                 const int32_t *__restrict__ keep, const int32_t *__restrict__ src_off,
                 const int32_t *__restrict__ src, const int32_t *__restrict__ dst_off,
                 const int32_t *__restrict__ dst)
{
    int t = blockIdx.x;
    const int32_t *kp = keep + keep_off[t];
    int n_keep = keep_off[t + 1] - keep_off[t];
    const int32_t *sp = src + src_off[t], *dp = dst + dst_off[t];
    int64_t n_src_tok = (int64_t)(src_off[t + 1] - src_off[t]) * P;
    int64_t n_dst_tok = (int64_t)(dst_off[t + 1] - dst_off[t]) * P;
    int upr = row_bytes / (int)sizeof(U); // units per K or V row
    int chunk = COMPACT_THREADS * COMPACT_UNITS / (2 * upr);
    chunk = min(max(chunk, 1), COMPACT_THREADS); // one thread per token moves its scales
    // a kept index out of the table, not increasing, or with no destination page is
    // skipped: the kernel cannot report it without a synchronization
    auto valid = [&](int i) {
        int j = kp[i];
        return j >= 0 && j < n_src_tok && i < n_dst_tok && (i == 0 || j > kp[i - 1]);
    };
    for (int c0 = 0; c0 < n_keep; c0 += chunk) {
        int cn = min(chunk, n_keep - c0), units = cn * 2 * upr;
        U buf[COMPACT_UNITS];
        float sc[2] = {0.f, 0.f};
        int32_t ps = 0;
        bool ok_tok = false;
#pragma unroll
        for (int m = 0; m < COMPACT_UNITS; m++) {
            int e = threadIdx.x + m * COMPACT_THREADS;
            if (e < units) {
                int i = c0 + e / (2 * upr), w = (e / upr) & 1, u = e % upr;
                int j = kp[i];
                if (valid(i)) {
                    const uint8_t *pg = base + (int64_t)sp[j / P] * page_bytes;
                    buf[m] = ((const U *)(pg + ((int64_t)w * P + j % P) * row_bytes))[u];
                }
            }
        }
        if (threadIdx.x < cn) {
            int i = c0 + threadIdx.x, j = kp[i];
            ok_tok = valid(i);
            if (ok_tok) {
                int64_t g = sp[j / P];
                const uint8_t *pg = base + g * page_bytes + 2 * (int64_t)P * row_bytes;
                if (scale_bytes == 4) {
                    sc[0] = ((const float *)pg)[j % P];
                    sc[1] = ((const float *)pg)[P + j % P];
                }
                if (pos)
                    ps = pos[g * P + j % P];
            }
        }
        __syncthreads();
#pragma unroll
        for (int m = 0; m < COMPACT_UNITS; m++) {
            int e = threadIdx.x + m * COMPACT_THREADS;
            if (e < units) {
                int i = c0 + e / (2 * upr), w = (e / upr) & 1, u = e % upr;
                if (valid(i)) {
                    uint8_t *pg = base + (int64_t)dp[i / P] * page_bytes;
                    ((U *)(pg + ((int64_t)w * P + i % P) * row_bytes))[u] = buf[m];
                }
            }
        }
        if (ok_tok) {
            int i = c0 + threadIdx.x;
            int64_t g = dp[i / P];
            uint8_t *pg = base + g * page_bytes + 2 * (int64_t)P * row_bytes;
            if (scale_bytes == 4) {
                ((float *)pg)[i % P] = sc[0];
                ((float *)pg)[P + i % P] = sc[1];
            }
            if (pos)
                pos[g * P + i % P] = ps;
        }
    }
}

extern "C" int kw_cuda_page_compact(void *stream, uint8_t *base, int32_t *pos,
                                    int64_t page_bytes, int page_tokens, int row_bytes,
                                    int scale_bytes, int n_tab, const int32_t *keep_off,
                                    const int32_t *keep, const int32_t *src_off,
                                    const int32_t *src, const int32_t *dst_off,
                                    const int32_t *dst)
{
    if (!base || page_tokens < 1 || row_bytes < 1 || (scale_bytes != 0 && scale_bytes != 4) ||
        page_bytes < 2 * (int64_t)page_tokens * (row_bytes + scale_bytes) || n_tab < 0)
        return KW_EINVAL;
    if (n_tab == 0)
        return KW_OK;
    // rows as 16-byte units when every row start is 16-byte aligned, else 4 or 1 bytes
    auto aligned = [&](int a) {
        return row_bytes % a == 0 && page_bytes % a == 0 && (uintptr_t)base % a == 0;
    };
    if (scale_bytes && (page_bytes % 4 || (2 * (int64_t)page_tokens * row_bytes) % 4))
        return KW_EINVAL;
    int unit = aligned(16) ? 16 : aligned(4) ? 4 : 1;
    if (2 * (row_bytes / unit) > COMPACT_THREADS * COMPACT_UNITS)
        return KW_EINVAL; // a token's rows must fit in one chunk
    cudaStream_t s = (cudaStream_t)stream;
    if (unit == 16)
        page_compact<uint4><<<n_tab, COMPACT_THREADS, 0, s>>>(
            base, pos, page_bytes, page_tokens, row_bytes, scale_bytes, keep_off, keep,
            src_off, src, dst_off, dst);
    else if (unit == 4)
        page_compact<uint32_t><<<n_tab, COMPACT_THREADS, 0, s>>>(
            base, pos, page_bytes, page_tokens, row_bytes, scale_bytes, keep_off, keep,
            src_off, src, dst_off, dst);
    else
        page_compact<uint8_t><<<n_tab, COMPACT_THREADS, 0, s>>>(
            base, pos, page_bytes, page_tokens, row_bytes, scale_bytes, keep_off, keep,
            src_off, src, dst_off, dst);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// ---- page-table patches ----

// Block per run: dst[run.dst + i] = src[run.src + i] for i < run.n.
__global__ void scatter_runs(int32_t *__restrict__ dst, const int32_t *__restrict__ runs,
                             const int32_t *__restrict__ src)
{
    const int32_t *r = runs + 3 * (size_t)blockIdx.x;
    const int64_t d = r[0], s = r[1];
    for (int i = threadIdx.x; i < r[2]; i += blockDim.x)
        dst[d + i] = src[s + i];
}

extern "C" int kw_cuda_scatter_runs(void *stream, int32_t *dst, const int32_t *runs, int n_runs,
                                    const int32_t *src)
{
    if (n_runs < 0 || (n_runs > 0 && (!dst || !runs || !src)))
        return KW_EINVAL;
    if (n_runs == 0)
        return KW_OK;
    scatter_runs<<<n_runs, 128, 0, (cudaStream_t)stream>>>(dst, runs, src);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
