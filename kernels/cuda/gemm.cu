// GEMMs through cuBLAS. Row-major y(M,N) = x(M,K) w(N,K)^T is, column-major, the product
// y^T(N,M) = w^T^T x^T: cuBLAS gets opA = T on w (ld K), opB = N on x (ld K), ldc = N.
// One cuBLAS handle per thread (created on first use); each call sets its stream.
//
// bf16 with few rows (decode: M = batch <= KW_GEMV_MAX_ROWS) goes to gemv_bf16 instead:
// the step is bound by reading the weights once, so a block streams a few weight rows
// with 16-byte loads, its warps splitting K, and applies them to all M rows of x
// (read through L2); the same kernel fuses the Q/K/V products (up to three outputs per
// launch), a residual add, or the MLP's gate, up and SwiGLU (bf16 out), and in separate
// instances (EXT) the forms of kw_cuda_gemv_ext: a folded RMSNorm on either side of a
// pass, and RoPE with the page append after the Q/K/V products.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cstdint>
#include <cstdio>

#include "common.cuh"
#include "gemm.cuh"

static thread_local cublasHandle_t handle;

static int blas_fail(cublasStatus_t s, const char *what, int line)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s: cuBLAS status %d", what, (int)s);
    return kw__cuda_fail(cudaErrorUnknown, msg, __FILE__, line);
}

static int get_handle(cudaStream_t st, cublasHandle_t *out)
{
    if (!handle) {
        cublasStatus_t s = cublasCreate(&handle);
        if (s != CUBLAS_STATUS_SUCCESS) {
            handle = nullptr;
            return blas_fail(s, "cublasCreate", __LINE__);
        }
        // an explicit workspace, so calls inside a CUDA graph capture allocate nothing
        static thread_local void *ws;
        const size_t ws_bytes = (size_t)32 << 20;
        if (!ws && cudaMalloc(&ws, ws_bytes) != cudaSuccess)
            ws = nullptr;
        if (ws)
            cublasSetWorkspace(handle, ws, ws_bytes);
    }
    cublasSetStream(handle, st);
    *out = handle;
    return KW_OK;
}

__global__ void add_bias_f32(float *__restrict__ y, const float *__restrict__ b, int64_t M, int N)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < M * N;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % N];
}

__global__ void to_bf16(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, int64_t n)
{
    kw_grid_wait();
    kw_grid_dependents();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

static int bias(cudaStream_t st, float *y, const float *b, int M, int N)
{
    if (!b)
        return KW_OK;
    add_bias_f32<<<kw_blocks_for((int64_t)M * N), 256, 0, st>>>(y, b, M, N);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

extern "C" int kw_cuda_linear(void *stream, const float *x, const float *w, const float *b,
                              float *y, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0 || !x || !w || !y)
        return KW_EINVAL;
    cudaStream_t st = (cudaStream_t)stream;
    cublasHandle_t h;
    int rc = get_handle(st, &h);
    if (rc)
        return rc;
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH); // plain f32: no TF32
    const float one = 1.f, zero = 0.f;
    cublasStatus_t s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, K, x, K, &zero,
                                   y, N);
    if (s != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasSgemm", __LINE__);
    return bias(st, y, b, M, N);
}

namespace {

constexpr int GEMV_THREADS = 128;
constexpr int GEMV_NO = 4; // outputs per warp group (gemv_launch says why)
static_assert(GEMV_NO == KW_GEMV_NORM_PART, "a norm's partial sum covers one warp group");

__device__ __forceinline__ void bf16x8(const uint4 &u, float *f)
{
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float2 t = __bfloat1622float2(h[e]);
        f[2 * e] = t.x, f[2 * e + 1] = t.y;
    }
}

enum { GV_STORE = 0, GV_ADD = 1, GV_SWIGLU = 2 };

// weight rows per warp group: its outputs' rows (GV_SWIGLU: the gate and the up row of each)
constexpr int gemv_rows(int mode)
{
    return (mode == GV_SWIGLU ? 2 : 1) * GEMV_NO;
}

// Up to three products in one launch; blocks [blk_end[s-1], blk_end[s]) serve output s.
struct gemv_args {
    const __nv_bfloat16 *x;
    int K, n_seg, total_blocks;
    int blk_end[3], n[3];
    const __nv_bfloat16 *w[3];
    const __nv_bfloat16 *w_up; // GV_SWIGLU: the up matrix (w[0] is the gate)
    const float *b[3];
    float *y[3];
    __nv_bfloat16 *yb; // GV_SWIGLU output
    kw_cuda_gemv_ext e; // the folded RMSNorm and RoPE with the append (kw_cuda_gemv_ext)
    int n_ss;           // e.ss_in: partial sums per row (K / GEMV_NO, rounded up)
};

