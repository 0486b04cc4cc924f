// Page append: scatters the K and V rows of a step into bf16 or int8 pages at slots the
// host's pool chose (kw_kvseq_append_slots), and writes the positions beside them; and the
// gather that dequantizes int8 pages into bf16 ones for the prefill kernels.
#include <cstdint>
#include <cuda_bf16.h>

#include "common.cuh"
#include "kvpage.cuh"

// One block per (token, kv head); slot < 0: skipped (the host could not place it).
__global__ void kv_append_bf16(__nv_bfloat16 *__restrict__ base, int32_t *__restrict__ pos_base,
                               int P, int hd, int n_kv, const float *__restrict__ k,
                               const float *__restrict__ v, const int32_t *__restrict__ pos,
                               const int32_t *__restrict__ slots)
{
    int t = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
    int32_t s = slots[blockIdx.x];
    if (s < 0)
        return;
    int64_t page = s / P, slot = s % P;
    __nv_bfloat16 *pg = base + page * 2 * P * hd;
    const float *kr = k + ((int64_t)t * n_kv + h) * hd, *vr = v + ((int64_t)t * n_kv + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        pg[slot * hd + i] = __float2bfloat16_rn(kr[i]);
        pg[(P + slot) * hd + i] = __float2bfloat16_rn(vr[i]);
    }
    if (threadIdx.x == 0)
        pos_base[s] = pos[t];
}

extern "C" int kw_cuda_kv_append(void *stream, void *base, int32_t *pos_base, int page_tokens,
                                 int head_dim, int n_tok, int n_kv, const float *k,
                                 const float *v, const int32_t *pos, const int32_t *slots)
{
    if (n_tok <= 0 || n_kv <= 0 || page_tokens <= 0 || head_dim <= 0 || !base || !pos_base)
        return KW_EINVAL;
    kv_append_bf16<<<n_tok * n_kv, head_dim < 128 ? head_dim : 128, 0, (cudaStream_t)stream>>>(
        (__nv_bfloat16 *)base, pos_base, page_tokens, head_dim, n_kv, k, v, pos, slots);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// Rotates pair i of a row x in place (kw_cuda_rope's arithmetic): x[i0], x[i1] become
// r0, r1.
__device__ __forceinline__ void rope_pair(float *x, float p, const float *inv_freq, int i,
                                          int half, int interleaved, int &i0, int &i1,
                                          float &r0, float &r1)
{
    float sn, c;
    sincosf(p * inv_freq[i], &sn, &c);
    i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
    const float a = x[i0], b = x[i1];
    r0 = a * c - b * sn, r1 = a * sn + b * c;
    x[i0] = r0, x[i1] = r1;
}

// Threads of a rope-append block: one per rotated pair, whole warps, at most 128.
static int rope_threads(int head_dim)
{
    return head_dim / 2 < 128 ? ((head_dim / 2 + 31) / 32) * 32 : 128;
}

// RoPE and append in one launch (a decode step's layer had three): blocks (t, h) with
// h < n_head rotate query head h of token t in place; the others rotate K head
// h - n_head in place (as kw_cuda_rope does) and write it and the V row to the token's
// slot. A thread owns one rotated pair; the arithmetic is kw_cuda_rope's.
__global__ void rope_append_bf16(float *__restrict__ q, float *__restrict__ k,
                                 const float *__restrict__ v, const int32_t *__restrict__ pos,
                                 const float *__restrict__ inv_freq, int n_head, int n_kv,
                                 int hd, int interleaved, __nv_bfloat16 *__restrict__ base,
                                 int32_t *__restrict__ pos_base, int P,
                                 const int32_t *__restrict__ slots)
{
    const int t = blockIdx.x, y = blockIdx.y, half = hd / 2;
    const bool is_k = y >= n_head;
    const int h = is_k ? y - n_head : y;
    kw_grid_wait();
    kw_grid_dependents();
    float *x = is_k ? k + ((size_t)t * n_kv + h) * hd : q + ((size_t)t * n_head + h) * hd;
    const float p = (float)pos[t];
    const int32_t s = is_k ? slots[(size_t)t * n_kv + h] : -1;
    __nv_bfloat16 *kp = nullptr, *vp = nullptr;
    const float *vr = nullptr;
    if (s >= 0) {
        vr = v + ((size_t)t * n_kv + h) * hd;
        __nv_bfloat16 *pg = base + (int64_t)(s / P) * 2 * P * hd;
        kp = pg + (int64_t)(s % P) * hd, vp = pg + (int64_t)(P + s % P) * hd;
        if (threadIdx.x == 0)
            pos_base[s] = pos[t];
    }
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        int i0, i1;
        float r0, r1;
        rope_pair(x, p, inv_freq, i, half, interleaved, i0, i1, r0, r1);
        if (kp) {
            kp[i0] = __float2bfloat16_rn(r0), kp[i1] = __float2bfloat16_rn(r1);
            vp[i0] = __float2bfloat16_rn(vr[i0]), vp[i1] = __float2bfloat16_rn(vr[i1]);
        }
    }
}

