/* Token choice: greedy, seeded temperature / top-p, and log-probs (internal). */
#ifndef KW_RUNTIME_SAMPLER_H
#define KW_RUNTIME_SAMPLER_H

#include <stdint.h>

#include "kvweave/engine.h"

/* Counter-based key for (seed, sample, step): the same draw whatever the batch. */
uint64_t kw__sample_key(uint64_t seed, int64_t sample, int64_t step);
/* Uniform in [0, 1) from the key. */
double kw__sample_uniform(uint64_t key);
/* Chooses a token. scratch: n ints and n floats (used unless greedy). */
int kw__sample(const float *logits, int n, const kw_sampling *s, uint64_t key, int *idx,
               float *p);
/* log p(tok) under softmax(logits); with k > 0 also the k most likely tokens (ties by
 * lower index) and their log-probs, in descending order. */
double kw__logprob(const float *logits, int n, int tok, int k, int32_t *ids, float *lp);

/* Fidelity of one position: KL(full || meth) over the n logits (nats, double sums),
 * whether meth's argmax equals full's (ties: lowest index), and whether full's argmax is
 * among meth's top-5 (ranked with ties to the lower index). */
void kw__fidelity(const float *full, const float *meth, int n, float *kl, uint8_t *top1,
                  uint8_t *top5);

#endif
