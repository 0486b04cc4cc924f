// Device discovery and error bookkeeping shared by every kernel family.
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

// -1: not decided yet; set on first use from the device and KVWEAVE_CUDA_PDL.
static int pdl_state = -1;

extern "C" void kw_cuda_set_pdl(int on)
{
    pdl_state = -1; // on: decided again from the device and the environment
    if (!on)
        pdl_state = 0;
}

extern "C" int kw_cuda_pdl_on(void)
{
    if (pdl_state >= 0)
        return pdl_state;
    const char *env = getenv("KVWEAVE_CUDA_PDL");
    int dev = 0, major = 0, minor = 0;
    if ((env && !strcmp(env, "0")) || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return pdl_state = 0;
    }
    return pdl_state = major == 9 && minor == 0;
}
