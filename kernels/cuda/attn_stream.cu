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
#include <type_traits>

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
// scales. Each lane builds its MMA fragments straight from the landed int8 rows in
// registers, as f16 (an int8 value is exact in f16: a byte under the exponent of 1024
// makes 1024 + 128 + x, and one f16x2 subtraction per two values leaves x), and the MMAs
// run on f16 (int8_frag_k, int8_frag_v). For that, both MMAs take their dimensions in an
// order of their own, which the dot products and sums do not see:
//  - S = Q K^T: lane t4's four head dimensions of k-step kk are (D / 4) t4 + 4 kk + 0..3
//    (Q packed the same way), so a lane reads its K row's D / 4 bytes as 16-byte words;
//  - O += P V: column g of n-tile 4q + m is head dimension 32q + 4g + m, so a lane reads
//    4 bytes from each of its four token rows per four n-tiles; the output is written
//    back in head-dimension order at the end.
// The K scale multiplies the scores. The V scale goes into the probabilities, divided by
// the largest V scale the warp has seen (vref, so f16 P stays within [0, 1]; O is scaled
// down when vref grows and multiplied by it at the end); the softmax sum takes them
// unscaled. Int8 rows are 8 (D = 128) or 4 (D = 64) chunks of 16 bytes, swizzled by sw,
// so at D = 128 a warp's K and V reads fall in distinct banks (at D = 64 the V reads are
// 2-way); copies go in shared-memory order as above. A tile is half the bytes, so there
// is one stage more, and with no bf16 copy of the tile three blocks fit a multiprocessor.
// Measured before this (H200, b8 / 32k, ncu): turning each stage into a bf16 tile in
// shared memory for ldmatrix took twice the bf16 kernel's instructions, with two blocks
// per multiprocessor, and ran slower than bf16 pages (0.289 against 0.254 ms).
template <int D, bool TABLE, bool I8 = false> struct stream_cfg {
    static constexpr int TT = 64;         // tokens per tile: 16 per warp
    static constexpr int NS = I8 ? 4 : 3; // stages: NS - 1 tiles in flight, one computed
    static constexpr size_t kv_bytes = (size_t)TT * D * (I8 ? 1 : 2);
    // K, V, positions (and with I8 the K and V scales)
    static constexpr size_t stage_bytes = 2 * kv_bytes + (size_t)TT * (I8 ? 12 : 4);
    // table mode: a ring of NS tiles' K rows (page * 2P + slot), see stream_item
    static constexpr size_t bytes =
        NS * stage_bytes + (TABLE ? (size_t)NS * TT * 4 : sizeof(token_list));
    using T = std::conditional_t<I8, unsigned char, __nv_bfloat16>; // a page's element
    static constexpr int CS = I8 ? 4 : 3; // log2 of the elements in a 16-byte chunk
    // chunk c (16 bytes) of row r sits at chunk c ^ swz(r) of the row: bf16 rows of 16 or
    // 8 chunks by r % 8, int8 rows of 8 (D = 128) by r % 8 and of 4 (D = 64) by r / 2 % 4
    static __device__ __forceinline__ int swz(int r)
    {
        return !I8 || D == 128 ? r & 7 : (r >> 1) & 3;
    }
    // element offset of chunk c of row r
    static __device__ __forceinline__ int sw(int r, int c)
    {
        return r * D + ((c ^ swz(r)) << CS);
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
// int8 pages: three (the registers allow it too: at most 168 per thread)
static_assert(3 * (stream_cfg<128, false, true>::bytes + 1024) <= 228 * 1024 &&
                  3 * (stream_cfg<128, true, true>::bytes + 1024) <= 228 * 1024,
              "int8 decode attention: three blocks per multiprocessor");

// Which copies an issue of a tile makes (kw_cuda_attn.early): K and V rows of the item's
// tokens lo .. hi - 1, zeros for the rows at or past hi when fill (the item's end: P V
// multiplies them by p = 0, and stale shared memory could hold NaNs), and the tokens'
// positions (and int8 scales) when meta. A whole tile is {0, n, true, true}; before the
// wait for the kernel ahead, {0, e, false, false} copies only rows it does not write; after
// it, {e, n, true, true} copies the rest. Rows are copied L2-only (cp.async.cg), so rows
// copied early are never stale; positions and scales go through L1 (4-byte cp.async), so
// they are copied only after the wait.
struct tile_part {
    int lo, hi;
    bool fill, meta;
    __device__ __forceinline__ bool copies(int i) const { return i >= lo && i < hi; }
    __device__ __forceinline__ bool fills(int i) const { return fill && i >= hi; }
};

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

// The page of an int8 pool's token from its K row (page * 2P + slot).
__device__ __forceinline__ int64_t row_page(uint32_t row, int P, int lp)
{
    return lp >= 0 ? row >> (lp + 1) : row / (2 * P);
}

// Starts the copies of one tile into its stage: K and V rows (their 16-byte chunks in the
// stage's swizzle, stream_cfg::sw), and with tp.meta per token its position and, on int8
// pages, its K and V scales (at the end of its page). tp says which rows are copied and
// which zero-filled (tile_part). A thread copies one 16-byte chunk column of a row group,
// so a token's address is found once per pass (not per chunk), from the span list's rows
// or, in table mode, the ring's (table_row). lp = log2(P) when P is a power of two
// (shifts instead of divisions), else -1. This address work, not the math, is what
// bounds the kernel's issue rate.
template <int D, bool TABLE, bool I8>
__device__ __forceinline__ void issue_tile(const kw_cuda_attn &a, unsigned char *stages,
                                           const token_list &tl, const uint32_t *ring,
                                           int n, int tile, int lp, const tile_part &tp)
{
    using C = stream_cfg<D, TABLE, I8>;
    using T = typename C::T;
    constexpr int CH = D >> C::CS;       // 16-byte chunks per row
    constexpr int RPP = WARPS * 32 / CH; // rows per pass
    constexpr int PASSES = C::TT / RPP;
    const int P = a.page_tokens;
    const int64_t pb = kw_i8_page_bytes(P, D); // int8 pages
    T *Ks = (T *)(stages + (tile % C::NS) * C::stage_bytes);
    T *Vs = Ks + C::TT * D;
    int32_t *ps = (int32_t *)(Vs + C::TT * D);
    const int i0 = tile * C::TT, c = threadIdx.x % CH, rg = threadIdx.x / CH;
    int64_t off[PASSES]; // elements into the pool
    int pool[PASSES];
#pragma unroll
    for (int p = 0; p < PASSES; p++) {
        const int i = i0 + p * RPP + rg;
        off[p] = 0, pool[p] = 0;
        if (i < n) {
            const uint32_t r = TABLE ? ring[(tile % C::NS) * C::TT + p * RPP + rg] : tl.row[i];
            if constexpr (I8) {
                const int64_t pg = row_page(r, P, lp);
                off[p] = pg * pb + (int64_t)(r - pg * 2 * P) * D;
            } else {
                off[p] = (int64_t)r * D;
            }
            if constexpr (!TABLE)
                pool[p] = tl.pool[i];
        }
    }
#pragma unroll
    for (int p = 0; p < PASSES; p++) {
        const int tk = p * RPP + rg;
        const bool ok = tp.copies(i0 + tk);
        if (!ok && !tp.fills(i0 + tk))
            continue;
        const int g = c ^ C::swz(tk); // the pool chunk of shared-memory chunk c
        const T *src = (const T *)a.base[pool[p]] + off[p] + (g << C::CS);
        cp_async16(smem_u32(Ks + C::sw(tk, g)), src, ok);
        cp_async16(smem_u32(Vs + C::sw(tk, g)), src + (ok ? (int64_t)P * D : 0), ok);
    }
    const int tk = threadIdx.x;
    if (tp.meta && tk < C::TT && i0 + tk < n) {
        const uint32_t r = TABLE ? ring[(tile % C::NS) * C::TT + tk] : tl.row[i0 + tk];
        if constexpr (I8) {
            float *ks = (float *)(ps + C::TT), *vs = ks + C::TT;
            const int64_t pg = row_page(r, P, lp);
            const int slot = (int)(r - pg * 2 * P), pl = TABLE ? 0 : tl.pool[i0 + tk];
            const float *sc = (const float *)((const unsigned char *)a.base[pl] + pg * pb +
                                              2 * (int64_t)P * D) + slot;
            cp_async4(ps + tk, a.pos[pl] + pg * P + slot);
            cp_async4(ks + tk, sc);
            cp_async4(vs + tk, sc + P);
        } else {
            cp_async4(ps + tk, a.pos[TABLE ? 0 : tl.pool[i0 + tk]] + token_pos(r, P, lp));
        }
    }
}

__device__ __forceinline__ uint32_t pack_f16(float lo, float hi)
{
    uint32_t r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo)); // lo in the low half
    return r;
}

