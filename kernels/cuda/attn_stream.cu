// Decode attention over bf16 and int8 pages (the engine's): attn_stream_kernel. A block
// of 4 warps runs a work item (a range of one row's tokens). Tiles of the item's K rows,
// V rows and positions go through a cp.async pipeline of NS shared-memory stages, so the
// loads of the next tiles are in flight while this one is computed: decode is bound by
// reading the KV, and the loads must not wait on the math. The math runs on tensor cores
// with the row's query heads as the rows of the MMA tile (see the kernel). Rows come
// either as span lists (flattened per item into shared memory first) or, in table mode,
// as a page list and a length (a sequence's dense view: no list is built per token). Q
// and P are rounded to bf16 for the MMAs; accumulation, the softmax and the merge stay
// f32. Split rows are merged by attn_decode.cu's combine kernel.
#include <cfloat>
#include <cstdint>
#include <cuda_bf16.h>

#include "attn_decode_common.cuh"
#include "common.cuh"
#include "tc.cuh"

namespace {

__device__ __forceinline__ void cp_async4(void *dst, const void *src)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    return bf16x2_bits(__floats2bfloat162_rn(lo, hi)); // .x (low half) = lo
}

// c += A(16x16, rows 8..15 zero: a1 = a3 = 0) B(16x8), bf16 in, f32 accumulate
__device__ __forceinline__ void mma_top(float *c, uint32_t a0, uint32_t a2, uint32_t b0,
                                        uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}

// Tensor-core decode. The row's G <= 8 query heads are rows 0..G-1 of a 16-row MMA tile
// (rows G..15 zero), so S = Q K^T and O += P V run as m16n8k16 MMAs: per 16 tokens and
// head_dim 128, 16 MMAs for the scores and 16 for P V, where scalar code would spend
// 2 x G x 16 x 128 FMAs. A tile of TT = 64 tokens is 16 per warp; K fragments come from
// ldmatrix, V fragments from ldmatrix.trans, P stays in registers (the score
// accumulators repacked as the A fragment). Lane l holds head l / 4 and, per 8-token
// group, tokens 2 (l % 4) and 2 (l % 4) + 1.
//
// K and V rows sit in shared memory unpadded, their 16-byte chunks swizzled: chunk c of
// row r at chunk c ^ (r % 8) of the row (sw), so ldmatrix's eight rows fall in distinct
// banks. A copying warp's lanes take consecutive chunks of shared memory, each reading
// the pool chunk that belongs there (issue_tile): the copy of a 128-byte line of the pool
// then lands on one 128-byte line of shared memory in lane order, and the L2 serves each
// warp's 512 bytes as 4 requests of 4 sectors. With rows padded by 16 bytes instead
// (conflict-free too), a line landed across two lines of shared memory and the L2 was
// asked for 1.5 sectors per sector read from DRAM (ncu, H200, batch 8 at 32k: 50.6 M
// sectors in 22.1 M requests for 33.8 M from DRAM; now 33.8 M in 8.5 M), which held the
// kernel to 88.7% of the copy bandwidth at batch 8 / 128k (now 93.8%); with lanes in
// the pool's order and the swizzle on the shared-memory side, no two lanes of a line
// were adjacent in shared memory and it took 67.4 M sectors.
//
// Int8 pages (I8): a stage holds the tile's int8 K and V rows, positions and K and V
// scales; each warp turns its 16 rows of the landed stage into bf16 (exact: |q| <= 127
// needs 7 bits) in a tile of the bf16 layout above (cvt, one for the block), so the MMAs
// are the bf16 kernel's. The K scale multiplies the scores, the V scale the
// probabilities before P V (the softmax sum takes them unscaled). Int8 rows are 8 (D =
// 128) or 4 (D = 64) chunks of 16 bytes, swizzled by sw8 so that the 8 rows a quarter
// warp converts at once fall in distinct banks; copies go in shared-memory order as
// above. A tile is half the bytes, so there is one stage more.
template <int D, bool TABLE, bool I8 = false> struct stream_cfg {
    static constexpr int TT = 64;         // tokens per tile: 16 per warp
    static constexpr int NS = I8 ? 4 : 3; // stages: NS - 1 tiles in flight, one computed
    static constexpr size_t kv_bytes = (size_t)TT * D * (I8 ? 1 : 2);
    // K, V, positions (and with I8 the K and V scales)
    static constexpr size_t stage_bytes = 2 * kv_bytes + (size_t)TT * (I8 ? 12 : 4);
    static constexpr size_t cvt_bytes = I8 ? (size_t)2 * TT * D * 2 : 0; // bf16 K and V
    // table mode: a ring of NS tiles' K rows (page * 2P + slot), see stream_item
    static constexpr size_t bytes =
        NS * stage_bytes + cvt_bytes + (TABLE ? (size_t)NS * TT * 4 : sizeof(token_list));
    // element offset of chunk c (8 elements) of row r
    static __device__ __forceinline__ int sw(int r, int c)
    {
        return r * D + ((c ^ (r & 7)) << 3);
    }
    // byte offset of chunk c (16 int8 elements) of int8 row r: chunk c ^ swz8(r) of the row
    static __device__ __forceinline__ int swz8(int r) { return D == 128 ? r & 7 : (r >> 1) & 3; }
    static __device__ __forceinline__ int sw8(int r, int c)
    {
        return r * D + ((c ^ swz8(r)) << 4);
    }
};
static_assert(stream_cfg<128, true>::stage_bytes % 128 == 0 &&
                  stream_cfg<64, true>::stage_bytes % 128 == 0 &&
                  stream_cfg<128, true, true>::stage_bytes % 128 == 0 &&
                  stream_cfg<64, true, true>::stage_bytes % 128 == 0,
              "each stage starts on a 128-byte line");
