/* Hugging Face tokenizer.json (+ tokenizer_config.json) -> kw_tokenizer.
 *
 * Understood: model.type "BPE" with vocab {token: id}, merges as "a b" strings or as
 * [a, b] pairs, byte_fallback, ignore_merges; added_tokens [{id, content, special}];
 * pre_tokenizer ByteLevel (use_regex), Split (Regex or String pattern, behavior
 * Isolated), Digits, Metaspace and Sequence of them; normalizer NFC, Prepend("▁"),
 * Replace(" " -> "▁") and Sequence of them; post_processor TemplateProcessing (a leading
 * special token is the BOS). tokenizer_config.json: add_bos_token, add_eos_token,
 * bos_token, eos_token. Anything else is refused with its JSON path.
 */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

typedef struct hf_state {
    const char *file;
    kw__tok_opts o;
    char *owned[KW_TOK_MAX_SPLITS]; /* escaped String patterns */
    bool saw_prefix, saw_replace;
} hf_state;

static int bad(kw_error *err, const hf_state *h, const char *path, const char *what)
{
    return kw_error_set(err, KW_EFORMAT, "%s: %s: %s", h->file, path, what);
}

static int add_split(hf_state *h, const char *re, char *owned, kw_error *err)
{
    if (h->o.n_splits >= KW_TOK_MAX_SPLITS) {
        free(owned);
        return kw_error_set(err, KW_ELIMIT, "%s: pre_tokenizer: more than %d splits",
                            h->file, KW_TOK_MAX_SPLITS);
    }
    h->owned[h->o.n_splits] = owned;
    h->o.splits[h->o.n_splits++] = re;
    return 0;
}

/* A literal Split pattern as a regex. */
static char *quote_regex(const char *s)
{
    size_t n = strlen(s);
    char *q = malloc(n + 5);
    if (q)
        snprintf(q, n + 5, "\\Q%s\\E", s);
    return q;
}

static int pre_one(hf_state *h, json_t *p, const char *path, kw_error *err)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type)
        return bad(err, h, path, "has no \"type\"");
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(p, "pretokenizers");
        if (!json_is_array(a))
            return bad(err, h, path, "Sequence has no \"pretokenizers\" array");
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) {
            int rc = pre_one(h, x, "pre_tokenizer.pretokenizers[]", err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        h->o.byte_level = true;
        json_t *ur = json_object_get(p, "use_regex");
        if (json_is_true(json_object_get(p, "add_prefix_space")))
            return bad(err, h, path, "ByteLevel add_prefix_space=true is not supported");
        if (!ur || json_is_true(ur)) {
            kw__tok_opts g = {0};
            kw__tok_pre_by_name("gpt2", &g, NULL);
            return add_split(h, g.splits[0], NULL, err);
        }
        return 0;
    }
    if (!strcmp(type, "Digits")) {
        int each = json_is_true(json_object_get(p, "individual_digits"));
        return add_split(h, each ? "\\p{N}" : "\\p{N}+", NULL, err);
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (json_is_true(json_object_get(p, "invert")) || !beh || strcmp(beh, "Isolated"))
            return bad(err, h, path, "Split is supported with behavior Isolated only");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        if (re)
            return add_split(h, re, NULL, err);
        const char *lit = json_string_value(json_object_get(pat, "String"));
        if (!lit)
            return bad(err, h, path, "Split pattern is neither Regex nor String");
        char *q = quote_regex(lit);
        if (!q)
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        return add_split(h, q, q, err);
    }
    if (!strcmp(type, "Metaspace")) {
        const char *scheme = json_string_value(json_object_get(p, "prepend_scheme"));
        if (!scheme)
            scheme = json_is_false(json_object_get(p, "add_prefix_space")) ? "never"
                                                                             : "always";
        h->o.add_space_prefix = strcmp(scheme, "never") != 0;
        h->o.prefix_each = !strcmp(scheme, "always");
        json_t *sp = json_object_get(p, "split");
        if (!sp || json_is_true(sp))
            return add_split(h, "\xE2\x96\x81[^\xE2\x96\x81]*", NULL, err);
        return 0;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "pre-tokenizer type '%.64s' is not supported", type);
    return bad(err, h, path, msg);
}

