/* A model from a GGUF file: configuration from the metadata, tensors as stored (Q and K
 * rows in the converter's interleaved-RoPE order for llama), tokenizer from
 * tokenizer.ggml.*. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "weights_impl.h"

typedef struct ctx {
    const kw_gguf *g;
    const char *arch, *label;
    kw_error *err;
} ctx;

/* {arch}.suffix as an int; def < 0 means required. */
static int arch_int(ctx *c, const char *suffix, int64_t def, int64_t lo, int *out)
{
    char key[256];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    int64_t v;
    int rc = kw_gguf_get_int(c->g, key, &v);
    if (rc == KW_ENOTFOUND) {
        if (def < 0)
            return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                               "required metadata key '%s' is missing", key);
        v = def;
    } else if (rc < 0) {
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "metadata key '%s' is not an integer", key);
    }
    if (v < lo || v > INT32_MAX)
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "metadata key '%s' is %lld; it must be in [%lld, %d]", key,
                           (long long)v, (long long)lo, INT32_MAX);
    *out = (int)v;
    return KW_OK;
}

static int arch_float(ctx *c, const char *suffix, double def, float *out)
{
    char key[256];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    double v;
    int rc = kw_gguf_get_float(c->g, key, &v);
    if (rc == KW_ENOTFOUND)
        v = def;
    else if (rc < 0 || !isfinite(v) || v <= 0)
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "metadata key '%s' is not a positive number", key);
    *out = (float)v;
    return KW_OK;
}

static int special_id(ctx *c, const char *key, int n_vocab)
{
    int64_t v;
    if (kw_gguf_get_int(c->g, key, &v) < 0 || v < 0 || v >= n_vocab)
        return -1;
    return (int)v;
}

static int rope_scaling(ctx *c, kw_model_config *cfg)
{
    char key[256];
    int rc;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    const char *ty = kw_gguf_get_str(c->g, key);
    cfg->rope_factor = 1.0f;
    if (kw_gguf_find_tensor(c->g, "rope_freqs.weight")) {
        /* llama3 scaling as the converter stores it: per-frequency divisors in
         * rope_freqs.weight, which the forward pass should use as they are */
        cfg->rope_scaling = KW_ROPE_SCALE_LLAMA3;
        const kw_gguf_tensor *t = kw_gguf_find_tensor(c->g, "rope_freqs.weight");
        if (t->dtype == KW_DT_F32)
            for (int64_t i = 0; i < (int64_t)t->ne[0]; i++) {
                float f;
                memcpy(&f, (const char *)t->data + 4 * i, 4);
                if (f > cfg->rope_factor)
                    cfg->rope_factor = f;
            }
    }
    if (!ty || !strcmp(ty, "none"))
        return KW_OK;
    if (!strcmp(ty, "linear") || !strcmp(ty, "llama3")) {
        cfg->rope_scaling = !strcmp(ty, "linear") ? KW_ROPE_SCALE_LINEAR : KW_ROPE_SCALE_LLAMA3;
        if ((rc = arch_float(c, "rope.scaling.factor", 1.0, &cfg->rope_factor)) < 0 ||
            (rc = arch_int(c, "rope.scaling.original_context_length", cfg->n_ctx_train, 1,
                           &cfg->rope_orig_ctx)) < 0 ||
            (rc = arch_float(c, "rope.scaling.low_freq_factor", 1.0,
                             &cfg->rope_low_freq_factor)) < 0 ||
            (rc = arch_float(c, "rope.scaling.high_freq_factor", 4.0,
                             &cfg->rope_high_freq_factor)) < 0)
            return rc;
        return KW_OK;
    }
    return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                       "rope scaling type '%s' is not supported (kvweave supports linear and "
                       "llama3)", ty);
}