// Two blocks per multiprocessor in both modes on an H100/H200 (228 KB of shared memory,
// 1 KB of it reserved per block): span mode at 104 KB, table mode at 100 KB. With 12 bytes
// per listed token (a 64-bit offset and a position) span mode fit only one, and the
// list's flattening could not overlap another block's copies.
static_assert(2 * (stream_cfg<128, false>::bytes + 1024) <= 228 * 1024 &&
                  2 * (stream_cfg<128, false, true>::bytes + 1024) <= 228 * 1024,
              "span-mode decode attention: two blocks per multiprocessor");
static_assert(2 * (stream_cfg<128, true>::bytes + 1024) <= 228 * 1024 &&
                  2 * (stream_cfg<128, true, true>::bytes + 1024) <= 228 * 1024,
              "table-mode decode attention: two blocks per multiprocessor");

// Table mode: the K row (page * 2P + slot, main pool) of token i of the item, read from
// the row's page list; threads < TT each find one token's row of a tile. The rows of the
// tiles in flight sit in a ring in shared memory (stream_item), so the copies read them as
// span mode reads its flattened list, and each page id is loaded once per token.
__device__ __forceinline__ uint32_t table_row(const int32_t *ptab, int P, int lp, int b0, int i,
                                              int n)
{
    if (i >= n)
        return 0;
    const int t = b0 + i;
    const int pg = ptab[lp >= 0 ? t >> lp : t / P];
    return (uint32_t)pg * 2 * P + (uint32_t)(lp >= 0 ? t & (P - 1) : t % P);
}

// Starts the copies of one tile (K rows, V rows, and in table mode positions) into its
// stage. Rows past the item's end are zero-filled: P V multiplies them by p = 0, and
// stale shared memory could hold NaNs. A thread copies one 16-byte chunk column of a row
// group, so a token's address is found once per pass (not per chunk), from the span
// list's rows or, in table mode, the ring's (table_row). lp = log2(P) when P is a power of two
// (shifts instead of divisions), else -1. This address work, not the math, is what
// bounds the kernel's issue rate.
template <int D, bool TABLE>
__device__ __forceinline__ void issue_tile(const kw_cuda_attn &a, unsigned char *stages,
                                           const token_list &tl, const uint32_t *ring,
                                           int n, int tile, int lp)
{
    using C = stream_cfg<D, TABLE>;
    constexpr int CH = D / 8;                  // 16-byte chunks per row
    constexpr int RPP = WARPS * 32 / CH;       // rows per pass
    constexpr int PASSES = C::TT / RPP;
    const int P = a.page_tokens;
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)(stages + (tile % C::NS) * C::stage_bytes);
    __nv_bfloat16 *Vs = Ks + C::TT * D;
    int32_t *ps = (int32_t *)(Vs + C::TT * D);
    const int i0 = tile * C::TT, c = threadIdx.x % CH, rg = threadIdx.x / CH;
    int64_t off[PASSES];
    int pool[PASSES];
