/* Tokenizer construction (internal to engine/model). The loaders build a tokenizer from
 * a GGUF's metadata (tokenizer.ggml.*) or from a Hugging Face tokenizer.json. */
#ifndef KW_MODEL_TOKENIZER_H
#define KW_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "kvweave/model.h"

typedef struct kw_tokenizer_spec {
    const char *model;          /* "gpt2" (byte-level BPE) | "llama" (SentencePiece BPE) */
    const char *pre;            /* pre-tokenizer name: "smollm", "llama-bpe", "qwen2",
                                   "gpt2", "default", ... (GGUF tokenizer.ggml.pre) */
    int n_vocab;
    const char *const *tokens;  /* (n_vocab) token strings as stored (GPT-2 byte map) */
    const float *scores;        /* (n_vocab) nullable: SentencePiece scores */
    const int32_t *types;       /* (n_vocab) nullable: 1 normal, 2 unknown, 3 control,
                                   4 user-defined, 5 unused, 6 byte (GGUF token_type) */
    int n_merges;
    const char *const *merges;  /* "a b" pairs, highest priority first */
    int bos_id, eos_id, unk_id, pad_id; /* -1 if none */
    bool add_bos, add_eos;
    bool no_space_prefix;       /* "llama": GGUF tokenizer.ggml.add_space_prefix = false */
} kw_tokenizer_spec;

/* Copies everything it needs from spec. */
int kw_tokenizer_new(const kw_tokenizer_spec *spec, kw_tokenizer **out, kw_error *err);
/* tokenizer.json (+ tokenizer_config.json when present) of a Hugging Face directory. */
int kw_tokenizer_from_hf_dir(const char *dir, kw_tokenizer **out, kw_error *err);

#endif