static int read_config(ctx *c, kw_model_config *cfg)
{
    int rc, rope_dims, key_len;
    memset(cfg, 0, sizeof *cfg);
    if (!strcmp(c->arch, "llama")) {
        cfg->arch = KW_ARCH_LLAMA;
        cfg->rope_layout = KW_ROPE_INTERLEAVED;
    } else if (!strcmp(c->arch, "qwen2")) {
        cfg->arch = KW_ARCH_QWEN2;
        cfg->rope_layout = KW_ROPE_HALF;
    } else {
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "unknown architecture '%s' (kvweave runs llama and qwen2)", c->arch);
    }
    if ((rc = arch_int(c, "block_count", -1, 1, &cfg->n_layer)) < 0 ||
        (rc = arch_int(c, "embedding_length", -1, 1, &cfg->n_embd)) < 0 ||
        (rc = arch_int(c, "attention.head_count", -1, 1, &cfg->n_head)) < 0 ||
        (rc = arch_int(c, "attention.head_count_kv", cfg->n_head, 1, &cfg->n_head_kv)) < 0 ||
        (rc = arch_int(c, "feed_forward_length", -1, 1, &cfg->n_ff)) < 0 ||
        (rc = arch_int(c, "context_length", 2048, 1, &cfg->n_ctx_train)) < 0 ||
        (rc = arch_int(c, "attention.key_length", cfg->n_embd / cfg->n_head, 2, &key_len)) < 0 ||
        (rc = arch_int(c, "rope.dimension_count", key_len, 2, &rope_dims)) < 0 ||
        (rc = arch_float(c, "rope.freq_base", 10000.0, &cfg->rope_theta)) < 0 ||
        (rc = arch_float(c, "attention.layer_norm_rms_epsilon", 1e-5, &cfg->norm_eps)) < 0)
        return rc;
    cfg->head_dim = key_len;
    if (cfg->n_head % cfg->n_head_kv)
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "%s.attention.head_count %d is not a multiple of head_count_kv %d",
                           c->arch, cfg->n_head, cfg->n_head_kv);
    if (rope_dims != key_len || key_len % 2)
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "%s.rope.dimension_count %d differs from the head size %d (partial "
                           "RoPE is not supported) or is odd", c->arch, rope_dims, key_len);
    cfg->tie_embeddings = !kw_gguf_find_tensor(c->g, "output.weight");
    cfg->qkv_bias = cfg->arch == KW_ARCH_QWEN2 || kw_gguf_find_tensor(c->g, "blk.0.attn_q.bias");
    return rope_scaling(c, cfg);
}

