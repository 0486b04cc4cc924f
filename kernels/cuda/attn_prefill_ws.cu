// Causal prefill attention over views on Hopper (sm_90a, head_dim 128): a
// warp-specialized block (KW_CUDA_PREFILL_WGMMA, what AUTO runs there). It does what the
// mma.sync kernel of attn_prefill.cu does (same work items, token windows, masking by
// stored position and online softmax; see there) with four warpgroups:
//  - two loading warpgroups flatten the row's token windows of 1024 tokens and copy each
//    visible tile of 128 tokens, K and V, into two-stage rings (one for K, one for V):
//    in table mode with pages of P | 128 tokens (P a multiple of 8) by TMA, one box of a
//    page's P rows x 64 columns per copy from a tensor map over the pool, landing in the
//    128-byte swizzle; else (span views, other page sizes, a row's last partial tile) by
//    16-byte cp.async. Shared-memory barriers say when a stage is full (the copies'
//    bytes and every loading thread's arrival) and when it is free again, so flattening
//    and copies run beside the math;
//  - two math warpgroups of 64 query rows each run S = Q K^T and O += P V with wgmma
//    (m64n128k16; Q and K K-major, V MN-major, in the 128-byte swizzle; P from registers)
//    and the softmax in registers. They take turns at the tensor cores (named barriers):
//    a turn issues Q K^T of this tile, scales O and issues P V of the last tile; the
//    exponentials of this tile run beside that P V, only their rounding to bf16 waits
//    for it (FlashAttention-3's order; l sums the exponentials before rounding), and all
//    of it runs beside the other warpgroup's turn.
// The loading warpgroups give registers to the math ones (setmaxnreg: 56 and 200 per
// thread, no spills). Every tile is computed by both math warpgroups, even one no row of
// a warpgroup sees (it is all masked and changes nothing): a branch around wgmma makes
// the compiler serialize them.
//
// Where the time goes (ncu, H200, 16k, table view): the tensor pipe is 44% busy; the
// math warps wait for a K stage in 35% of their samples and the loading warps for a free
// V stage in half of theirs. K of tile j + 2 goes out only after V of tile j + 1, whose
// stage frees when P V of tile j - 1 is done, so K has less than a tile's time to land.
// Three K stages with V copied two tiles behind K (on top of the softmax order above)
// measured slower: 395 TFLOP/s at 32k against 413-416 for the kernel before both, same run.
// The softmax order above: 386 / 421 / 427 TFLOP/s at 8k / 16k / 32k against 383 / 416 /
// 423 for the exponentials after P V (same run, two rounds alike).
//
// Measured before that change (H200, causal, 32/8 heads, pages of 16 tokens;
// bench_cuda_prefill, one run):
// table views 425 TFLOP/s at 32k, 415 at 16k, 380 at 8k; the same kernel copying by
// cp.async 323, 318 and 295 (the copies were what bounded it: alone, with no math, they
// took what 528 TFLOP/s would, and the rate of cp.async grew with the warps issuing
// them, not with how far ahead they ran; without copies the math ran at 491). Span views
// (cp.async) 286 at 32k.
// The kernel this one replaced, two warpgroups that each loaded and computed (tiles of
// 128 keys, two stages by cp.async), ran at 314, 310 and 286: its stages did not overlap
// (alone, at 32k: MMAs 10.2 ms, softmax 7.0, copies 5.3, the rest 5.7, adding up to the
// whole 28.2). Measured no faster there, and so not kept: a warpgroup's softmax beside
// its own P V (tiles of 64 keys, 4 stages: 309 against 313), one loading warpgroup
// feeding K/V by TMA (299), one warpgroup of 64 rows per block, two blocks per
// multiprocessor (213).
#include <cuda.h> // CUtensorMap
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <climits>
#include <cstdint>

#include "attn_prefill.cuh"
#include "common.cuh"
#include "prefill_window.cuh"
#include "tc.cuh"

