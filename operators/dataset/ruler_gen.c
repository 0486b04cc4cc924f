/* RULER-style synthetic tasks: resources, sentence splitting, sizing, scores
 * (ruler_gen.h). The task recipes are in ruler_tasks.c. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "ruler_internal.h"

/* ---- resources ---- */

static void wordlist_clear(wordlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->w[i]);
    free(l->w);
    l->w = NULL;
    l->n = 0;
}

static int load_words(const char *dir, const char *name, wordlist *out, kw_error *err)
{
    char path[4096], *buf;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = kw_read_file(path, &buf, NULL, err);
    if (rc < 0)
        return rc;
    int cap = 1024;
    out->w = malloc(sizeof(char *) * cap);
    for (char *save = NULL, *line = strtok_r(buf, "\r\n", &save); line;
         line = strtok_r(NULL, "\r\n", &save)) {
        while (isspace((unsigned char)*line))
            line++;
        size_t n = strlen(line);
        while (n && isspace((unsigned char)line[n - 1]))
            line[--n] = '\0';
        if (!n)
            continue;
        if (out->n == cap)
            out->w = realloc(out->w, sizeof(char *) * (cap *= 2));
        out->w[out->n++] = strdup(line);
    }
    free(buf);
    if (out->n == 0)
        return kw_error_set(err, KW_EFORMAT, "%s: no words in the file", path);
    return KW_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_essay(const char *dir, kw_ruler_res *r, kw_error *err)
{
    char path[4096], *buf;
    snprintf(path, sizeof path, "%s/PaulGrahamEssays.json", dir);
    int rc = kw_read_file(path, &buf, NULL, err);
    if (rc < 0)
        return rc;
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    free(buf);
    const char *text = json_string_value(json_object_get(j, "text"));
    if (!text) {
        int code = kw_error_at(err, KW_EFORMAT, path, j ? 0 : je.line, j ? 0 : je.column,
                               "%s", j ? "expected an object with a string \"text\"" : je.text);
        json_decref(j);
        return code;
    }
    /* as re.sub(r'\s+', ' ', text).split(' ') */
    size_t n = strlen(text);
    r->essay_buf = malloc(n + 1);
    size_t o = 0;
    int cap = 1 << 16;
    r->essay = malloc(sizeof(char *) * cap);
    int in_word = 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c && !isspace(c)) {
            if (!in_word) {
                if (r->n_essay == cap)
                    r->essay = realloc(r->essay, sizeof(char *) * (cap *= 2));
                r->essay[r->n_essay++] = r->essay_buf + o;
                in_word = 1;
            }
            r->essay_buf[o++] = (char)c;
        } else if (in_word) {
            r->essay_buf[o++] = '\0';
            in_word = 0;
        }
    }
    json_decref(j);
    if (r->n_essay < 100)
        return kw_error_set(err, KW_EFORMAT, "%s: the essay has only %d words", path,
                            r->n_essay);
    return KW_OK;
}

int kw_ruler_res_load(const char *dir, kw_ruler_res **out, kw_error *err)
{
    kw_ruler_res *r = calloc(1, sizeof *r);
    int rc;
    if ((rc = load_essay(dir, r, err)) < 0 ||
        (rc = load_words(dir, "nounlist.txt", &r->nouns, err)) < 0 ||
        (rc = load_words(dir, "adjectivelist.txt", &r->adjs, err)) < 0 ||
        (rc = load_words(dir, "verblist.txt", &r->verbs, err)) < 0) {
        kw_ruler_res_free(r);
        return rc;
    }
    int n = r->nouns.n + r->adjs.n + r->verbs.n;
    char **all = malloc(sizeof(char *) * n);
    memcpy(all, r->nouns.w, sizeof(char *) * r->nouns.n);
    memcpy(all + r->nouns.n, r->adjs.w, sizeof(char *) * r->adjs.n);
    memcpy(all + r->nouns.n + r->adjs.n, r->verbs.w, sizeof(char *) * r->verbs.n);
    qsort(all, n, sizeof(char *), cmp_str);
    r->cwe.w = malloc(sizeof(char *) * n);
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(all[i], all[i - 1]))
            r->cwe.w[r->cwe.n++] = strdup(all[i]);
    free(all);
    *out = r;
    return KW_OK;
}

