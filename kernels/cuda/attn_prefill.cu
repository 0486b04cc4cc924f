// Causal prefill attention over views, FlashAttention-2 style on tensor cores, and the
// launcher that picks the kernel. On Hopper (sm_90a) with head_dim 128 the launcher runs
// the warp-specialized wgmma kernel of attn_prefill_ws.cu; everywhere else (sm_80 and
// later, head_dim 64 or 128) the mma.sync kernel here. A block of it takes 128 query
// tokens of one query head and walks its KV head's row of the view in tiles of 64 stored
// tokens: 4 warps, 32 rows each (two m16 blocks, so each K/V fragment read from shared
// memory feeds two MMAs); mma.sync m16n8k16 (bf16 in, f32 accumulate) with Q and K
// through ldmatrix, V through ldmatrix.trans. About 109 KB of shared memory at head_dim
// 128: two blocks per SM.
// Per tile: S = Q K^T, masked by stored position (key pos <= query pos), online softmax
// in registers (exp2, log2(e) folded into one FMA), P rounded to bf16 straight from the S
// accumulators (whose layout is the A fragment's), then O += P V. K/V tiles arrive by
// 16-byte cp.async into two shared-memory stages, so the loads of the next visible tile
// overlap the math of this one; 16-byte chunks are XOR-swizzled by row (swz). A warp none
// of whose rows sees a tile skips its math.
// Token addresses come from windows of 1024 tokens flattened by the whole block (span
// mode: a block prefix scan over span lengths, then a binary search per token; table
// mode: one page lookup per token) together with their positions; a tile whose smallest
// position is beyond the block's last query is skipped (causal prefill does about half
// the work of full attention), and tiles wholly visible to every query skip the mask.
// Past a window with nothing visible, table mode tests 4 windows at a time by their
// positions alone (the tail of a causal prefill).
// Q is rounded to bf16 after scaling; O, the running max and sum stay f32 (the sum is
// of the bf16 P the MMA uses). Stored positions must be below INT_MAX (INT_MAX marks
// the padding past a row's end).
#include <cuda_bf16.h>
#include <climits>
#include <cstdint>
#include <cstring>

#include "attn_prefill.cuh"
#include "common.cuh"
#include "prefill_window.cuh"
#include "tc.cuh"

// attn_prefill_ws.cu: the warp-specialized wgmma kernel (sm_90a, head_dim 128)
extern "C" int kw__cuda_prefill_ws(void *stream, const kw_cuda_prefill *a);

