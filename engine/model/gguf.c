/* GGUF reader: see gguf.h for the layout. */
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mapfile.h"
#include "sniff.h"

#define MAX_DEPTH 4 /* nested arrays */

typedef struct kv {
    char *key;
    kw_gguf_value v;
} kv;

struct kw_gguf {
    char *label;
    const uint8_t *buf;
    size_t size;
    void *map; /* non-NULL when we own a mapping of `size` bytes */
    uint32_t version;
    size_t alignment, data_off;
    int n_kv, n_tensors;
    kv *kvs;
    kw_gguf_tensor *tensors;
};

typedef struct rd {
    const uint8_t *p;
    size_t n, pos;
    const char *label;
    kw_error *err;
} rd;

static const size_t type_size[KW_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *kw_gguf_type_name(kw_gguf_type t)
{
    static const char *names[KW_GGUF_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64"};
    return (unsigned)t < KW_GGUF_TYPE_COUNT ? names[t] : "?";
}

const char *kw_ggml_type_name(uint32_t t)
{
    static const char *names[] = {
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
        "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
        "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0"};
    return t < sizeof names / sizeof *names ? names[t] : "?";
}

static const struct { uint32_t ggml; kw_dtype dt; } type_map[] = {
    {KW_GGML_F32, KW_DT_F32},   {KW_GGML_F16, KW_DT_F16},   {KW_GGML_BF16, KW_DT_BF16},
    {KW_GGML_Q4_0, KW_DT_Q4_0}, {KW_GGML_Q4_1, KW_DT_Q4_1}, {KW_GGML_Q5_0, KW_DT_Q5_0},
    {KW_GGML_Q5_1, KW_DT_Q5_1}, {KW_GGML_Q8_0, KW_DT_Q8_0}, {KW_GGML_Q4_K, KW_DT_Q4_K},
    {KW_GGML_Q5_K, KW_DT_Q5_K}, {KW_GGML_Q6_K, KW_DT_Q6_K}, {KW_GGML_I8, KW_DT_I8},
    {KW_GGML_I32, KW_DT_I32},
};

int kw_ggml_to_dtype(uint32_t ggml_type, kw_dtype *out)
{
    for (size_t i = 0; i < sizeof type_map / sizeof *type_map; i++)
        if (type_map[i].ggml == ggml_type) {
            *out = type_map[i].dt;
            return KW_OK;
        }
    return KW_ENOTFOUND;
}

int kw_dtype_to_ggml(kw_dtype t, uint32_t *out)
{
    for (size_t i = 0; i < sizeof type_map / sizeof *type_map; i++)
        if (type_map[i].dt == t) {
            *out = type_map[i].ggml;
            return KW_OK;
        }
    return KW_ENOTFOUND;
}

/* ---- cursor ---- */

static int need(rd *r, uint64_t k, const char *what)
{
    if (k <= r->n - r->pos)
        return KW_OK;
    return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                       "truncated: %s needs %llu bytes at offset %zu but the file has %zu",
                       what, (unsigned long long)k, r->pos, r->n);
}

static int rd_bytes(rd *r, void *dst, size_t k, const char *what)
{
    int rc = need(r, k, what);
    if (rc < 0)
        return rc;
    memcpy(dst, r->p + r->pos, k);
    r->pos += k;
    return KW_OK;
}

static int rd_u32(rd *r, uint32_t *v, const char *what) { return rd_bytes(r, v, 4, what); }
static int rd_u64(rd *r, uint64_t *v, const char *what) { return rd_bytes(r, v, 8, what); }

/* A length-prefixed string, copied with a NUL. */
static int rd_str(rd *r, char **s, uint64_t *len, const char *what)
{
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc < 0)
        return rc;
    if (n > r->n - r->pos)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "%s at offset %zu claims %llu bytes but only %zu remain", what,
                           r->pos - 8, (unsigned long long)n, r->n - r->pos);
    *s = malloc((size_t)n + 1);
    if (!*s)
        return kw_error_set(r->err, KW_ENOMEM, "out of memory");
    memcpy(*s, r->p + r->pos, (size_t)n);
    (*s)[n] = '\0';
    r->pos += (size_t)n;
    if (len)
        *len = n;
    return KW_OK;
}

