/* CUDA launchers behind kernels.h, callable from C. Each takes a cudaStream_t (as void *),
 * device pointers, checks its shapes, launches, checks the launch, and returns a status;
 * a CUDA failure is KW_ECUDA with the call and file:line in kw_cuda_last_error(). */
#ifndef KW_KERNELS_CUDA_H
#define KW_KERNELS_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no device or no driver. */
int kw_cuda_device_count(void);
/* The message of the last failure on this thread ("" if none). */
const char *kw_cuda_last_error(void);

/* rmsnorm.cu */
int kw_cuda_rmsnorm(void *stream, const float *x, const float *g, float *y, int rows, int dim,
                    float eps);
/* rope.cu: interleaved != 0 for pairs (2i, 2i+1), else (i, i + d/2) */
int kw_cuda_rope(void *stream, float *x, const int32_t *pos, int n_tok, int n_heads,
                 int head_dim, const float *inv_freq, int interleaved);
/* elementwise.cu */
int kw_cuda_swiglu(void *stream, const float *gate, const float *up, float *out, int64_t n);
int kw_cuda_add(void *stream, float *y, const float *x, int64_t n);
/* synchronizes the stream to report an id out of range (KW_ERANGE) */
int kw_cuda_embed(void *stream, const float *table, int64_t n_rows, int dim,
                  const int32_t *ids, int n, float *out);
/* softmax.cu */
int kw_cuda_softmax(void *stream, float *x, int rows, int n);
/* out(rows): index of each row's max, ties to the lowest index */
int kw_cuda_argmax(void *stream, const float *x, int rows, int n, int32_t *out);

#ifdef __cplusplus
}
#endif
#endif