namespace {

using namespace kw_prefill;

constexpr int BQ = 128; // query tokens per block
constexpr int SKIP = 4; // windows per step of a table-mode skip
constexpr float LOG2E = 1.4426950408889634f;

// 4 warps, 32 query rows each (two m16 blocks), tiles of 64 keys
struct cfg {
    static constexpr int WARPS = 4, THREADS = WARPS * 32;
    static constexpr int BK = 64;            // keys per tile
    static constexpr int MB = 2;             // m16 row blocks per warp
    static constexpr int WTILES = WT / BK;   // one bit each in the window masks
    static constexpr int TPT = WT / THREADS; // tokens per thread in a window
    static constexpr int SPANS = THREADS;    // spans per step of a span-mode flatten
    // red[]: per-warp query maxima, minima, scan partials, skip minima
    static constexpr int RMAX = 0, RMIN = WARPS, RSCAN = 2 * WARPS, RSKIP = 3 * WARPS;
    static_assert(TPT * THREADS == WT && WTILES <= 32 && BK % 32 == 0, "tile shapes");
};

// Shared memory (bytes): Q, two stages of K and V, token windows. bf16 tiles are laid out
// by swz.
template <int D> struct smem_layout {
    using C = cfg;
    static constexpr size_t tile = (size_t)C::BK * D * 2;
    static constexpr size_t q = 0, k = q + (size_t)BQ * D * 2, v = k + 2 * tile,
                            kpos = v + 2 * tile,          // int32 (2, BK): positions per stage
                            flags = kpos + 2 * C::BK * 4, // int32 (2, 2) per stage: needs the
                                                          // mask; smallest position
                            wpage = flags + 16,           // uint32 (WT): page | pool << 31
                            wpos = wpage + WT * 4,        // int32 (WT)
                            wslot = wpos + WT * 4,        // uint16 (WT)
                            tmin = wslot + WT * 2,        // int32 (WTILES)
                            tmax = tmin + C::WTILES * 4,  // int32 (WTILES)
                            spage = tmax + C::WTILES * 4, // uint32 (SPANS): page | pool << 31
                            sfirst = spage + C::SPANS * 4, // int32 (SPANS)
                            sincl = sfirst + C::SPANS * 4, // int32 (SPANS): inclusive sums
                            red = sincl + C::SPANS * 4,    // int32 (4 * WARPS): reductions
                            qpos = red + 16 * C::WARPS,    // int32 (BQ)
                            bytes = qpos + BQ * 4;
    static_assert(k % 16 == 0 && v % 16 == 0 && tile % 16 == 0, "tile alignment");
};

template <int D>
__global__ void __launch_bounds__(cfg::THREADS, 2) prefill_kernel(const kw_cuda_prefill a)
{
    using C = cfg;
    using L = smem_layout<D>;
    constexpr int THREADS = C::THREADS, WARPS = C::WARPS, BK = C::BK, MB = C::MB;
    constexpr int TPT = C::TPT;
    constexpr int RMAX = C::RMAX, RMIN = C::RMIN, RSCAN = C::RSCAN, RSKIP = C::RSKIP;
    constexpr int KD = D / 16; // k-steps of S = Q K^T
    constexpr int ND = D / 8;  // n-blocks of O
    constexpr int CH = D / 8;  // 16-byte chunks per K/V row
    constexpr int NB = BK / 8; // n-blocks of S
    extern __shared__ __align__(16) unsigned char sm[];
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)(sm + L::q), *Ks = (__nv_bfloat16 *)(sm + L::k),
                  *Vs = (__nv_bfloat16 *)(sm + L::v);
    int32_t *kpos = (int32_t *)(sm + L::kpos), *flags = (int32_t *)(sm + L::flags);
    uint32_t *wpage = (uint32_t *)(sm + L::wpage), *spage = (uint32_t *)(sm + L::spage);
    int32_t *wpos = (int32_t *)(sm + L::wpos), *tmin = (int32_t *)(sm + L::tmin),
            *tmax = (int32_t *)(sm + L::tmax), *sfirst = (int32_t *)(sm + L::sfirst),
            *sincl = (int32_t *)(sm + L::sincl), *red = (int32_t *)(sm + L::red),
            *qpos = (int32_t *)(sm + L::qpos);
    uint16_t *wslot = (uint16_t *)(sm + L::wslot);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, tig = lane % 4; // mma fragment row group, column pair
    // the last query tiles of a sequence read the most: start them first
    const int item = a.n_items - 1 - (int)blockIdx.x, h = blockIdx.y;
    const int seq = a.items[2 * item], q0 = a.items[2 * item + 1];
    const int t_begin = a.tok_off[seq] + q0;
    const int nq = min(BQ, a.tok_off[seq + 1] - t_begin);
    const int kvh = h / (a.n_head / a.n_kv), row = seq * a.n_kv + kvh;
    const int P = a.page_tokens;
    const bool table = a.pages != nullptr;