static int read_vocab(ctx *c, kw_model_config *cfg, kw_tokenizer_spec *sp)
{
    const kw_gguf_value *tok = kw_gguf_find(c->g, "tokenizer.ggml.tokens");
    if (!tok || tok->type != KW_GGUF_ARRAY || tok->arr.type != KW_GGUF_STRING ||
        tok->arr.n == 0 || tok->arr.n > INT32_MAX)
        return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                           "metadata 'tokenizer.ggml.tokens' is missing or not a non-empty "
                           "array of strings");
    int n = (int)tok->arr.n;
    cfg->n_vocab = n;
    memset(sp, 0, sizeof *sp);
    sp->model = kw_gguf_get_str(c->g, "tokenizer.ggml.model");
    sp->pre = kw_gguf_get_str(c->g, "tokenizer.ggml.pre");
    if (!sp->model)
        sp->model = "gpt2";
    if (!sp->pre)
        sp->pre = "default";
    sp->n_vocab = n;
    sp->tokens = (const char *const *)tok->arr.data;
    static const struct { const char *key; kw_gguf_type ty; } arrs[] = {
        {"tokenizer.ggml.scores", KW_GGUF_F32}, {"tokenizer.ggml.token_type", KW_GGUF_I32}};
    for (int k = 0; k < 2; k++) {
        kw_gguf_type ty;
        uint64_t len;
        const void *data;
        if (kw_gguf_get_arr(c->g, arrs[k].key, &ty, &len, &data) < 0)
            continue;
        if (ty != arrs[k].ty || len != (uint64_t)n)
            return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                               "metadata '%s' is an array of %llu %s; expected %d %s",
                               arrs[k].key, (unsigned long long)len, kw_gguf_type_name(ty), n,
                               kw_gguf_type_name(arrs[k].ty));
        if (k == 0)
            sp->scores = data;
        else
            sp->types = data;
    }
    kw_gguf_type ty;
    uint64_t nm;
    const void *merges;
    if (kw_gguf_get_arr(c->g, "tokenizer.ggml.merges", &ty, &nm, &merges) == KW_OK) {
        if (ty != KW_GGUF_STRING || nm > INT32_MAX)
            return kw_error_at(c->err, KW_EFORMAT, c->label, 0, 0,
                               "metadata 'tokenizer.ggml.merges' is not an array of strings");
        sp->n_merges = (int)nm;
        sp->merges = merges;
    }
    sp->bos_id = special_id(c, "tokenizer.ggml.bos_token_id", n);
    sp->eos_id = special_id(c, "tokenizer.ggml.eos_token_id", n);
    sp->unk_id = special_id(c, "tokenizer.ggml.unknown_token_id", n);
    sp->pad_id = special_id(c, "tokenizer.ggml.padding_token_id", n);
    bool b;
    sp->add_bos = kw_gguf_get_bool(c->g, "tokenizer.ggml.add_bos_token", &b) == KW_OK
                      ? b : !strcmp(sp->model, "llama");
    sp->add_eos = kw_gguf_get_bool(c->g, "tokenizer.ggml.add_eos_token", &b) == KW_OK && b;
    cfg->bos_id = sp->bos_id;
    cfg->add_bos = sp->add_bos && sp->bos_id >= 0;
    static const char *eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                     "tokenizer.ggml.eom_token_id"};
    for (int k = 0; k < 3; k++) {
        int id = special_id(c, eos_keys[k], n), dup = id < 0;
        for (int j = 0; j < cfg->n_eos; j++)
            dup |= cfg->eos_ids[j] == id;
        if (!dup)
            cfg->eos_ids[cfg->n_eos++] = id;
    }
    return KW_OK;
}

static int make_tensors(kw_model *m, const kw_gguf *g)
{
    int n = kw_gguf_n_tensors(g);
    m->tensors = calloc(n ? (size_t)n : 1, sizeof *m->tensors);
    if (!m->tensors)
        return KW_ENOMEM;
    for (int i = 0; i < n; i++) {
        const kw_gguf_tensor *gt = kw_gguf_tensor_at(g, i);
        kw_tensor *t = &m->tensors[i];
        t->name = gt->name;
        t->dtype = gt->dtype;
        t->ndim = gt->ndim;
        memcpy(t->shape, gt->shape, sizeof t->shape);
        t->data = gt->data;
        t->nbytes = gt->nbytes;
    }
    m->n_tensors = n;
    return KW_OK;
}

int kw__model_load_gguf(kw_model *m, const char *path, kw_error *err)
{
    kw__model_impl *im = m->impl;
    int rc = kw_gguf_open(path, &im->gguf, err);
    if (rc < 0)
        return rc;
    return kw__model_from_gguf(m, path, err);
}

int kw__model_from_gguf(kw_model *m, const char *path, kw_error *err)
{
    kw__model_impl *im = m->impl;
    int rc;
    ctx c = {im->gguf, kw_gguf_get_str(im->gguf, "general.architecture"), path, err};
    if (!c.arch)
        return kw_error_at(err, KW_EFORMAT, path, 0, 0,
                           "required metadata key 'general.architecture' is missing");
    kw_tokenizer_spec sp;
    if ((rc = read_config(&c, &m->cfg)) < 0 || (rc = read_vocab(&c, &m->cfg, &sp)) < 0)
        return rc;
    if (make_tensors(m, im->gguf) < 0)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    const char *tmpl = kw_gguf_get_str(im->gguf, "tokenizer.chat_template");
    if (tmpl && !(m->chat_template = strdup(tmpl)))
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    kw_error terr = {0};
    rc = kw_tokenizer_new(&sp, &m->tok, &terr);
    if (rc < 0 && rc != KW_ENOSYS) {
        if (err)
            *err = terr;
        return kw_error_prefix(err, "%s: tokenizer", path);
    }
    if (rc < 0)
        m->tok = NULL;
    return KW_OK;
}
