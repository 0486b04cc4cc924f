// RoPE in place over x(n_tok, n_heads, head_dim), f32, both pair layouts. The angle is
// the f32 product pos * inv_freq, as the CPU kernel and the reference define it.
#pragma once
#include "kernels_cuda.h"
