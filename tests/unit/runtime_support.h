/* Test support for the runtime tests: a tiny random model in memory and a plain
 * full-sequence reference forward pass (no pool, no views, no hooks). */
#ifndef KW_TEST_RUNTIME_SUPPORT_H
#define KW_TEST_RUNTIME_SUPPORT_H

#include <stdint.h>

#include "kvweave/kvhook.h"
#include "kvweave/model.h"

/* A model with F32 tensors of random data (values in about [-0.5, 0.5] scaled per
 * matrix so activations stay O(1)). */
kw_model *rt_tiny_model(const kw_model_config *cfg, uint64_t seed);
void rt_tiny_free(kw_model *m);
kw_model_config rt_tiny_config(int arch_qwen2, kw_rope_layout layout);

/* logits (n, n_vocab) of every position of ids (positions 0..n-1), causal attention
 * over exactly the tokens allowed by keep(layer, kv head, query pos, key pos) (NULL:
 * all earlier tokens). Double accumulation in attention. */
typedef int (*rt_keep_fn)(void *u, int layer, int head, int qpos, int kpos);
void rt_ref_forward(const kw_model *m, const int32_t *ids, int n, float *logits,
                    rt_keep_fn keep, void *u, int keep_per_qhead);

/* Drives kw__fwd_run over sequences that already hold their first start[i] tokens
 * (NULL: none): each step takes up to chunk[i] prompt tokens of sequence i (tokens
 * before n_prompt[i]) or one token after it, all sequences together. The logits of
 * every position from start[i] on land in out[i] (n[i], n_vocab). stacks: nullable. */
struct kw_fwd;
void rt_drive(struct kw_fwd *f, kw_kvpool *pool, int n_seq, kw_seq **seqs,
              const kw_hookstack *const *stacks, int32_t **ids, const int *n,
              const int *n_prompt, const int *start, const int *chunk, float **out);

/* Stand-in KV methods (hook callbacks; st unused). rt_keep_half_at_prefill_end (an
 * on_prefill_end) keeps the first half and the last 3 prompt tokens of every KV head;
 * rt_drop_oldest_after_chunk (an after_attn) drops the oldest stored token of every KV
 * head after each prompt chunk but the last: a method that acts before the prompt ends. */
int rt_keep_half_at_prefill_end(void *st, kw_lctx *c, const kw_batch *b);
int rt_drop_oldest_after_chunk(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a);

double rt_rel_l2(const float *a, const float *b, int64_t n);
uint64_t rt_rand_u64(uint64_t *s);
double rt_rand01(uint64_t *s);

#endif
