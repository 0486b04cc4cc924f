/* CPU implementations behind kernels.h (kernels/dispatch.c routes KW_BK_CPU here). Same
 * contracts as the kw_k_* functions, without backend and stream. */
#ifndef KW_KERNELS_CPU_H
#define KW_KERNELS_CPU_H

#include <stdint.h>

#include "kernels.h"
#include "kvweave/model.h"

/* Hot loops compiled for x86-64-v3 and the baseline, picked at load time (an ifunc). Not
 * under ThreadSanitizer: the resolver runs before its runtime starts and crashes there. */
#ifdef __SANITIZE_THREAD__
#define KW_CLONES
#else
#define KW_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif

int kw_cpu_linear(const float *x, const float *w, const float *bias, float *y, int M, int N,
                  int K);
int kw_cpu_linear_q(const float *x, const kw_qmat *w, const float *bias, float *y, int M, int N,
                    int K);
int kw_cpu_linear_qt(const float *x, const kw_qmat *w, const float *bias, float *y, int M,
                     int N, int K, float *tile, int64_t tile_floats);
int kw_cpu_embed_q(const kw_qmat *table, int64_t n_rows, int dim, const int32_t *ids, int n,
                   float *out);
int kw_cpu_rmsnorm(const float *x, const float *g, float *y, int rows, int dim, float eps);
int kw_cpu_rope(float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
                const float *inv_freq, kw_rope_layout layout);
int kw_cpu_swiglu(const float *gate, const float *up, float *out, int64_t n);
int kw_cpu_embed(const float *table, int64_t n_rows, int dim, const int32_t *ids, int n,
                 float *out);
int kw_cpu_add(float *y, const float *x, int64_t n);
int kw_cpu_softmax(float *x, int rows, int n);

/* selection (select.c) */
int kw_cpu_window_scores(const float *probs, int n_q, int n_head, int len, int group,
                         int n_key, float *out);
int kw_cpu_pool1d(const float *x, int rows, int n, int kernel, kw_pooling mode, float *out);
int kw_cpu_topk(const float *x, int rows, int n, int k, int32_t *idx);

/* page metadata (pages.c) */
int kw_cpu_page_bounds(const float *k, int n_tok, int head_dim, int page, float *kmin,
                       float *kmax);
int kw_cpu_page_scores(const float *q, int n_q, int head_dim, const float *kmin,
                       const float *kmax, int n_pages, float *scores);
int kw_cpu_page_compact(const kw_page_layout *pool, int n_tab, const int32_t *keep_off,
                        const int32_t *keep, const int32_t *src_off, const int32_t *src,
                        const int32_t *dst_off, const int32_t *dst);

#endif