// This thread's share of the folded norm's sums of squares: partial sums t, t + 128, ...
// of each row (the same threads add the same parts in every block, so every block finds
// the same scale). Called after a block group's K loop: the loads (8 in flight per row,
// which covers the 1024 parts of a 4096-wide row in one trip to L2) overlap the shuffles
// that sum the products, and hold no registers while the weights stream.
template <int M>
__device__ __forceinline__ void norm_share(const gemv_args &a, float (&ssum)[M])
{
    constexpr int NSS = 8;
#pragma unroll
    for (int m = 0; m < M; m++) {
        const float *ss = a.e.ss_in + (size_t)m * a.n_ss;
        float s = 0.f;
        for (int i0 = threadIdx.x; i0 < a.n_ss; i0 += NSS * GEMV_THREADS) {
            float v[NSS];
#pragma unroll
            for (int u = 0; u < NSS; u++) {
                const int i = i0 + u * GEMV_THREADS;
                v[u] = i < a.n_ss ? __ldcg(ss + i) : 0.f;
            }
#pragma unroll
            for (int u = 0; u < NSS; u++)
                s += v[u];
        }
        ssum[m] = s;
    }
}

// Output n of segment s for row m, value v (the product and bias, f32), in the forms of
// kw_cuda_gemv_ext: added to the residual, or stored (with RoPE and the page append for
// q, k and v: rotated with its pair's value pv, kw_cuda_rope_append's arithmetic).
// Returns the value left in y.
template <int MODE>
__device__ __forceinline__ float gemv_put_ext(const gemv_args &a, int s, int m, int n, int N,
                                              float v, float pv)
{
    float *y = (s == 0 ? a.y[0] : s == 1 ? a.y[1] : a.y[2]) + (size_t)m * N + n;
    if constexpr (MODE == GV_ADD) {
        v = __ldcg(y) + v; // through L2, as x
    } else if (a.e.pos) {
        const int hd = a.e.head_dim, d = n % hd;
        if (s < 2) { // q and k: rotate the pair (d & ~1, d | 1)
            float sn, c;
            sincosf((float)a.e.pos[m] * a.e.inv_freq[d / 2], &sn, &c);
            v = d % 2 == 0 ? v * c - pv * sn : pv * sn + v * c;
        }
        if (s > 0) { // k and v into the token's slot
            const int n_kv = N / hd, h = n / hd;
            const int32_t slot = a.e.slots[(size_t)m * n_kv + h];
            if (slot >= 0) {
                const int P = a.e.page_tokens;
                __nv_bfloat16 *pg = (__nv_bfloat16 *)a.e.kv_base + (int64_t)(slot / P) * 2 * P * hd;
                pg[(int64_t)((s == 1 ? 0 : P) + slot % P) * hd + d] = __float2bfloat16_rn(v);
                if (s == 1 && d == 0)
                    a.e.kv_pos[slot] = a.e.pos[m];
            }
        }
    }
    *y = v;
    return v;
}