static int norm_one(hf_state *h, json_t *p, kw_error *err)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type)
        return bad(err, h, "normalizer", "has no \"type\"");
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(p, "normalizers"), i, x) {
            int rc = norm_one(h, x, err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "NFC")) {
        h->o.nfc = true;
        return 0;
    }
    if (!strcmp(type, "Prepend") &&
        !strcmp(json_string_value(json_object_get(p, "prepend")) ?: "", "\xE2\x96\x81")) {
        h->o.add_space_prefix = h->o.prefix_each = true;
        return 0;
    }
    if (!strcmp(type, "Replace") &&
        !strcmp(json_string_value(json_object_get(json_object_get(p, "pattern"), "String"))
                    ?: "", " ") &&
        !strcmp(json_string_value(json_object_get(p, "content")) ?: "", "\xE2\x96\x81"))
        return 0; /* SentencePiece spaces: what the non-byte-level path does anyway */
    char msg[160];
    snprintf(msg, sizeof msg, "normalizer '%.64s' is not supported", type);
    return bad(err, h, "normalizer", msg);
}

/* tokens[] and types[] from model.vocab and added_tokens. */
static int hf_vocab(hf_state *h, json_t *root, json_t *model, kw_tokenizer_spec *sp,
                    const char ***tokens, int32_t **types, kw_error *err)
{
    json_t *vocab = json_object_get(model, "vocab"), *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab))
        return bad(err, h, "model.vocab", "is not an object");
    long long maxid = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= INT_MAX / 2)
            return kw_error_set(err, KW_EFORMAT, "%s: model.vocab[\"%.64s\"]: id is not an "
                                "integer in [0, %d)", h->file, k, INT_MAX / 2);
        if (json_integer_value(v) > maxid) maxid = json_integer_value(v);
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (!json_is_integer(json_object_get(v, "id")) || id < 0 || id >= INT_MAX / 2 ||
            !json_is_string(json_object_get(v, "content")))
            return kw_error_set(err, KW_EFORMAT, "%s: added_tokens[%zu]: needs an integer "
                                "\"id\" in [0, %d) and a string \"content\"", h->file, i,
                                INT_MAX / 2);
        if (id > maxid) maxid = id;
    }
    if (maxid < 0)
        return bad(err, h, "model.vocab", "is empty");
    size_t count = json_object_size(vocab) + json_array_size(added);
    if ((size_t)maxid >= 4 * count + 4096) /* ids are dense in real files */
        return kw_error_set(err, KW_EFORMAT, "%s: token id %lld is far beyond the %zu "
                            "tokens listed", h->file, maxid, count);
    sp->n_vocab = (int)maxid + 1;
    *tokens = calloc((size_t)sp->n_vocab, sizeof **tokens);
    *types = calloc((size_t)sp->n_vocab, sizeof **types);
    if (!*tokens || !*types)
        return kw_error_set(err, KW_ENOMEM, "out of memory for %d tokens", sp->n_vocab);
    for (int t = 0; t < sp->n_vocab; t++)
        (*types)[t] = KW_TOKT_UNUSED;
    json_object_foreach(vocab, k, v) {
        int id = (int)json_integer_value(v);
        (*tokens)[id] = k;
        (*types)[id] = KW_TOKT_NORMAL;
        if (strlen(k) == 6 && !strncmp(k, "<0x", 3) && k[5] == '>' && h->o.byte_fallback)
            (*types)[id] = KW_TOKT_BYTE;
    }
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        (*tokens)[id] = json_string_value(json_object_get(v, "content"));
        (*types)[id] = json_is_true(json_object_get(v, "special")) ? KW_TOKT_CONTROL
                                                                   : KW_TOKT_USER;
    }
    sp->tokens = *tokens;
    sp->types = *types;
    return 0;
}

