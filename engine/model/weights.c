/* The model registry and loader front end (model.h): resolves a registered name, a .gguf
 * path, a Hugging Face directory or a hub name (ORG/NAME[/file.gguf], via the HF cache), loads it, checks every tensor the configuration
 * implies, and records the weights' sha256. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvweave/util.h"
#include "store/hub.h"
#include "tokenizer.h"
#include "weights_impl.h"

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A hub name (ORG/NAME[@REV][/PATH], store/hub.h) through the Hugging Face cache: a
 * cached name needs no network, and with HF_HUB_OFFLINE=1 only the cache is read. A
 * repo without config.json but with exactly one .gguf at its top resolves to that file. */
static int hub_resolve(const char *spec, char **path, kw_error *err)
{
    kw_error herr = {0};
    int rc = kw_hub_resolve_model(spec, path, &herr);
    if (rc < 0)
        return kw_error_set(err, rc == KW_EINVAL ? KW_ENOTFOUND : rc,
                            "model '%s' is not a file or directory here, and as a hub name: %s",
                            spec, herr.msg);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/config.json", *path);
    if (!is_dir(*path) || is_file(buf))
        return KW_OK;
    DIR *d = opendir(*path);
    struct dirent *de;
    char *one = NULL;
    int n = 0;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 5 && !strcmp(de->d_name + l - 5, ".gguf") && n++ == 0)
            one = strdup(de->d_name);
    }
    if (d)
        closedir(d);
    if (n == 1 && one) {
        snprintf(buf, sizeof buf, "%s/%s", *path, one);
        free(*path);
        *path = strdup(buf);
    }
    free(one);
    return *path ? KW_OK : kw_error_set(err, KW_ENOMEM, "out of memory");
}

/* Resolves spec to a path; *hf says whether it is a Hugging Face directory; sidecar gets
 * the sha256 sidecar path to try. */
static int resolve(const char *spec, char **path, int *hf, char *sidecar, size_t cap,
                   kw_error *err)
{
    char buf[4096];
    *path = NULL;
    if (is_dir(spec) || is_file(spec)) {
        *hf = is_dir(spec);
        snprintf(sidecar, cap, "%s.sha256", spec);
        *path = strdup(spec);
    } else if (!strchr(spec, '/') && strcmp(spec, ".") && strcmp(spec, "..") &&
               !(strlen(spec) > 5 && !strcmp(spec + strlen(spec) - 5, ".gguf"))) {
        snprintf(buf, sizeof buf, "%s/models/%s.gguf", kw_home(), spec);
        snprintf(sidecar, cap, "%s/models/%s.sha256", kw_home(), spec);
        if (is_file(buf)) {
            *hf = 0;
            *path = strdup(buf);
        } else {
            snprintf(buf, sizeof buf, "%s/models/%s", kw_home(), spec);
            if (!is_dir(buf))
                return kw_error_set(err, KW_ENOTFOUND,
                                    "model '%s' is not registered (neither %s/models/%s.gguf nor "
                                    "%s/models/%s/ exists; setup.sh fetches the default model) "
                                    "and is not a file or directory", spec, kw_home(), spec,
                                    kw_home(), spec);
            *hf = 1;
            *path = strdup(buf);
        }
    } else if (kw_hub_is_name(spec)) {
        int rc = hub_resolve(spec, path, err);
        if (rc < 0)
            return rc;
        *hf = is_dir(*path);
        sidecar[0] = '\0';
    } else {
        return kw_error_set(err, KW_ENOTFOUND, "model '%s': no such file or directory", spec);
    }
    if (!*path)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    if (*hf) {
        snprintf(buf, sizeof buf, "%s/config.json", *path);
        if (!is_file(buf))
            return kw_error_at(err, KW_ENOTFOUND, *path, 0, 0,
                               "a directory without config.json is not a Hugging Face model");
    }
    return KW_OK;
}

static int read_sidecar(const char *path, char hex[65])
{
    char *txt = NULL;
    if (kw_read_file(path, &txt, NULL, NULL) < 0)
        return 0;
    int ok = strspn(txt, "0123456789abcdef") >= 64;
    if (ok) {
        memcpy(hex, txt, 64);
        hex[64] = '\0';
    }
    free(txt);
    return ok;
}

/* A GGUF inside the hub cache is named by its etag, the sha256 of an LFS file: no need
 * to hash the file again. */
static int hub_digest(const char *path, char hex[65])
{
    kw_hub_prov prov = {0};
    int ok = 0;
    if (kw_hub_prov_from_path(path, &prov, NULL) == 0 && prov.n_files == 1 &&
        prov.files[0].etag && strlen(prov.files[0].etag) == 64) {
        kw_hub_prov_digest(&prov, hex);
        ok = 1;
    }
    kw_hub_prov_clear(&prov);
    return ok;
}

