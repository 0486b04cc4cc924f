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

#ifdef __cplusplus
}
#endif
#endif