#pragma unroll
    for (int p = 0; p < PASSES; p++) {
        const int i = i0 + p * RPP + rg;
        off[p] = 0, pool[p] = 0;
        if (i < n) {
            if constexpr (TABLE) {
                off[p] = (int64_t)ring[(tile % C::NS) * C::TT + p * RPP + rg] * D;
            } else {
                off[p] = (int64_t)tl.row[i] * D, pool[p] = tl.pool[i];
            }
        }
    }
#pragma unroll
    for (int p = 0; p < PASSES; p++) {
        const int tk = p * RPP + rg;
        const bool ok = i0 + tk < n;
        const int g = c ^ (tk & 7); // the pool chunk of shared-memory chunk c (stream_cfg)
        const __nv_bfloat16 *src = (const __nv_bfloat16 *)a.base[pool[p]] + off[p] + g * 8;
        cp_async16(smem_u32(Ks + C::sw(tk, g)), src, ok);
        cp_async16(smem_u32(Vs + C::sw(tk, g)), src + (ok ? (int64_t)P * D : 0), ok);
    }
    const int tk = threadIdx.x;
    if (tk < C::TT && i0 + tk < n) {
        if constexpr (TABLE)
            cp_async4(ps + tk, a.pos[0] + token_pos(ring[(tile % C::NS) * C::TT + tk], P, lp));
        else
            cp_async4(ps + tk, a.pos[tl.pool[i0 + tk]] + token_pos(tl.row[i0 + tk], P, lp));
    }
}

// The page of an int8 pool's token from its K row (page * 2P + slot).
__device__ __forceinline__ int64_t row_page(uint32_t row, int P, int lp)
{
    return lp >= 0 ? row >> (lp + 1) : row / (2 * P);
}

// issue_tile for int8 pages: K and V rows (chunks in sw8's order), and per token its
// position and its K and V scales (at the end of its page).
template <int D, bool TABLE>
__device__ __forceinline__ void issue_tile_i8(const kw_cuda_attn &a, unsigned char *stages,
                                              const token_list &tl, const uint32_t *ring,
                                              int n, int tile, int lp)
{
    using C = stream_cfg<D, TABLE, true>;
    constexpr int CH = D / 16;           // 16-byte chunks per row
    constexpr int RPP = WARPS * 32 / CH; // rows per pass
    constexpr int PASSES = C::TT / RPP;
    const int P = a.page_tokens;
    const int64_t pb = kw_i8_page_bytes(P, D);
    unsigned char *K8 = stages + (tile % C::NS) * C::stage_bytes, *V8 = K8 + C::kv_bytes;
    int32_t *ps = (int32_t *)(V8 + C::kv_bytes);
    float *ks = (float *)(ps + C::TT), *vs = ks + C::TT;
    const int i0 = tile * C::TT, c = threadIdx.x % CH, rg = threadIdx.x / CH;
    int64_t off[PASSES];
    int pool[PASSES];
#pragma unroll
    for (int p = 0; p < PASSES; p++) {
        const int i = i0 + p * RPP + rg;
        off[p] = 0, pool[p] = 0;
        if (i < n) {
            const uint32_t r = TABLE ? ring[(tile % C::NS) * C::TT + p * RPP + rg] : tl.row[i];
            const int64_t pg = row_page(r, P, lp);
            off[p] = pg * pb + (int64_t)(r - pg * 2 * P) * D;
            if constexpr (!TABLE)
                pool[p] = tl.pool[i];
        }
    }
#pragma unroll
    for (int p = 0; p < PASSES; p++) {
        const int tk = p * RPP + rg;
        const bool ok = i0 + tk < n;
        const int g = c ^ C::swz8(tk); // the pool chunk of shared-memory chunk c
        const unsigned char *src = (const unsigned char *)a.base[pool[p]] + off[p] + g * 16;
        cp_async16(smem_u32(K8 + C::sw8(tk, g)), src, ok);
        cp_async16(smem_u32(V8 + C::sw8(tk, g)), src + (ok ? (int64_t)P * D : 0), ok);
    }
    const int tk = threadIdx.x;
    if (tk < C::TT && i0 + tk < n) {
        const uint32_t r = TABLE ? ring[(tile % C::NS) * C::TT + tk] : tl.row[i0 + tk];
        const int64_t pg = row_page(r, P, lp);
        const int slot = (int)(r - pg * 2 * P), pl = TABLE ? 0 : tl.pool[i0 + tk];
        const float *sc = (const float *)((const unsigned char *)a.base[pl] + pg * pb +
                                          2 * (int64_t)P * D) + slot;
        cp_async4(ps + tk, a.pos[pl] + pg * P + slot);
        cp_async4(ks + tk, sc);
        cp_async4(vs + tk, sc + P);
    }
}