// One block group: the outputs of block blk (see gemv_bf16 below). EXT: with the forms
// of kw_cuda_gemv_ext (a separate instance, so the plain passes keep their registers).
template <int M, int MODE, int KS, bool EXT>
__device__ __forceinline__ void gemv_block(const gemv_args &a, int blk,
                                           float (*red)[M * gemv_rows(MODE) + (EXT ? M : 0)],
                                           bool wait)
{
    constexpr int NO = GEMV_NO, R = gemv_rows(MODE), WARPS = GEMV_THREADS / 32;
    static_assert(KS > 1 && WARPS % KS == 0, "a warp group is 2 or 4 warps of the block");
    constexpr int GROUPS = WARPS / KS;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int grp = warp / KS, kpart = warp % KS;
    // the block's output (constant indices only: the arguments stay in the parameter bank)
    const int s = (a.n_seg > 1 && blk >= a.blk_end[0]) + (a.n_seg > 2 && blk >= a.blk_end[1]);
    const int first = s == 0 ? 0 : s == 1 ? a.blk_end[0] : a.blk_end[1];
    const int N = s == 0 ? a.n[0] : s == 1 ? a.n[1] : a.n[2], K = a.K;
    const __nv_bfloat16 *w_s = s == 0 ? a.w[0] : s == 1 ? a.w[1] : a.w[2];
    const int n0 = ((blk - first) * GROUPS + grp) * NO; // past N: computes, writes nothing
    const int nch = K / 8; // 16-byte chunks per row
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const __nv_bfloat16 *base = MODE == GV_SWIGLU && r >= NO ? a.w_up : w_s;
        wr[r] = reinterpret_cast<const uint4 *>(base + (size_t)min(n0 + r % NO, N - 1) * K);
    }
    const uint4 *xr = reinterpret_cast<const uint4 *>(a.x);
    float acc[M][R];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[m][r] = 0.f;
    constexpr int STEP = 32 * KS; // chunks between one lane's consecutive loads
    bool waited = !wait;
    for (int c = kpart * 32 + lane; c < nch; c += STEP) {
        uint4 wv[R];
#pragma unroll
        for (int r = 0; r < R; r++) // the weight loads first: bytes in flight
            wv[r] = __ldcs(wr[r] + c); // read once
        // the weights do not depend on earlier kernels; x and the residual do, and are read
        // through L2 (ld.global.cg): with programmatic dependent launch this kernel starts
        // while the one before still runs, and with the launch shape of gemv_launch,
        // reading them through L1 gave stale values in the decode step (logits 1.4
        // relative off the CPU's on the H200, every step); through L2, the same bits as
        // with it off
        if (!waited) {
            kw_grid_wait();
            waited = true;
        }
#pragma unroll
        for (int m = 0; m < M; m++) {
            float xf[8];
            bf16x8(__ldcg(xr + (size_t)m * nch + c), xf); // see kw_grid_wait above
#pragma unroll
            for (int r = 0; r < R; r++) {
                float wf[8];
                bf16x8(wv[r], wf);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[m][r] += wf[e] * xf[e];
            }
        }
    }
    if (!waited) // no chunk of K fell to this lane
        kw_grid_wait();
    [[maybe_unused]] float ssum[M]; // the folded norm: this thread's share of each row's sum
    if constexpr (EXT)
        if (a.e.ss_in)
            norm_share<M>(a, ssum);
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = acc[m][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            acc[m][r] = v;
            if (lane == 0)
                red[warp][m * R + r] = v;
        }
    if constexpr (EXT)
        if (a.e.ss_in)
#pragma unroll
            for (int m = 0; m < M; m++) {
                float v = ssum[m];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1)
                    v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == 0)
                    red[warp][M * R + m] = v;
            }
    __syncthreads();
    [[maybe_unused]] float scale[M]; // the folded norm's 1 / sqrt(mean(h^2) + eps) per row
    if (kpart == 0) {
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int k = 1; k < KS; k++)
                    acc[m][r] += red[warp + k][m * R + r];
        if constexpr (EXT)
#pragma unroll
            for (int m = 0; m < M; m++) {
                float t = 0.f;
#pragma unroll
                for (int w = 0; w < WARPS; w++) // all warps of the block, in one order
                    t += red[w][M * R + m];
                scale[m] = a.e.ss_in ? rsqrtf(t / K + a.e.eps) : 1.f;
            }
    }
    __syncthreads(); // red is free for the next block group
    if (kpart != 0)
        return;
    // lane j < M * NO writes output (m, r) = (j / NO, j % NO); with e.g_out, `left` is
    // the new residual value it wrote (0 elsewhere), for the next norm's partial sums
    [[maybe_unused]] float left = 0.f;
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int r = 0; r < NO; r++) {
            const int n = n0 + r;
            if (lane != m * NO + r || n >= N)
                continue;
            float v = acc[m][r];
            if constexpr (EXT)
                v *= scale[m];
            if constexpr (MODE == GV_SWIGLU) {
                float u = acc[m][NO + r];
                if constexpr (EXT)
                    u *= scale[m];
                a.yb[(size_t)m * N + n] = __float2bfloat16_rn(v / (1.f + __expf(-v)) * u);
            } else if constexpr (EXT) {
                const float *b = s == 0 ? a.b[0] : s == 1 ? a.b[1] : a.b[2];
                float pv = 0.f; // the RoPE pair's value (n ^ 1 is in this group: NO even)
                if (MODE == GV_STORE && a.e.pos && s < 2)
                    pv = acc[m][r ^ 1] * scale[m] + (b ? b[n ^ 1] : 0.f);
                left = gemv_put_ext<MODE>(a, s, m, n, N, v + (b ? b[n] : 0.f), pv);
            } else {
                const float *b = s == 0 ? a.b[0] : s == 1 ? a.b[1] : a.b[2];
                float *y = (s == 0 ? a.y[0] : s == 1 ? a.y[1] : a.y[2]) + (size_t)m * N + n;
                v += b ? b[n] : 0.f;
                *y = MODE == GV_ADD ? __ldcg(y) + v : v; // through L2, as x
            }
        }
    if constexpr (EXT && MODE == GV_ADD) {
        if (a.e.g_out) { // the next norm's input: bf16(h * g) and h^2 summed over the group
            const int j = lane < M * NO ? lane : 0, m = j / NO, n = n0 + j % NO;
            const bool mine = lane < M * NO && n < N;
            if (mine)
                ((__nv_bfloat16 *)a.e.xg_out)[(size_t)m * N + n] =
                    __float2bfloat16_rn(left * a.e.g_out[n]);
            float q = mine ? left * left : 0.f;
            q += __shfl_xor_sync(0xffffffffu, q, 1);
            q += __shfl_xor_sync(0xffffffffu, q, 2);
            if (lane < M * NO && lane % NO == 0 && n0 < N)
                a.e.ss_out[(size_t)m * ((N + NO - 1) / NO) + n0 / NO] = q;
        }
    }
}

