/* kvweave — models: configuration, weights and tokenizer, from GGUF or a Hugging Face
 * directory.
 *
 *   kw_model *m; kw_error err = {0};
 *   if (kw_model_open("smollm2-135m-instruct", &m, &err) < 0) ...   // or a path
 *   const kw_tensor *wq = kw_model_tensor(m, "blk.0.attn_q.weight");
 *   int32_t ids[64]; int n = kw_tokenize(m->tok, "Hello", 1, ids, 64);
 *   m = kw_model_free(m);
 *
 * Tensor names are GGUF's ("token_embd.weight", "blk.N.attn_q.weight", "blk.N.attn_k.
 * weight", "blk.N.attn_v.weight", "blk.N.attn_q.bias", ..., "blk.N.attn_output.weight",
 * "blk.N.attn_norm.weight", "blk.N.ffn_norm.weight", "blk.N.ffn_gate.weight",
 * "blk.N.ffn_up.weight", "blk.N.ffn_down.weight", "output_norm.weight",
 * "output.weight" (absent when tied)); a Hugging Face directory's names are mapped to
 * them. Q and K rows keep the file's order: `rope_layout` says which RoPE pairs the
 * forward pass must rotate (GGUF llama files are permuted for interleaved pairs; HF
 * checkpoints and GGUF qwen2 use the half-split pairs).
 */
#ifndef KVWEAVE_MODEL_H
#define KVWEAVE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kw_arch { KW_ARCH_LLAMA = 0, KW_ARCH_QWEN2 } kw_arch;
typedef enum kw_rope_layout {
    KW_ROPE_INTERLEAVED = 0, /* pairs (2i, 2i+1): GGUF llama */
    KW_ROPE_HALF = 1,        /* pairs (i, i + d/2): HF, GGUF qwen2 (NEOX) */
} kw_rope_layout;
typedef enum kw_rope_scaling {
    KW_ROPE_SCALE_NONE = 0,
    KW_ROPE_SCALE_LINEAR,
    KW_ROPE_SCALE_LLAMA3,
} kw_rope_scaling;

#define KW_MAX_EOS 8

typedef struct kw_model_config {
    kw_arch arch;
    int n_layer;
    int n_embd;
    int n_head;      /* query heads */
    int n_head_kv;   /* KV heads (GQA) */
    int head_dim;
    int n_ff;
    int n_vocab;
    int n_ctx_train;
    float norm_eps;
    float rope_theta;
    kw_rope_layout rope_layout;
    kw_rope_scaling rope_scaling;
    float rope_factor;           /* linear / llama3 */
    float rope_low_freq_factor;  /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int rope_orig_ctx;           /* llama3 original_max_position_embeddings */
    /* A llama3-scaled GGUF from llama.cpp's converter stores the per-frequency divisors in
     * the tensor "rope_freqs.weight" (head_dim/2 floats) instead of the three values
     * above; then rope_factor is their maximum and the low/high factors are 0. */
    bool tie_embeddings;
    bool qkv_bias;
    int bos_id;                  /* -1 if none */
    bool add_bos;                /* the tokenizer prepends BOS */
    int eos_ids[KW_MAX_EOS];
    int n_eos;
} kw_model_config;

typedef struct kw_tokenizer kw_tokenizer;

typedef struct kw_model {
    kw_model_config cfg;
    char *name;          /* registered name or path as given */
    char *path;          /* resolved file or directory */
    char sha256[65];     /* hex digest of the weights file (GGUF) or of the sorted shard
                            digests (HF); "" if not computed */
    char *chat_template; /* nullable: the model's Jinja template string */
    kw_tokenizer *tok;
    int n_tensors;
    kw_tensor *tensors;  /* canonical names */
    void *impl;          /* loader state (mmaps) */
} kw_model;