    // Q tile, scaled and rounded to bf16 (rows past the chunk are zeros)
    for (int i = tid; i < BQ * D / 4; i += THREADS) {
        int r = i / (D / 4), c = i % (D / 4) * 4;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < nq)
            x = *(const float4 *)(a.q + ((int64_t)(t_begin + r) * a.n_head + h) * D + c);
        __nv_bfloat162 lo = __floats2bfloat162_rn(x.x * a.scale, x.y * a.scale);
        __nv_bfloat162 hi = __floats2bfloat162_rn(x.z * a.scale, x.w * a.scale);
        *(uint2 *)&Qs[swz<D, BQ>(r, c / 8) + c % 8] = make_uint2(bf16x2_bits(lo), bf16x2_bits(hi));
    }
    // Query positions (INT_MIN: no query; at most INT_MAX - 1 so padding stays hidden),
    // kept in shared memory with their maxima (read there, to spare registers). Thread
    // tid < BQ holds query row tid, so warp w reduces rows 32w .. 32w + 31: the rows of
    // its MMAs.
    {
        int p = tid < nq ? min(a.q_pos[t_begin + tid], INT_MAX - 1) : INT_MIN;
        if (tid < BQ)
            qpos[tid] = p;
        int mx = __reduce_max_sync(0xffffffffu, p);
        int mn = __reduce_min_sync(0xffffffffu, tid < nq ? p : INT_MAX);
        if (lane == 0)
            red[RMAX + warp] = mx, red[RMIN + warp] = mn;
    }
    __syncthreads();
    // the largest (take_max) or smallest of red[b .. b + WARPS): one entry per warp
    auto fold = [&](int b, bool take_max) {
        int x = red[b];
#pragma unroll
        for (int w = 1; w < WARPS; w++)
            x = take_max ? max(x, red[b + w]) : min(x, red[b + w]);
        return x;
    };
    // red[RMAX + w]: warp w's largest query position; the block's largest and smallest
    // (read where needed, not kept live across the tile loop)
    auto max_q = [&]() { return fold(RMAX, true); };
    auto min_q = [&]() { return fold(RMIN, false); };
    // the largest query position among the rows this warp's math covers
    auto rows_max = [&]() { return red[RMAX + warp]; };
    // the first query row of m16 block mi of this warp
    auto row0 = [&](int mi) { return warp * 32 + mi * 16; };

    // The row's token windows. Every thread keeps the same copy of this state. The row's
    // bounds are read again where used (cached loads), so they do not hold registers
    // through the tile loop.
    auto rp = [&]() { return a.row_ptr[row]; };
    auto n_row = [&]() { return a.row_tokens[row]; };
    window_state ws = {rp(), 0, 0, false, 0, 0}; // prefill_window.cuh
    const window_smem wm = {wpage, spage, wpos, tmin, tmax, sfirst, sincl, red + RSCAN, wslot};

    // Fills the window with the next WT tokens of the row and sets ws.vis, ws.full.
    auto flatten = [&]() {
        flatten_window<THREADS, BK>(a, row, table, P, tid, lane, warp, wm, ws,
                                    [] { __syncthreads(); }, max_q, min_q);
    };

    // Table mode after a window with nothing visible (the tail of a causal prefill):
    // skips SKIP windows at a time while none of their tokens is visible, reading only
    // positions, many per thread, so the tail costs fewer round trips.
    auto skip_ahead = [&]() {
        for (;;) {
            __syncthreads(); // red[RSKIP ..] is rewritten
            const int rp0 = rp(), nr = n_row();
            int pg[SKIP * TPT], mn = INT_MAX;
#pragma unroll
            for (int m = 0; m < SKIP * TPT; m++) {
                int t = ws.wbase + tid + m * THREADS;
                pg[m] = t < nr ? a.pages[rp0 + t / P] : -1;
            }
#pragma unroll
            for (int m = 0; m < SKIP * TPT; m++) {
                int t = ws.wbase + tid + m * THREADS;
                if (pg[m] >= 0)
                    mn = min(mn, a.pos[0][(int64_t)pg[m] * P + t % P]);
            }
            mn = __reduce_min_sync(0xffffffffu, mn);
            if (lane == 0)
                red[RSKIP + warp] = mn;
            __syncthreads();
            if (fold(RSKIP, false) <= max_q())
                return; // flatten from here
            ws.wbase += SKIP * WT;
            if (ws.wbase >= nr) {
                ws.row_done = true;
                return;
            }
        }
    };

    // The next tile to run (its index in the current window), or -1 at the row's end.
    bool skipping = false; // table mode: the last window had nothing visible
    auto next_tile = [&]() -> int {
        while (!ws.vis) {
            if (skipping && !ws.row_done)
                skip_ahead();
            if (ws.row_done)
                return -1;
            flatten();
            skipping = table && !ws.vis;
        }
        int t = __ffs(ws.vis) - 1;
        ws.vis &= ws.vis - 1;
        return t;
    };

    // Starts the loads of window tile tl into stage st (one cp.async group).
    auto issue = [&](int tl, int st) {
        __nv_bfloat16 *kd = Ks + st * BK * D, *vd = Vs + st * BK * D;
#pragma unroll
        for (int m = 0; m < BK * CH / THREADS; m++) {
            int c = tid + m * THREADS, r = c / CH, ch = c % CH, j = tl * BK + r;
            uint32_t sp = wpage[j];
            int slot = wslot[j];
            bool ok = slot != NO_SLOT;
            const __nv_bfloat16 *b = (const __nv_bfloat16 *)(sp >> 31 ? a.base[1] : a.base[0]);
            const __nv_bfloat16 *src =
                ok ? b + ((int64_t)(sp & 0x7fffffffu) * 2 * P + slot) * D + ch * 8
                   : (const __nv_bfloat16 *)a.q; // not read
            cp_async16(smem_u32(kd + swz<D, BK>(r, ch)), src, ok);
            cp_async16(smem_u32(vd + swz<D, BK>(r, ch)), ok ? src + (int64_t)P * D : src, ok);
        }
        if (tid < BK)
            kpos[st * BK + tid] = wpos[tl * BK + tid];
        if (tid == 0)
            flags[2 * st] = !((ws.full >> tl) & 1), flags[2 * st + 1] = tmin[tl];
        cp_async_commit();
    };

    float o[MB][ND][4];
