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