// Two int8 values as bf16x2: bytes 2k and 2k + 1 of w (each x + 128, x the int8 value)
// placed under the exponent of 2^23 make the f32 2^23 + 128 + x, from which subtracting
// 2^23 + 128 leaves x exactly; its upper half is its bf16 (x has at most 8 significant
// bits). Integer and add units only: the conversion units are a quarter as fast, and
// this runs on every K and V value read.
__device__ __forceinline__ uint32_t i8pair_bf16(uint32_t w, int k)
{
    const float lo = __uint_as_float(__byte_perm(w, 0x4b000000u, 0x7440 | (2 * k))) - 8388736.f;
    const float hi = __uint_as_float(__byte_perm(w, 0x4b000000u, 0x7441 | (2 * k))) - 8388736.f;
    return __byte_perm(__float_as_uint(lo), __float_as_uint(hi), 0x7632);
}

// A warp's 16 rows (r0 ..) of the landed int8 stage, K and V, into the bf16 tile cvt
// (sw's layout). Lanes 8q .. 8q + 7 take one chunk column of 8 consecutive rows, so both
// the int8 reads (sw8) and the bf16 writes (sw) of a quarter warp fall in distinct banks.
template <int D, bool TABLE>
__device__ __forceinline__ void convert_rows(const unsigned char *stg, __nv_bfloat16 *cvt,
                                             int r0, int lane)
{
    using C = stream_cfg<D, TABLE, true>;
    constexpr int CH = D / 16, U = 2 * 16 * CH / 32; // chunks per row; per lane
#pragma unroll
    for (int k = 0; k < U; k++) {
        const int u = lane + 32 * k, i = u & 7, c = (u >> 3) % CH, rh = (u >> 3) / CH % 2,
                  w = u / (16 * CH);
        const int r = r0 + rh * 8 + i;
        const uint4 raw = *(const uint4 *)(stg + w * C::kv_bytes + C::sw8(r, c));
        const uint32_t x0 = raw.x ^ 0x80808080u, x1 = raw.y ^ 0x80808080u,
                       x2 = raw.z ^ 0x80808080u, x3 = raw.w ^ 0x80808080u;
        const uint4 lo = make_uint4(i8pair_bf16(x0, 0), i8pair_bf16(x0, 1), i8pair_bf16(x1, 0),
                                    i8pair_bf16(x1, 1));
        const uint4 hi = make_uint4(i8pair_bf16(x2, 0), i8pair_bf16(x2, 1), i8pair_bf16(x3, 0),
                                    i8pair_bf16(x3, 1));
        __nv_bfloat16 *dst = cvt + (size_t)w * C::TT * D;
        *(uint4 *)(dst + C::sw(r, 2 * c)) = lo;
        *(uint4 *)(dst + C::sw(r, 2 * c + 1)) = hi;
    }
}

template <int D, bool TABLE, bool I8>
__device__ __forceinline__ void issue(const kw_cuda_attn &a, unsigned char *stages,
                                      const token_list &tl, const uint32_t *ring, int n,
                                      int tile, int lp)
{
    if constexpr (I8)
        issue_tile_i8<D, TABLE>(a, stages, tl, ring, n, tile, lp);
    else
        issue_tile<D, TABLE>(a, stages, tl, ring, n, tile, lp);
}

