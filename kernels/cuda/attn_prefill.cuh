// Causal prefill attention over views (bf16 pages), flash-style, on tensor cores.
#pragma once
#include "kernels_cuda.h"

// attn_cudnn.cu: the CUDNN kernel (a->host_tok_off and a->host_kv_len set, table mode;
// kw_cuda_attn_prefill has checked the rest). KW_ENOSYS when cuDNN is missing or has no
// engine for a sequence's shape; sequences before that one may have been written (AUTO's
// fallback writes every sequence again).
extern "C" int kw__cuda_prefill_cudnn(void *stream, const kw_cuda_prefill *a);
