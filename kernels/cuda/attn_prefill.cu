// Causal prefill attention over views: a block takes 64 query tokens of one query head
// and walks its KV head's row of the view in tiles of 64 stored tokens (any spans, pages
// in the main or temporary pool). Per tile: S = Q K^T on tensor cores (bf16 in, f32
// accumulate), masked by stored position (key pos <= query pos), online softmax in f32,
// O += P V on tensor cores. Tiles whose smallest position is beyond the block's last
// query are skipped, so causal prefill does about half the work of full attention.
// Q is rounded to bf16 after scaling; O, the running max and sum stay f32.
#include <cuda_bf16.h>
#include <mma.h>
#include <climits>

#include "attn_prefill.cuh"
#include "common.cuh"

using namespace nvcuda;

namespace {

constexpr int BQ = 64, BK = 64, WARPS = 4, THREADS = WARPS * 32;

template <int D> struct smem_layout {
    static constexpr int LD = D + 8;      // bf16 tiles (Q, K, V)
    static constexpr int LDS = BK + 4;    // f32 scores
    static constexpr int LDP = BK + 8;    // bf16 probabilities
    static constexpr int LDO = D + 4;     // f32 output accumulator
    static constexpr size_t q = 0, k = q + BQ * LD * 2, v = k + BK * LD * 2,
                            s = v + BK * LD * 2, p = s + BQ * LDS * 4, o = p + BQ * LDP * 2,
                            m = o + BQ * LDO * 4, l = m + BQ * 4, qpos = l + BQ * 4,
                            kpos = qpos + BQ * 4, kaddr = kpos + BK * 4,
                            misc = kaddr + BK * 8, bytes = misc + 64;
};

template <int D>
__global__ void __launch_bounds__(THREADS) prefill_kernel(const kw_cuda_prefill a)
{
    using L = smem_layout<D>;
    extern __shared__ __align__(128) unsigned char sm[];
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)(sm + L::q), *Ks = (__nv_bfloat16 *)(sm + L::k),
                  *Vs = (__nv_bfloat16 *)(sm + L::v), *Ps = (__nv_bfloat16 *)(sm + L::p);
    float *Ss = (float *)(sm + L::s), *Os = (float *)(sm + L::o), *Ms = (float *)(sm + L::m),
          *Ls = (float *)(sm + L::l);
    int32_t *qpos = (int32_t *)(sm + L::qpos), *kpos = (int32_t *)(sm + L::kpos);
    int64_t *kaddr = (int64_t *)(sm + L::kaddr);
    int32_t *misc = (int32_t *)(sm + L::misc);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int item = blockIdx.x, h = blockIdx.y;
    const int seq = a.items[2 * item], q0 = a.items[2 * item + 1];
    const int t_begin = a.tok_off[seq] + q0;
    const int nq = min(BQ, a.tok_off[seq + 1] - t_begin);
    const int g = a.n_head / a.n_kv, kvh = h / g, row = seq * a.n_kv + kvh;
    const int P = a.page_tokens;

    // Q tile (scaled, bf16), positions, state
    for (int i = tid; i < BQ * D; i += THREADS) {
        int r = i / D, c = i % D;
        float x = r < nq ? a.q[((int64_t)(t_begin + r) * a.n_head + h) * D + c] * a.scale : 0.f;
        Qs[r * L::LD + c] = __float2bfloat16_rn(x);
    }
    for (int i = tid; i < BQ * D; i += THREADS)
        Os[(i / D) * L::LDO + i % D] = 0.f;
    if (tid < BQ) {
        qpos[tid] = tid < nq ? a.q_pos[t_begin + tid] : INT_MIN;
        Ms[tid] = -INFINITY;
        Ls[tid] = 0.f;
    }
    __syncthreads();
    if (tid == 0) {
        int mx = INT_MIN;
        for (int r = 0; r < nq; r++)
            mx = max(mx, qpos[r]);
        misc[0] = mx;
        misc[1] = a.pages ? 0 : a.row_ptr[row]; // span cursor (table mode: token cursor)
        misc[2] = 0;              // offset inside the span
    }
    __syncthreads();
    const int max_qpos = misc[0];
    const int span_end = a.row_ptr[row + 1];

