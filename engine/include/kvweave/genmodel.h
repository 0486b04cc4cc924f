/* kvweave — synthetic models with the exact shapes of known models (engine/model/genmodel.c).
 *
 *   kw_genmodel_spec s = {.like = "smollm2-135m", .dtype = KW_DT_BF16, .seed = 1};
 *   kw_genmodel_write(&s, "dir/model.gguf", &err);
 *
 * The GGUF holds the model's tensors with seeded random values (2-D weights uniform with
 * standard deviation 0.02, norms 1, biases 0.02), a byte-level tokenizer (three ChatML
 * special tokens, the 256 GPT-2 byte tokens, filler tokens up to the vocabulary size, no
 * merges) and a ChatML template, so it loads through kw_model_open like a real model.
 * Values depend only on (seed, tensor name, element index), not on the thread count.
 */
#ifndef KVWEAVE_GENMODEL_H
#define KVWEAVE_GENMODEL_H

#include <stdint.h>

#include "status.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kw_genmodel_shape {
    const char *like;         /* smollm2-135m, llama-3.1-8b, qwen2.5-7b */
    const char *arch;         /* llama or qwen2 */
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    float rope_theta, norm_eps;
    int qkv_bias, tied, llama3_rope;
} kw_genmodel_shape;

/* The known shapes (NULL for an unknown name); *names lists them, comma-separated. */
const kw_genmodel_shape *kw_genmodel_find(const char *like);
const char *kw_genmodel_names(void);

typedef struct kw_genmodel_spec {
    const char *like;
    kw_dtype dtype;           /* of the 2-D weights: KW_DT_BF16, KW_DT_F16 or KW_DT_F32 */
    uint64_t seed;
    int n_layer;              /* 0: the model's; else fewer layers (same other shapes) */
} kw_genmodel_spec;

/* Writes the GGUF to path; returns the file size in bytes, or < 0 with err set. */
int64_t kw_genmodel_write(const kw_genmodel_spec *s, const char *path, kw_error *err);

#ifdef __cplusplus
}
#endif
#endif