namespace {

using namespace kw_prefill;

constexpr int D = 128, BQ = 128, BK = 128; // head dim, queries per block, keys per tile
constexpr int SKIP = 4;                    // windows per step of a table-mode skip
constexpr int PT = 256;                    // loading threads (two warpgroups)
constexpr int MT = 128;                    // threads per math warpgroup
constexpr int THREADS = PT + 2 * MT;
constexpr int WTILES = WT / BK, TPT = WT / PT, SPANS = PT;
constexpr int KD = D / 16, NB = BK / 8, ND = D / 8, CH = D / 8;
constexpr int LOAD_REGS = 56, MATH_REGS = 200; // 256 * 56 + 256 * 200 <= 65536
constexpr float LOG2E = 1.4426950408889634f;
// named barriers: the loading warpgroups; math warpgroup c (its own rows); c's turn
enum { BAR_LOAD = 1, BAR_MATH = 2, BAR_TURN = 4 };
// red[]: loading warps' query maxima / minima, scan partials, skip minima
enum { RMAX = 0, RMIN = 8, RSCAN = 16, RSKIP = 24 };

// Shared memory (bytes). bf16 tiles in the 128-byte swizzle start on 1024-byte bounds.
struct smem_layout {
    static constexpr size_t tile = (size_t)BK * D * 2;
    static constexpr size_t q = 0, k = q + (size_t)BQ * D * 2, v = k + 2 * tile,
                            kpos = v + 2 * tile,        // int32 (2, BK): positions per K stage
                            kflag = kpos + 2 * BK * 4,  // int32 (2, 4): mask?, smallest, end
                            bars = kflag + 32,          // uint64 (8): full K, empty K, full V,
                                                        // empty V, two stages each
                            wpage = bars + 64,          // uint32 (WT): page | pool << 31
                            wpos = wpage + WT * 4,      // int32 (WT)
                            wslot = wpos + WT * 4,      // uint16 (WT)
                            tmin = wslot + WT * 2,      // int32 (WTILES)
                            tmax = tmin + WTILES * 4,   // int32 (WTILES)
                            spage = tmax + WTILES * 4,  // uint32 (SPANS)
                            sfirst = spage + SPANS * 4, // int32 (SPANS)
                            sincl = sfirst + SPANS * 4, // int32 (SPANS): inclusive sums
                            red = sincl + SPANS * 4,    // int32 (32)
                            qpos = red + 32 * 4,        // int32 (BQ)
                            bytes = qpos + BQ * 4;
    static_assert(k % 1024 == 0 && v % 1024 == 0 && tile % 1024 == 0 && bars % 8 == 0,
                  "alignment");
};

// The shared-memory barriers of the K and V rings (smem_layout::bars), two stages each:
// full (every loading thread has arrived: its cp.async copies, and for K its positions
// and flags; TMA copies complete their bytes on it) and empty (every math warp has
// arrived: done with the stage).
struct ring_bars {
    uint32_t base; // shared-memory address
    __device__ __forceinline__ uint32_t full_k(int s) const { return base + 8 * s; }
    __device__ __forceinline__ uint32_t empty_k(int s) const { return base + 16 + 8 * s; }
    __device__ __forceinline__ uint32_t full_v(int s) const { return base + 32 + 8 * s; }
    __device__ __forceinline__ uint32_t empty_v(int s) const { return base + 48 + 8 * s; }
};

struct block_ctx {
    int t_begin, nq, row;
};

// The loading warpgroups (threads 0 .. PT - 1).
__device__ __forceinline__ void load_role(const kw_cuda_prefill &a, const CUtensorMap *tmap,
                                          bool tma, unsigned char *sm, const block_ctx &b)
{
    using L = smem_layout;
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)(sm + L::k), *Vs = (__nv_bfloat16 *)(sm + L::v);
    int32_t *kpos = (int32_t *)(sm + L::kpos), *kflag = (int32_t *)(sm + L::kflag);
    uint32_t *wpage = (uint32_t *)(sm + L::wpage), *spage = (uint32_t *)(sm + L::spage);
    int32_t *wpos = (int32_t *)(sm + L::wpos), *tmin = (int32_t *)(sm + L::tmin),
            *tmax = (int32_t *)(sm + L::tmax), *sfirst = (int32_t *)(sm + L::sfirst),
            *sincl = (int32_t *)(sm + L::sincl), *red = (int32_t *)(sm + L::red);
    uint16_t *wslot = (uint16_t *)(sm + L::wslot);
    const ring_bars rb{smem_u32(sm + L::bars)};

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int P = a.page_tokens, row = b.row;
    const bool table = a.pages != nullptr;
    // the block's largest and smallest query position
    int mxq, mnq;
    {
        int p = tid < b.nq ? min(a.q_pos[b.t_begin + tid], INT_MAX - 1) : INT_MIN;
        int mx = __reduce_max_sync(0xffffffffu, p);
        int mn = __reduce_min_sync(0xffffffffu, tid < b.nq ? p : INT_MAX);
        if (lane == 0)
            red[RMAX + warp] = mx, red[RMIN + warp] = mn;
        bar_sync(BAR_LOAD, PT);
        mxq = red[RMAX], mnq = red[RMIN];
        for (int w = 1; w < PT / 32; w++)
            mxq = max(mxq, red[RMAX + w]), mnq = min(mnq, red[RMIN + w]);
    }
    auto fold_min = [&](int base) {
        int x = red[base];
        for (int w = 1; w < PT / 32; w++)
            x = min(x, red[base + w]);
        return x;
    };