// mma_top on f16 inputs (int8 pages)
__device__ __forceinline__ void mma_top_f16(float *c, uint32_t a0, uint32_t a2, uint32_t b0,
                                            uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}

// Two bytes of u (each x ^ 0x80 = x + 128, x an int8 value; sel 0x4140: bytes 0 and 1,
// 0x4342: bytes 2 and 3) as f16x2, exactly: under the exponent of 1024 (0x64) a byte
// makes 1024 + 128 + x, from which subtracting 1152 (0x6480) leaves x.
__device__ __forceinline__ uint32_t i8pair_f16(uint32_t u, uint32_t sel)
{
    uint32_t r;
    asm("sub.rn.f16x2 %0, %1, %2;\n"
        : "=r"(r)
        : "r"(__byte_perm(u, 0x64646464u, sel)), "r"(0x64806480u));
    return r;
}

// int8 pages: the K fragments (b0, b1 of each k-step) of token row r for lane t4: bytes
// (D / 4) t4 .. of the row, 4 per k-step (stream_cfg's comment on I8)
template <int D, bool TABLE>
__device__ __forceinline__ void int8_frag_k(const unsigned char *K8, int r, int t4,
                                            uint32_t (&b)[D / 16][2])
{
    using C = stream_cfg<D, TABLE, true>;
    constexpr int KS = D / 16, W = KS / 4; // k-steps; 16-byte words per lane
#pragma unroll
    for (int c = 0; c < W; c++) {
        const uint4 x = *(const uint4 *)(K8 + C::sw(r, W * t4 + c));
        const uint32_t w[4] = {x.x ^ 0x80808080u, x.y ^ 0x80808080u, x.z ^ 0x80808080u,
                               x.w ^ 0x80808080u};
#pragma unroll
        for (int k = 0; k < 4; k++)
            b[4 * c + k][0] = i8pair_f16(w[k], 0x4140), b[4 * c + k][1] = i8pair_f16(w[k], 0x4342);
    }
}