#pragma unroll
    for (int mi = 0; mi < MB; mi++)
#pragma unroll
        for (int i = 0; i < ND; i++)
            o[mi][i][0] = o[mi][i][1] = o[mi][i][2] = o[mi][i][3] = 0.f;
    float m[MB][2], l[MB][2]; // running max and (this thread's partial) sum per row
#pragma unroll
    for (int mi = 0; mi < MB; mi++)
        m[mi][0] = m[mi][1] = -INFINITY, l[mi][0] = l[mi][1] = 0.f;

    // S of the tile in stage st (NB n-blocks per m16 row block) masked where needed: key at
    // column c is visible to a row iff kpos[c] <= its position
    auto mask = [&](float (*s)[NB][4], int st) {
        if (!flags[2 * st])
            return;
        const int32_t *kp = kpos + st * BK;
#pragma unroll
        for (int mi = 0; mi < MB; mi++) {
            const int q0 = qpos[row0(mi) + g], q1 = qpos[row0(mi) + g + 8];
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                int2 p = *(const int2 *)&kp[nb * 8 + 2 * tig];
                s[mi][nb][0] = p.x <= q0 ? s[mi][nb][0] : -INFINITY;
                s[mi][nb][1] = p.y <= q0 ? s[mi][nb][1] : -INFINITY;
                s[mi][nb][2] = p.x <= q1 ? s[mi][nb][2] : -INFINITY;
                s[mi][nb][3] = p.y <= q1 ? s[mi][nb][3] : -INFINITY;
            }
        }
    };
    // Online softmax over a tile's scores (a row's BK scores lie in the 4 lanes of a
    // quad): the new row maxima into m, l scaled; base = the new max times log2(e) (0 for
    // a row that has seen nothing), al = the factor O must be scaled by.
    auto softmax = [&](float (*s)[NB][4], float (*base)[2], float (*al)[2]) {
#pragma unroll
        for (int mi = 0; mi < MB; mi++) {
            float mx0 = m[mi][0], mx1 = m[mi][1];
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                mx0 = fmaxf(mx0, fmaxf(s[mi][nb][0], s[mi][nb][1]));
                mx1 = fmaxf(mx1, fmaxf(s[mi][nb][2], s[mi][nb][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            // max -inf (nothing seen yet): subtract 0 so -inf maps to 0, not NaN
            base[mi][0] = mx0 == -INFINITY ? 0.f : mx0 * LOG2E;
            base[mi][1] = mx1 == -INFINITY ? 0.f : mx1 * LOG2E;
            al[mi][0] = ex2(m[mi][0] * LOG2E - base[mi][0]);
            al[mi][1] = ex2(m[mi][1] * LOG2E - base[mi][1]);
            m[mi][0] = mx0, m[mi][1] = mx1;
            l[mi][0] *= al[mi][0], l[mi][1] *= al[mi][1];
        }
    };
    auto rescale = [&](const float (*al)[2]) {
#pragma unroll
        for (int mi = 0; mi < MB; mi++)
#pragma unroll
            for (int i = 0; i < ND; i++) {
                o[mi][i][0] *= al[mi][0], o[mi][i][1] *= al[mi][0];
                o[mi][i][2] *= al[mi][1], o[mi][i][3] *= al[mi][1];
            }
    };
    // P for keys 16kk .. +15 of m16 block mi: S n-blocks 2kk and 2kk + 1, whose
    // accumulators are P's bf16 A fragment once exponentiated; adds them to l
    auto p_frag = [&](float (*s)[NB][4], const float (*base)[2], int mi, int kk, uint32_t *pa) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const float *sv = s[mi][2 * kk + half];
            __nv_bfloat162 u = __floats2bfloat162_rn(ex2(fmaf(sv[0], LOG2E, -base[mi][0])),
                                                     ex2(fmaf(sv[1], LOG2E, -base[mi][0])));
            __nv_bfloat162 w = __floats2bfloat162_rn(ex2(fmaf(sv[2], LOG2E, -base[mi][1])),
                                                     ex2(fmaf(sv[3], LOG2E, -base[mi][1])));
            float2 fu = __bfloat1622float2(u), fw = __bfloat1622float2(w);
            l[mi][0] += fu.x + fu.y, l[mi][1] += fw.x + fw.y; // the P the MMA uses
            pa[half * 2] = bf16x2_bits(u);
            pa[half * 2 + 1] = bf16x2_bits(w);
        }
    };
    int cur = next_tile(), st = 0;
    if (cur >= 0)
        issue(cur, 0);
    while (cur >= 0) {
        const int nxt = next_tile();
        if (nxt >= 0) {
            issue(nxt, st ^ 1);
            cp_async_wait<1>();
        } else
            cp_async_wait<0>();
        __syncthreads(); // stage st is complete for every thread

        // a tile whose smallest position is beyond all of this warp's rows is all
        // masked for them: its math would leave m, l and O as they are
        if (flags[2 * st + 1] <= rows_max()) {
            const __nv_bfloat16 *kb = Ks + st * BK * D, *vb = Vs + st * BK * D;
            // S = Q K^T (32 x 64 per warp)
            float s[MB][NB][4], base[MB][2], al[MB][2];
#pragma unroll
            for (int mi = 0; mi < MB; mi++)
#pragma unroll
                for (int i = 0; i < NB; i++)
                    s[mi][i][0] = s[mi][i][1] = s[mi][i][2] = s[mi][i][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                uint32_t qa[MB][4]; // rows mi*16 .. +15, channels kk*16 .. +15
#pragma unroll
                for (int mi = 0; mi < MB; mi++)
                    ldsm_x4(qa[mi], smem_u32(Qs + swz<D, BQ>(row0(mi) + (lane & 7) +
                                                                 ((lane >> 3) & 1) * 8,
                                                             kk * 2 + (lane >> 4))));
#pragma unroll
                for (int nb = 0; nb < BK / 16; nb++) {
                    uint32_t b[4]; // keys nb*16 .. +7 (b0, b1), +8 .. +15 (b2, b3)
                    ldsm_x4(b, smem_u32(kb + swz<D, BK>(nb * 16 + (lane & 7) +
                                                            (lane >> 4) * 8,
                                                        kk * 2 + ((lane >> 3) & 1))));
#pragma unroll
                    for (int mi = 0; mi < MB; mi++) {
                        mma_bf16(s[mi][2 * nb], qa[mi], b[0], b[1]);
                        mma_bf16(s[mi][2 * nb + 1], qa[mi], b[2], b[3]);
                    }
                }
            }
            mask(s, st);
            softmax(s, base, al);
            rescale(al);
            // O += P V, 16 keys at a time
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                uint32_t pa[MB][4];
#pragma unroll
                for (int mi = 0; mi < MB; mi++)
                    p_frag(s, base, mi, kk, pa[mi]);
#pragma unroll
                for (int nd = 0; nd < D / 16; nd++) {
                    uint32_t b[4]; // channels nd*16 .. +7 (b0, b1), +8 .. +15 (b2, b3)
                    ldsm_x4_trans(b, smem_u32(vb + swz<D, BK>(kk * 16 + (lane & 7) +
                                                                  ((lane >> 3) & 1) * 8,
                                                              nd * 2 + (lane >> 4))));
#pragma unroll
                    for (int mi = 0; mi < MB; mi++) {
                        mma_bf16(o[mi][2 * nd], pa[mi], b[0], b[1]);
                        mma_bf16(o[mi][2 * nd + 1], pa[mi], b[2], b[3]);
                    }
                }
            }
        }
        __syncthreads(); // stage st is free for the tile after next
        st ^= 1;
        cur = nxt;
    }