extern "C" int kw_cuda_rope_append(void *stream, float *q, float *k, const float *v,
                                   const int32_t *pos, int n_tok, int n_head, int n_kv,
                                   int head_dim, const float *inv_freq, int interleaved,
                                   void *base, int32_t *pos_base, int page_tokens,
                                   const int32_t *slots)
{
    if (n_tok <= 0 || n_head <= 0 || n_kv <= 0 || head_dim <= 0 || head_dim % 2 ||
        n_head + n_kv > 65535 || page_tokens <= 0 || !q || !k || !v || !pos || !inv_freq ||
        !base || !pos_base || !slots)
        return KW_EINVAL;
    const int threads = rope_threads(head_dim);
    KW_CUDA_TRY(kw_launch(rope_append_bf16, dim3(n_tok, n_head + n_kv), threads, 0,
                          (cudaStream_t)stream, q, k, v, pos, inv_freq, n_head, n_kv, head_dim,
                          interleaved, (__nv_bfloat16 *)base, pos_base, page_tokens, slots));
    return KW_OK;
}

// ---- int8 pages (kvpool.h's int8 layout, kw_cuda_i8_page_bytes a page) ----
// A row is quantized as kvpool.c's row_put does, step for step in IEEE f32 (no fused or
// approximate operation): absmax, scale = absmax / 127, inv = 127 / absmax (0 for a zero
// row), int8 = round-to-nearest-even(x * inv) clamped to [-127, 127]. The maximum does
// not depend on the order it is taken in, so the bytes equal the host pool's.

__device__ __forceinline__ int8_t quant_i8(float x, float inv)
{
    const int q = __float2int_rn(__fmul_rn(x, inv));
    return (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
}

// The largest |k| and |v| of the block's rows (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ float2 block_absmax2(float mk, float mv)
{
    __shared__ float2 red[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        mk = fmaxf(mk, __shfl_xor_sync(0xffffffffu, mk, o));
        mv = fmaxf(mv, __shfl_xor_sync(0xffffffffu, mv, o));
    }
    if (threadIdx.x % 32 == 0)
        red[threadIdx.x / 32] = make_float2(mk, mv);
    __syncthreads();
    float2 r = red[0];
    for (int w = 1; w < (int)blockDim.x / 32; w++)
        r.x = fmaxf(r.x, red[w].x), r.y = fmaxf(r.y, red[w].y);
    return r;
}

// Writes the K row kr and V row vr (f32, hd values each; their absmax mx) to global slot
// s of an int8 pool: int8 rows, then the two scales.
__device__ __forceinline__ void put_i8_rows(uint8_t *base, int P, int hd, int32_t s,
                                            const float *kr, const float *vr, float2 mx)
{
    uint8_t *pg = base + (int64_t)(s / P) * kw_i8_page_bytes(P, hd);
    const int slot = s % P;
    int8_t *kq = (int8_t *)pg + (int64_t)slot * hd, *vq = (int8_t *)pg + (int64_t)(P + slot) * hd;
    const float ik = mx.x > 0.f ? __fdiv_rn(127.f, mx.x) : 0.f;
    const float iv = mx.y > 0.f ? __fdiv_rn(127.f, mx.y) : 0.f;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        kq[i] = quant_i8(kr[i], ik);
        vq[i] = quant_i8(vr[i], iv);
    }
    if (threadIdx.x == 0) {
        float *sc = (float *)(pg + 2 * (int64_t)P * hd);
        sc[slot] = __fdiv_rn(mx.x, 127.f);
        sc[P + slot] = __fdiv_rn(mx.y, 127.f);
    }
}