static void value_clear(kw_gguf_value *v)
{
    if (v->type == KW_GGUF_STRING) {
        free(v->str.s);
    } else if (v->type == KW_GGUF_ARRAY) {
        if (v->arr.type == KW_GGUF_STRING) {
            char **ss = v->arr.data;
            for (uint64_t i = 0; ss && i < v->arr.n; i++)
                free(ss[i]);
        } else if (v->arr.type == KW_GGUF_ARRAY) {
            kw_gguf_value *vs = v->arr.data;
            for (uint64_t i = 0; vs && i < v->arr.n; i++)
                value_clear(&vs[i]);
        }
        free(v->arr.data);
    }
    memset(v, 0, sizeof *v);
}

static int rd_value(rd *r, kw_gguf_type t, kw_gguf_value *v, const char *key, int depth);

static int rd_array(rd *r, kw_gguf_value *v, const char *key, int depth)
{
    uint32_t et;
    uint64_t n;
    int rc;
    if ((rc = rd_u32(r, &et, "an array type")) < 0 || (rc = rd_u64(r, &n, "an array length")) < 0)
        return rc;
    if (et >= KW_GGUF_TYPE_COUNT)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "key '%s': array element type %u is not a GGUF type (0..12)", key, et);
    if (et == KW_GGUF_ARRAY && depth >= MAX_DEPTH)
        return kw_error_at(r->err, KW_ELIMIT, r->label, 0, 0,
                           "key '%s': arrays nested deeper than %d", key, MAX_DEPTH);
    /* every element takes at least this many bytes in the file */
    uint64_t min_el = et == KW_GGUF_STRING ? 8 : et == KW_GGUF_ARRAY ? 12 : type_size[et];
    uint64_t left = r->n - r->pos;
    if (n > left / min_el)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "key '%s': array of %llu %s needs at least %llu bytes at offset %zu "
                           "but only %llu remain", key, (unsigned long long)n,
                           kw_gguf_type_name((kw_gguf_type)et),
                           (unsigned long long)(n <= UINT64_MAX / min_el ? n * min_el : UINT64_MAX),
                           r->pos, (unsigned long long)left);
    v->type = KW_GGUF_ARRAY;
    v->arr.type = (kw_gguf_type)et;
    v->arr.n = 0;
    size_t el = et == KW_GGUF_STRING ? sizeof(char *)
                : et == KW_GGUF_ARRAY ? sizeof(kw_gguf_value) : type_size[et];
    v->arr.data = calloc(n ? (size_t)n : 1, el);
    if (!v->arr.data)
        return kw_error_set(r->err, KW_ENOMEM, "out of memory");
    if (et != KW_GGUF_STRING && et != KW_GGUF_ARRAY) {
        memcpy(v->arr.data, r->p + r->pos, (size_t)n * el);
        r->pos += (size_t)n * el;
        v->arr.n = n;
        return KW_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (et == KW_GGUF_STRING)
            rc = rd_str(r, &((char **)v->arr.data)[i], NULL, "an array string");
        else
            rc = rd_value(r, KW_GGUF_ARRAY, &((kw_gguf_value *)v->arr.data)[i], key, depth + 1);
        if (rc < 0)
            return rc;
        v->arr.n = i + 1;
    }
    return KW_OK;
}