#pragma unroll
    for (int mi = 0; mi < MB; mi++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float sum = l[mi][hh];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
            const int r = row0(mi) + g + hh * 8;
            if (r < nq) {
                float *op = a.out + ((int64_t)(t_begin + r) * a.n_head + h) * D + 2 * tig;
#pragma unroll
                for (int i = 0; i < ND; i++)
                    *(float2 *)(op + i * 8) =
                        make_float2(o[mi][i][2 * hh] * inv, o[mi][i][2 * hh + 1] * inv);
            }
        }
}

template <int D> int launch(cudaStream_t st, const kw_cuda_prefill &a)
{
    using L = smem_layout<D>;
    static bool configured = false;
    if (!configured) {
        KW_CUDA_TRY(cudaFuncSetAttribute(prefill_kernel<D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)L::bytes));
        // two blocks per multiprocessor need most of it as shared memory
        KW_CUDA_TRY(cudaFuncSetAttribute(prefill_kernel<D>,
                                         cudaFuncAttributePreferredSharedMemoryCarveout,
                                         (int)cudaSharedmemCarveoutMaxShared));
        configured = true;
    }
    dim3 grid(a.n_items, a.n_head);
    prefill_kernel<D><<<grid, cfg::THREADS, L::bytes, st>>>(a);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