kw_ruler_res *kw_ruler_res_free(kw_ruler_res *r)
{
    if (!r)
        return NULL;
    free(r->essay_buf);
    free(r->essay);
    wordlist_clear(&r->nouns);
    wordlist_clear(&r->adjs);
    wordlist_clear(&r->verbs);
    wordlist_clear(&r->cwe);
    free(r);
    return NULL;
}

/* ---- sentences ---- */

static const char *const abbrevs[] = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr",
                                      "vs", "etc", "e.g", "i.e", "inc", "ltd", "co", "no",
                                      "vol", "fig", "approx", "dept", "u.s", NULL};

static int is_abbrev(const char *text, int word_start, int dot)
{
    int n = dot - word_start;
    if (n <= 0 || n > 8)
        return 0;
    if (n == 1 && isalpha((unsigned char)text[word_start]))
        return 1; /* initials */
    char w[9];
    for (int i = 0; i < n; i++)
        w[i] = (char)tolower((unsigned char)text[word_start + i]);
    w[n] = '\0';
    for (int i = 0; abbrevs[i]; i++)
        if (!strcmp(w, abbrevs[i]))
            return 1;
    return 0;
}

int kw_ruler_split_sentences(const char *text, int **starts, int **lens)
{
    int cap = 256, n = 0, len = (int)strlen(text);
    *starts = malloc(sizeof(int) * cap);
    *lens = malloc(sizeof(int) * cap);
    int s = 0, word = 0;
    while (s < len && isspace((unsigned char)text[s]))
        s++;
    for (int i = s; i < len; i++) {
        char c = text[i];
        if (isspace((unsigned char)c)) {
            word = i + 1;
            continue;
        }
        if (c != '.' && c != '!' && c != '?')
            continue;
        int e = i + 1;
        while (e < len && strchr(".!?\"')]", text[e]))
            e++;
        if (e < len && !isspace((unsigned char)text[e]))
            continue;
        if (c == '.' && e == i + 1 && is_abbrev(text, word, i))
            continue;
        if (n == cap) {
            *starts = realloc(*starts, sizeof(int) * (cap *= 2));
            *lens = realloc(*lens, sizeof(int) * cap);
        }
        (*starts)[n] = s;
        (*lens)[n++] = e - s;
        s = e;
        while (s < len && isspace((unsigned char)text[s]))
            s++;
        i = s - 1;
        word = s;
    }
    if (s < len) {
        int e = len;
        while (e > s && isspace((unsigned char)text[e - 1]))
            e--;
        if (n == cap) {
            *starts = realloc(*starts, sizeof(int) * (cap + 1));
            *lens = realloc(*lens, sizeof(int) * (cap + 1));
        }
        (*starts)[n] = s;
        (*lens)[n++] = e - s;
    }
    return n;
}

/* tokens of the prompt of record `index` at `units`, or < 0 */
static int try_units(const kw_ruler_gen *g, int64_t index, int units)
{
    kw__ruler_out o = {0};
    int rc = kw__ruler_generate(g, index, units, &o);
    if (rc >= 0)
        rc = kw__ruler_count(g, &o);
    kw__ruler_out_clear(&o);
    return rc;
}