    auto rp = [&]() { return a.row_ptr[row]; };
    auto n_row = [&]() { return a.row_tokens[row]; };
    window_state ws = {rp(), 0, 0, false, 0, 0}; // prefill_window.cuh
    const window_smem wm = {wpage, spage, wpos, tmin, tmax, sfirst, sincl, red + RSCAN, wslot};
    bool skipping = false; // table mode: the last window had nothing visible

    auto flatten = [&]() {
        flatten_window<PT, BK>(a, row, table, P, tid, lane, warp, wm, ws,
                               [] { bar_sync(BAR_LOAD, PT); }, [&] { return mxq; },
                               [&] { return mnq; });
    };

    auto skip_ahead = [&]() {
        for (;;) {
            bar_sync(BAR_LOAD, PT);
            const int rp0 = rp(), nr = n_row();
            int mn = INT_MAX;
#pragma unroll 8
            for (int m = 0; m < SKIP * TPT; m++) {
                int t = ws.wbase + tid + m * PT;
                if (t < nr)
                    mn = min(mn, a.pos[0][(int64_t)a.pages[rp0 + t / P] * P + t % P]);
            }
            mn = __reduce_min_sync(0xffffffffu, mn);
            if (lane == 0)
                red[RSKIP + warp] = mn;
            bar_sync(BAR_LOAD, PT);
            if (fold_min(RSKIP) <= mxq)
                return;
            ws.wbase += SKIP * WT;
            if (ws.wbase >= nr) {
                ws.row_done = true;
                return;
            }
        }
    };

    // 16-byte chunk copies of tile tl's K (kv 0) or V (kv 1) rows into dst
    auto copy = [&](int tl, __nv_bfloat16 *dst, int kv) {
#pragma unroll 4
        for (int m = 0; m < BK * CH / PT; m++) {
            int c = tid + m * PT, r = c / CH, ch = c % CH, j = tl * BK + r;
            uint32_t sp = wpage[j];
            int slot = wslot[j];
            bool ok = slot != NO_SLOT;
            const __nv_bfloat16 *bp = (const __nv_bfloat16 *)(sp >> 31 ? a.base[1] : a.base[0]);
            const __nv_bfloat16 *src =
                ok ? bp + ((int64_t)(sp & 0x7fffffffu) * 2 * P + (int64_t)kv * P + slot) * D +
                         ch * 8
                   : (const __nv_bfloat16 *)a.q; // not read
            cp_async16(smem_u32(dst + swz<D, BK>(r, ch)), src, ok);
        }
    };

