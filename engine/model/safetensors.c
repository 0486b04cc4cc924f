/* safetensors reader: see safetensors.h for the layout. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "mapfile.h"
#include "sniff.h"

#define MAX_HEADER (256u << 20)

struct kw_st {
    char *label;
    const uint8_t *buf;
    size_t size;
    void *map;
    json_t *meta;
    int n;
    kw_st_tensor *t;
};

static const struct { const char *name; kw_dtype dt; size_t size; } st_types[] = {
    {"F32", KW_DT_F32, 4}, {"F16", KW_DT_F16, 2}, {"BF16", KW_DT_BF16, 2},
    {"I8", KW_DT_I8, 1},   {"I32", KW_DT_I32, 4},
};

static int fail(kw_st *st, kw_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(kw_st *st, kw_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kw_error_vset(err, code, st->label, 0, 0, fmt, ap);
    va_end(ap);
    return code;
}

static int parse_shape(kw_st *st, kw_st_tensor *t, json_t *shape, kw_error *err)
{
    if (!json_is_array(shape))
        return fail(st, err, KW_EFORMAT, "tensor '%s': \"shape\" is not an array", t->name);
    size_t nd = json_array_size(shape);
    if (nd > 4)
        return fail(st, err, KW_EFORMAT, "tensor '%s' has %zu dimensions; kvweave reads up to 4",
                    t->name, nd);
    t->ndim = (int)nd;
    for (size_t d = 0; d < nd; d++) {
        json_t *x = json_array_get(shape, d);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return fail(st, err, KW_EFORMAT, "tensor '%s': shape[%zu] is not a non-negative "
                        "integer", t->name, d);
        t->shape[d] = json_integer_value(x);
    }
    return KW_OK;
}

static int parse_entry(kw_st *st, kw_st_tensor *t, json_t *e, size_t data_size, kw_error *err)
{
    if (!json_is_object(e))
        return fail(st, err, KW_EFORMAT, "tensor '%s': entry is not an object", t->name);
    const char *dt = json_string_value(json_object_get(e, "dtype"));
    if (!dt)
        return fail(st, err, KW_EFORMAT, "tensor '%s': no \"dtype\" string", t->name);
    size_t esz = 0;
    for (size_t i = 0; i < sizeof st_types / sizeof *st_types; i++)
        if (strcmp(dt, st_types[i].name) == 0) {
            t->dtype = st_types[i].dt;
            esz = st_types[i].size;
        }
    if (!esz)
        return fail(st, err, KW_EFORMAT, "tensor '%s' has dtype '%s', which kvweave cannot read "
                    "(supported: F32, F16, BF16, I8, I32)", t->name, dt);
    int rc = parse_shape(st, t, json_object_get(e, "shape"), err);
    if (rc < 0)
        return rc;
    json_t *off = json_object_get(e, "data_offsets");
    json_t *b = json_array_get(off, 0), *en = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(b) ||
        !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b))
        return fail(st, err, KW_EFORMAT, "tensor '%s': \"data_offsets\" is not [begin, end] "
                    "with 0 <= begin <= end", t->name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(en);
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] && n > UINT64_MAX / 8 / (uint64_t)t->shape[d])
            return fail(st, err, KW_EFORMAT, "tensor '%s': the element count overflows", t->name);
        n *= (uint64_t)t->shape[d];
    }
    if (end - begin != n * esz)
        return fail(st, err, KW_EFORMAT, "tensor '%s': shape and dtype %s need %llu bytes but "
                    "data_offsets [%llu, %llu) hold %llu", t->name, dt,
                    (unsigned long long)(n * esz), (unsigned long long)begin,
                    (unsigned long long)end, (unsigned long long)(end - begin));
    if (end > data_size)
        return fail(st, err, KW_EFORMAT, "tensor '%s' needs bytes [%llu, %llu) but the file has "
                    "%zu", t->name, (unsigned long long)(st->size - data_size + begin),
                    (unsigned long long)(st->size - data_size + end), st->size);
    t->begin = begin;
    t->nbytes = (size_t)(end - begin);
    t->data = st->buf + (st->size - data_size) + begin;
    return KW_OK;
}

static int read_header(kw_st *st, json_t **root, size_t *hlen, kw_error *err)
{
    char what[160];
    uint64_t n = 0;
    if (st->size >= 8)
        memcpy(&n, st->buf, 8);
    const uint8_t *p = st->buf;
    /* a real header starts with '{' right after the length */
    if (st->size < 9 || n > st->size - 8 || n < 2 || p[8] != '{') {
        int text = st->size > 0;
        for (size_t i = 0; i < st->size && i < 8; i++)
            text &= (p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\n' || p[i] == '\r' ||
                    p[i] == '\t';
        if (text || st->size == 0) {
            kw__sniff(p, st->size, what, sizeof what);
            return fail(st, err, KW_EFORMAT, "not a safetensors file (%s)", what);
        }
        if (st->size < 9)
            return fail(st, err, KW_EFORMAT, "truncated: %zu bytes, a safetensors file needs "
                        "at least 10", st->size);
        if (n > st->size - 8)
            return fail(st, err, KW_EFORMAT, "truncated: the header claims %llu bytes but only "
                        "%zu follow the length", (unsigned long long)n, st->size - 8);
        kw__sniff(p, st->size, what, sizeof what);
        return fail(st, err, KW_EFORMAT, "not a safetensors file (header of %llu bytes does not "
                    "start with '{'; %s)", (unsigned long long)n, what);
    }
    if (n > MAX_HEADER)
        return fail(st, err, KW_ELIMIT, "header of %llu bytes exceeds the limit of %u",
                    (unsigned long long)n, MAX_HEADER);
    json_error_t je;
    *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!*root)
        return kw_error_at(err, KW_EFORMAT, st->label, 0, 0,
                           "header JSON, line %d column %d: %s", je.line, je.column, je.text);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return fail(st, err, KW_EFORMAT, "the header is not a JSON object");
    }
    *hlen = (size_t)n;
    return KW_OK;
}

