// Page append for device KV pools (bf16 pages in kvpool.c's layout).
#pragma once
#include "kernels_cuda.h"