// int8 pages: the V fragments of n-tiles 4q .. 4q + 3 for lane (g, t4) of the warp whose
// rows start at r0: 4 bytes (head dimensions 32q + 4g + m, m the n-tile's) of each of the
// token rows r0 + 2 t4 + {0, 1, 8, 9}, paired per dimension (b0: rows + 0 and + 1, b1:
// rows + 8 and + 9)
template <int D, bool TABLE>
__device__ __forceinline__ void int8_frag_v(const unsigned char *V8, int r0, int g, int t4,
                                            int q, uint32_t (&b)[4][2])
{
    using C = stream_cfg<D, TABLE, true>;
    const int cb = 2 * q + (g >> 2), wo = 4 * (g & 3);
    uint32_t w[4];
#pragma unroll
    for (int e = 0; e < 4; e++)
        w[e] = *(const uint32_t *)(V8 + C::sw(r0 + 2 * t4 + (e & 1) + 8 * (e >> 1), cb) + wo);
    const uint32_t lo01 = __byte_perm(w[0], w[1], 0x5140) ^ 0x80808080u, // dims m = 0, 1
        hi01 = __byte_perm(w[0], w[1], 0x7362) ^ 0x80808080u,            // m = 2, 3
        lo89 = __byte_perm(w[2], w[3], 0x5140) ^ 0x80808080u,
                   hi89 = __byte_perm(w[2], w[3], 0x7362) ^ 0x80808080u;
    b[0][0] = i8pair_f16(lo01, 0x4140), b[0][1] = i8pair_f16(lo89, 0x4140);
    b[1][0] = i8pair_f16(lo01, 0x4342), b[1][1] = i8pair_f16(lo89, 0x4342);
    b[2][0] = i8pair_f16(hi01, 0x4140), b[2][1] = i8pair_f16(hi89, 0x4140);
    b[3][0] = i8pair_f16(hi01, 0x4342), b[3][1] = i8pair_f16(hi89, 0x4342);
}