// A warp group of KS warps computes GEMV_NO outputs (weight rows n0 .. n0 + NO - 1; in
// GV_SWIGLU the gate and up rows of each) for all M rows of x; its KS warps split K, each
// lane with one 16-byte load per weight row in flight, their partial sums meeting through
// shared memory (gemv_launch says why this shape). The grid is one wave of resident
// blocks that stride over the block groups (no tail of a last partial wave, no block
// launches in between).
template <int M, int MODE, int KS, bool EXT>
__global__ void __launch_bounds__(GEMV_THREADS) gemv_bf16(const gemv_args a)
{
    __shared__ float red[GEMV_THREADS / 32][M * gemv_rows(MODE) + (EXT ? M : 0)];
    kw_grid_dependents(); // all blocks are resident (one wave): the next kernel may queue
    // the first block group's weight loads are issued before waiting for the kernel before
    for (int blk = blockIdx.x; blk < a.total_blocks; blk += gridDim.x)
        gemv_block<M, MODE, KS, EXT>(a, blk, red, blk == (int)blockIdx.x);
}

// The resident blocks of a kernel on the current device (132 x 4 if the query fails).
static int resident_blocks(const void *kernel)
{
    int dev = 0, sms = 0, per = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, GEMV_THREADS, 0) != cudaSuccess)
        return 132 * 4;
    return sms * (per > 0 ? per : 1);
}

// The shape of the launch, from a sweep of NO (outputs per warp group), U (loads per row
// and lane in flight) and KS at the Llama-3.1-8B decode products (H200, 16 calls back to
// back on rotating copies of the weights): fewer, wider groups with one load per row in
// flight (NO = 4, U = 1: 4 loads per lane, 8 for gate/up) and K split over 4 warps (2 from
// M = 3, where the extra rows of x make each warp's work longer) beat the deeper per-lane
// queues (U = 16 / R) everywhere. At M = 1: down 30.1 us against 37.5 (93% of the copy
// bandwidth), output 11.4 against 13.8, Q/K/V 16.4 against 19.4, gate/up 56.0 against
// 59.7; at M = 4 the down projection took 35.9 us against 47.4. Many small loads spread
// over many warps keep more of the memory system busy than a few warps with deep queues.
template <int M, int MODE, bool EXT> int gemv_launch(cudaStream_t st, gemv_args &a)
{
    constexpr int KS = M <= 2 ? 4 : 2;
    constexpr int PER_BLOCK = GEMV_NO * (GEMV_THREADS / 32 / KS);
    int blocks = 0;
    for (int s = 0; s < a.n_seg; s++)
        a.blk_end[s] = blocks += (a.n[s] + PER_BLOCK - 1) / PER_BLOCK;
    a.total_blocks = blocks;
    static int resident = 0; // per instance; the engine uses one device per process
    if (!resident)
        resident = resident_blocks((const void *)gemv_bf16<M, MODE, KS, EXT>);
    const int grid = min(blocks, resident);
    KW_CUDA_TRY(kw_launch(gemv_bf16<M, MODE, KS, EXT>, grid, GEMV_THREADS, 0, st, a));
    return KW_OK;
}

