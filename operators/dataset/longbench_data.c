/* LongBench v1 data helpers (see longbench_data.h). */
#include "longbench_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int field_string(const json_t *rec, const char *k, char *why, size_t cap)
{
    json_t *v = json_object_get(rec, k);
    if (!v)
        return snprintf(why, cap, "field '%s' is missing", k), 1;
    if (!json_is_string(v))
        return snprintf(why, cap, "field '%s' must be a string", k), 1;
    return 0;
}

static int string_array(const json_t *v, const char *k, char *why, size_t cap)
{
    if (!json_is_array(v))
        return snprintf(why, cap, "field '%s' must be an array of strings", k), 1;
    for (size_t i = 0; i < json_array_size(v); i++)
        if (!json_is_string(json_array_get(v, i)))
            return snprintf(why, cap, "field '%s' item %zu must be a string", k, i), 1;
    return 0;
}

int kw_lb_record_check(const json_t *rec, void *arg, char *why, size_t cap)
{
    (void)arg;
    static const char *const strs[] = {"input", "context", "dataset", "language", "_id"};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        if (field_string(rec, strs[i], why, cap))
            return 1;
    json_t *a = json_object_get(rec, "answers");
    if (!a)
        return snprintf(why, cap, "field 'answers' is missing"), 1;
    if (string_array(a, "answers", why, cap))
        return 1;
    json_t *l = json_object_get(rec, "length");
    if (!l)
        return snprintf(why, cap, "field 'length' is missing"), 1;
    if (!json_is_integer(l))
        return snprintf(why, cap, "field 'length' must be an integer"), 1;
    json_t *c = json_object_get(rec, "all_classes");
    if (!c)
        return snprintf(why, cap, "field 'all_classes' is missing"), 1;
    if (!json_is_null(c) && string_array(c, "all_classes", why, cap))
        return 1;
    return 0;
}

static int load_obj(const char *path, json_t **out, kw_error *err)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        if (je.line < 0)
            return kw_error_set(err, KW_ENOTFOUND, "cannot read '%s': %s", path, je.text);
        return kw_error_at(err, KW_EPARSE, path, je.line, je.column, "%s", je.text);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return kw_error_at(err, KW_EFORMAT, path, 0, 0, "want a JSON object of task names");
    }
    *out = j;
    return 0;
}

int kw_lb_tables_load(const char *prompts_path, const char *maxlen_path, const char *task,
                      kw_lb_tables *out, kw_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *p = NULL, *m = NULL;
    int rc = load_obj(prompts_path, &p, err);
    if (rc >= 0)
        rc = load_obj(maxlen_path, &m, err);
    if (rc >= 0) {
        const char *t = json_string_value(json_object_get(p, task));
        json_t *n = json_object_get(m, task);
        if (!t)
            rc = kw_error_at(err, KW_ENOTFOUND, prompts_path, 0, 0,
                             "no prompt template (a string) for task '%s'", task);
        else if (!json_is_integer(n) || json_integer_value(n) <= 0 ||
                 json_integer_value(n) > 1 << 20)
            rc = kw_error_at(err, KW_ENOTFOUND, maxlen_path, 0, 0,
                             "no max length (a positive integer) for task '%s'", task);
        else if (!(out->prompt = strdup(t)))
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        else
            out->max_new = (int)json_integer_value(n);
    }
    json_decref(p);
    json_decref(m);
    return rc;
}

void kw_lb_tables_clear(kw_lb_tables *t)
{
    free(t->prompt);
    t->prompt = NULL;
}

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *v = realloc(b->s, cap);
        if (!v)
            return -1;
        b->s = v, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

static int put_field(sbuf *b, const json_t *rec, const char *name, size_t n, kw_error *err)
{
    char key[256];
    if (n == 0 || n >= sizeof key)
        return kw_error_set(err, KW_EINVAL, "prompt template has a field of %zu characters", n);
    memcpy(key, name, n);
    key[n] = '\0';
    if (strpbrk(key, ":!.[ "))
        return kw_error_set(err, KW_EINVAL,
                            "prompt template field '{%s}': only plain field names are supported",
                            key);
    json_t *v = json_object_get(rec, key);
    if (!v)
        return kw_error_set(err, KW_ENOTFOUND, "the record has no field '%s' for the prompt",
                            key);
    char num[64];
    const char *s = num;
    size_t sl;
    if (json_is_string(v)) {
        s = json_string_value(v);
        sl = json_string_length(v);
    } else if (json_is_integer(v)) {
        sl = (size_t)snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
    } else {
        return kw_error_set(err, KW_ETYPE, "record field '%s' used in the prompt is not a string",
                            key);
    }
    return sb_put(b, s, sl) < 0 ? kw_error_set(err, KW_ENOMEM, "out of memory") : 0;
}

int kw_lb_prompt_fill(const char *tmpl, const json_t *rec, char **out, kw_error *err)
{
    sbuf b = {0};
    int rc = 0;
    for (const char *p = tmpl; *p && rc >= 0;) {
        int grow = 0;
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            grow = sb_put(&b, p, 1);
            p += 2;
        } else if (p[0] == '{') {
            const char *e = strchr(p + 1, '}');
            if (!e) {
                rc = kw_error_set(err, KW_EINVAL, "prompt template: '{' at %zu is not closed",
                                  (size_t)(p - tmpl));
                break;
            }
            rc = put_field(&b, rec, p + 1, (size_t)(e - p - 1), err);
            p = e + 1;
        } else if (p[0] == '}') {
            rc = kw_error_set(err, KW_EINVAL, "prompt template: single '}' at %zu",
                              (size_t)(p - tmpl));
        } else {
            size_t n = strcspn(p, "{}");
            grow = sb_put(&b, p, n);
            p += n;
        }
        if (grow < 0)
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    if (rc >= 0 && !b.s && sb_put(&b, "", 0) < 0)
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
    if (rc < 0) {
        free(b.s);
        return rc;
    }
    *out = b.s;
    return 0;
}

char *kw_lb_task_from_path(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 6 && !strcmp(b + n - 6, ".jsonl"))
        n -= 6;
    return strndup(b, n);
}
