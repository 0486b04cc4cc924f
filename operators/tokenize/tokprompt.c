/* Prompt text of a sample -> chat rendering -> token ids (see tokprompt.h). */
#include "tokprompt.h"

#include <stdlib.h>
#include <string.h>

typedef struct tbuf { char *s; size_t n, cap; } tbuf;

static int tput(tbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = (b->n + n + 1) * 2;
        char *p = realloc(b->s, c);
        if (!p)
            return KW_ENOMEM;
        b->s = p;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

/* A field's value as prompt text: strings as they are, other JSON as its text. */
static int put_field(tbuf *b, json_t *sample, const char *name, size_t len, kw_error *err)
{
    char key[256];
    if (len == 0 || len >= sizeof key)
        return kw_error_set(err, KW_EINVAL, "prompt template has a field name of %zu "
                            "bytes (1 to %zu)", len, sizeof key - 1);
    memcpy(key, name, len);
    key[len] = '\0';
    json_t *v = json_object_get(sample, key);
    if (!v || json_is_null(v))
        return kw_error_set(err, KW_ENOTFOUND, "sample has no field '%s'", key);
    if (json_is_string(v))
        return tput(b, json_string_value(v), json_string_length(v));
    char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!d)
        return KW_ENOMEM;
    int rc = tput(b, d, strlen(d));
    free(d);
    return rc;
}

int kw_tokprompt_text(json_t *sample, const char *field, const char *tmpl, char **out,
                      kw_error *err)
{
    *out = NULL;
    if (!json_is_object(sample))
        return kw_error_set(err, KW_ETYPE, "sample is not a JSON object");
    tbuf b = {0};
    int rc = tput(&b, "", 0);
    if (!tmpl || !*tmpl) {
        const char *f = field && *field ? field : "input";
        if (rc == 0)
            rc = put_field(&b, sample, f, strlen(f), err);
    }
    for (const char *p = tmpl; rc == 0 && p && *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            rc = tput(&b, p, 1);
            p += 2;
        } else if (p[0] == '{') {
            const char *e = strchr(p + 1, '}');
            if (!e) {
                rc = kw_error_set(err, KW_EINVAL, "prompt template: '{' at offset %zu is "
                                  "not closed", (size_t)(p - tmpl));
                break;
            }
            rc = put_field(&b, sample, p + 1, (size_t)(e - p - 1), err);
            p = e + 1;
        } else {
            size_t n = strcspn(p, "{}");
            if (n == 0) { /* a lone '}' */
                rc = kw_error_set(err, KW_EINVAL, "prompt template: lone '}' at offset %zu "
                                  "(write '}}')", (size_t)(p - tmpl));
                break;
            }
            rc = tput(&b, p, n);
            p += n;
        }
    }
    if (rc < 0) {
        free(b.s);
        return rc == KW_ENOMEM ? kw_error_set(err, rc, "out of memory") : rc;
    }
    *out = b.s;
    return 0;
}

int kw_tokprompt_style(const char *name, const char *template_str, kw_chat_style *out,
                       kw_error *err)
{
    static const struct { const char *name; kw_chat_style st; } k[] = {
        {"none", KW_CHAT_NONE}, {"chatml", KW_CHAT_CHATML}, {"llama3", KW_CHAT_LLAMA3},
        {"llama2", KW_CHAT_LLAMA2}, {"mistral", KW_CHAT_MISTRAL},
    };
    if (!name || !strcmp(name, "auto")) {
        *out = kw_chat_detect(template_str);
        if (*out == KW_CHAT_NONE)
            return kw_error_set(err, KW_EINVAL, "the model has %s chat template; set style "
                                "(chatml, llama3, llama2, mistral) or use tokenize.raw",
                                template_str ? "no known" : "no");
        return 0;
    }
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (!strcmp(name, k[i].name)) {
            *out = k[i].st;
            return 0;
        }
    return kw_error_set(err, KW_EINVAL, "unknown chat style '%s'", name);
}

static int encode(const kw_tokenizer *tk, const char *text, kw_tokens *t, kw_error *err)
{
    int n = kw_tokenize(tk, text, 1, NULL, 0);
    if (n < 0)
        return kw_error_set(err, n, "tokenizing a prompt of %zu bytes failed", strlen(text));
    t->ids = malloc(((size_t)n + 1) * sizeof *t->ids);
    if (!t->ids)
        return kw_error_set(err, KW_ENOMEM, "out of memory for %d tokens", n);
    t->n = kw_tokenize(tk, text, 1, t->ids, n);
    return t->n < 0 ? kw_error_set(err, t->n, "tokenizing failed") : 0;
}

int kw_tokprompt_make(const kw_tokenizer *tk, json_t *sample, const kw_tokprompt_opts *o,
                      kw_tokens **out, kw_error *err)
{
    *out = NULL;
    char *text = NULL, *prompt = NULL;
    int rc = kw_tokprompt_text(sample, o->field, o->tmpl, &text, err);
    if (rc < 0)
        return rc;
    json_t *chat = json_object_get(sample, "chat");
    if (chat && !json_is_boolean(chat)) {
        free(text);
        return kw_error_set(err, KW_ETYPE, "sample field 'chat' must be true or false");
    }
    json_t *apj = json_object_get(sample, "answer_prefix");
    if (apj && !json_is_null(apj) && !json_is_string(apj)) {
        free(text);
        return kw_error_set(err, KW_ETYPE, "sample field 'answer_prefix' must be a string");
    }
    const char *ap = json_string_value(apj);
    if (o->style != KW_CHAT_NONE && !json_is_false(chat)) {
        const char *sys = o->system && *o->system ? o->system : o->default_system;
        kw_chat_msg m[2] = {{"system", sys}, {"user", text}};
        prompt = sys ? kw_chat_render(o->style, m, 2, 1) : kw_chat_render(o->style, m + 1, 1, 1);
        if (!prompt) {
            free(text);
            return kw_error_set(err, KW_ENOMEM, "out of memory rendering the chat prompt");
        }
    }
    if (ap && *ap) { /* the start of the answer: after the assistant turn's header */
        const char *base = prompt ? prompt : text;
        size_t nb = strlen(base), na = strlen(ap);
        char *joined = malloc(nb + na + 1);
        if (!joined) {
            free(text);
            free(prompt);
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        }
        memcpy(joined, base, nb);
        memcpy(joined + nb, ap, na + 1);
        free(prompt);
        prompt = joined;
    }
    kw_tokens *t = calloc(1, sizeof *t);
    if (!t) {
        free(text);
        free(prompt);
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    rc = encode(tk, prompt ? prompt : text, t, err);
    free(text);
    free(prompt);
    if (rc < 0) {
        free(t->ids);
        free(t);
        return rc;
    }
    json_t *mn = json_object_get(sample, "max_new");
    t->max_new = o->max_new > 0 ? o->max_new
                 : json_is_integer(mn) && json_integer_value(mn) > 0 &&
                         json_integer_value(mn) < (1 << 30)
                     ? (int)json_integer_value(mn)
                     : 0;
    t->sample = json_incref(sample);
    *out = t;
    return 0;
}