template <int MODE, bool EXT> int gemv_dispatch_m(cudaStream_t st, int M, gemv_args &a)
{
    switch (M) {
    case 1: return gemv_launch<1, MODE, EXT>(st, a);
    case 2: return gemv_launch<2, MODE, EXT>(st, a);
    case 3: return gemv_launch<3, MODE, EXT>(st, a);
    case 4: return gemv_launch<4, MODE, EXT>(st, a);
    case 5: return gemv_launch<5, MODE, EXT>(st, a);
    case 6: return gemv_launch<6, MODE, EXT>(st, a);
    case 7: return gemv_launch<7, MODE, EXT>(st, a);
    default: return gemv_launch<8, MODE, EXT>(st, a);
    }
}

// the instance with the kw_cuda_gemv_ext forms where a.e asks for one
template <int MODE> int gemv_dispatch(cudaStream_t st, int M, gemv_args &a)
{
    const bool ext = a.e.ss_in || a.e.g_out || a.e.pos;
    return ext ? gemv_dispatch_m<MODE, true>(st, M, a) : gemv_dispatch_m<MODE, false>(st, M, a);
}

bool aligned16(const void *p)
{
    return (uintptr_t)p % 16 == 0;
}

int gemv_max_rows = KW_GEMV_MAX_ROWS;

} // namespace

extern "C" void kw_cuda_set_gemv_rows(int max_rows)
{
    gemv_max_rows = max_rows < 0 ? 0 : max_rows > 8 ? 8 : max_rows;
}

extern "C" int kw_cuda_gemv_rows(void)
{
    return gemv_max_rows;
}

// What kw_cuda_gemv_ext asks of a call, checked against the call's outputs.
static bool ext_ok(const kw_cuda_gemv_ext *e, int mode, const kw_cuda_gemv_out *outs, int n_out)
{
    if (e->ss_in && !(e->eps >= 0.f))
        return false;
    if (e->g_out && (mode != GV_ADD || n_out != 1 || !e->xg_out || !e->ss_out))
        return false;
    if (e->pos) {
        const int hd = e->head_dim;
        if (mode != GV_STORE || n_out != 3 || hd <= 0 || hd % 2 || !e->inv_freq ||
            !e->slots || !e->kv_base || !e->kv_pos || e->page_tokens <= 0 || outs[1].n % hd ||
            outs[0].n % hd || outs[2].n != outs[1].n)
            return false;
    }
    return true;
}

extern "C" int kw_cuda_gemv_multi_ext(void *stream, const void *x, int M, int K,
                                      const kw_cuda_gemv_out *outs, int n_out, int add,
                                      const kw_cuda_gemv_ext *ext)
{
    if (M <= 0 || M > 8 || K <= 0 || K % 8 || !x || !aligned16(x) || n_out < 1 || n_out > 3
        || !outs)
        return KW_EINVAL;
    gemv_args a = {};
    a.x = (const __nv_bfloat16 *)x, a.K = K, a.n_seg = n_out;
    for (int s = 0; s < n_out; s++) {
        if (outs[s].n <= 0 || !outs[s].w || !outs[s].y || !aligned16(outs[s].w))
            return KW_EINVAL;
        a.w[s] = (const __nv_bfloat16 *)outs[s].w, a.b[s] = outs[s].bias;
        a.y[s] = outs[s].y, a.n[s] = outs[s].n;
    }
    if (ext) {
        if (!ext_ok(ext, add ? GV_ADD : GV_STORE, outs, n_out))
            return KW_EINVAL;
        a.e = *ext, a.n_ss = (K + GEMV_NO - 1) / GEMV_NO;
    }
    cudaStream_t st = (cudaStream_t)stream;
    return add ? gemv_dispatch<GV_ADD>(st, M, a) : gemv_dispatch<GV_STORE>(st, M, a);
}

extern "C" int kw_cuda_gemv_multi_bf16(void *stream, const void *x, int M, int K,
                                       const kw_cuda_gemv_out *outs, int n_out, int add)
{
    return kw_cuda_gemv_multi_ext(stream, x, M, K, outs, n_out, add, NULL);
}

extern "C" int kw_cuda_gemv_bf16(void *stream, const void *x, const void *w, const float *b,
                                 float *y, int M, int N, int K)
{
    kw_cuda_gemv_out o = {w, b, y, N};
    return kw_cuda_gemv_multi_bf16(stream, x, M, K, &o, 1, 0);
}

