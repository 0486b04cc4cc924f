/* Streaming JSONL reader (see jsonl_reader.h). */
#include "jsonl_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct kw_jsonl {
    FILE *f;
    bool own;
    char name[512];
    kw_jsonl_opts o;
    char *line;
    size_t cap;
    int64_t lineno;
    uint64_t off, next_off;
    int64_t records, skipped;
};

int kw_jsonl_open_stream(FILE *f, const char *name, const kw_jsonl_opts *o, kw_jsonl **out,
                         kw_error *err)
{
    kw_jsonl *r = calloc(1, sizeof *r);
    if (!r)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    r->f = f;
    snprintf(r->name, sizeof r->name, "%s", name);
    if (o)
        r->o = *o;
    if (!r->o.max_line)
        r->o.max_line = (size_t)1 << 30;
    *out = r;
    return 0;
}

int kw_jsonl_open(const char *path, const kw_jsonl_opts *o, kw_jsonl **out, kw_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kw_error_set(err, KW_ENOTFOUND, "cannot open data set '%s': %s", path,
                            strerror(errno));
    int rc = kw_jsonl_open_stream(f, path, o, out, err);
    if (rc < 0) {
        fclose(f);
        return rc;
    }
    (*out)->own = true;
    return 0;
}

kw_jsonl *kw_jsonl_close(kw_jsonl *r)
{
    if (r) {
        if (r->own)
            fclose(r->f);
        free(r->line);
        free(r);
    }
    return NULL;
}

int64_t kw_jsonl_line(const kw_jsonl *r) { return r->lineno; }
uint64_t kw_jsonl_offset(const kw_jsonl *r) { return r->off; }
int64_t kw_jsonl_records(const kw_jsonl *r) { return r->records; }
int64_t kw_jsonl_skipped(const kw_jsonl *r) { return r->skipped; }

/* The first invalid UTF-8 byte of s[0..n), or n. */
static size_t utf8_bad_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (i + len > n)
            return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

/* Reports a bad line (pos: the byte in the line, or -1): an error, or a count when
 * skipping. The message names the line, the column and the byte offset in the file. */
static int bad_line(kw_jsonl *r, kw_error *err, long pos, const char *msg)
{
    if (r->o.skip_bad) {
        r->skipped++;
        return 1;
    }
    unsigned long long at = (unsigned long long)r->off + (unsigned long long)(pos > 0 ? pos : 0);
    return kw_error_at(err, KW_EPARSE, r->name, (int)r->lineno, pos >= 0 ? (int)pos + 1 : 0,
                       "bad record at byte offset %llu: %s", at, msg);
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* One line: 0 and *rec, 1 when skipped or blank, < 0 on error. */
static int parse_line(kw_jsonl *r, size_t n, json_t **rec, kw_error *err)
{
    const char *s = r->line;
    if (blank(s, n))
        return 1;
    char msg[700];
    if (n > r->o.max_line) {
        snprintf(msg, sizeof msg, "line of %zu bytes is longer than the limit of %zu", n,
                 r->o.max_line);
        return bad_line(r, err, -1, msg);
    }
    size_t bad = utf8_bad_at((const unsigned char *)s, n);
    if (bad < n) {
        snprintf(msg, sizeof msg, "invalid UTF-8 (byte 0x%02x)", (unsigned char)s[bad]);
        return bad_line(r, err, (long)bad, msg);
    }
    json_error_t je;
    json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        snprintf(msg, sizeof msg, "invalid JSON: %s", je.text);
        return bad_line(r, err, je.position > 0 ? (long)je.position - 1 : 0, msg);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return bad_line(r, err, 0, "the record is not a JSON object");
    }
    char why[512] = "";
    if (r->o.check && r->o.check(j, r->o.check_arg, why, sizeof why)) {
        json_decref(j);
        return bad_line(r, err, -1, why);
    }
    *rec = j;
    return 0;
}

int kw_jsonl_next(kw_jsonl *r, json_t **rec, kw_error *err)
{
    *rec = NULL;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->line, &r->cap, r->f);
        if (n < 0) {
            if (ferror(r->f))
                return kw_error_at(err, KW_EIO, r->name, (int)r->lineno, 0,
                                   "read failed: %s", strerror(errno ? errno : EIO));
            return KW_END;
        }
        r->lineno++;
        r->off = r->next_off;
        r->next_off += (uint64_t)n;
        size_t len = (size_t)n;
        if (len && r->line[len - 1] == '\n')
            len--;
        if (memchr(r->line, '\0', len)) {
            int rc = bad_line(r, err, (long)strlen(r->line), "line contains a NUL byte");
            if (rc < 0)
                return rc;
            continue;
        }
        int rc = parse_line(r, len, rec, err);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            r->records++;
            return 0;
        }
    }
}

int kw_jsonl_count(const char *path, const kw_jsonl_opts *o, int64_t *records,
                   int64_t *skipped, kw_error *err)
{
    kw_jsonl *r;
    int rc = kw_jsonl_open(path, o, &r, err);
    if (rc < 0)
        return rc;
    json_t *rec;
    while ((rc = kw_jsonl_next(r, &rec, err)) == 0)
        json_decref(rec);
    *records = r->records;
    *skipped = r->skipped;
    int64_t lines = r->lineno;
    kw_jsonl_close(r);
    if (rc < 0)
        return rc;
    if (*records == 0)
        return kw_error_at(err, KW_EFORMAT, path, 0, 0,
                           "data set has no records (%lld lines, %lld skipped)",
                           (long long)lines, (long long)*skipped);
    return 0;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int kw_jsonl_select(int64_t n, const kw_jsonl_pick *p, int64_t **idx, int64_t *n_idx,
                    kw_error *err)
{
    if (p->offset < 0 || p->limit < 0 || p->sample < 0)
        return kw_error_set(err, KW_ERANGE,
                            "offset %lld, limit %lld and sample %lld must not be negative",
                            (long long)p->offset, (long long)p->limit, (long long)p->sample);
    int64_t first = p->offset < n ? p->offset : n, m = n - first;
    int64_t *v = malloc((size_t)(m > 0 ? m : 1) * sizeof *v);
    if (!v)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int64_t i = 0; i < m; i++)
        v[i] = first + i;
    if (p->sample > 0 && p->sample < m) { /* partial Fisher-Yates, then file order */
        uint64_t s = p->seed ^ 0x6a09e667f3bcc908ull;
        for (int64_t i = 0; i < p->sample; i++) {
            int64_t j = i + (int64_t)(splitmix(&s) % (uint64_t)(m - i));
            int64_t t = v[i];
            v[i] = v[j], v[j] = t;
        }
        m = p->sample;
        qsort(v, (size_t)m, sizeof *v, cmp_i64);
    }
    if (p->limit > 0 && p->limit < m)
        m = p->limit;
    *idx = v;
    *n_idx = m;
    return 0;
}
