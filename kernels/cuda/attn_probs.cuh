// Attention probabilities of chosen queries over one sequence's view (attn_probs.cu).
#pragma once
#include "kernels_cuda.h"