int kw_st_parse(const void *buf, size_t size, const char *label, kw_st **out, kw_error *err)
{
    *out = NULL;
    kw_st *st = calloc(1, sizeof *st);
    if (!st || !(st->label = strdup(label ? label : "<memory>"))) {
        free(st);
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    st->buf = buf;
    st->size = size;
    json_t *root = NULL;
    size_t hlen = 0;
    int rc = read_header(st, &root, &hlen, err);
    if (rc < 0)
        goto done;
    size_t cap = json_object_size(root);
    st->t = calloc(cap ? cap : 1, sizeof *st->t);
    if (!st->t) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                rc = fail(st, err, KW_EFORMAT, "\"__metadata__\" is not an object");
                goto done;
            }
            st->meta = json_incref(val);
            continue;
        }
        kw_st_tensor *t = &st->t[st->n++];
        if (!(t->name = strdup(key))) {
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
            goto done;
        }
        if ((rc = parse_entry(st, t, val, size - 8 - hlen, err)) < 0)
            goto done;
    }
    rc = KW_OK;
done:
    json_decref(root);
    if (rc < 0)
        st = kw_st_free(st);
    *out = st;
    return rc;
}

int kw_st_open(const char *path, kw_st **out, kw_error *err)
{
    *out = NULL;
    void *map;
    size_t size;
    int rc = kw__mapfile_open(path, &map, &size, err);
    if (rc < 0)
        return rc;
    static const uint8_t empty[1];
    rc = kw_st_parse(map ? map : empty, size, path, out, err);
    if (rc < 0) {
        kw__mapfile_close(map, size);
        return rc;
    }
    (*out)->map = map;
    return KW_OK;
}

kw_st *kw_st_free(kw_st *st)
{
    if (!st)
        return NULL;
    for (int i = 0; i < st->n; i++)
        free(st->t[i].name);
    free(st->t);
    json_decref(st->meta);
    kw__mapfile_close(st->map, st->size);
    free(st->label);
    free(st);
    return NULL;
}

int kw_st_n_tensors(const kw_st *st) { return st->n; }
const kw_st_tensor *kw_st_tensor_at(const kw_st *st, int i) { return &st->t[i]; }
const char *kw_st_label(const kw_st *st) { return st->label; }

const kw_st_tensor *kw_st_find(const kw_st *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->t[i].name, name) == 0)
            return &st->t[i];
    return NULL;
}

const char *kw_st_metadata(const kw_st *st, const char *key)
{
    return st->meta ? json_string_value(json_object_get(st->meta, key)) : NULL;
}
