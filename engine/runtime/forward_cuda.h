/* The CUDA forward pass (internal to the runtime): the device-specific part of a step,
 * behind forward.h's kw__fwd_* calls. The engine's scheduling (batch.c), the pool's page
 * tables and the views stay on the host; weights (bf16), KV pages (bf16, kvpool.c's page
 * layout and numbering; or int8 pages, see forward_cuda.c) and activations (f32; bf16 at
 * GEMM inputs) live on the device.
 * Steps with KV hooks call them on the host, as the CPU forward does (hookcall.c). */
#ifndef KW_RUNTIME_FORWARD_CUDA_H
#define KW_RUNTIME_FORWARD_CUDA_H

#include "forward.h"

typedef struct kw_cfwd kw_cfwd;

/* Uploads the weights once and allocates the device pool for `pool`'s pages (which must
 * be a device_pages pool) and the workspace for max_tok tokens and max_seq sequences,
 * after checking the total against the device's free memory. */
int kw__cfwd_new(const kw_model *m, int max_tok, int max_seq, kw_kvpool *pool, int device,
                 kw_cfwd **out, kw_error *err);
kw_cfwd *kw__cfwd_free(kw_cfwd *c);
int kw__cfwd_run(kw_cfwd *c, kw_kvpool *pool, kw_fwd_step *s, int n_tok, kw_error *err);
/* Benchmarks: appends n_tok tokens at positions [n_past, n_past + n_tok) with random K and
 * V to every layer of kv, without running the model (a context for decode timing). */
int kw__cfwd_fill(kw_cfwd *c, kw_kvseq *kv, int n_past, int n_tok, uint64_t seed,
                  kw_error *err);
/* Decode steps captured as CUDA graphs and replayed so far (0 and 0 when graphs are off). */
void kw__cfwd_graph_stats(const kw_cfwd *c, int64_t *captures, int64_t *launches);
/* Bytes steps copied host -> device (work lists, step inputs) and device -> host
 * (logits, copies for hooks) so far. */
void kw__cfwd_io_stats(const kw_cfwd *c, int64_t *h2d, int64_t *d2h);
/* Bytes in use on the forward's device as the driver reports them (every process's); -1
 * when it cannot say. */
int64_t kw__cfwd_device_used(const kw_cfwd *c);
/* kw__fwd_ptab */
int64_t kw__cfwd_ptab(kw_cfwd *c, int64_t min_ints);

#endif
