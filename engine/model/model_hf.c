/* A model from a Hugging Face directory: config.json (+ generation_config.json,
 * tokenizer_config.json), model.safetensors or model.safetensors.index.json shards,
 * tokenizer.json. Tensor names are mapped to GGUF's; rows keep the checkpoint's order
 * (half-split RoPE pairs). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hfconfig.h"
#include "kvweave/util.h"
#include "tokenizer.h"
#include "weights_impl.h"

/* The shard file names: from the index's weight_map, or the single model.safetensors. */
static int shard_files(const char *dir, char ***files, int *n, kw_error *err)
{
    char path[4096];
    struct stat sb;
    *files = NULL;
    *n = 0;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &sb) < 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &sb) < 0)
            return kw_error_at(err, KW_ENOTFOUND, dir, 0, 0, "no model.safetensors or "
                               "model.safetensors.index.json in the directory");
        *files = malloc(sizeof **files);
        if (!*files || !((*files)[0] = strdup("model.safetensors")))
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        *n = 1;
        return KW_OK;
    }
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        return kw_error_at(err, KW_EPARSE, path, je.line, je.column, "%s", je.text);
    json_t *wm = json_object_get(root, "weight_map");
    int rc = KW_OK;
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        rc = kw_error_at(err, KW_EFORMAT, path, 0, 0, "no \"weight_map\" object");
        goto done;
    }
    *files = calloc(json_object_size(wm), sizeof **files);
    if (!*files) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        const char *f = json_string_value(v);
        if (!f || strchr(f, '/')) {
            rc = kw_error_at(err, KW_EFORMAT, path, 0, 0, "weight_map['%s'] is not a file name "
                             "in the directory", key);
            goto done;
        }
        int seen = 0;
        for (int i = 0; i < *n && !seen; i++)
            seen = !strcmp((*files)[i], f);
        if (!seen && !((*files)[(*n)++] = strdup(f))) {
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

static int cmp_hex(const void *a, const void *b) { return strcmp(a, b); }

/* sha256 over the sorted shard digests (a shard's FILE.sha256 sidecar is used if present). */
static int shards_sha256(kw_model *m, const char *dir, char **files, int n, kw_error *err)
{
    char(*hex)[65] = calloc((size_t)n, 65);
    if (!hex)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        char path[4096], side[4200], *txt = NULL;
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        snprintf(side, sizeof side, "%s.sha256", path);
        if (kw_read_file(side, &txt, NULL, NULL) == KW_OK && strspn(txt, "0123456789abcdef") >= 64) {
            memcpy(hex[i], txt, 64);
        } else {
            int rc = kw_sha256_file(path, hex[i], err);
            if (rc < 0) {
                free(txt);
                free(hex);
                return rc;
            }
        }
        free(txt);
    }
    qsort(hex, (size_t)n, 65, cmp_hex);
    if (n == 1)
        memcpy(m->sha256, hex[0], 65);
    else
        kw_sha256_hex(hex, (size_t)n * 65, m->sha256);
    free(hex);
    return KW_OK;
}

static int add_shard_tensors(kw_model *m, kw_st *st, kw_error *err)
{
    kw__model_impl *im = m->impl;
    int n = kw_st_n_tensors(st);
    kw_tensor *nt = realloc(m->tensors, (size_t)(m->n_tensors + n + 1) * sizeof *nt);
    char **nn = realloc(im->names, (size_t)(m->n_tensors + n + 1) * sizeof *nn);
    if (nt)
        m->tensors = nt;
    if (nn)
        im->names = nn;
    if (!nt || !nn)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const kw_st_tensor *s = kw_st_tensor_at(st, i);
        char name[256];
        int rc = kw_hf_tensor_name(s->name, name, sizeof name);
        if (rc <= 0)
            continue; /* buffers and parts kvweave does not run (e.g. a vision tower) */
        for (int j = 0; j < m->n_tensors; j++)
            if (!strcmp(m->tensors[j].name, name))
                return kw_error_at(err, KW_EFORMAT, kw_st_label(st), 0, 0,
                                   "tensor '%s' appears in more than one shard", s->name);
        if (!(im->names[m->n_tensors] = strdup(name)))
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        kw_tensor *t = &m->tensors[m->n_tensors++];
        memset(t, 0, sizeof *t);
        t->name = im->names[m->n_tensors - 1];
        t->dtype = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof t->shape);
        t->data = s->data;
        t->nbytes = s->nbytes;
    }
    return KW_OK;
}

int kw__model_load_hf(kw_model *m, const char *dir, kw_error *err)
{
    kw__model_impl *im = m->impl;
    int rc = kw_hfconfig_load(dir, &m->cfg, &m->chat_template, err);
    if (rc < 0)
        return rc;
    char **files = NULL;
    int nf = 0;
    if ((rc = shard_files(dir, &files, &nf, err)) < 0)
        goto done;
    im->shards = calloc((size_t)nf, sizeof *im->shards);
    if (!im->shards) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nf; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if ((rc = kw_st_open(path, &im->shards[i], err)) < 0)
            goto done;
        im->n_shards = i + 1;
        if ((rc = add_shard_tensors(m, im->shards[i], err)) < 0)
            goto done;
    }
    if ((rc = shards_sha256(m, dir, files, nf, err)) < 0)
        goto done;
    if (!kw_model_tensor(m, "output.weight") && !m->cfg.tie_embeddings) {
        rc = kw_error_at(err, KW_EFORMAT, dir, 0, 0, "missing tensor 'lm_head.weight' "
                         "(output.weight) while config.json says tie_word_embeddings is false");
        goto done;
    }
    m->cfg.tie_embeddings = !kw_model_tensor(m, "output.weight");
    kw_error terr = {0};
    rc = kw_tokenizer_from_hf_dir(dir, &m->tok, &terr);
    if (rc < 0 && rc != KW_ENOSYS) {
        if (err)
            *err = terr;
        goto done;
    }
    if (rc < 0)
        m->tok = NULL;
    rc = KW_OK;
done:
    for (int i = 0; i < nf; i++)
        free(files[i]);
    free(files);
    return rc;
}
