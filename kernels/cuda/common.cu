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

extern "C" int kw__cuda_sm90a(void)
{
    static int v = -1;
    if (v < 0) {
        int dev = 0, major = 0, minor = 0;
        v = cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
            major == 9 && minor == 0;
        if (!v)
            (void)cudaGetLastError();
    }
    return v;
}

// The forced choice: -1 not decided yet, 0 off, 1 on, 2 auto (nothing forced; the
// caller decides with kw_cuda_pdl_step). asked: what kw_cuda_set_pdl asked for (-1: the
// environment's choice). step: this thread's per-step choice under auto (-1: none, off).
static int pdl_state = -1, pdl_asked = -1;
static thread_local int pdl_step = -1;

extern "C" void kw_cuda_set_pdl(int on)
{
    pdl_asked = on < 0 ? -1 : on > 0;
    pdl_state = -1;
}

static int pdl_forced(void)
{
    if (pdl_state >= 0)
        return pdl_state;
    const char *env = getenv("KVWEAVE_CUDA_PDL");
    const int want = pdl_asked >= 0                 ? pdl_asked
                     : env && !strcmp(env, "1") ? 1
                     : env && !strcmp(env, "0") ? 0
                                                : 2;
    return pdl_state = kw__cuda_sm90a() ? want : 0;
}

extern "C" int kw_cuda_pdl_auto(void) { return pdl_forced() == 2; }

extern "C" void kw_cuda_pdl_step(int on) { pdl_step = on < 0 ? -1 : on > 0; }

extern "C" int kw_cuda_pdl_on(void)
{
    const int f = pdl_forced();
    return f == 2 ? pdl_step > 0 : f;
}