static int rd_value(rd *r, kw_gguf_type t, kw_gguf_value *v, const char *key, int depth)
{
    v->type = t;
    uint8_t b[8] = {0};
    switch (t) {
    case KW_GGUF_STRING:
        return rd_str(r, &v->str.s, &v->str.len, "a string value");
    case KW_GGUF_ARRAY:
        return rd_array(r, v, key, depth);
    default:
        break;
    }
    int rc = rd_bytes(r, b, type_size[t], "a value");
    if (rc < 0)
        return rc;
    switch (t) {
    case KW_GGUF_U8: v->u = b[0]; break;
    case KW_GGUF_I8: v->i = (int8_t)b[0]; break;
    case KW_GGUF_U16: { uint16_t x; memcpy(&x, b, 2); v->u = x; break; }
    case KW_GGUF_I16: { int16_t x; memcpy(&x, b, 2); v->i = x; break; }
    case KW_GGUF_U32: { uint32_t x; memcpy(&x, b, 4); v->u = x; break; }
    case KW_GGUF_I32: { int32_t x; memcpy(&x, b, 4); v->i = x; break; }
    case KW_GGUF_F32: { float x; memcpy(&x, b, 4); v->f = x; break; }
    case KW_GGUF_BOOL:
        if (b[0] > 1)
            return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                               "key '%s': bool value %u at offset %zu is neither 0 nor 1", key,
                               b[0], r->pos - 1);
        v->b = b[0];
        break;
    case KW_GGUF_U64: memcpy(&v->u, b, 8); break;
    case KW_GGUF_I64: memcpy(&v->i, b, 8); break;
    case KW_GGUF_F64: memcpy(&v->f, b, 8); break;
    default: break;
    }
    return KW_OK;
}

static int rd_kvs(rd *r, kw_gguf *g, int n)
{
    for (int i = 0; i < n; i++) {
        kv *e = &g->kvs[i];
        uint32_t t;
        int rc = rd_str(r, &e->key, NULL, "a metadata key");
        if (rc < 0)
            return rc;
        g->n_kv = i + 1; /* so free() sees what was read */
        if ((rc = rd_u32(r, &t, "a value type")) < 0)
            return rc;
        if (t >= KW_GGUF_TYPE_COUNT)
            return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                               "key '%s': value type %u at offset %zu is not a GGUF type (0..12)",
                               e->key, t, r->pos - 4);
        if ((rc = rd_value(r, (kw_gguf_type)t, &e->v, e->key, 0)) < 0)
            return rc;
        for (int j = 0; j < i; j++)
            if (strcmp(g->kvs[j].key, e->key) == 0)
                return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                                   "duplicate metadata key '%s'", e->key);
    }
    return KW_OK;
}

static int rd_tensor(rd *r, kw_gguf *g, kw_gguf_tensor *t)
{
    uint32_t nd, ty;
    int rc = rd_str(r, &t->name, NULL, "a tensor name");
    if (rc < 0)
        return rc;
    if ((rc = rd_u32(r, &nd, "a tensor's dimension count")) < 0)
        return rc;
    if (nd < 1 || nd > 4)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "tensor '%s' has %u dimensions; GGUF allows 1 to 4", t->name, nd);
    t->ndim = (int)nd;
    uint64_t n = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if ((rc = rd_u64(r, &t->ne[d], "a tensor dimension")) < 0)
            return rc;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX / n)
            return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                               "tensor '%s': dimension %u is %llu (element count overflows "
                               "or is zero)", t->name, d, (unsigned long long)t->ne[d]);
        n *= t->ne[d];
        t->shape[nd - 1 - d] = (int64_t)t->ne[d];
    }
    if ((rc = rd_u32(r, &ty, "a tensor type")) < 0 ||
        (rc = rd_u64(r, &t->offset, "a tensor offset")) < 0)
        return rc;
    t->ggml_type = ty;
    if (kw_ggml_to_dtype(ty, &t->dtype) < 0)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "tensor '%s' has ggml type %u (%s), which kvweave cannot read "
                           "(supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
                           "Q5_K, Q6_K, I8, I32)", t->name, ty, kw_ggml_type_name(ty));
    size_t be;
    kw_dtype_block(t->dtype, &be, NULL);
    if (t->ne[0] % be)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "tensor '%s': row length %llu is not a multiple of the %s block "
                           "size %zu", t->name, (unsigned long long)t->ne[0],
                           kw_dtype_name(t->dtype), be);
    int64_t nb = kw_dtype_nbytes(t->dtype, (int64_t)n);
    if (nb < 0 || (uint64_t)nb > SIZE_MAX)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "tensor '%s': %llu elements overflow a byte count", t->name,
                           (unsigned long long)n);
    t->nbytes = (size_t)nb;
    if (g->alignment && t->offset % g->alignment)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "tensor '%s': offset %llu is not a multiple of the alignment %zu",
                           t->name, (unsigned long long)t->offset, g->alignment);
    return KW_OK;
}