bool aligned(const void *p, uintptr_t n) { return ((uintptr_t)p & (n - 1)) == 0; }

} // namespace

extern "C" int kw_cuda_prefill_items(int n_seq, const int32_t *tok_off, int32_t *items)
{
    int n = 0;
    for (int s = 0; s < n_seq; s++)
        for (int q = 0; q < tok_off[s + 1] - tok_off[s]; q += BQ) {
            if (items)
                items[2 * n] = s, items[2 * n + 1] = q;
            n++;
        }
    return n;
}

extern "C" int kw_cuda_prefill_kernel_parse(const char *name)
{
    static const char *const names[] = {"auto", "mma", "wgmma", "cudnn"};
    for (int k = 0; name && k < (int)(sizeof names / sizeof names[0]); k++)
        if (!strcmp(name, names[k]))
            return k;
    return -1;
}

extern "C" int kw_cuda_prefill_kernel_runs(int kernel, int head_dim)
{
    if (head_dim != 64 && head_dim != 128)
        return 0;
    if (kernel == KW_CUDA_PREFILL_AUTO || kernel == KW_CUDA_PREFILL_MMA)
        return 1;
    if (kernel == KW_CUDA_PREFILL_WGMMA)
        return head_dim == 128 && kw__cuda_sm90a();
    if (kernel == KW_CUDA_PREFILL_CUDNN)
        return kw_cuda_cudnn_version(NULL, 0) > 0;
    return 0;
}

