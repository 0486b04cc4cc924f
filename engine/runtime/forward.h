/* The CPU forward pass with hooks (internal to the runtime): weights in their GGUF blocks
 * or as f32, one step
 * over a batch of sequences (prefill chunks and decode tokens mixed). */
#ifndef KW_RUNTIME_FORWARD_H
#define KW_RUNTIME_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "kvweave/kvhook.h"
#include "kvweave/kvpool.h"
#include "kvweave/model.h"

typedef struct kw_fwd kw_fwd;

#define KW_FWD_MAX_SEQ 64
/* CPU steps of at most this many tokens read Q4_0 / Q4_1 / Q8_0 matrices' blocks directly
 * (kw_k_linear_q); larger steps dequantize a tile of rows at a time for sgemm
 * (kw_k_linear_qt). KVWEAVE_CPU_QROWS overrides. */
#define KW_FWD_QROWS 16
/* The most floats of that tile (16 MiB) */
#define KW_FWD_TILE_FLOATS ((int64_t)4 << 20)

/* Q4_0 / Q4_1 / Q8_0 matrices (the token embedding included) are kept only in their
 * blocks, split for kw_k_linear_q; other weights as f32 (F32 tensors used in place,
 * others dequantized once). m must outlive the result. max_tok: tokens per step. */
int kw__fwd_new(const kw_model *m, int max_tok, kw_fwd **out, kw_error *err);
kw_fwd *kw__fwd_free(kw_fwd *f);
/* The same forward on a CUDA device (forward_cuda.c): weights uploaded once as bf16, KV
 * pages on the device for `pool` (a device_pages pool, kept alive by the caller); KV
 * hooks run on the host as on the CPU (forward_cuda_hooks.c). */
/* CUDA forwards only (benchmarks): a context of n_tok random K/V tokens in every layer. */
int kw__fwd_fill_random(kw_fwd *f, kw_kvseq *kv, int n_past, int n_tok, uint64_t seed,
                        kw_error *err);
int kw__fwd_new_cuda(const kw_model *m, int max_tok, int max_seq, kw_kvpool *pool,
                     int device, kw_fwd **out, kw_error *err);
const kw_model_config *kw__fwd_cfg(const kw_fwd *f);
/* CUDA forwards: decode steps captured as CUDA graphs and replayed (0 and 0 otherwise). */
void kw__fwd_graph_stats(const kw_fwd *f, int64_t *captures, int64_t *launches);
/* Bytes copied host <-> device by steps so far (0 and 0 on the CPU). */
void kw__fwd_io_stats(const kw_fwd *f, int64_t *h2d, int64_t *d2h);
/* Device memory in use (kw__cfwd_device_used); -1 on the CPU. */
int64_t kw__fwd_device_used(const kw_fwd *f);
/* CUDA forwards: the device page table's smallest size in ints (min_ints > 0 sets it; a
 * small one makes tests rebuild it often); returns the rebuilds so far (0 on the CPU). */
int64_t kw__fwd_ptab(kw_fwd *f, int64_t min_ints);

typedef struct kw_fwd_step {
    int n_seq;
    kw_seq **seqs;
    const kw_hookstack *const *stacks; /* (n_seq) nullable entries */
    const int *tok_first, *tok_n;      /* (n_seq) contiguous, in order */
    const int32_t *ids, *pos;          /* (n_tok) */
    const bool *prefill, *last_chunk;  /* (n_seq) */
    const int *logit_tok;              /* (n_logits) step token indices */
    int n_logits;
    float *logits;                     /* (n_logits, n_vocab) */
    int64_t step;
    int obs_window;
    kw_seq *const *twins;              /* (n_seq) nullable, entries nullable: at the last
                                          prefill chunk of sequence i, each layer's KV is
                                          shared into twins[i]->kv (kw_kvseq_share_layer)
                                          after attention and before on_prefill_end */
    int seq_rc[64];                    /* out: per sequence hook error (0 ok) */
    int64_t attended[KW_FWD_MAX_SEQ];  /* out: per sequence, tokens read by attention
                                          summed over layers */
    int twin_rc[KW_FWD_MAX_SEQ];       /* out: sharing into twins[i] failed (also in
                                          seq_rc): KW_ERANGE the sequence no longer held
                                          its whole prompt (a hook dropped tokens before
                                          the prompt ended), KW_ELIMIT no page left */
} kw_fwd_step;

/* Runs one step; the KV of all step tokens is appended to each sequence's kv. A hook
 * error marks that sequence in seq_rc (the step still completes for the others). */
int kw__fwd_run(kw_fwd *f, kw_kvpool *pool, kw_fwd_step *s, kw_error *err);


#endif
