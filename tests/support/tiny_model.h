/* A tiny random Llama-architecture (or Qwen2) model for tests, written as GGUF and as a
 * Hugging Face directory that describe the same model.
 *
 *   kw_tiny_spec s = kw_tiny_default(42);              // 2 layers, 64 dim, 4/2 heads
 *   kw_tiny_write_gguf(&s, "tiny.gguf", &err);          // F32 tensors, llama Q/K permuted
 *   kw_tiny_write_hf(&s, "tiny-hf", &err);              // config.json, model.safetensors, ...
 *   kw_model_open("tiny.gguf", &m, &err); ...
 *
 * Weights depend only on (seed, tensor name): tensor X in the HF directory holds
 * kw_tiny_weight(&s, X); in the GGUF, llama attn_q/attn_k rows are permuted as llama.cpp's
 * converter does (row h*D + 2i + j of the file is row h*D + j*D/2 + i of the checkpoint,
 * D = head_dim, per head h), so both describe one model with different RoPE pairings.
 * The vocabulary: <|endoftext|> (0), <|im_start|> (1), <|im_end|> (2), the 256 GPT-2 byte
 * tokens (3..258), then one token per merge. BOS 1, EOS 2 (and 0 as a second EOS),
 * add_bos false, a ChatML chat template.
 */
#ifndef KW_TEST_TINY_MODEL_H
#define KW_TEST_TINY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kvweave/status.h"
#include "kvweave/tensor.h"

typedef struct kw_tiny_spec {
    uint64_t seed;
    int n_layer, n_embd, n_head, n_head_kv, n_ff;
    bool qwen2;            /* qwen2 architecture with Q/K/V biases (no permutation) */
    bool tie_embeddings;   /* no output.weight / lm_head.weight */
    kw_dtype gguf_dtype;   /* 2-D weights in the GGUF: KW_DT_F32, KW_DT_F16 or KW_DT_Q8_0 */
    kw_dtype hf_dtype;     /* safetensors: KW_DT_F32, KW_DT_F16 or KW_DT_BF16 */
    int n_shards;          /* 1: model.safetensors; > 1: an index and that many shards */
    bool rope_llama3;      /* llama3 RoPE scaling (factor 8, low 1, high 4, original 64):
                              rope_scaling in config.json; in the GGUF, as llama.cpp's
                              converter writes it, a "rope_freqs.weight" tensor */
} kw_tiny_spec;

kw_tiny_spec kw_tiny_default(uint64_t seed);
int kw_tiny_n_vocab(void);
int kw_tiny_head_dim(const kw_tiny_spec *s);

/* The checkpoint (HF order) values of a tensor by its GGUF name; malloc'd, shape written
 * (outermost first). NULL for a name the model does not have. */
float *kw_tiny_weight(const kw_tiny_spec *s, const char *name, int *ndim, int64_t shape[2]);
/* Number of tensors and the i-th GGUF name (static buffer). */
int kw_tiny_n_tensors(const kw_tiny_spec *s);
const char *kw_tiny_tensor_name(const kw_tiny_spec *s, int i, char buf[64]);

int kw_tiny_write_gguf(const kw_tiny_spec *s, const char *path, kw_error *err);
int kw_tiny_write_hf(const kw_tiny_spec *s, const char *dir, kw_error *err);

/* The row of the HF tensor that GGUF row r of attn_q (n_heads = n_head) or attn_k
 * (n_heads = n_head_kv) holds. */
int64_t kw_tiny_unpermute_row(int64_t r, int head_dim);

/* The llama3 per-frequency divisors (head_dim / 2 of them) of the spec. */
void kw_tiny_rope_freqs(const kw_tiny_spec *s, float *out);

/* Deterministic generator for tests: splitmix64 and uniform floats in [lo, hi). */
uint64_t kw_tiny_rand(uint64_t *state);
float kw_tiny_uniform(uint64_t *state, float lo, float hi);

/* ggml's reference Q8_0 quantizer (n a multiple of 32). */
void kw_tiny_quantize_q8_0(const float *x, uint8_t *out, int64_t n);

#endif
