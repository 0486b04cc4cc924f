/* kernels.h: routes each kernel to its backend. CUDA kernels exist only in builds with
 * nvcc (KW_HAVE_CUDA); elsewhere a CUDA call answers KW_ENOSYS. */
#include "cpu/kernels_cpu.h"
#include "kernels.h"
#include "kw_config.h"
#if KW_HAVE_CUDA
#include "cuda/kernels_cuda.h"
#endif

#if KW_HAVE_CUDA
#define CUDA_OR_ENOSYS(call) return (call)
#else
#define CUDA_OR_ENOSYS(call) return ((void)stream, KW_ENOSYS)
#endif

int kw_k_linear(kw_backend bk, void *stream, const float *x, const float *w,
                const float *bias, float *y, int M, int N, int K)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_linear(x, w, bias, y, M, N, K);
    CUDA_OR_ENOSYS(kw_cuda_linear(stream, x, w, bias, y, M, N, K));
}

int kw_k_linear_q(kw_backend bk, void *stream, const float *x, const kw_qmat *w,
                  const float *bias, float *y, int M, int N, int K)
{
    (void)stream;
    return bk == KW_BK_CPU ? kw_cpu_linear_q(x, w, bias, y, M, N, K) : KW_ENOSYS;
}

int kw_k_linear_qt(kw_backend bk, void *stream, const float *x, const kw_qmat *w,
                   const float *bias, float *y, int M, int N, int K, float *tile,
                   int64_t tile_floats)
{
    (void)stream;
    return bk == KW_BK_CPU ? kw_cpu_linear_qt(x, w, bias, y, M, N, K, tile, tile_floats)
                           : KW_ENOSYS;
}

int kw_k_rmsnorm(kw_backend bk, void *stream, const float *x, const float *g, float *y,
                 int rows, int dim, float eps)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_rmsnorm(x, g, y, rows, dim, eps);
    CUDA_OR_ENOSYS(kw_cuda_rmsnorm(stream, x, g, y, rows, dim, eps));
}

int kw_k_rope(kw_backend bk, void *stream, float *x, const int32_t *pos, int n_tok,
              int n_heads, int head_dim, const float *inv_freq, kw_rope_layout layout)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_rope(x, pos, n_tok, n_heads, head_dim, inv_freq, layout);
    CUDA_OR_ENOSYS(kw_cuda_rope(stream, x, pos, n_tok, n_heads, head_dim, inv_freq,
                                layout == KW_ROPE_INTERLEAVED));
}

int kw_k_swiglu(kw_backend bk, void *stream, const float *gate, const float *up, float *out,
                int64_t n)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_swiglu(gate, up, out, n);
    CUDA_OR_ENOSYS(kw_cuda_swiglu(stream, gate, up, out, n));
}

int kw_k_embed(kw_backend bk, void *stream, const float *table, int64_t n_rows, int dim,
               const int32_t *ids, int n, float *out)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_embed(table, n_rows, dim, ids, n, out);
    CUDA_OR_ENOSYS(kw_cuda_embed(stream, table, n_rows, dim, ids, n, out));
}

int kw_k_embed_q(kw_backend bk, void *stream, const kw_qmat *table, int64_t n_rows, int dim,
                 const int32_t *ids, int n, float *out)
{
    (void)stream;
    return bk == KW_BK_CPU ? kw_cpu_embed_q(table, n_rows, dim, ids, n, out) : KW_ENOSYS;
}

int kw_k_add(kw_backend bk, void *stream, float *y, const float *x, int64_t n)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_add(y, x, n);
    CUDA_OR_ENOSYS(kw_cuda_add(stream, y, x, n));
}

int kw_k_softmax(kw_backend bk, void *stream, float *x, int rows, int n)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_softmax(x, rows, n);
    CUDA_OR_ENOSYS(kw_cuda_softmax(stream, x, rows, n));
}

/* ---- selection ---- */

int kw_k_window_scores(kw_backend bk, void *stream, const float *probs, int n_q, int n_head,
                       int len, int group, int n_key, float *out)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_window_scores(probs, n_q, n_head, len, group, n_key, out);
    CUDA_OR_ENOSYS(kw_cuda_window_scores(stream, probs, n_q, n_head, len, group, n_key, out));
}

int kw_k_pool1d(kw_backend bk, void *stream, const float *x, int rows, int n, int kernel,
                kw_pooling mode, float *out)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_pool1d(x, rows, n, kernel, mode, out);
    if (mode != KW_POOLING_AVG && mode != KW_POOLING_MAX)
        return KW_EINVAL;
    CUDA_OR_ENOSYS(kw_cuda_pool1d(stream, x, rows, n, kernel, mode == KW_POOLING_MAX, out));
}

int kw_k_topk(kw_backend bk, void *stream, const float *x, int rows, int n, int k,
              int32_t *idx)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_topk(x, rows, n, k, idx);
    CUDA_OR_ENOSYS(kw_cuda_topk(stream, x, rows, n, k, idx));
}

/* ---- page metadata and compaction ---- */

int kw_k_page_bounds(kw_backend bk, void *stream, const float *k, int n_tok, int head_dim,
                     int page, float *kmin, float *kmax)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_page_bounds(k, n_tok, head_dim, page, kmin, kmax);
    CUDA_OR_ENOSYS(kw_cuda_page_bounds(stream, k, n_tok, head_dim, page, kmin, kmax));
}

int kw_k_page_scores(kw_backend bk, void *stream, const float *q, int n_q, int head_dim,
                     const float *kmin, const float *kmax, int n_pages, float *scores)
{
    if (bk == KW_BK_CPU)
        return kw_cpu_page_scores(q, n_q, head_dim, kmin, kmax, n_pages, scores);
    CUDA_OR_ENOSYS(
        kw_cuda_page_scores(stream, q, n_q, head_dim, kmin, kmax, n_pages, scores));
}

int kw_k_page_compact(kw_backend bk, void *stream, const kw_page_layout *pool, int n_tab,
                      const int32_t *keep_off, const int32_t *keep, const int32_t *src_off,
                      const int32_t *src, const int32_t *dst_off, const int32_t *dst)
{
    if (!pool)
        return KW_EINVAL;
    if (bk == KW_BK_CPU)
        return kw_cpu_page_compact(pool, n_tab, keep_off, keep, src_off, src, dst_off, dst);
    CUDA_OR_ENOSYS(kw_cuda_page_compact(stream, pool->base, pool->pos, pool->page_bytes,
                                        pool->page_tokens, pool->row_bytes, pool->scale_bytes,
                                        n_tab, keep_off, keep, src_off, src, dst_off, dst));
}