static int check_tensors(rd *r, kw_gguf *g)
{
    for (int i = 0; i < g->n_tensors; i++) {
        kw_gguf_tensor *t = &g->tensors[i];
        uint64_t avail = g->size - g->data_off;
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                               "tensor '%s' needs bytes [%llu, %llu) but the file has %zu",
                               t->name, (unsigned long long)(g->data_off + t->offset),
                               (unsigned long long)(g->data_off + t->offset + t->nbytes),
                               g->size);
        t->data = g->buf + g->data_off + t->offset;
        for (int j = 0; j < i; j++)
            if (strcmp(g->tensors[j].name, t->name) == 0)
                return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                                   "duplicate tensor name '%s'", t->name);
    }
    return KW_OK;
}

static int rd_header(rd *r, kw_gguf *g, uint64_t *n_tensors, uint64_t *n_kv)
{
    char what[160];
    if (r->n < 4 || memcmp(r->p, "GGUF", 4) != 0) {
        kw__sniff(r->p, r->n, what, sizeof what);
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0, "not a GGUF file (%s)", what);
    }
    if (r->n < 24)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "truncated: %zu bytes, a GGUF header needs 24", r->n);
    r->pos = 4;
    rd_u32(r, &g->version, "the version");
    if (g->version != 2 && g->version != 3)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "GGUF version %u is not supported (kvweave reads versions 2 and 3%s)",
                           g->version, g->version >= 0x01000000 ? "; a big-endian file?" : "");
    rd_u64(r, n_tensors, "the tensor count");
    rd_u64(r, n_kv, "the metadata count");
    /* a key/value takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    uint64_t left = r->n - r->pos;
    if (*n_kv > left / 14 || *n_kv > INT32_MAX)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "metadata count %llu cannot fit in the %llu bytes that follow the "
                           "header", (unsigned long long)*n_kv, (unsigned long long)left);
    if (*n_tensors > left / 33 || *n_tensors > INT32_MAX)
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "tensor count %llu cannot fit in the %llu bytes that follow the "
                           "header", (unsigned long long)*n_tensors, (unsigned long long)left);
    return KW_OK;
}

static int set_alignment(rd *r, kw_gguf *g)
{
    g->alignment = 32;
    const kw_gguf_value *v = kw_gguf_find(g, "general.alignment");
    if (!v)
        return KW_OK;
    int64_t a;
    if (kw_gguf_get_int(g, "general.alignment", &a) < 0 || a <= 0 || a > (1 << 30) ||
        (a & (a - 1)))
        return kw_error_at(r->err, KW_EFORMAT, r->label, 0, 0,
                           "general.alignment must be a power of two (got %s %lld)",
                           kw_gguf_type_name(v->type),
                           v->type == KW_GGUF_U32 || v->type == KW_GGUF_U64 ? (long long)v->u
                                                                             : (long long)v->i);
    g->alignment = (size_t)a;
    return KW_OK;
}

int kw_gguf_parse(const void *buf, size_t n, const char *label, kw_gguf **out, kw_error *err)
{
    *out = NULL;
    kw_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->label = strdup(label ? label : "<memory>"))) {
        free(g);
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    g->buf = buf;
    g->size = n;
    rd r = {buf, n, 0, g->label, err};
    uint64_t nt = 0, nkv = 0;
    int rc = rd_header(&r, g, &nt, &nkv);
    if (rc < 0)
        goto fail;
    g->kvs = calloc(nkv ? nkv : 1, sizeof *g->kvs);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = rd_kvs(&r, g, (int)nkv)) < 0 || (rc = set_alignment(&r, g)) < 0)
        goto fail;
    for (uint64_t i = 0; i < nt; i++) {
        g->n_tensors = (int)i + 1;
        if ((rc = rd_tensor(&r, g, &g->tensors[i])) < 0)
            goto fail;
    }
    g->data_off = r.pos + (g->alignment - r.pos % g->alignment) % g->alignment;
    if (g->data_off > n) {
        if (nt > 0) {
            rc = kw_error_at(err, KW_EFORMAT, g->label, 0, 0,
                             "truncated: the tensor data starts at offset %zu but the file "
                             "has %zu bytes", g->data_off, n);
            goto fail;
        }
        g->data_off = n;
    }
    if ((rc = check_tensors(&r, g)) < 0)
        goto fail;
    *out = g;
    return KW_OK;
fail:
    kw_gguf_free(g);
    return rc;
}

int kw_gguf_open(const char *path, kw_gguf **out, kw_error *err)
{
    *out = NULL;
    void *map;
    size_t size;
    int rc = kw__mapfile_open(path, &map, &size, err);
    if (rc < 0)
        return rc;
    static const uint8_t empty[1];
    rc = kw_gguf_parse(map ? map : empty, size, path, out, err);
    if (rc < 0) {
        kw__mapfile_close(map, size);
        return rc;
    }
    (*out)->map = map;
    return KW_OK;
}

kw_gguf *kw_gguf_free(kw_gguf *g)
{
    if (!g)
        return NULL;
    for (int i = 0; i < g->n_kv; i++) {
        free(g->kvs[i].key);
        value_clear(&g->kvs[i].v);
    }
    for (int i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    kw__mapfile_close(g->map, g->size);
    free(g->label);
    free(g);
    return NULL;
}

/* ---- lookups ---- */

