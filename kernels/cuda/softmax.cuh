// Row softmax in place (f32) and argmax (ties: lowest index).
#pragma once
#include "kernels_cuda.h"