    // Table mode, whole pages of P | BK tokens (tma): tile tl's K (kv 0) or V (kv 1) by
    // TMA, one box of P rows x 64 columns per page and column block, each issued by one
    // thread, which expects its bytes on bar as it arrives; the other threads arrive.
    // The box lands in the 128-byte swizzle, as swz lays rows out.
    auto copy_tma = [&](int tl, __nv_bfloat16 *dst, int kv, uint32_t bar) {
        if (tid < 2 * BK / P) {
            const int i = tid >> 1, cb = tid & 1;
            mbar_arrive_tx(bar, P * 128);
            tma_load_3d(smem_u32(dst + cb * BK * 64 + i * P * 64), tmap, cb * 64, kv * P,
                        (int)wpage[tl * BK + i * P], bar);
        } else
            mbar_arrive(bar);
    };

    int j = 0; // tiles handed over
    for (;;) {
        if (!ws.vis) {
            while (!ws.vis) {
                if (skipping && !ws.row_done)
                    skip_ahead();
                if (ws.row_done)
                    break;
                flatten();
                skipping = table && !ws.vis;
            }
            if (!ws.vis)
                break;
        }
        const int tl = __ffs(ws.vis) - 1;
        ws.vis &= ws.vis - 1;
        const int s = j & 1;
        const uint32_t par = ((j >> 1) & 1) ^ 1; // the release of the tile two back
        // by TMA unless the tile ends past the row (its last token is padding)
        const bool by_tma = tma && wslot[tl * BK + BK - 1] != NO_SLOT;
        mbar_wait(rb.empty_k(s), par);
        if (by_tma)
            copy_tma(tl, Ks + s * BK * D, 0, rb.full_k(s));
        else
            copy(tl, Ks + s * BK * D, 0);
        if (tid < BK)
            kpos[s * BK + tid] = wpos[tl * BK + tid];
        if (tid == 0) {
            kflag[4 * s] = !((ws.full >> tl) & 1), kflag[4 * s + 1] = tmin[tl];
            kflag[4 * s + 2] = 0;
        }
        if (!by_tma)
            cp_async_arrive(rb.full_k(s)); // once this thread's copies have landed
        mbar_arrive(rb.full_k(s));         // its positions and flags
        mbar_wait(rb.empty_v(s), par);
        if (by_tma)
            copy_tma(tl, Vs + s * BK * D, 1, rb.full_v(s));
        else {
            copy(tl, Vs + s * BK * D, 1);
            cp_async_arrive(rb.full_v(s));
        }
        j++;
    }
    // the end of the row: a K stage whose flag says so
    const int s = j & 1;
    mbar_wait(rb.empty_k(s), ((j >> 1) & 1) ^ 1);
    if (tid == 0)
        kflag[4 * s + 2] = 1;
    mbar_arrive(rb.full_k(s));
    mbar_arrive(rb.full_k(s));
}