static int hf_merges(hf_state *h, json_t *model, kw_tokenizer_spec *sp, char ***store,
                     kw_error *err)
{
    json_t *m = json_object_get(model, "merges");
    if (m && !json_is_array(m))
        return bad(err, h, "model.merges", "is not an array");
    size_t n = json_array_size(m), i;
    if (n > (size_t)INT_MAX / 2)
        return bad(err, h, "model.merges", "has too many entries");
    *store = calloc(2 * n + 1, sizeof **store);
    if (!*store)
        return kw_error_set(err, KW_ENOMEM, "out of memory for %zu merges", n);
    json_t *x;
    json_array_foreach(m, i, x) {
        const char *s = json_string_value(x), *a = NULL, *b = NULL;
        char *l = NULL, *r = NULL;
        if (s) {
            const char *sp1 = strchr(s, ' ');
            if (sp1 && sp1 != s && sp1[1] && !strchr(sp1 + 1, ' ')) {
                l = strndup(s, (size_t)(sp1 - s));
                r = strdup(sp1 + 1);
            }
        } else if (json_is_array(x) && json_array_size(x) == 2 &&
                   (a = json_string_value(json_array_get(x, 0))) &&
                   (b = json_string_value(json_array_get(x, 1)))) {
            l = strdup(a);
            r = strdup(b);
        }
        if (!l || !r) {
            free(l);
            free(r);
            return kw_error_set(err, KW_EFORMAT, "%s: model.merges[%zu]: not \"a b\" nor "
                                "[\"a\", \"b\"]", h->file, i);
        }
        (*store)[2 * i] = l;
        (*store)[2 * i + 1] = r;
    }
    sp->n_merges = (int)n;
    return 0;
}

static int token_id_of(json_t *root, json_t *vocab, json_t *tok)
{
    const char *s = json_is_string(tok) ? json_string_value(tok)
                                        : json_string_value(json_object_get(tok, "content"));
    if (!s)
        return -1;
    json_t *v = json_object_get(vocab, s);
    if (json_is_integer(v))
        return (int)json_integer_value(v);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(root, "added_tokens"), i, a)
        if (!strcmp(json_string_value(json_object_get(a, "content")) ?: "", s))
            return (int)json_integer_value(json_object_get(a, "id"));
    return -1;
}

/* BOS/EOS from TemplateProcessing and tokenizer_config.json. */
static void hf_specials(json_t *root, json_t *model, json_t *cfg, kw_tokenizer_spec *sp)
{
    json_t *vocab = json_object_get(model, "vocab");
    json_t *pp = json_object_get(root, "post_processor");
    json_t *single = json_object_get(pp, "single");
    const char *ppt = json_string_value(json_object_get(pp, "type"));
    if (ppt && !strcmp(ppt, "TemplateProcessing") && json_array_size(single) > 0) {
        json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
        if (first) {
            json_t *idj = json_object_get(first, "id");
            int id = token_id_of(root, vocab, idj);
            if (id >= 0) {
                sp->bos_id = id;
                sp->add_bos = true;
            }
        }
    }
    if (!cfg)
        return;
    int id = token_id_of(root, vocab, json_object_get(cfg, "bos_token"));
    if (id >= 0) sp->bos_id = id;
    id = token_id_of(root, vocab, json_object_get(cfg, "eos_token"));
    if (id >= 0) sp->eos_id = id;
    id = token_id_of(root, vocab, json_object_get(cfg, "unk_token"));
    if (id >= 0) sp->unk_id = id;
    json_t *ab = json_object_get(cfg, "add_bos_token");
    if (json_is_boolean(ab)) sp->add_bos = json_is_true(ab);
    if (json_is_true(json_object_get(cfg, "add_eos_token"))) sp->add_eos = true;
    if (sp->bos_id < 0) sp->add_bos = false;
}

