/* Reads just the tokenizer.ggml.* keys of a GGUF (little-endian, version 2 or 3). */
#include "tok_fixture.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

typedef struct rd { FILE *f; int bad; } rd;

static uint64_t rd_u(rd *r, int n)
{
    uint8_t b[8] = {0};
    if (fread(b, 1, (size_t)n, r->f) != (size_t)n) r->bad = 1;
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static char *rd_str(rd *r)
{
    uint64_t n = rd_u(r, 8);
    if (r->bad || n > (1u << 24)) { r->bad = 1; return NULL; }
    char *s = malloc(n + 1);
    if (!s || fread(s, 1, n, r->f) != n) { r->bad = 1; free(s); return NULL; }
    s[n] = '\0';
    return s;
}

static const int k_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static void rd_skip(rd *r, uint32_t t)
{
    if (t == 8) { free(rd_str(r)); return; }
    if (t == 9) {
        uint32_t et = (uint32_t)rd_u(r, 4);
        uint64_t n = rd_u(r, 8);
        for (uint64_t i = 0; i < n && !r->bad; i++) rd_skip(r, et);
        return;
    }
    if (t > 12) { r->bad = 1; return; }
    rd_u(r, k_size[t]);
}

typedef struct tokset {
    char *model, *pre, *tmpl;
    char **tokens, **merges;
    int32_t *types;
    int n_tokens, n_merges, bos, eos, unk, pad, add_bos;
} tokset;

static char **rd_str_array(rd *r, int *n)
{
    uint32_t et = (uint32_t)rd_u(r, 4);
    uint64_t k = rd_u(r, 8);
    if (et != 8 || k > (1u << 22)) { r->bad = 1; return NULL; }
    char **a = calloc(k, sizeof *a);
    for (uint64_t i = 0; i < k && !r->bad; i++) a[i] = rd_str(r);
    *n = (int)k;
    return a;
}

static void rd_kv(rd *r, tokset *ts)
{
    char *key = rd_str(r);
    uint32_t t = (uint32_t)rd_u(r, 4);
    if (!key) return;
    if (t == 8 && !strcmp(key, "tokenizer.ggml.model")) ts->model = rd_str(r);
    else if (t == 8 && !strcmp(key, "tokenizer.ggml.pre")) ts->pre = rd_str(r);
    else if (t == 8 && !strcmp(key, "tokenizer.chat_template")) ts->tmpl = rd_str(r);
    else if (t == 9 && !strcmp(key, "tokenizer.ggml.tokens"))
        ts->tokens = rd_str_array(r, &ts->n_tokens);
    else if (t == 9 && !strcmp(key, "tokenizer.ggml.merges"))
        ts->merges = rd_str_array(r, &ts->n_merges);
    else if (t == 9 && !strcmp(key, "tokenizer.ggml.token_type")) {
        uint32_t et = (uint32_t)rd_u(r, 4);
        uint64_t k = rd_u(r, 8);
        if (et != 5 && et != 4) { r->bad = 1; free(key); return; }
        ts->types = calloc(k, sizeof *ts->types);
        for (uint64_t i = 0; i < k; i++) ts->types[i] = (int32_t)rd_u(r, 4);
    } else if (t == 4 && !strcmp(key, "tokenizer.ggml.bos_token_id")) ts->bos = (int)rd_u(r, 4);
    else if (t == 4 && !strcmp(key, "tokenizer.ggml.eos_token_id")) ts->eos = (int)rd_u(r, 4);
    else if (t == 4 && !strcmp(key, "tokenizer.ggml.unknown_token_id")) ts->unk = (int)rd_u(r, 4);
    else if (t == 4 && !strcmp(key, "tokenizer.ggml.padding_token_id")) ts->pad = (int)rd_u(r, 4);
    else if (t == 7 && !strcmp(key, "tokenizer.ggml.add_bos_token")) ts->add_bos = (int)rd_u(r, 1);
    else rd_skip(r, t);
    free(key);
}

int tokfix_load_gguf(const char *path, kw_tokenizer **tk, char **chat_template)
{
    *tk = NULL;
    if (chat_template) *chat_template = NULL;
    rd r = {fopen(path, "rb"), 0};
    if (!r.f) return -1;
    tokset ts = {.bos = -1, .eos = -1, .unk = -1, .pad = -1};
    if (rd_u(&r, 4) != 0x46554747u) r.bad = 1; /* "GGUF" */
    rd_u(&r, 4);
    rd_u(&r, 8);
    uint64_t n_kv = rd_u(&r, 8);
    for (uint64_t i = 0; i < n_kv && !r.bad; i++) rd_kv(&r, &ts);
    fclose(r.f);
    int rc = -1;
    if (!r.bad && ts.tokens && ts.types) {
        kw_tokenizer_spec sp = {
            .model = ts.model, .pre = ts.pre, .n_vocab = ts.n_tokens,
            .tokens = (const char *const *)ts.tokens, .types = ts.types,
            .n_merges = ts.n_merges, .merges = (const char *const *)ts.merges,
            .bos_id = ts.bos, .eos_id = ts.eos, .unk_id = ts.unk, .pad_id = ts.pad,
            .add_bos = ts.add_bos,
        };
        kw_error err = {0};
        rc = kw_tokenizer_new(&sp, tk, &err);
        if (rc < 0) fprintf(stderr, "tokenizer: %s\n", err.msg);
    }
    for (int i = 0; i < ts.n_tokens; i++) free(ts.tokens[i]);
    for (int i = 0; i < ts.n_merges; i++) free(ts.merges[i]);
    free(ts.tokens);
    free(ts.merges);
    free(ts.types);
    free(ts.model);
    free(ts.pre);
    if (chat_template && rc == 0) *chat_template = ts.tmpl;
    else free(ts.tmpl);
    return rc;
}

char *tokfix_model_path(void)
{
    const char *home = getenv("KVWEAVE_HOME");
    char buf[4096];
    if (home && *home)
        snprintf(buf, sizeof buf, "%s/models/smollm2-135m-instruct.gguf", home);
    else
        snprintf(buf, sizeof buf, "%s/.cache/kvweave/models/smollm2-135m-instruct.gguf",
                 getenv("HOME") ? getenv("HOME") : ".");
    return strdup(buf);
}

char *tokfix_golden_path(const char *rel)
{
    const char *src = getenv("KVWEAVE_SRC");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/tests/golden/%s", src ? src : ".", rel);
    return strdup(buf);
}

json_t *tokfix_golden(const char *rel)
{
    char *p = tokfix_golden_path(rel);
    json_t *j = json_load_file(p, 0, NULL);
    free(p);
    return j;
}