// One work item of the tensor-core decode kernel (below).
template <int D, int G, bool TABLE, bool I8>
__device__ __forceinline__ void stream_item(const kw_cuda_attn &a, unsigned char *sm, int item)
{
    using C = stream_cfg<D, TABLE, I8>;
    constexpr int KS = D / 16, NT = D / 8; // k-steps of the scores, n-tiles of the output
    unsigned char *stages = sm;
    token_list &tl = *(token_list *)(stages + C::NS * C::stage_bytes + C::cvt_bytes); // spans
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t4 = lane % 4; // fragment row (head) and column pair
    const int32_t *it = a.items + 4 * item;
    const int row = it[0], b0 = it[1], b1 = it[2], part = it[3];
    const int32_t qrow = a.q_row[row], qpos = a.q_pos[row];
    const float sc = a.scale * LOG2E;
    // Q as A fragments (scaled into log2 units, bf16), rows >= G zero
    uint32_t qa[KS][2];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        qa[kk][0] = qa[kk][1] = 0u;
        if (g < G) {
            const float *qr = a.q + (size_t)(qrow + g) * D + kk * 16 + 2 * t4;
            qa[kk][0] = pack_bf16(qr[0] * sc, qr[1] * sc);
            qa[kk][1] = pack_bf16(qr[8] * sc, qr[9] * sc);
        }
    }
    int n;
    if constexpr (TABLE) {
        n = b1 - b0;
    } else {
        flatten_spans(a, b0, b1, tl); // ends with __syncthreads
        n = tl.n;
    }
    const int32_t *ptab = TABLE ? a.pages + a.row_ptr[row] : nullptr;
    const int ntiles = (n + C::TT - 1) / C::TT;
    const int P = a.page_tokens, lp = (P & (P - 1)) == 0 ? __ffs(P) - 1 : -1;

    float o[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m_run = -FLT_MAX, l_run = 0.f; // l_run: this lane's columns only, summed at the end
    // table mode: ring[(t % NS) * TT + k] is the row of token k of tile t, for the tiles
    // whose copies are still to be issued. The first NS tiles' rows are found together
    // (one round trip), then each iteration loads tile + NS's row into `next` and stores
    // it in the ring the iteration after, so the load's latency hides behind a tile's math.
    uint32_t *ring =
        TABLE ? (uint32_t *)(stages + C::NS * C::stage_bytes + C::cvt_bytes) : nullptr;
    uint32_t next = 0;
    if constexpr (TABLE) {
        if (threadIdx.x < C::TT) {
            uint32_t r[C::NS + 1];
#pragma unroll
            for (int k = 0; k <= C::NS; k++)
                r[k] = table_row(ptab, P, lp, b0, k * C::TT + threadIdx.x, n);
#pragma unroll
            for (int k = 0; k < C::NS; k++)
                ring[k * C::TT + threadIdx.x] = r[k];
            next = r[C::NS];
        }
        __syncthreads();
    }
#pragma unroll
    for (int s = 0; s < C::NS - 1; s++) {
        if (s < ntiles)
            issue<D, TABLE, I8>(a, stages, tl, ring, n, s, lp);
        cp_async_commit();
    }
    for (int tile = 0; tile < ntiles; tile++) {
        if (tile + C::NS - 1 < ntiles)
            issue<D, TABLE, I8>(a, stages, tl, ring, n, tile + C::NS - 1, lp);
        if constexpr (TABLE) {
            // tile's slot was last read when its copies were issued, NS - 1 iterations
            // ago; the syncs below order this store before the next iteration's reads
            if (threadIdx.x < C::TT) {
                ring[(tile % C::NS) * C::TT + threadIdx.x] = next;
                next = table_row(ptab, P, lp, b0, (tile + C::NS + 1) * C::TT + threadIdx.x, n);
            }
        }
        cp_async_commit();
        cp_async_wait<C::NS - 1>(); // this thread's copies of `tile` have landed
        __syncthreads();            // everyone's have
        const unsigned char *stg = stages + (tile % C::NS) * C::stage_bytes;
        const __nv_bfloat16 *Ks, *Vs;
        const int32_t *ps;
        const float *kscale = nullptr, *vscale = nullptr; // int8 pages
        if constexpr (I8) {
            Ks = (const __nv_bfloat16 *)(stages + C::NS * C::stage_bytes), Vs = Ks + C::TT * D;
            ps = (const int32_t *)(stg + 2 * C::kv_bytes);
            kscale = (const float *)(ps + C::TT), vscale = kscale + C::TT;
        } else {
            Ks = (const __nv_bfloat16 *)stg, Vs = Ks + C::TT * D;
            ps = (const int32_t *)(Vs + C::TT * D);
        }
        const int r0 = warp * 16, i0 = tile * C::TT + r0; // this warp's 16 rows
        const int nt = min(16, n - i0);
        if (nt > 0) {
            if constexpr (I8) { // this warp's rows as bf16, read by this warp alone
                convert_rows<D, TABLE>(stg, const_cast<__nv_bfloat16 *>(Ks), r0, lane);
                __syncwarp();
            }
            float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
            // ldmatrix rows: lane l gives row r0 + l % 8 + 8 (l / 16), chunk 2 kk + (l / 8) % 2
            const int kr = r0 + (lane & 7) + ((lane >> 4) << 3), kc = (lane >> 3) & 1;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t b[4];
                ldsm_x4(b, smem_u32(Ks + C::sw(kr, 2 * kk + kc)));
                mma_top(s[0], qa[kk][0], qa[kk][1], b[0], b[1]);
                mma_top(s[1], qa[kk][0], qa[kk][1], b[2], b[3]);
            }
            bool live[2][2];
            float mx = -FLT_MAX;
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int tk = 8 * j + 2 * t4 + e;
                    bool ok = tk < nt;
                    if (ok)
                        ok = ps[r0 + tk] <= qpos;
                    live[j][e] = ok;
                    if (ok) {
                        if constexpr (I8)
                            s[j][e] *= kscale[r0 + tk];
                        mx = fmaxf(mx, s[j][e]);
                    }
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mn = fmaxf(m_run, mx), corr = exp2f(m_run - mn);
            float p[2][2], ls = 0.f;
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    p[j][e] = live[j][e] ? exp2f(s[j][e] - mn) : 0.f;
                    ls += p[j][e];
                }
            l_run = l_run * corr + ls;
            m_run = mn;
#pragma unroll
            for (int j = 0; j < NT; j++)
                o[j][0] *= corr, o[j][1] *= corr;
            uint32_t pa0, pa2;
            if constexpr (I8) { // the V scales go into the probabilities
                float pv[2][2];
#pragma unroll
                for (int j = 0; j < 2; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        pv[j][e] = live[j][e] ? p[j][e] * vscale[r0 + 8 * j + 2 * t4 + e] : 0.f;
                pa0 = pack_bf16(pv[0][0], pv[0][1]), pa2 = pack_bf16(pv[1][0], pv[1][1]);
            } else {
                pa0 = pack_bf16(p[0][0], p[0][1]), pa2 = pack_bf16(p[1][0], p[1][1]);
            }
            // ldmatrix.trans rows: lane l gives row r0 + l % 16, chunk j + l / 16
            const int vr = r0 + (lane & 15), vc = lane >> 4;
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                uint32_t b[4];
                ldsm_x4_trans(b, smem_u32(Vs + C::sw(vr, j + vc)));
                mma_top(o[j], pa0, pa2, b[0], b[1]);
                mma_top(o[j + 1], pa0, pa2, b[2], b[3]);
            }
        }
        __syncthreads(); // the stage is refilled by the next iteration's issue
    }
    cp_async_wait<0>();
    __syncthreads();
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);

    // merge the warps' (max, sum, acc) per head through shared memory (over the stages)
    float *mg = (float *)stages; // (WARPS, G, D + 2)
    if (g < G) {
        float *dst = mg + ((size_t)warp * G + g) * (D + 2);
#pragma unroll
        for (int j = 0; j < NT; j++)
            dst[2 + j * 8 + 2 * t4] = o[j][0], dst[2 + j * 8 + 2 * t4 + 1] = o[j][1];
        if (t4 == 0)
            dst[0] = m_run, dst[1] = l_run;
    }
    __syncthreads();
    merge_write<D, G>(a, mg, part, qrow);
}