// One block per (token, kv head), as kv_append_bf16.
__global__ void kv_append_i8(uint8_t *__restrict__ base, int32_t *__restrict__ pos_base, int P,
                             int hd, int n_kv, const float *__restrict__ k,
                             const float *__restrict__ v, const int32_t *__restrict__ pos,
                             const int32_t *__restrict__ slots)
{
    const int t = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
    const int32_t s = slots[blockIdx.x];
    if (s < 0)
        return;
    const float *kr = k + ((int64_t)t * n_kv + h) * hd, *vr = v + ((int64_t)t * n_kv + h) * hd;
    float mk = 0.f, mv = 0.f;
    for (int i = threadIdx.x; i < hd; i += blockDim.x)
        mk = fmaxf(mk, fabsf(kr[i])), mv = fmaxf(mv, fabsf(vr[i]));
    put_i8_rows(base, P, hd, s, kr, vr, block_absmax2(mk, mv));
    if (threadIdx.x == 0)
        pos_base[s] = pos[t];
}

static int i8_append_args(int page_tokens, int head_dim, int n_tok, int n_kv, const void *base,
                          const int32_t *pos_base)
{
    return n_tok <= 0 || n_kv <= 0 || page_tokens <= 0 || head_dim <= 0 || head_dim % 2 ||
           !base || !pos_base || (uintptr_t)base % 4;
}

static int i8_threads(int head_dim) { return head_dim < 128 ? (head_dim + 31) / 32 * 32 : 128; }

extern "C" int kw_cuda_kv_append_i8(void *stream, void *base, int32_t *pos_base, int page_tokens,
                                    int head_dim, int n_tok, int n_kv, const float *k,
                                    const float *v, const int32_t *pos, const int32_t *slots)
{
    if (i8_append_args(page_tokens, head_dim, n_tok, n_kv, base, pos_base))
        return KW_EINVAL;
    kv_append_i8<<<n_tok * n_kv, i8_threads(head_dim), 0, (cudaStream_t)stream>>>(
        (uint8_t *)base, pos_base, page_tokens, head_dim, n_kv, k, v, pos, slots);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// rope_append_bf16 for int8 pages: a K block rotates its row in place (kw_cuda_rope's
// arithmetic), takes the absmax of the rotated K and of V over the block, then reads the
// rotated row back (its own writes) to quantize it.
__global__ void rope_append_i8(float *__restrict__ q, float *__restrict__ k,
                               const float *__restrict__ v, const int32_t *__restrict__ pos,
                               const float *__restrict__ inv_freq, int n_head, int n_kv, int hd,
                               int interleaved, uint8_t *__restrict__ base,
                               int32_t *__restrict__ pos_base, int P,
                               const int32_t *__restrict__ slots)
{
    const int t = blockIdx.x, y = blockIdx.y, half = hd / 2;
    const bool is_k = y >= n_head;
    const int h = is_k ? y - n_head : y;
    kw_grid_wait();
    kw_grid_dependents();
    float *x = is_k ? k + ((size_t)t * n_kv + h) * hd : q + ((size_t)t * n_head + h) * hd;
    const float p = (float)pos[t];
    const int32_t s = is_k ? slots[(size_t)t * n_kv + h] : -1;
    const float *vr = is_k ? v + ((size_t)t * n_kv + h) * hd : nullptr;
    float mk = 0.f, mv = 0.f;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        int i0, i1;
        float r0, r1;
        rope_pair(x, p, inv_freq, i, half, interleaved, i0, i1, r0, r1);
        if (s >= 0) {
            mk = fmaxf(mk, fmaxf(fabsf(r0), fabsf(r1)));
            mv = fmaxf(mv, fmaxf(fabsf(vr[i0]), fabsf(vr[i1])));
        }
    }
    if (s < 0) // the block's choice: every thread of it returns here or none does
        return;
    const float2 mx = block_absmax2(mk, mv); // its barrier also orders the writes to x
    put_i8_rows(base, P, hd, s, x, vr, mx);
    if (threadIdx.x == 0)
        pos_base[s] = pos[t];
}