extern "C" int kw_cuda_gemv_swiglu_ext(void *stream, const void *x, const void *w_gate,
                                       const void *w_up, void *out, int M, int N, int K,
                                       const kw_cuda_gemv_ext *ext)
{
    if (M <= 0 || M > 8 || N <= 0 || K <= 0 || K % 8 || !x || !w_gate || !w_up || !out
        || !aligned16(x) || !aligned16(w_gate) || !aligned16(w_up))
        return KW_EINVAL;
    gemv_args a = {};
    a.x = (const __nv_bfloat16 *)x, a.K = K, a.n_seg = 1, a.n[0] = N;
    a.w[0] = (const __nv_bfloat16 *)w_gate, a.w_up = (const __nv_bfloat16 *)w_up;
    a.yb = (__nv_bfloat16 *)out;
    if (ext) {
        if (ext->g_out || ext->pos || !ext_ok(ext, GV_SWIGLU, NULL, 1))
            return KW_EINVAL;
        a.e = *ext, a.n_ss = (K + GEMV_NO - 1) / GEMV_NO;
    }
    return gemv_dispatch<GV_SWIGLU>((cudaStream_t)stream, M, a);
}

extern "C" int kw_cuda_gemv_swiglu_bf16(void *stream, const void *x, const void *w_gate,
                                        const void *w_up, void *out, int M, int N, int K)
{
    return kw_cuda_gemv_swiglu_ext(stream, x, w_gate, w_up, out, M, N, K, NULL);
}

extern "C" int kw_cuda_linear_bf16(void *stream, const void *x, const void *w, const float *b,
                                   float *y, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0 || !x || !w || !y)
        return KW_EINVAL;
    if (M <= gemv_max_rows && K % 8 == 0 && ((uintptr_t)x | (uintptr_t)w) % 16 == 0)
        return kw_cuda_gemv_bf16(stream, x, w, b, y, M, N, K);
    cudaStream_t st = (cudaStream_t)stream;
    cublasHandle_t h;
    int rc = get_handle(st, &h);
    if (rc)
        return rc;
    const float one = 1.f, zero = 0.f;
    cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF,
                                    K, x, CUDA_R_16BF, K, &zero, y, CUDA_R_32F, N,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasGemmEx(bf16)", __LINE__);
    return bias(st, y, b, M, N);
}

// The prefill path's epilogues, done by cuBLAS: KW_LIN_ADD accumulates into the f32 y
// (beta = 1: the residual add without an f32 product written and read back), KW_LIN_BF16
// writes y as bf16 (the MLP's gate and up, read once by the SwiGLU). Up to the gemv rows
// limit, KW_LIN_ADD alone goes to the weight-streaming kernel.
extern "C" int kw_cuda_linear_bf16_ex(void *stream, const void *x, const void *w,
                                      const float *b, void *y, int M, int N, int K, int flags)
{
    const bool add = flags & KW_LIN_ADD, out16 = flags & KW_LIN_BF16;
    if (M <= 0 || N <= 0 || K <= 0 || !x || !w || !y || (flags & ~(KW_LIN_ADD | KW_LIN_BF16))
        || (add && out16) || (out16 && b))
        return KW_EINVAL;
    if (!add && !out16)
        return kw_cuda_linear_bf16(stream, x, w, b, (float *)y, M, N, K);
    if (add && M <= gemv_max_rows && K % 8 == 0 && ((uintptr_t)x | (uintptr_t)w) % 16 == 0) {
        kw_cuda_gemv_out o = {w, b, (float *)y, N};
        return kw_cuda_gemv_multi_bf16(stream, x, M, K, &o, 1, 1);
    }
    cudaStream_t st = (cudaStream_t)stream;
    cublasHandle_t h;
    int rc = get_handle(st, &h);
    if (rc)
        return rc;
    const float one = 1.f, beta = add ? 1.f : 0.f;
    cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF,
                                    K, x, CUDA_R_16BF, K, &beta, y,
                                    out16 ? CUDA_R_16BF : CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasGemmEx(bf16, epilogue)", __LINE__);
    return out16 ? KW_OK : bias(st, (float *)y, b, M, N);
}

extern "C" int kw_cuda_to_bf16(void *stream, const float *x, void *y, int64_t n)
{
    if (n <= 0 || !x || !y)
        return KW_EINVAL;
    KW_CUDA_TRY(kw_launch(to_bf16, kw_blocks_for(n), 256, 0, (cudaStream_t)stream, x,
                          (__nv_bfloat16 *)y, n));
    return KW_OK;
}
