// Decode attention over a view: every KV layout (dense, token-level, page-level, main or
// temporary pool) is a CSR of spans, read by this one kernel. See kernels_cuda.h.
#pragma once
#include "kernels_cuda.h"

// The tokens a span-view work item may hold: the kernel flattens an item into this many
// shared-memory slots (flatten_spans); the planner (attn_plan.cu) cuts items below it.
#define KW_ATTN_MAX_ITEM_TOKENS 1024