// A math warpgroup c (0 or 1: query rows 64c .. 64c + 63).
__device__ __forceinline__ void math_role(const kw_cuda_prefill &a, unsigned char *sm,
                                          const block_ctx &b, int c)
{
    using L = smem_layout;
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)(sm + L::q), *Ks = (__nv_bfloat16 *)(sm + L::k),
                  *Vs = (__nv_bfloat16 *)(sm + L::v);
    const int32_t *kpos = (const int32_t *)(sm + L::kpos);
    const volatile int32_t *kflag = (const volatile int32_t *)(sm + L::kflag);
    int32_t *qpos = (int32_t *)(sm + L::qpos);
    const ring_bars rb{smem_u32(sm + L::bars)};

    const int ct = threadIdx.x - PT - MT * c, w4 = ct / 32, lane = ct % 32;
    const int g = lane / 4, tig = lane % 4;
    const int r0 = 64 * c + 16 * w4; // this warp's first query row

    // Q rows 64c .. 64c + 63, scaled and rounded to bf16 (rows past the chunk are zeros)
    for (int i = ct; i < 64 * D / 4; i += MT) {
        int r = 64 * c + i / (D / 4), cc = i % (D / 4) * 4;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < b.nq)
            x = *(const float4 *)(a.q +
                                  ((int64_t)(b.t_begin + r) * a.n_head + blockIdx.y) * D + cc);
        __nv_bfloat162 lo = __floats2bfloat162_rn(x.x * a.scale, x.y * a.scale);
        __nv_bfloat162 hi = __floats2bfloat162_rn(x.z * a.scale, x.w * a.scale);
        *(uint2 *)&Qs[swz<D, BQ>(r, cc / 8) + cc % 8] =
            make_uint2(bf16x2_bits(lo), bf16x2_bits(hi));
    }
    {
        const int r = 64 * c + ct;
        int p = ct < 64 && r < b.nq ? min(a.q_pos[b.t_begin + r], INT_MAX - 1) : INT_MIN;
        if (ct < 64)
            qpos[r] = p;
    }
    fence_async_smem(); // the Q rows are read by wgmma
    bar_sync(BAR_MATH + c, MT);
    const int qp0 = qpos[r0 + g], qp1 = qpos[r0 + g + 8];

    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    uint32_t pa[BK / 16][4]; // P of the last tile, bf16

    const uint32_t qb = smem_u32(Qs) + c * 64 * 128;
    auto issue_qk = [&](float (*s)[4], int st) {
        const uint32_t kb = smem_u32(Ks + st * BK * D);
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss(s, wg_desc(qb + (kk / 4) * BQ * 128 + (kk % 4) * 32, 16, 1024),
                     wg_desc(kb + (kk / 4) * BK * 128 + (kk % 4) * 32, 16, 1024), kk);
        wg_commit();
    };
    auto issue_pv = [&](int st) {
        const uint32_t vb = smem_u32(Vs + st * BK * D);
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++)
            wgmma_rs(o, pa[kk], wg_desc(vb + kk * 16 * 128, BK * 128, 1024));
        wg_commit();
    };
    auto release = [&](uint32_t bar) { // one arrival per warp
        __syncwarp();
        if (lane == 0)
            mbar_arrive(bar);
    };

    // Scores of the tile in K stage st (its wgmma waited for): masked where needed, then
    // the online softmax in place: new row maxima, the factor al that O is to be scaled
    // by, l scaled and the exponentials (f32, left in sc) summed into it. A tile no row of
    // this warpgroup sees is all masked here and leaves m, l and O as they are (its math
    // is not skipped: a branch around wgmma makes the compiler serialize them).
    float al0 = 1.f, al1 = 1.f;
    auto softmax = [&](float (*sc)[4], int st) {
        if (kflag[4 * st]) {
            const int32_t *kp = kpos + st * BK;
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                int2 p = *(const int2 *)&kp[nb * 8 + 2 * tig];
                sc[nb][0] = p.x <= qp0 ? sc[nb][0] : -INFINITY;
                sc[nb][1] = p.y <= qp0 ? sc[nb][1] : -INFINITY;
                sc[nb][2] = p.x <= qp1 ? sc[nb][2] : -INFINITY;
                sc[nb][3] = p.y <= qp1 ? sc[nb][3] : -INFINITY;
            }
        }
        release(rb.empty_k(st));
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            mx0 = fmaxf(mx0, fmaxf(sc[nb][0], sc[nb][1]));
            mx1 = fmaxf(mx1, fmaxf(sc[nb][2], sc[nb][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        // max -inf (nothing seen yet): subtract 0 so -inf maps to 0, not NaN
        const float base0 = mx0 == -INFINITY ? 0.f : mx0 * LOG2E;
        const float base1 = mx1 == -INFINITY ? 0.f : mx1 * LOG2E;
        al0 = ex2(m0 * LOG2E - base0), al1 = ex2(m1 * LOG2E - base1);
        m0 = mx0, m1 = mx1;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            sc[nb][0] = ex2(fmaf(sc[nb][0], LOG2E, -base0));
            sc[nb][1] = ex2(fmaf(sc[nb][1], LOG2E, -base0));
            sc[nb][2] = ex2(fmaf(sc[nb][2], LOG2E, -base1));
            sc[nb][3] = ex2(fmaf(sc[nb][3], LOG2E, -base1));
            s0 += sc[nb][0] + sc[nb][1], s1 += sc[nb][2] + sc[nb][3];
        }
        l0 = l0 * al0 + s0, l1 = l1 * al1 + s1;
    };
    auto make_p = [&](float (*sc)[4]) { // P, bf16, into pa (A fragments of P V)
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const float *sv = sc[2 * kk + half];
                pa[kk][half * 2] = bf16x2_bits(__floats2bfloat162_rn(sv[0], sv[1]));
                pa[kk][half * 2 + 1] = bf16x2_bits(__floats2bfloat162_rn(sv[2], sv[3]));
            }
    };
    auto rescale_o = [&]() {
#pragma unroll
        for (int i = 0; i < ND; i++) {
            o[i][0] *= al0, o[i][1] *= al0;
            o[i][2] *= al1, o[i][3] *= al1;
        }
    };

    // Turns in the order the header describes; the other warpgroup takes the first turn
    // at the tensor cores from warpgroup 0
    if (c == 1)
        bar_arrive(BAR_TURN, 2 * MT);
    int j = 0; // tiles taken
    mbar_wait(rb.full_k(0), 0);
    fence_async_smem(); // the copies, seen here, are read by wgmma
    if (!kflag[2]) {
        float sc[NB][4];
        bar_sync(BAR_TURN + c, 2 * MT);
        wg_fence();
        issue_qk(sc, 0);
        bar_arrive(BAR_TURN + (c ^ 1), 2 * MT);
        wg_wait<0>();
        softmax(sc, 0);
        make_p(sc);
        for (j = 1;; j++) {
            const int s = j & 1, sp = s ^ 1;
            mbar_wait(rb.full_k(s), (j >> 1) & 1);
            if (kflag[4 * s + 2])
                break;
            fence_async_smem();
            bar_sync(BAR_TURN + c, 2 * MT);
            mbar_wait(rb.full_v(sp), ((j - 1) >> 1) & 1);
            fence_async_smem();
            wg_fence();
            issue_qk(sc, s);
            rescale_o();
            wg_fence();
            issue_pv(sp); // P V of the last tile
            bar_arrive(BAR_TURN + (c ^ 1), 2 * MT);
            wg_wait<1>();
            softmax(sc, s);
            wg_wait<0>(); // P V of the last tile is done: its V stage and pa are free
            release(rb.empty_v(sp));
            make_p(sc);
        }
        // P V of the last tile, in a last turn (warpgroup 1 hands no turn back)
        bar_sync(BAR_TURN + c, 2 * MT);
        mbar_wait(rb.full_v((j - 1) & 1), ((j - 1) >> 1) & 1);
        fence_async_smem();
        rescale_o();
        wg_fence();
        issue_pv((j - 1) & 1);
        if (c == 0)
            bar_arrive(BAR_TURN + 1, 2 * MT);
        wg_wait<0>();
    } else { // no tile: the last turn alone
        bar_sync(BAR_TURN + c, 2 * MT);
        if (c == 0)
            bar_arrive(BAR_TURN + 1, 2 * MT);
    }