int kw_model_open(const char *spec, kw_model **out, kw_error *err)
{
    *out = NULL;
    if (!spec || !*spec)
        return kw_error_set(err, KW_EINVAL, "no model given");
    kw_model *m = calloc(1, sizeof *m);
    if (!m || !(m->impl = calloc(1, sizeof(kw__model_impl))) || !(m->name = strdup(spec))) {
        kw_model_free(m);
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    char sidecar[4200];
    int hf = 0;
    int rc = resolve(spec, &m->path, &hf, sidecar, sizeof sidecar, err);
    if (rc < 0)
        goto fail;
    rc = hf ? kw__model_load_hf(m, m->path, err) : kw__model_load_gguf(m, m->path, err);
    if (rc < 0 || (rc = kw__model_check(m, m->path, err)) < 0)
        goto fail;
    if (!hf && !read_sidecar(sidecar, m->sha256) && !hub_digest(m->path, m->sha256) &&
        (rc = kw_sha256_file(m->path, m->sha256, err)) < 0)
        goto fail;
    *out = m;
    return KW_OK;
fail:
    kw_model_free(m);
    return rc;
}

kw_model *kw_model_free(kw_model *m)
{
    if (!m)
        return NULL;
    m->tok = kw_tokenizer_free(m->tok); /* before the mappings its spec pointed into */
    kw__model_impl *im = m->impl;
    if (im) {
        if (im->names)
            for (int i = 0; i < m->n_tensors; i++)
                free(im->names[i]);
        free(im->names);
        for (int i = 0; i < im->n_shards; i++)
            kw_st_free(im->shards[i]);
        free(im->shards);
        kw_gguf_free(im->gguf);
        free(im);
    }
    free(m->tensors);
    free(m->chat_template);
    free(m->name);
    free(m->path);
    free(m);
    return NULL;
}

const kw_tensor *kw_model_tensor(const kw_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name))
            return &m->tensors[i];
    return NULL;
}

/* ---- checks ---- */

static void fmt_shape(const int64_t *s, int nd, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, i ? ", %lld" : "%lld", (long long)s[i]);
    if (k < cap)
        snprintf(out + k, cap - k, nd == 1 ? ",)" : ")");
}

static int expect(const kw_model *m, const char *label, const char *name, int required,
                  int64_t d0, int64_t d1, kw_error *err)
{
    const kw_tensor *t = kw_model_tensor(m, name);
    if (!t) {
        if (!required)
            return KW_OK;
        return kw_error_at(err, KW_EFORMAT, label, 0, 0, "missing tensor '%s' (the model has "
                           "%d layers)", name, m->cfg.n_layer);
    }
    int nd = d1 ? 2 : 1;
    int64_t want[2] = {d0, d1};
    if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char got[96], exp[96];
        fmt_shape(t->shape, t->ndim, got, sizeof got);
        fmt_shape(want, nd, exp, sizeof exp);
        return kw_error_at(err, KW_EFORMAT, label, 0, 0, "tensor '%s' has shape %s but the "
                           "configuration needs %s", name, got, exp);
    }
    if (t->dtype == KW_DT_I8 || t->dtype == KW_DT_I32)
        return kw_error_at(err, KW_EFORMAT, label, 0, 0, "tensor '%s' has integer type %s",
                           name, kw_dtype_name(t->dtype));
    return KW_OK;
}

int kw__model_check(const kw_model *m, const char *label, kw_error *err)
{
    const kw_model_config *c = &m->cfg;
    int64_t E = c->n_embd, V = c->n_vocab, Q = (int64_t)c->n_head * c->head_dim;
    int64_t KV = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    int rc;
    if ((rc = expect(m, label, "token_embd.weight", 1, V, E, err)) < 0 ||
        (rc = expect(m, label, "output_norm.weight", 1, E, 0, err)) < 0 ||
        (rc = expect(m, label, "output.weight", !c->tie_embeddings, V, E, err)) < 0 ||
        (rc = expect(m, label, "rope_freqs.weight", 0, c->head_dim / 2, 0, err)) < 0)
        return rc;
    for (int l = 0; l < c->n_layer; l++) {
        static const struct { const char *n; int bias; } spec[] = {
            {"attn_norm.weight", 0}, {"attn_q.weight", 0}, {"attn_k.weight", 0},
            {"attn_v.weight", 0},    {"attn_output.weight", 0}, {"ffn_norm.weight", 0},
            {"ffn_gate.weight", 0},  {"ffn_up.weight", 0}, {"ffn_down.weight", 0},
            {"attn_q.bias", 1},      {"attn_k.bias", 1},   {"attn_v.bias", 1},
        };
        const int64_t dims[][2] = {{E, 0}, {Q, E}, {KV, E}, {KV, E}, {E, Q}, {E, 0},
                                   {F, E}, {F, E}, {E, F}, {Q, 0}, {KV, 0}, {KV, 0}};
        for (size_t k = 0; k < sizeof spec / sizeof *spec; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, spec[k].n);
            if (spec[k].bias && !c->qkv_bias)
                continue;
            if ((rc = expect(m, label, name, 1, dims[k][0], dims[k][1], err)) < 0)
                return rc;
        }
    }
    return KW_OK;
}