extern "C" int kw_cuda_rope_append_i8(void *stream, float *q, float *k, const float *v,
                                      const int32_t *pos, int n_tok, int n_head, int n_kv,
                                      int head_dim, const float *inv_freq, int interleaved,
                                      void *base, int32_t *pos_base, int page_tokens,
                                      const int32_t *slots)
{
    if (i8_append_args(page_tokens, head_dim, n_tok, n_kv, base, pos_base) || n_head <= 0 ||
        n_head + n_kv > 65535 || !q || !k || !v || !pos || !inv_freq || !slots)
        return KW_EINVAL;
    const int threads = rope_threads(head_dim);
    KW_CUDA_TRY(kw_launch(rope_append_i8, dim3(n_tok, n_head + n_kv), threads, 0,
                          (cudaStream_t)stream, q, k, v, pos, inv_freq, n_head, n_kv, head_dim,
                          interleaved, (uint8_t *)base, pos_base, page_tokens, slots));
    return KW_OK;
}

// A block per (page i, row r): the page's 16-byte chunks of int8 (16 values of one row,
// whose scale is that row's) become two chunks of bf16.
__global__ void rows_i8_to_bf16(const uint8_t *__restrict__ src,
                                const int32_t *__restrict__ src_pos, int P, int hd,
                                const int32_t *__restrict__ pages,
                                const int32_t *__restrict__ row_ptr,
                                const int32_t *__restrict__ row_tokens,
                                const int32_t *__restrict__ dst_ptr,
                                __nv_bfloat16 *__restrict__ dst, int32_t *__restrict__ dst_pos)
{
    const int r = blockIdx.y, i = blockIdx.x, n = row_tokens[r], d = dst_ptr[r];
    if (d < 0 || (int64_t)i * P >= n)
        return;
    const int valid = min(P, n - i * P);
    const int64_t g = pages[row_ptr[r] + i];
    const uint8_t *pg = src + g * kw_i8_page_bytes(P, hd);
    const float *sc = (const float *)(pg + 2 * (int64_t)P * hd); // K scales, then V scales
    __nv_bfloat16 *out = dst + (int64_t)(d + i) * 2 * P * hd;
    const int cpr = hd / 16; // chunks per row
    for (int u = threadIdx.x; u < 2 * P * cpr; u += blockDim.x) {
        const int row = u / cpr, slot = row < P ? row : row - P; // K rows, then V rows
        uint4 o[2] = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
        if (slot < valid) {
            const uint4 raw = *(const uint4 *)(pg + (int64_t)u * 16);
            const int8_t *b = (const int8_t *)&raw;
            const float s = sc[row];
            uint32_t *w = (uint32_t *)o;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const __nv_bfloat162 h2 = __floats2bfloat162_rn(__fmul_rn(s, (float)b[2 * e]),
                                                                __fmul_rn(s, (float)b[2 * e + 1]));
                w[e] = *(const uint32_t *)&h2;
            }
        }
        uint4 *dp = (uint4 *)(out + (int64_t)u * 16);
        dp[0] = o[0], dp[1] = o[1];
    }
    for (int t = threadIdx.x; t < P; t += blockDim.x)
        dst_pos[(int64_t)(d + i) * P + t] = t < valid ? src_pos[g * P + t] : 0x7f7f7f7f;
}

