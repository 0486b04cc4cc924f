// Device discovery and error bookkeeping shared by every kernel family.
#include <cstdio>

#include "common.cuh"
#include "kernels_cuda.h"

static thread_local char last_error[512];

extern "C" int kw__cuda_fail(cudaError_t e, const char *call, const char *file, int line)
{
    snprintf(last_error, sizeof last_error, "%s: %s (%s:%d)", call, cudaGetErrorString(e),
             file, line);
    return KW_ECUDA;
}

extern "C" const char *kw_cuda_last_error(void) { return last_error; }

extern "C" int kw_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}
