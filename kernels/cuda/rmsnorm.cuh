// RMSNorm: y(rows, dim) = x / sqrt(mean(x^2) + eps) * g, f32, one block per row.
#pragma once
#include "kernels_cuda.h"