int kw_ruler_fit(kw_ruler_gen *g, kw_error *err)
{
    if (!kw_ruler_task_known(g->task))
        return kw_error_set(err, KW_ENOTFOUND, "unknown RULER task '%s'", g->task);
    int budget = g->length - kw__ruler_max_new(g), lo, hi, limit;
    const char *source;
    kw__ruler_units_range(g, &lo, &hi, &limit, &source);
    int n = try_units(g, 0, lo);
    if (n < 0)
        return kw_error_set(err, n, "task %s: counting tokens failed", g->task);
    if (n > budget)
        return kw_error_set(err, KW_ERANGE,
                            "task %s: the smallest prompt has %d tokens, more than length %d "
                            "minus %d generated tokens",
                            g->task, n, g->length, kw__ruler_max_new(g));
    int best = lo++;
    while (lo <= hi) { /* the largest haystack whose prompt fits the budget */
        int mid = lo + (hi - lo) / 2;
        n = try_units(g, 0, mid);
        if (n < 0)
            return kw_error_set(err, n, "task %s: counting tokens failed", g->task);
        if (n <= budget) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (limit > 0 && best >= limit)
        return kw_error_set(err, KW_ERANGE,
                            "task %s: the %s (%d units) is too short for length %d", g->task,
                            source, limit, g->length);
    g->units = best;
    return KW_OK;
}

int kw_ruler_make(const kw_ruler_gen *g, int64_t index, json_t **out, kw_error *err)
{
    if (!kw_ruler_task_known(g->task))
        return kw_error_set(err, KW_ENOTFOUND, "unknown RULER task '%s'", g->task);
    if (g->units <= 0)
        return kw_error_set(err, KW_EINVAL, "task %s: kw_ruler_fit first", g->task);
    int budget = g->length - kw__ruler_max_new(g), units = g->units, n = 0, lo, hi, limit;
    const char *source;
    kw__ruler_units_range(g, &lo, &hi, &limit, &source);
    kw__ruler_out o = {0};
    for (;;) { /* shrink until this record fits, as RULER does */
        int rc = kw__ruler_generate(g, index, units, &o);
        if (rc < 0)
            return kw_error_set(err, rc, "task %s: generation failed", g->task);
        n = kw__ruler_count(g, &o);
        if (n < 0) {
            kw__ruler_out_clear(&o);
            return kw_error_set(err, n, "task %s: counting tokens failed", g->task);
        }
        int step = units / 50 > 1 ? units / 50 : 1;
        if (n <= budget || units - step < lo)
            break;
        kw__ruler_out_clear(&o);
        units -= step;
    }
    json_t *refs = json_array();
    for (int i = 0; i < o.n_refs; i++)
        json_array_append_new(refs, json_string(o.refs[i]));
    char id[96];
    snprintf(id, sizeof id, "%s-%d-%lld", g->task, g->length, (long long)index);
    int max_new = kw__ruler_max_new(g);
    *out = json_pack("{s:s,s:I,s:s,s:s,s:s,s:o,s:i,s:i,s:i,s:i}", "id", id, "index",
                     (json_int_t)index, "task", g->task, "input", o.input, "answer_prefix",
                     o.prefix, "outputs", refs, "length", n + max_new, "target_length",
                     g->length, "max_new", max_new, "haystack", units);
    kw__ruler_out_clear(&o);
    return *out ? KW_OK : kw_error_set(err, KW_ENOMEM, "out of memory");
}

/* ---- scores ---- */

static char *clean_pred(const char *pred)
{
    /* RULER: control characters become newlines, then strip */
    size_t n = strlen(pred);
    char *s = malloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        s[i] = (pred[i] && (unsigned char)pred[i] < 0x20) ? '\n' : pred[i];
    char *b = s;
    while (*b && isspace((unsigned char)*b))
        b++;
    size_t m = strlen(b);
    while (m && isspace((unsigned char)b[m - 1]))
        b[--m] = '\0';
    memmove(s, b, m + 1);
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return s;
}

static int contains_ci(const char *hay_lower, const char *ref)
{
    size_t n = strlen(ref);
    char *r = malloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        r[i] = (char)tolower((unsigned char)ref[i]);
    int hit = strstr(hay_lower, r) != NULL;
    free(r);
    return hit;
}

double kw_ruler_match_all(const char *pred, const char *const *refs, int n)
{
    if (n <= 0)
        return 0;
    char *p = clean_pred(pred);
    int hits = 0;
    for (int i = 0; i < n; i++)
        hits += contains_ci(p, refs[i]);
    free(p);
    return (double)hits / n;
}

double kw_ruler_match_part(const char *pred, const char *const *refs, int n)
{
    char *p = clean_pred(pred);
    int hit = 0;
    for (int i = 0; i < n && !hit; i++)
        hit = contains_ci(p, refs[i]);
    free(p);
    return hit;
}
