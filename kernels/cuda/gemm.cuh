// GEMMs through cuBLAS: f32 (TF32 off) and bf16 x bf16 with f32 accumulation and output.
#pragma once
#include "kernels_cuda.h"