// AUTO's choice of cuDNN for a call over ordered rows: where every sequence has at least
// 2^22 query-key pairs (2048 x 2048, 512 x 8192). Below that kvweave's kernels are about
// as fast or faster (H200: 1024 x 1024, 169 against 141 TFLOP/s; 2048 x 2048, 258
// against 274; 512 x 8192, 374 against 453), and each new shape costs cuDNN a plan.
static bool cudnn_pays(const kw_cuda_prefill *a)
{
    for (int s = 0; s < a->n_seq; s++)
        if ((int64_t)(a->host_tok_off[s + 1] - a->host_tok_off[s]) * a->host_kv_len[s] <
            (int64_t)1 << 22)
            return false;
    return true;
}

extern "C" int kw_cuda_attn_prefill(void *stream, const kw_cuda_prefill *a)
{
    // page_tokens < 0xffff: a slot fits the uint16 token entries beside NO_SLOT
    if (!a || a->kv != KW_CUDA_KV_BF16 || a->page_tokens <= 0 || a->page_tokens >= NO_SLOT ||
        a->n_kv <= 0 || a->n_head <= 0 || a->n_head > 65535 || a->n_head % a->n_kv ||
        a->n_items < 0 || (a->head_dim != 64 && a->head_dim != 128) ||
        a->kernel < KW_CUDA_PREFILL_AUTO || a->kernel > KW_CUDA_PREFILL_CUDNN)
        return KW_EINVAL;
    if (a->n_items == 0)
        return KW_OK;
    // 16-byte cp.async rows and float4 Q loads; float2 output stores
    if (!a->q || !a->out || !a->q_pos || !a->tok_off || !a->row_ptr || !a->items ||
        !a->base[0] || !a->pos[0] || (a->pages ? !a->row_tokens : !a->spans) ||
        !aligned(a->q, 16) || !aligned(a->out, 8) || !aligned(a->base[0], 16) ||
        !aligned(a->base[1], 16))
        return KW_EINVAL;
    cudaStream_t st = (cudaStream_t)stream;
    const bool dense = a->pages && a->host_tok_off && a->host_kv_len;
    if (a->kernel == KW_CUDA_PREFILL_CUDNN && !dense)
        return KW_EINVAL;
    if (a->kernel == KW_CUDA_PREFILL_CUDNN ||
        (a->kernel == KW_CUDA_PREFILL_AUTO && dense && cudnn_pays(a))) {
        // AUTO falls back to the kernels below when cuDNN cannot run (nothing was queued)
        int rc = kw__cuda_prefill_cudnn(stream, a);
        if (rc != KW_ENOSYS || a->kernel == KW_CUDA_PREFILL_CUDNN)
            return rc;
    }
    const bool wg_ok = a->head_dim == 128 && kw__cuda_sm90a();
    if (a->kernel == KW_CUDA_PREFILL_WGMMA && !wg_ok)
        return KW_ENOSYS;
    if (a->kernel == KW_CUDA_PREFILL_WGMMA || (a->kernel == KW_CUDA_PREFILL_AUTO && wg_ok))
        return kw__cuda_prefill_ws(stream, a);
    if (a->head_dim == 128)
        return launch<128>(st, *a);
    return launch<64>(st, *a);
}