/* Opens a registered name (NAME -> $KVWEAVE_HOME/models/NAME.gguf, else
 * $KVWEAVE_HOME/models/NAME/ as a Hugging Face directory; setup.sh registers
 * smollm2-135m-instruct), a .gguf path, a Hugging Face model directory, or a hub name
 * (ORG/NAME[@REV][/PATH], store/hub.h) that is none of these: resolved through the
 * Hugging Face cache (a cached name needs no network; HF_HUB_OFFLINE=1 reads only the
 * cache; a miss is KW_ENOTFOUND naming the missing cache path). A repo with no
 * config.json and one top-level .gguf opens that file. sha256 comes from a NAME.sha256 /
 * FILE.sha256 sidecar, or a hub file's LFS etag, when present, else it is computed. */
int kw_model_open(const char *spec, kw_model **out, kw_error *err);
kw_model *kw_model_free(kw_model *m);
/* (transfer none) NULL if absent. */
const kw_tensor *kw_model_tensor(const kw_model *m, const char *name);

/* ---- tokenizer (engine/model/tokenizer.c) ---- */
/* Encodes UTF-8 text; special tokens ("<|im_start|>") are matched first when
 * parse_special is set. Returns the number of ids (may exceed cap: then call again with
 * a larger buffer) or < 0. add_bos follows cfg.add_bos (no second BOS when the text
 * starts with it). User-defined added tokens are matched even without parse_special.
 * Safe to call from several threads on one tokenizer. */
int kw_tokenize(const kw_tokenizer *tk, const char *text, int parse_special, int32_t *ids,
                int cap);
/* Appends the bytes of one token to out; the caller handles partial UTF-8 (or uses
 * kw_detok_stream). Returns the byte count or < 0 (KW_ERANGE: cap is too small). */
int kw_token_piece(const kw_tokenizer *tk, int32_t id, char *out, int cap);
/* Whole-sequence decode into a malloc'd NUL-terminated string; skip_special drops
 * control tokens. */
char *kw_detokenize(const kw_tokenizer *tk, const int32_t *ids, int n, int skip_special);
/* Streaming decode: pieces of tokens given one at a time come out as whole UTF-8
 * characters; an incomplete character at the end is held until the next token.
 *
 *   kw_detok_stream ds = {0};
 *   for (...) { int k = kw_detok_stream_push(tk, &ds, id, buf, sizeof buf); ... }
 *   int k = kw_detok_stream_flush(&ds, buf, sizeof buf);   // what is left, as is
 *
 * Both return the bytes written to out (NUL-terminated when there is room) or < 0;
 * KW_ERANGE when cap is below the piece length + 4. */
typedef struct kw_detok_stream {
    unsigned char pend[4]; /* bytes of an incomplete character */
    int n_pend;
    int n_out;             /* bytes emitted so far */
    int skip_special;      /* drop control tokens */
} kw_detok_stream;
int kw_detok_stream_push(const kw_tokenizer *tk, kw_detok_stream *s, int32_t id, char *out,
                         int cap);
int kw_detok_stream_flush(kw_detok_stream *s, char *out, int cap);
int kw_tokenizer_n_vocab(const kw_tokenizer *tk);
int kw_tokenizer_find(const kw_tokenizer *tk, const char *piece); /* id or -1 */
kw_tokenizer *kw_tokenizer_free(kw_tokenizer *tk);

/* ---- chat templates (engine/model/chat.c) ---- */
typedef enum kw_chat_style {
    KW_CHAT_NONE = 0, /* raw prompt */
    KW_CHAT_CHATML,
    KW_CHAT_LLAMA3,
    KW_CHAT_LLAMA2,   /* Llama-2-chat [INST] with <<SYS>> */
    KW_CHAT_MISTRAL,  /* Mistral [INST]: contents as given, "</s>" after answers */
} kw_chat_style;
typedef struct kw_chat_msg { const char *role, *content; } kw_chat_msg;
/* Picks the built-in renderer matching a template string (NULL -> KW_CHAT_NONE). */
kw_chat_style kw_chat_detect(const char *template_str);
/* Renders messages and, if add_generation_prompt, the assistant prefix; malloc'd. */
char *kw_chat_render(kw_chat_style style, const kw_chat_msg *msgs, int n,
                     int add_generation_prompt);
/* The fixed system prompt a ChatML template adds when the conversation has none
 * (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
 * malloc'd, NULL if the template has none. Render it as a leading system message. */
char *kw_chat_default_system(const char *template_str);

#ifdef __cplusplus
}
#endif
#endif