extern "C" int kw_cuda_rows_i8_to_bf16(void *stream, const void *src, const int32_t *src_pos,
                                       int page_tokens, int head_dim, int n_rows,
                                       const int32_t *pages, const int32_t *row_ptr,
                                       const int32_t *row_tokens, const int32_t *dst_ptr,
                                       int max_pages, void *dst, int32_t *dst_pos)
{
    if (page_tokens <= 0 || page_tokens % 2 || head_dim <= 0 || head_dim % 16 || n_rows < 0 ||
        n_rows > 65535 || max_pages < 0 || !src || !dst || (uintptr_t)src % 16 ||
        (uintptr_t)dst % 16)
        return KW_EINVAL;
    if (n_rows == 0 || max_pages == 0)
        return KW_OK;
    if (!src_pos || !pages || !row_ptr || !row_tokens || !dst_ptr || !dst_pos)
        return KW_EINVAL;
    rows_i8_to_bf16<<<dim3(max_pages, n_rows), 128, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)src, src_pos, page_tokens, head_dim, pages, row_ptr, row_tokens,
        dst_ptr, (__nv_bfloat16 *)dst, dst_pos);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}

// ---- host reads of a table's rows (kvpool.h, kw_kvpool_device.read) ----
// One block per row: row j (of n, from first) is slot (first + j) % P of page
// pages[(first + j) / P]; K (which 0) or V (1) as f32. bf16: the exact widening; int8:
// scale x int8 in f32, as kw_kvmem_row does.
__global__ void page_rows_f32(const uint8_t *__restrict__ base, int i8, int P, int hd,
                              const int32_t *__restrict__ pages, int first, int which,
                              float *__restrict__ out)
{
    const int64_t j = first + (int64_t)blockIdx.x, g = pages[j / P],
                  r = (int64_t)which * P + j % P;
    float *o = out + (int64_t)blockIdx.x * hd;
    if (i8) {
        const uint8_t *pg = base + g * kw_i8_page_bytes(P, hd);
        const int8_t *q = (const int8_t *)pg + r * hd;
        const float sc = ((const float *)(pg + (int64_t)2 * P * hd))[r];
        for (int i = threadIdx.x; i < hd; i += blockDim.x)
            o[i] = sc * (float)q[i];
    } else {
        const __nv_bfloat16 *x = (const __nv_bfloat16 *)base + (g * 2 * P + r) * hd;
        for (int i = threadIdx.x; i < hd; i += blockDim.x)
            o[i] = __bfloat162float(x[i]);
    }
}

extern "C" int kw_cuda_page_rows_f32(void *stream, const void *base, kw_cuda_kvtype kv,
                                     int page_tokens, int head_dim, const int32_t *pages,
                                     int first, int n, int which, float *out)
{
    if (page_tokens <= 0 || head_dim <= 0 || first < 0 || first >= page_tokens || n < 0 ||
        (which != 0 && which != 1) || (kv != KW_CUDA_KV_BF16 && kv != KW_CUDA_KV_I8) ||
        !base || !pages || !out)
        return KW_EINVAL;
    if (n == 0)
        return KW_OK;
    page_rows_f32<<<n, head_dim < 128 ? head_dim : 128, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)base, kv == KW_CUDA_KV_I8, page_tokens, head_dim, pages, first,
        which, out);
    KW_CUDA_LAUNCHED();
    return KW_OK;
}
