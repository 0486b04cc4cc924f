/* Shared between the model loaders (weights.c, model_gguf.c, model_hf.c); internal. */
#ifndef KW_MODEL_WEIGHTS_IMPL_H
#define KW_MODEL_WEIGHTS_IMPL_H

#include "gguf.h"
#include "kvweave/model.h"
#include "safetensors.h"

typedef struct kw__model_impl {
    kw_gguf *gguf;   /* a GGUF model */
    kw_st **shards;  /* a Hugging Face model */
    int n_shards;
    char **names;    /* (n_tensors) owned canonical names for HF tensors */
} kw__model_impl;

/* Fill m->cfg, m->tensors, m->tok, m->chat_template from a GGUF file / HF directory.
 * m->impl is allocated by the caller. */
int kw__model_load_gguf(kw_model *m, const char *path, kw_error *err);
/* The rest of kw__model_load_gguf once m->impl->gguf is open (the fuzz target calls it). */
int kw__model_from_gguf(kw_model *m, const char *label, kw_error *err);
int kw__model_load_hf(kw_model *m, const char *dir, kw_error *err);
/* Every tensor the config implies is present with the right shape. */
int kw__model_check(const kw_model *m, const char *label, kw_error *err);

#endif
