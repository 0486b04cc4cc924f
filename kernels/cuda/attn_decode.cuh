// Decode attention over a view: every KV layout (dense, token-level, page-level, main or
// temporary pool) is a CSR of spans, read by this one kernel. See kernels_cuda.h.
#pragma once
#include "kernels_cuda.h"