uint32_t kw_gguf_version(const kw_gguf *g) { return g->version; }
size_t kw_gguf_alignment(const kw_gguf *g) { return g->alignment; }
size_t kw_gguf_data_offset(const kw_gguf *g) { return g->data_off; }
const char *kw_gguf_label(const kw_gguf *g) { return g->label; }
int kw_gguf_n_kv(const kw_gguf *g) { return g->n_kv; }
const char *kw_gguf_key_at(const kw_gguf *g, int i) { return g->kvs[i].key; }
const kw_gguf_value *kw_gguf_value_at(const kw_gguf *g, int i) { return &g->kvs[i].v; }
int kw_gguf_n_tensors(const kw_gguf *g) { return g->n_tensors; }
const kw_gguf_tensor *kw_gguf_tensor_at(const kw_gguf *g, int i) { return &g->tensors[i]; }

const kw_gguf_value *kw_gguf_find(const kw_gguf *g, const char *key)
{
    for (int i = 0; i < g->n_kv; i++)
        if (g->kvs[i].key && strcmp(g->kvs[i].key, key) == 0)
            return &g->kvs[i].v;
    return NULL;
}

const kw_gguf_tensor *kw_gguf_find_tensor(const kw_gguf *g, const char *name)
{
    for (int i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0)
            return &g->tensors[i];
    return NULL;
}

/* Reads a scalar of numeric type t at p. */
static int scalar(kw_gguf_type t, const void *p, int64_t *i, double *f)
{
    int64_t iv = 0;
    double fv = 0;
    switch (t) {
    case KW_GGUF_U8: case KW_GGUF_BOOL: iv = *(const uint8_t *)p; break;
    case KW_GGUF_I8: iv = *(const int8_t *)p; break;
    case KW_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); iv = x; break; }
    case KW_GGUF_I16: { int16_t x; memcpy(&x, p, 2); iv = x; break; }
    case KW_GGUF_U32: { uint32_t x; memcpy(&x, p, 4); iv = x; break; }
    case KW_GGUF_I32: { int32_t x; memcpy(&x, p, 4); iv = x; break; }
    case KW_GGUF_U64: { uint64_t x; memcpy(&x, p, 8); if (x > INT64_MAX) return KW_ERANGE; iv = (int64_t)x; break; }
    case KW_GGUF_I64: memcpy(&iv, p, 8); break;
    case KW_GGUF_F32: { float x; memcpy(&x, p, 4); fv = x; if (i) return KW_ETYPE; *f = fv; return KW_OK; }
    case KW_GGUF_F64: memcpy(&fv, p, 8); if (i) return KW_ETYPE; *f = fv; return KW_OK;
    default: return KW_ETYPE;
    }
    if (i)
        *i = iv;
    else
        *f = (double)iv;
    return KW_OK;
}