// The start of a work item: its row, first token and part, its token count n, and in
// table mode the ring of its first tiles' K rows (see stream_item) with the rows of tile
// NS in `next` (threads < TT); span mode flattens the item's spans. Reads only the plan
// and the page table or span list.
struct item_head {
    int row, b0, part, n;
    uint32_t next;
};

template <int D, bool TABLE, bool I8>
__device__ __forceinline__ item_head item_begin(const kw_cuda_attn &a, unsigned char *sm,
                                                int item)
{
    using C = stream_cfg<D, TABLE, I8>;
    const int32_t *it = a.items + 4 * item;
    item_head h;
    h.row = it[0], h.b0 = it[1], h.part = it[3], h.next = 0;
    const int b1 = it[2];
    if constexpr (TABLE) {
        h.n = b1 - h.b0;
        const int32_t *ptab = a.pages + a.row_ptr[h.row];
        const int P = a.page_tokens, lp = (P & (P - 1)) == 0 ? __ffs(P) - 1 : -1;
        uint32_t *ring = (uint32_t *)(sm + C::NS * C::stage_bytes);
        if (threadIdx.x < C::TT) {
            uint32_t r[C::NS + 1];
#pragma unroll
            for (int k = 0; k <= C::NS; k++)
                r[k] = table_row(ptab, P, lp, h.b0, k * C::TT + threadIdx.x, h.n);
#pragma unroll
            for (int k = 0; k < C::NS; k++)
                ring[k * C::TT + threadIdx.x] = r[k];
            h.next = r[C::NS];
        }
        __syncthreads();
    } else {
        token_list &tl = *(token_list *)(sm + C::NS * C::stage_bytes);
        flatten_spans(a, h.b0, b1, tl); // ends with __syncthreads
        h.n = tl.n;
    }
    return h;
}

