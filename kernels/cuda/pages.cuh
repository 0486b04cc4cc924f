// Page bounds and Quest page scores of K; page compaction of paged pools on the device.
#pragma once
#include "kernels_cuda.h"