static int value_num(const kw_gguf_value *v, int64_t *i, double *f)
{
    uint8_t buf[8];
    switch (v->type) {
    case KW_GGUF_U8: case KW_GGUF_U16: case KW_GGUF_U32: case KW_GGUF_U64: {
        if (v->u > INT64_MAX)
            return KW_ERANGE;
        if (i) *i = (int64_t)v->u; else *f = (double)v->u;
        return KW_OK;
    }
    case KW_GGUF_I8: case KW_GGUF_I16: case KW_GGUF_I32: case KW_GGUF_I64:
        if (i) *i = v->i; else *f = (double)v->i;
        return KW_OK;
    case KW_GGUF_BOOL:
        buf[0] = v->b;
        return scalar(KW_GGUF_BOOL, buf, i, f);
    case KW_GGUF_F32: case KW_GGUF_F64:
        if (i)
            return KW_ETYPE;
        *f = v->f;
        return KW_OK;
    default:
        return KW_ETYPE;
    }
}

int kw_gguf_get_int(const kw_gguf *g, const char *key, int64_t *out)
{
    const kw_gguf_value *v = kw_gguf_find(g, key);
    return v ? value_num(v, out, NULL) : KW_ENOTFOUND;
}

int kw_gguf_get_float(const kw_gguf *g, const char *key, double *out)
{
    const kw_gguf_value *v = kw_gguf_find(g, key);
    return v ? value_num(v, NULL, out) : KW_ENOTFOUND;
}

int kw_gguf_get_bool(const kw_gguf *g, const char *key, bool *out)
{
    const kw_gguf_value *v = kw_gguf_find(g, key);
    if (!v)
        return KW_ENOTFOUND;
    if (v->type != KW_GGUF_BOOL)
        return KW_ETYPE;
    *out = v->b;
    return KW_OK;
}

const char *kw_gguf_get_str(const kw_gguf *g, const char *key)
{
    const kw_gguf_value *v = kw_gguf_find(g, key);
    return v && v->type == KW_GGUF_STRING ? v->str.s : NULL;
}

int kw_gguf_get_arr(const kw_gguf *g, const char *key, kw_gguf_type *elem, uint64_t *n,
                    const void **data)
{
    const kw_gguf_value *v = kw_gguf_find(g, key);
    if (!v)
        return KW_ENOTFOUND;
    if (v->type != KW_GGUF_ARRAY)
        return KW_ETYPE;
    if (elem)
        *elem = v->arr.type;
    if (n)
        *n = v->arr.n;
    if (data)
        *data = v->arr.data;
    return KW_OK;
}

int kw_gguf_arr_int(const kw_gguf_value *a, uint64_t i, int64_t *out)
{
    if (a->type != KW_GGUF_ARRAY || a->arr.type == KW_GGUF_STRING || a->arr.type == KW_GGUF_ARRAY)
        return KW_ETYPE;
    if (i >= a->arr.n)
        return KW_ERANGE;
    return scalar(a->arr.type, (const uint8_t *)a->arr.data + i * type_size[a->arr.type], out,
                  NULL);
}

int kw_gguf_arr_float(const kw_gguf_value *a, uint64_t i, double *out)
{
    if (a->type != KW_GGUF_ARRAY || i >= a->arr.n)
        return a->type == KW_GGUF_ARRAY ? KW_ERANGE : KW_ETYPE;
    if (a->arr.type == KW_GGUF_STRING || a->arr.type == KW_GGUF_ARRAY)
        return KW_ETYPE;
    return scalar(a->arr.type, (const uint8_t *)a->arr.data + i * type_size[a->arr.type], NULL,
                  out);
}
