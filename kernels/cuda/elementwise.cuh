// Element-wise kernels (f32): SwiGLU, add, embedding gather.
#pragma once
#include "kernels_cuda.h"
