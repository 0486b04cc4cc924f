// Shared by the CUDA kernel families: status conversion and launch checks.
#pragma once

#include <cuda_runtime.h>

#include "kvweave/status.h"

// Records "call: error (file:line)" for kw_cuda_last_error and returns KW_ECUDA.
extern "C" int kw__cuda_fail(cudaError_t e, const char *call, const char *file, int line);

#define KW_CUDA_TRY(call)                                                                  \
    do {                                                                                   \
        cudaError_t kw_e_ = (call);                                                        \
        if (kw_e_ != cudaSuccess)                                                          \
            return kw__cuda_fail(kw_e_, #call, __FILE__, __LINE__);                        \
    } while (0)

// After a launch: a bad configuration shows up here, not at the next sync.
#define KW_CUDA_LAUNCHED() KW_CUDA_TRY(cudaGetLastError())

// Programmatic dependent launch (Hopper): a kernel launched by kw_launch may start while
// the kernel before it on the stream is still running, so every such kernel calls
// kw_grid_wait() before it reads what earlier kernels wrote or writes what they read, and
// may do independent work (issue loads of weights) before it. kw_grid_dependents() lets
// the next kernel's blocks be scheduled once every block of this one has called it.
// Both are no-ops on code built for other architectures, where kw_cuda_pdl_on() is 0.
__device__ __forceinline__ void kw_grid_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void kw_grid_dependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// 1 when the current device has compute capability 9.0, for which the library holds
// sm_90a code (wgmma, griddepcontrol); asked once per process.
extern "C" int kw__cuda_sm90a(void);

// kw_cuda_pdl_on() (kernels_cuda.h) is 1 when launches may overlap: asked for
// (KVWEAVE_CUDA_PDL=1, kw_cuda_set_pdl, or kw_cuda_pdl_step on this thread when nothing
// forces a choice) and the device runs this library's sm_90a code
// (compute capability 9.0).
extern "C" int kw_cuda_pdl_on(void);

// Launches kernel k like k<<<grid, block, smem, st>>>(args...), with programmatic
// dependent launch when kw_cuda_pdl_on(); k must call kw_grid_wait() as described above.
template <typename... P, typename... A>
static inline cudaError_t kw_launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem,
                                    cudaStream_t st, A &&...args)
{
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cfg.attrs = at, cfg.numAttrs = kw_cuda_pdl_on() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, static_cast<A &&>(args)...);
}

// Blocks of 256 threads for a grid-stride loop over n items (at least 1, at most 65536).
static inline int kw_blocks_for(int64_t n)
{
    int64_t b = (n + 255) / 256;
    return (int)(b > 65536 ? 65536 : b < 1 ? 1 : b);
}

// kw_cuda_i8_page_bytes (kernels_cuda.h) for device code: an int8 page's bytes.
__host__ __device__ __forceinline__ int64_t kw_i8_page_bytes(int page_tokens, int head_dim)
{
    return 2 * (int64_t)page_tokens * head_dim + 8 * (int64_t)page_tokens;
}