    for (;;) {
        // the next tile's token addresses (a serial walk: 64 steps, small beside the MMAs)
        if (tid == 0 && a.pages) { // table mode: misc[1] counts the row's tokens read
            int t0 = misc[1], n = 0, mn = INT_MAX;
            const int len = a.row_tokens[row];
            const int32_t *pt = a.pages + a.row_ptr[row];
            for (; n < BK && t0 + n < len; n++) {
                const int t = t0 + n, pg = pt[t / P];
                kpos[n] = a.pos[0][(int64_t)pg * P + t % P];
                mn = min(mn, kpos[n]);
                kaddr[n] = (int64_t)pg * 2 * P + t % P;
            }
            for (int j = n; j < BK; j++)
                kpos[j] = INT_MAX, kaddr[j] = -1;
            misc[1] = t0 + n;
            misc[3] = n;
            misc[4] = mn;
        } else if (tid == 0) {
            int sp = misc[1], off = misc[2], mn = INT_MAX, n = 0;
            while (n < BK && sp < span_end) {
                kw_cuda_span s = a.spans[sp];
                int take = min(BK - n, (int)s.n - off);
                const int32_t *pp = a.pos[s.pool] + (int64_t)s.page * P + s.first + off;
                for (int j = 0; j < take; j++, n++) {
                    kpos[n] = pp[j];
                    mn = min(mn, pp[j]);
                    kaddr[n] = ((int64_t)s.pool << 62) | ((int64_t)s.page * 2 * P + s.first + off + j);
                }
                off += take;
                if (off == s.n)
                    sp++, off = 0;
            }
            for (int j = n; j < BK; j++)
                kpos[j] = INT_MAX, kaddr[j] = -1;
            misc[1] = sp, misc[2] = off;
            misc[3] = n;
            misc[4] = mn;
        }
        __syncthreads();
        const int n_tile = misc[3];
        if (n_tile == 0)
            break;
        if (misc[4] > max_qpos) { // nothing in this tile is visible to any query
            __syncthreads();
            continue;
        }
        // K and V rows: 8 bf16 (16 bytes) at a time
        for (int i = tid; i < BK * (D / 8); i += THREADS) {
            int r = i / (D / 8), c = (i % (D / 8)) * 8;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            int64_t ad = kaddr[r];
            if (ad >= 0) {
                int pool = (int)(ad >> 62);
                int64_t rowk = ad & ((1LL << 62) - 1); // page*2P + slot: K row index
                const __nv_bfloat16 *b = (const __nv_bfloat16 *)a.base[pool];
                int64_t page = rowk / (2 * P), slot = rowk % (2 * P);
                const __nv_bfloat16 *kr = b + (page * 2 * P + slot) * D + c;
                kv = *(const uint4 *)kr;
                vv = *(const uint4 *)(kr + (int64_t)P * D);
            }
            *(uint4 *)&Ks[r * L::LD + c] = kv;
            *(uint4 *)&Vs[r * L::LD + c] = vv;
        }
        __syncthreads();
        // S = Q K^T for this warp's 16 rows
        {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
            for (int n = 0; n < BK / 16; n++) {
                wmma::fill_fragment(acc, 0.f);
                for (int kk = 0; kk < D / 16; kk++) {
                    wmma::load_matrix_sync(fa, Qs + warp * 16 * L::LD + kk * 16, L::LD);
                    wmma::load_matrix_sync(fb, Ks + n * 16 * L::LD + kk * 16, L::LD);
                    wmma::mma_sync(acc, fa, fb, acc);
                }
                wmma::store_matrix_sync(Ss + warp * 16 * L::LDS + n * 16, acc, L::LDS,
                                        wmma::mem_row_major);
            }
        }
        __syncwarp();
        // online softmax: two lanes per row, 32 columns each
        {
            int r = warp * 16 + lane / 2, half = lane % 2;
            float *srow = Ss + r * L::LDS + half * 32;
            int qp = qpos[r];
            float mx = -INFINITY;
            for (int j = 0; j < 32; j++) {
                float x = kpos[half * 32 + j] <= qp ? srow[j] : -INFINITY;
                srow[j] = x;
                mx = fmaxf(mx, x);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            float m_old = Ms[r], m_new = fmaxf(m_old, mx);
            float alpha = m_new == -INFINITY ? 1.f : __expf(m_old - m_new);
            float sum = 0.f;
            __nv_bfloat16 *prow = Ps + r * L::LDP + half * 32;
            for (int j = 0; j < 32; j++) {
                float p = m_new == -INFINITY ? 0.f : __expf(srow[j] - m_new);
                __nv_bfloat16 pb = __float2bfloat16_rn(p);
                sum += __bfloat162float(pb); // the sum of what P V uses
                prow[j] = pb;
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            float *orow = Os + r * L::LDO + half * (D / 2);
            for (int c = 0; c < D / 2; c++)
                orow[c] *= alpha;
            __syncwarp();
            if (half == 0) {
                Ms[r] = m_new;
                Ls[r] = Ls[r] * alpha + sum;
            }
        }
        __syncwarp();
        // O += P V
        {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
            for (int n = 0; n < D / 16; n++) {
                float *o = Os + warp * 16 * L::LDO + n * 16;
                wmma::load_matrix_sync(acc, o, L::LDO, wmma::mem_row_major);
                for (int kk = 0; kk < BK / 16; kk++) {
                    wmma::load_matrix_sync(fa, Ps + warp * 16 * L::LDP + kk * 16, L::LDP);
                    wmma::load_matrix_sync(fb, Vs + kk * 16 * L::LD + n * 16, L::LD);
                    wmma::mma_sync(acc, fa, fb, acc);
                }
                wmma::store_matrix_sync(o, acc, L::LDO, wmma::mem_row_major);
            }
        }
        __syncthreads();
    }
    for (int i = tid; i < nq * D; i += THREADS) {
        int r = i / D, c = i % D;
        float l = Ls[r];
        a.out[((int64_t)(t_begin + r) * a.n_head + h) * D + c] = l > 0.f ? Os[r * L::LDO + c] / l : 0.f;
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
        configured = true;
    }
    dim3 grid(a.n_items, a.n_head);
    prefill_kernel<D><<<grid, THREADS, L::bytes, st>>>(a);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

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

extern "C" int kw_cuda_attn_prefill(void *stream, const kw_cuda_prefill *a)
{
    if (!a || a->kv != KW_CUDA_KV_BF16 || a->page_tokens <= 0 || a->n_kv <= 0
        || a->n_head % a->n_kv || a->n_items < 0)
        return KW_EINVAL;
    if (a->n_items == 0)
        return KW_OK;
    cudaStream_t st = (cudaStream_t)stream;
    if (a->head_dim == 128)
        return launch<128>(st, *a);
    if (a->head_dim == 64)
        return launch<64>(st, *a);
    return KW_EINVAL;
}
