// Page append for device KV pools (bf16 pages in kvpool.c's layout, or its int8 pages),
// and int8 pages dequantized into bf16 ones.
#pragma once
#include "kernels_cuda.h"