// A block per item; with live_items (a fixed grid for CUDA graphs) at most one wave of
// resident blocks, each taking items blockIdx.x, + gridDim.x, ... below the live count.
template <int D, int G, bool TABLE, bool I8>
__global__ void __launch_bounds__(WARPS * 32) attn_stream_kernel(const kw_cuda_attn a)
{
    extern __shared__ __align__(16) unsigned char sm[];
    kw_grid_wait();
    kw_grid_dependents();
    const int n = a.live_items ? *a.live_items : a.n_items;
    for (int item = blockIdx.x; item < n; item += gridDim.x) {
        stream_item<D, G, TABLE, I8>(a, sm, item);
        __syncthreads(); // the merge read shared memory that the next item's copies refill
    }
}

// Configures one instance of the kernel (its shared memory) once and returns the blocks
// of it the device holds at a time (multiprocessors x blocks per multiprocessor), or a
// negative code.
template <int D, int G, bool TABLE, bool I8> int stream_resident()
{
    using C = stream_cfg<D, TABLE, I8>;
    static int resident = 0; // the engine launches from one thread, on one device
    if (!resident) {
        KW_CUDA_TRY(cudaFuncSetAttribute(attn_stream_kernel<D, G, TABLE, I8>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)C::bytes));
        int dev = 0, sms = 0, per = 0;
        KW_CUDA_TRY(cudaGetDevice(&dev));
        KW_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        KW_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per, attn_stream_kernel<D, G, TABLE, I8>, WARPS * 32, C::bytes));
        resident = sms * (per > 0 ? per : 1);
    }
    return resident;
}

