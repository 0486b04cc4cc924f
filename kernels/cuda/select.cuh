// Observation-window scores, 1-D pooling (avg, max) and exact top-k by radix select.
#pragma once
#include "kernels_cuda.h"
