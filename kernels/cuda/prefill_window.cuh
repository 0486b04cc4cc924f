// The token windows the two causal prefill attention kernels (attn_prefill.cu: mma.sync;
// attn_prefill_ws.cu: warp-specialized wgmma) walk a view's row in, and the small helpers
// both use.
#pragma once

#include <climits>
#include <cstdint>

#include "kernels_cuda.h"

namespace kw_prefill {

constexpr int WT = 1024;             // tokens per flattened window
constexpr uint16_t NO_SLOT = 0xffff; // padding past the row's end

// Element offset of 16-byte chunk c (8 elements) of row r in a tile of ROWS rows: the
// tile is stored as D / 64 column blocks of 64 elements (128 bytes a row), one after the
// other, and chunk c of a row sits at (c % 8) ^ (r % 8) in its block. This is the layout
// of wgmma's 128-byte swizzle (K-major for Q and K, MN-major for V); for ldmatrix the 8
// rows of a phase, same c, hit 8 different bank groups.
template <int D, int ROWS> __device__ __forceinline__ int swz(int r, int c)
{
    static_assert(D % 64 == 0, "rows of whole 128-byte blocks");
    return (c >> 3) * ROWS * 64 + r * 64 + (((c & 7) ^ (r & 7)) << 3);
}

// The first index i < n with incl[i] > v (incl: inclusive prefix sums; n - 1 if none).
__device__ __forceinline__ int first_above(const int *incl, int n, int v)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (incl[mid] > v)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

__device__ __forceinline__ float ex2(float x) // 2^x; -inf gives 0
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// A window's shared memory: per token (WT) its page | pool << 31, slot and stored
// position; per tile (WT / BK) the smallest and largest position; per span of a
// span-mode step (one per thread) its page, first slot and inclusive length sum; per warp
// a scan partial.
struct window_smem {
    uint32_t *wpage, *spage;
    int32_t *wpos, *tmin, *tmax, *sfirst, *sincl, *scan;
    uint16_t *wslot;
};

// What every thread of a block walking a row keeps, the same in each: span mode's cursor
// (the next token is slot co of span cs), table mode's next token (wbase), whether the row
// is done, and the current window's tiles left to run (vis) and needing no mask (full).
struct window_state {
    int cs, co, wbase;
    bool row_done;
    uint32_t vis, full;
};

// Fills the window with the next WT tokens of view row `row` (table mode: one page lookup
// per token; span mode: a prefix scan over span lengths, then a binary search per token),
// then sets vis (tiles some query sees: smallest position <= max_q()) and full (tiles
// every query sees: largest position <= min_q()). THREADS threads (tid, its lane and
// warp) call it together; sync() is their barrier. The row's bounds are read again here
// (cached loads), so they hold no registers through a kernel's tile loop.
template <int THREADS, int BK, class Sync, class QMax, class QMin>
__device__ __forceinline__ void flatten_window(const kw_cuda_prefill &a, int row, bool table,
                                               int P, int tid, int lane, int warp,
                                               const window_smem &w, window_state &st,
                                               Sync sync, QMax max_q, QMin min_q)
{
    constexpr int TPT = WT / THREADS, SPANS = THREADS, WTILES = WT / BK;
    static_assert(TPT * THREADS == WT && WTILES <= 32 && BK % 32 == 0, "window shapes");
    sync(); // every thread is done with the previous window's entries
    if (tid < WTILES)
        w.tmin[tid] = INT_MAX, w.tmax[tid] = INT_MIN;
    if (table) {
        const int rp0 = a.row_ptr[row], nr = a.row_tokens[row];
        int pg[TPT];
#pragma unroll
        for (int m = 0; m < TPT; m++) {
            int t = st.wbase + tid + m * THREADS;
            pg[m] = t < nr ? a.pages[rp0 + t / P] : 0;
        }
#pragma unroll
        for (int m = 0; m < TPT; m++) {
            int j = tid + m * THREADS, t = st.wbase + j, slot = t % P;
            bool ok = t < nr;
            w.wpage[j] = (uint32_t)pg[m];
            w.wslot[j] = ok ? (uint16_t)slot : NO_SLOT;
            w.wpos[j] = ok ? a.pos[0][(int64_t)pg[m] * P + slot] : INT_MAX;
        }
        st.wbase += WT;
        st.row_done = st.wbase >= nr;
    } else {
        const int se = a.row_ptr[row + 1];
        int filled = 0;
        while (filled < WT && st.cs < se) {
            // SPANS spans from the cursor, one per thread; the first starts at slot co
            int i = st.cs + tid, n = 0, first = 0;
            uint32_t pg = 0;
            if (i < se) {
                kw_cuda_span s = a.spans[i];
                n = s.n, first = s.first, pg = (uint32_t)s.page | (uint32_t)(s.pool != 0) << 31;
                if (tid == 0)
                    n -= st.co, first += st.co;
            }
            int x = n; // block inclusive scan of the lengths
#pragma unroll
            for (int d = 1; d < 32; d <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, x, d);
                if (lane >= d)
                    x += y;
            }
            if (lane == 31)
                w.scan[warp] = x;
            sync();
            for (int k = 0; k < warp; k++)
                x += w.scan[k];
            w.sincl[tid] = x, w.spage[tid] = pg, w.sfirst[tid] = first;
            sync();
            const int total = w.sincl[SPANS - 1], take = min(total, WT - filled);
#pragma unroll
            for (int m = 0; m < TPT; m++) {
                int j = tid + m * THREADS;
                if (j < take) { // token j is in the first span whose inclusive sum > j
                    const int lo = first_above(w.sincl, SPANS, j);
                    uint32_t sp = w.spage[lo];
                    int slot = w.sfirst[lo] + j - (lo ? w.sincl[lo - 1] : 0);
                    const int32_t *pb = sp >> 31 ? a.pos[1] : a.pos[0];
                    w.wpage[filled + j] = sp;
                    w.wslot[filled + j] = (uint16_t)slot;
                    w.wpos[filled + j] = pb[(int64_t)(sp & 0x7fffffffu) * P + slot];
                }
            }
            if (total <= WT - filled) { // every span of this step fits
                st.cs = min(st.cs + SPANS, se), st.co = 0;
                filled += total;
            } else { // the window ends inside span lo: the next one resumes there
                const int lo = first_above(w.sincl, SPANS, take);
                st.co = take - (lo ? w.sincl[lo - 1] : 0) + (lo ? 0 : st.co);
                st.cs += lo;
                filled = WT;
            }
            sync(); // sincl / spage / sfirst / scan are rewritten next step
        }
        st.row_done = st.cs >= se;
        for (int j = filled + tid; j < WT; j += THREADS)
            w.wpage[j] = 0, w.wslot[j] = NO_SLOT, w.wpos[j] = INT_MAX;
    }
    sync();
    // smallest and largest position per tile (a warp's 32 tokens lie in one tile)
#pragma unroll
    for (int m = 0; m < TPT; m++) {
        int j = tid + m * THREADS, p = w.wpos[j];
        int mn = __reduce_min_sync(0xffffffffu, p), mx = __reduce_max_sync(0xffffffffu, p);
        if (lane == 0) {
            atomicMin(&w.tmin[j / BK], mn);
            atomicMax(&w.tmax[j / BK], mx);
        }
    }
    sync();
    st.vis = 0, st.full = 0;
    const int mxq = max_q(), mnq = min_q();
#pragma unroll
    for (int t = 0; t < WTILES; t++) {
        st.vis |= (uint32_t)(w.tmin[t] <= mxq) << t;
        st.full |= (uint32_t)(w.tmax[t] <= mnq) << t;
    }
}

} // namespace kw_prefill