static int hf_build(hf_state *h, json_t *root, json_t *cfg, kw_tokenizer **out,
                    kw_error *err)
{
    json_t *model = json_object_get(root, "model");
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model) || (mt && strcmp(mt, "BPE")))
        return bad(err, h, "model.type", "only BPE models are supported");
    static const char *const unsupported[] = {"continuing_subword_prefix",
                                              "end_of_word_suffix", "dropout"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        json_t *v = json_object_get(model, unsupported[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && !*json_string_value(v)))
            return kw_error_set(err, KW_EFORMAT, "%s: model.%s is not supported", h->file,
                                unsupported[i]);
    }
    h->o.byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    h->o.ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    json_t *pre = json_object_get(root, "pre_tokenizer"), *nrm = json_object_get(root, "normalizer");
    int rc = 0;
    if (pre && !json_is_null(pre) && (rc = pre_one(h, pre, "pre_tokenizer", err)) < 0)
        return rc;
    if (nrm && !json_is_null(nrm) && (rc = norm_one(h, nrm, err)) < 0)
        return rc;
    const char *dt = json_string_value(json_object_get(json_object_get(root, "decoder"), "type"));
    if (dt && !strcmp(dt, "ByteLevel"))
        h->o.byte_level = true;
    kw_tokenizer_spec sp = {.model = h->o.byte_level ? "gpt2" : "llama",
                            .bos_id = -1, .eos_id = -1, .unk_id = -1, .pad_id = -1};
    const char **tokens = NULL;
    int32_t *types = NULL;
    char **mstore = NULL;
    if ((rc = hf_vocab(h, root, model, &sp, &tokens, &types, err)) == 0 &&
        (rc = hf_merges(h, model, &sp, &mstore, err)) == 0) {
        int unk = token_id_of(root, json_object_get(model, "vocab"),
                              json_object_get(model, "unk_token"));
        sp.unk_id = unk;
        hf_specials(root, model, cfg, &sp);
        const char **l = malloc(((size_t)sp.n_merges + 1) * sizeof *l);
        const char **r = malloc(((size_t)sp.n_merges + 1) * sizeof *r);
        if (!l || !r) {
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        } else {
            for (int i = 0; i < sp.n_merges; i++) {
                l[i] = mstore[2 * i];
                r[i] = mstore[2 * i + 1];
            }
            h->o.merge_left = l;
            h->o.merge_right = r;
            rc = kw__tokenizer_build(&sp, &h->o, out, err);
            if (rc < 0)
                kw_error_prefix(err, "%s", h->file);
        }
        free(l);
        free(r);
    }
    for (int i = 0; mstore && mstore[i]; i++)
        free(mstore[i]);
    free(mstore);
    free(tokens);
    free(types);
    return rc;
}

static json_t *load_json(const char *path, int required, kw_error *err, int *rc)
{
    json_error_t je;
    FILE *f = fopen(path, "rb");
    *rc = 0;
    if (!f) {
        if (required)
            *rc = kw_error_set(err, KW_ENOTFOUND, "%s: cannot open", path);
        return NULL;
    }
    json_t *j = json_loadf(f, 0, &je);
    fclose(f);
    if (!j)
        *rc = kw_error_at(err, KW_EPARSE, path, je.line, je.column, "%s", je.text);
    else if (!json_is_object(j)) {
        json_decref(j);
        j = NULL;
        *rc = kw_error_set(err, KW_EFORMAT, "%s: the top level is not an object", path);
    }
    return j;
}

int kw__tokenizer_from_hf_json(const char *data, size_t n, const char *name,
                               kw_tokenizer **out, kw_error *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(data, n, 0, &je);
    if (!root)
        return kw_error_at(err, KW_EPARSE, name, je.line, je.column, "%s", je.text);
    int rc;
    if (!json_is_object(root)) {
        rc = kw_error_set(err, KW_EFORMAT, "%s: the top level is not an object", name);
    } else {
        hf_state h = {.file = name};
        rc = hf_build(&h, root, NULL, out, err);
        for (int i = 0; i < KW_TOK_MAX_SPLITS; i++)
            free(h.owned[i]);
    }
    json_decref(root);
    return rc;
}

int kw_tokenizer_from_hf_dir(const char *dir, kw_tokenizer **out, kw_error *err)
{
    *out = NULL;
    char path[4096], cpath[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    int rc;
    json_t *root = load_json(path, 1, err, &rc);
    if (!root)
        return rc;
    json_t *cfg = load_json(cpath, 0, err, &rc);
    if (rc < 0) {
        json_decref(root);
        return rc;
    }
    hf_state h = {.file = path};
    rc = hf_build(&h, root, cfg, out, err);
    for (int i = 0; i < KW_TOK_MAX_SPLITS; i++)
        free(h.owned[i]);
    json_decref(cfg);
    json_decref(root);
    return rc;
}
