// Causal prefill attention over views (bf16 pages), flash-style, on tensor cores.
#pragma once
#include "kernels_cuda.h"
