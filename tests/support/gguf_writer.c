/* GGUF writer for tests (gguf_writer.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

typedef struct tinfo {
    char *name;
    uint32_t type;
    int ndim;
    uint64_t ne[4];
    uint8_t *data;
    size_t nbytes;
} tinfo;

struct kw_gw {
    uint32_t version, alignment;
    uint64_t n_kv;
    buf kv;
    tinfo *t;
    int nt;
};

static void put(buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            abort(); /* test support: out of memory is fatal */
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

kw_gw *kw_gw_new(uint32_t version)
{
    kw_gw *w = calloc(1, sizeof *w);
    w->version = version;
    w->alignment = 32;
    return w;
}

kw_gw *kw_gw_free(kw_gw *w)
{
    if (!w)
        return NULL;
    for (int i = 0; i < w->nt; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv.p);
    free(w);
    return NULL;
}

void kw_gw_set_alignment(kw_gw *w, uint32_t a) { w->alignment = a; }

void kw_gw_raw(kw_gw *w, const char *key, uint32_t type, const void *bytes, size_t n)
{
    put_str(&w->kv, key);
    put_u32(&w->kv, type);
    put(&w->kv, bytes, n);
    w->n_kv++;
}

#define SCALAR(fn, T, code) \
    void fn(kw_gw *w, const char *key, T v) { kw_gw_raw(w, key, code, &v, sizeof v); }
SCALAR(kw_gw_u8, uint8_t, 0)
SCALAR(kw_gw_i8, int8_t, 1)
SCALAR(kw_gw_u16, uint16_t, 2)
SCALAR(kw_gw_i16, int16_t, 3)
SCALAR(kw_gw_u32, uint32_t, 4)
SCALAR(kw_gw_i32, int32_t, 5)
SCALAR(kw_gw_f32, float, 6)
SCALAR(kw_gw_u64, uint64_t, 10)
SCALAR(kw_gw_i64, int64_t, 11)
SCALAR(kw_gw_f64, double, 12)

void kw_gw_bool(kw_gw *w, const char *key, bool v)
{
    uint8_t b = v;
    kw_gw_raw(w, key, 7, &b, 1);
}

void kw_gw_str(kw_gw *w, const char *key, const char *s)
{
    put_str(&w->kv, key);
    put_u32(&w->kv, 8);
    put_str(&w->kv, s);
    w->n_kv++;
}

void kw_gw_arr(kw_gw *w, const char *key, uint32_t elem, uint64_t n, const void *data)
{
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    put_str(&w->kv, key);
    put_u32(&w->kv, 9);
    put_u32(&w->kv, elem);
    put_u64(&w->kv, n);
    put(&w->kv, data, (size_t)n * sz[elem]);
    w->n_kv++;
}

void kw_gw_arr_str(kw_gw *w, const char *key, uint64_t n, const char *const *strs)
{
    put_str(&w->kv, key);
    put_u32(&w->kv, 9);
    put_u32(&w->kv, 8);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        put_str(&w->kv, strs[i]);
    w->n_kv++;
}

void kw_gw_tensor(kw_gw *w, const char *name, uint32_t ggml_type, int ndim, const uint64_t *ne,
                  const void *data, size_t nbytes)
{
    w->t = realloc(w->t, (size_t)(w->nt + 1) * sizeof *w->t);
    tinfo *t = &w->t[w->nt++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->type = ggml_type;
    t->ndim = ndim;
    memcpy(t->ne, ne, (size_t)ndim * sizeof *ne);
    t->data = malloc(nbytes ? nbytes : 1);
    memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
}

static size_t pad_to(size_t x, size_t a) { return (x + a - 1) / a * a; }

int kw_gw_bytes(kw_gw *w, uint8_t **out, size_t *n)
{
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, w->version);
    put_u64(&b, (uint64_t)w->nt);
    put_u64(&b, w->n_kv);
    put(&b, w->kv.p, w->kv.n);
    size_t off = 0;
    for (int i = 0; i < w->nt; i++) {
        put_str(&b, w->t[i].name);
        put_u32(&b, (uint32_t)w->t[i].ndim);
        for (int d = 0; d < w->t[i].ndim; d++)
            put_u64(&b, w->t[i].ne[d]);
        put_u32(&b, w->t[i].type);
        put_u64(&b, off);
        off = pad_to(off + w->t[i].nbytes, w->alignment);
    }
    static const uint8_t zeros[4096];
    put(&b, zeros, pad_to(b.n, w->alignment) - b.n);
    for (int i = 0; i < w->nt; i++) {
        size_t start = b.n;
        put(&b, w->t[i].data, w->t[i].nbytes);
        if (i + 1 < w->nt)
            put(&b, zeros, pad_to(b.n - start, w->alignment) - (b.n - start));
    }
    *out = b.p;
    *n = b.n;
    return KW_OK;
}

int kw_gw_write(kw_gw *w, const char *path, kw_error *err)
{
    uint8_t *p;
    size_t n;
    kw_gw_bytes(w, &p, &n);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(p);
        return kw_error_set(err, KW_EIO, "cannot create '%s'", path);
    }
    size_t wr = fwrite(p, 1, n, f);
    int bad = fclose(f) != 0 || wr != n;
    free(p);
    return bad ? kw_error_set(err, KW_EIO, "cannot write '%s'", path) : KW_OK;
}