template <int D, int G, bool TABLE, bool I8>
int launch_stream(cudaStream_t st, const kw_cuda_attn &a)
{
    using C = stream_cfg<D, TABLE, I8>;
    const int resident = stream_resident<D, G, TABLE, I8>();
    if (resident < 0)
        return resident;
    const int grid = a.live_items && a.n_items > resident ? resident : a.n_items;
    KW_CUDA_TRY(kw_launch(attn_stream_kernel<D, G, TABLE, I8>, grid, WARPS * 32, C::bytes, st, a));
    return KW_OK;
}

// The G of the call's rows, and table mode or span lists.
template <int D, bool I8> int stream_g(cudaStream_t st, const kw_cuda_attn &a)
{
    const bool t = a.pages != nullptr;
    switch (a.g_per_row) {
    case 1: return t ? launch_stream<D, 1, true, I8>(st, a) : launch_stream<D, 1, false, I8>(st, a);
    case 2: return t ? launch_stream<D, 2, true, I8>(st, a) : launch_stream<D, 2, false, I8>(st, a);
    case 4: return t ? launch_stream<D, 4, true, I8>(st, a) : launch_stream<D, 4, false, I8>(st, a);
    case 8: return t ? launch_stream<D, 8, true, I8>(st, a) : launch_stream<D, 8, false, I8>(st, a);
    default: return KW_EINVAL;
    }
}

} // namespace

int kw__attn_stream(cudaStream_t st, const kw_cuda_attn &a)
{
    const bool i8 = a.kv == KW_CUDA_KV_I8;
    if (a.head_dim == 128)
        return i8 ? stream_g<128, true>(st, a) : stream_g<128, false>(st, a);
    if (a.head_dim == 64)
        return i8 ? stream_g<64, true>(st, a) : stream_g<64, false>(st, a);
    return KW_EINVAL;
}

int kw__attn_stream_slots(int head_dim, bool i8)
{
    // the table-mode G = 4 instance: every G and span mode take the same threads and
    // (give or take the span list) the same shared memory
    if (head_dim == 128)
        return i8 ? stream_resident<128, 4, true, true>() : stream_resident<128, 4, true, false>();
    if (head_dim == 64)
        return i8 ? stream_resident<64, 4, true, true>() : stream_resident<64, 4, true, false>();
    return KW_EINVAL;
}