// One work item of the tensor-core decode kernel (below). began: the kernel began the item
// before waiting for the kernel ahead (kw_cuda_attn.early), its head is pre, and the K and
// V rows of its tokens below e in its first NS - 1 tiles are issued (uncommitted).
template <int D, int G, bool TABLE, bool I8>
__device__ __forceinline__ void stream_item(const kw_cuda_attn &a, unsigned char *sm, int item,
                                            bool began, item_head pre, int e)
{
    using C = stream_cfg<D, TABLE, I8>;
    constexpr int KS = D / 16, NT = D / 8; // k-steps of the scores, n-tiles of the output
    unsigned char *stages = sm;
    token_list &tl = *(token_list *)(stages + C::NS * C::stage_bytes); // spans
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t4 = lane % 4; // fragment row (head) and column pair
    const item_head h = began ? pre : item_begin<D, TABLE, I8>(a, sm, item);
    const int row = h.row, b0 = h.b0, part = h.part, n = h.n;
    const int32_t *ptab = TABLE ? a.pages + a.row_ptr[row] : nullptr;
    const int ntiles = (n + C::TT - 1) / C::TT;
    const int P = a.page_tokens, lp = (P & (P - 1)) == 0 ? __ffs(P) - 1 : -1;

    float o[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m_run = -FLT_MAX, l_run = 0.f; // l_run: this lane's columns only, summed at the end
    float vref = 0.f, vinv = 0.f;        // int8 pages: the largest V scale seen, 1 / it
    // table mode: ring[(t % NS) * TT + k] is the row of token k of tile t, for the tiles
    // whose copies are still to be issued. The first NS tiles' rows are found together
    // (one round trip, item_begin), then each iteration loads tile + NS's row into `next`
    // and stores it in the ring the iteration after, so the load's latency hides behind a
    // tile's math.
    uint32_t *ring = TABLE ? (uint32_t *)(stages + C::NS * C::stage_bytes) : nullptr;
    uint32_t next = h.next;
    if (began) {
        // the rest of the first NS - 1 tiles (rows from e, positions, zeros), in the group
        // of the copies issued before the wait; empty groups keep the loop's count
#pragma unroll
        for (int s = 0; s < C::NS - 1; s++)
            if (s < ntiles)
                issue_tile<D, TABLE, I8>(a, stages, tl, ring, n, s, lp,
                                         tile_part{e, n, true, true});
#pragma unroll
        for (int s = 0; s < C::NS - 1; s++)
            cp_async_commit();
    } else {
#pragma unroll
        for (int s = 0; s < C::NS - 1; s++) {
            if (s < ntiles)
                issue_tile<D, TABLE, I8>(a, stages, tl, ring, n, s, lp,
                                         tile_part{0, n, true, true});
            cp_async_commit();
        }
    }
    const int32_t qrow = a.q_row[row], qpos = a.q_pos[row];
    const float sc = a.scale * LOG2E;
    // Q as A fragments (scaled into log2 units, bf16; f16 in int8_frag_k's order on int8
    // pages), rows >= G zero; loaded once the first copies are on their way
    uint32_t qa[KS][2];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        qa[kk][0] = qa[kk][1] = 0u;
        if (g < G) {
            if constexpr (I8) {
                const float4 x = *(const float4 *)(a.q + (size_t)(qrow + g) * D + D / 4 * t4 +
                                                   4 * kk);
                qa[kk][0] = pack_f16(x.x * sc, x.y * sc);
                qa[kk][1] = pack_f16(x.z * sc, x.w * sc);
            } else {
                const float *qr = a.q + (size_t)(qrow + g) * D + kk * 16 + 2 * t4;
                qa[kk][0] = pack_bf16(qr[0] * sc, qr[1] * sc);
                qa[kk][1] = pack_bf16(qr[8] * sc, qr[9] * sc);
            }
        }
    }
    for (int tile = 0; tile < ntiles; tile++) {
        if (tile + C::NS - 1 < ntiles)
            issue_tile<D, TABLE, I8>(a, stages, tl, ring, n, tile + C::NS - 1, lp,
                                tile_part{0, n, true, true});
        cp_async_commit();
        cp_async_wait<C::NS - 1>(); // this thread's copies of `tile` have landed
        __syncthreads();            // everyone's have
        if constexpr (TABLE) {
            // tile's slot was last read when its copies were issued, before the barrier
            // above (every thread is past it); the barrier at the end of the iteration
            // orders this store before the next one's issue, which reads the slot
            if (threadIdx.x < C::TT) {
                ring[(tile % C::NS) * C::TT + threadIdx.x] = next;
                next = table_row(ptab, P, lp, b0, (tile + C::NS + 1) * C::TT + threadIdx.x, n);
            }
        }
        const unsigned char *stg = stages + (tile % C::NS) * C::stage_bytes;
        const __nv_bfloat16 *Ks, *Vs;
        const int32_t *ps;
        const float *kscale = nullptr, *vscale = nullptr; // int8 pages
        if constexpr (I8) {
            Ks = Vs = nullptr;
            ps = (const int32_t *)(stg + 2 * C::kv_bytes);
            kscale = (const float *)(ps + C::TT), vscale = kscale + C::TT;
        } else {
            Ks = (const __nv_bfloat16 *)stg, Vs = Ks + C::TT * D;
            ps = (const int32_t *)(Vs + C::TT * D);
        }
        const int r0 = warp * 16, i0 = tile * C::TT + r0; // this warp's 16 rows
        const int nt = min(16, n - i0);
        if (nt > 0) {
            float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
            if constexpr (I8) {
#pragma unroll
                for (int h = 0; h < 2; h++) { // tokens r0 + 8h + g
                    uint32_t b[KS][2];
                    int8_frag_k<D, TABLE>(stg, r0 + 8 * h + g, t4, b);
#pragma unroll
                    for (int kk = 0; kk < KS; kk++)
                        mma_top_f16(s[h], qa[kk][0], qa[kk][1], b[kk][0], b[kk][1]);
                }
            } else {
                // ldmatrix rows: lane l gives row r0 + l % 8 + 8 (l / 16), chunk 2 kk + (l / 8) % 2
                const int kr = r0 + (lane & 7) + ((lane >> 4) << 3), kc = (lane >> 3) & 1;
#pragma unroll
                for (int kk = 0; kk < KS; kk++) {
                    uint32_t b[4];
                    ldsm_x4(b, smem_u32(Ks + C::sw(kr, 2 * kk + kc)));
                    mma_top(s[0], qa[kk][0], qa[kk][1], b[0], b[1]);
                    mma_top(s[1], qa[kk][0], qa[kk][1], b[2], b[3]);
                }
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
            if constexpr (I8) {
                // the V scales go into the probabilities, over vref (the warp's tokens are
                // the same in every group of 4 lanes, so vref is the warp's)
                float vs[2][2], vmx = 0.f;
#pragma unroll
                for (int j = 0; j < 2; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        vs[j][e] = live[j][e] ? vscale[r0 + 8 * j + 2 * t4 + e] : 0.f;
                        vmx = fmaxf(vmx, vs[j][e]);
                    }
                vmx = fmaxf(vmx, __shfl_xor_sync(0xffffffffu, vmx, 1));
                vmx = fmaxf(vmx, __shfl_xor_sync(0xffffffffu, vmx, 2));
                float oc = corr;
                if (vmx > vref) {
                    const float inv = 1.f / vmx;
                    oc *= vref * inv;
                    vref = vmx, vinv = inv;
                }
#pragma unroll
                for (int j = 0; j < NT; j++)
                    o[j][0] *= oc, o[j][1] *= oc;
                const uint32_t pa0 = pack_f16(p[0][0] * vs[0][0] * vinv, p[0][1] * vs[0][1] * vinv),
                               pa2 = pack_f16(p[1][0] * vs[1][0] * vinv, p[1][1] * vs[1][1] * vinv);
#pragma unroll
                for (int q = 0; q < NT / 4; q++) {
                    uint32_t b[4][2];
                    int8_frag_v<D, TABLE>(stg + C::kv_bytes, r0, g, t4, q, b);
#pragma unroll
                    for (int m = 0; m < 4; m++)
                        mma_top_f16(o[4 * q + m], pa0, pa2, b[m][0], b[m][1]);
                }
            } else {
#pragma unroll
                for (int j = 0; j < NT; j++)
                    o[j][0] *= corr, o[j][1] *= corr;
                const uint32_t pa0 = pack_bf16(p[0][0], p[0][1]), pa2 = pack_bf16(p[1][0], p[1][1]);
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
        if constexpr (I8) { // column c of n-tile j is dimension 32 (j / 4) + 4c + j % 4
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int d = 32 * (j / 4) + 8 * t4 + j % 4;
                dst[2 + d] = o[j][0] * vref, dst[2 + d + 4] = o[j][1] * vref;
            }
        } else {
#pragma unroll
            for (int j = 0; j < NT; j++)
                dst[2 + j * 8 + 2 * t4] = o[j][0], dst[2 + j * 8 + 2 * t4 + 1] = o[j][1];
        }
        if (t4 == 0)
            dst[0] = m_run, dst[1] = l_run;
    }
    __syncthreads();
    merge_write<D, G>(a, mg, part, qrow);
}

// A block per item; with live_items (a fixed grid for CUDA graphs) at most one wave of
// resident blocks, each taking items blockIdx.x, + gridDim.x, ... below the live count.
//
// Where a call's time goes (H200, globaltimer at each stage of every block, batch 1 at
// 32k over the table view, 256 items of 16 tiles): before early starts a block spent
// 2.3-2.5 us after the wait finding its pages (three dependent round trips), and its
// first tile landed 3.5-6.5 us after being issued, with DRAM idle until then; the blocks'
// loops then took 20-27 us for the same 16 tiles, so the last block ended about 10 us
// after the first, and the merge kernel ran 2.2 us after that. The spread of the loops
// is the largest loss left at batch 1 (a dynamic split of the tail would need the next
// item begun while the current one ends: an item's start and merge cost 3-4 us).
// Tried and not kept:
//  - the merge of split rows in this kernel, by the block that finishes a row's last
//    part (a counter per row, fences as in CUDA's threadfence reduction): 4-5 us slower
//    per call than the merge kernel launched with programmatic dependence (batch 1 at 4k
//    0.0157 against 0.0104 ms, at 32k 0.0454 against 0.0410): one block's rounds of L2
//    reads over 32 parts, the fence and the atomic cost more than a kernel boundary;
//  - an L2 prefetch (prefetch.global.L2) of the first tiles before the wait, also with
//    the merge kernel letting the next one launch before its own wait: no change (32k
//    0.0412 ms both ways; decode steps within noise, batch 8 at 8k 1-2% slower).
template <int D, int G, bool TABLE, bool I8>
__global__ void __launch_bounds__(WARPS * 32) attn_stream_kernel(const kw_cuda_attn a)
{
    extern __shared__ __align__(16) unsigned char sm[];
    // a.early: the first item's head, and the K and V rows of its first tiles that the
    // kernel ahead does not write, before waiting for it (tile_part says why rows only)
    item_head pre = {0, 0, 0, 0, 0};
    int e = 0;
    bool began = false;
    if constexpr (TABLE) {
        if (a.early > 0 && (int)blockIdx.x < (a.live_items ? *a.live_items : a.n_items)) {
            using C = stream_cfg<D, TABLE, I8>;
            pre = item_begin<D, TABLE, I8>(a, sm, blockIdx.x);
            e = min(pre.n, max(0, a.row_tokens[pre.row] - a.early - pre.b0));
            const int P = a.page_tokens, lp = (P & (P - 1)) == 0 ? __ffs(P) - 1 : -1;
            const token_list &tl = *(const token_list *)(sm + C::NS * C::stage_bytes);
            const uint32_t *ring = (const uint32_t *)(sm + C::NS * C::stage_bytes);
#pragma unroll
            for (int s = 0; s < C::NS - 1; s++)
                if (s * C::TT < e)
                    issue_tile<D, TABLE, I8>(a, sm, tl, ring, pre.n, s, lp,
                                        tile_part{0, e, false, false});
            began = true;
        }
    }
    kw_grid_wait();
    kw_grid_dependents();
    const int n = a.live_items ? *a.live_items : a.n_items;
    for (int item = blockIdx.x; item < n; item += gridDim.x) {
        stream_item<D, G, TABLE, I8>(a, sm, item, began, pre, e);
        began = false;
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