#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float sum = hh ? l1 : l0;
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        const int r = r0 + g + hh * 8;
        if (r < b.nq) {
            float *op = a.out + ((int64_t)(b.t_begin + r) * a.n_head + blockIdx.y) * D + 2 * tig;
#pragma unroll
            for (int i = 0; i < ND; i++)
                *(float2 *)(op + i * 8) = make_float2(o[i][2 * hh] * inv, o[i][2 * hh + 1] * inv);
        }
    }
}

__global__ void __launch_bounds__(THREADS, 1)
    ws_kernel(const __grid_constant__ kw_cuda_prefill a, const __grid_constant__ CUtensorMap tmap,
              int tma)
{
    extern __shared__ __align__(1024) unsigned char sm[];
    // the last query tiles of a sequence read the most: start them first
    const int item = a.n_items - 1 - (int)blockIdx.x, h = blockIdx.y;
    const int seq = a.items[2 * item], q0 = a.items[2 * item + 1];
    block_ctx b;
    b.t_begin = a.tok_off[seq] + q0;
    b.nq = min(BQ, a.tok_off[seq + 1] - b.t_begin);
    b.row = seq * a.n_kv + h / (a.n_head / a.n_kv);
    if (threadIdx.x == 0) {
        const ring_bars rb{smem_u32(sm + smem_layout::bars)};
        for (int s = 0; s < 2; s++) {
            mbar_init(rb.full_k(s), 2 * PT); // every loading thread's copies and stores
            mbar_init(rb.empty_k(s), 8);     // every math warp
            mbar_init(rb.full_v(s), PT);     // every loading thread's copies
            mbar_init(rb.empty_v(s), 8);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x < PT) {
        regs_lower<LOAD_REGS>();
        load_role(a, &tmap, tma != 0, sm, b);
    } else {
        regs_raise<MATH_REGS>();
        math_role(a, sm, b, ((int)threadIdx.x - PT) / MT);
    }
}

// The pool as a 3-D tensor for TMA: (page, K rows then V rows, head_dim), bf16; a box is
// one page's K or V rows, 64 columns (128 bytes: the 128-byte swizzle's width). The
// number of pages is not known here: the map allows any page id of int32 (the view's
// page ids are the pool's). False where the driver has no tensor maps.
bool pool_map(CUtensorMap *m, const kw_cuda_prefill &a)
{
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                             cudaEnableDefault, &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            f = nullptr;
        }
        return (PFN_cuTensorMapEncodeTiled_v12000)f;
    }();
    if (!encode)
        return false;
    const cuuint64_t P = (cuuint64_t)a.page_tokens;
    const cuuint64_t dims[3] = {D, 2 * P, 0x7fffffff}, strides[2] = {D * 2, 2 * P * D * 2};
    const cuuint32_t box[3] = {64, (cuuint32_t)P, 1}, one[3] = {1, 1, 1};
    return encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void *>(a.base[0]), dims,
                  strides, box, one, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

} // namespace

// The warp-specialized kernel (kw_cuda_attn_prefill has checked a and that the device
// runs sm_90a code).
extern "C" int kw__cuda_prefill_ws(void *stream, const kw_cuda_prefill *a)
{
    static bool configured = false;
    if (!configured) {
        KW_CUDA_TRY(cudaFuncSetAttribute(ws_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem_layout::bytes));
        configured = true;
    }
    // TMA in table mode for pages that tile BK in whole 8-row swizzle groups
    CUtensorMap map = {};
    const int P = a->page_tokens;
    const bool tma = a->pages && P % 8 == 0 && BK % P == 0 && !a->no_tma && pool_map(&map, *a);
    dim3 grid(a->n_items, a->n_head);
    ws_kernel<<<grid, THREADS, smem_layout::bytes, (cudaStream_t)stream>>>(*a, map, tma);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
