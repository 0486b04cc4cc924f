/* The paged, reference-counted KV pool, per-(sequence, layer, KV head) page tables and
 * views. Layout and rules: kvpool.h. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kvpool_internal.h"

static _Atomic uint64_t next_uid = 1;

kw_kvpool_opts kw_kvpool_defaults(void)
{
    kw_kvpool_opts o = {.page_tokens = 16, .n_pages = 4096, .n_tmp_pages = 256,
                        .dtype = KW_KV_F32, .pre_rope = false};
    return o;
}

int kw_kvpool_new(const kw_model_config *cfg, const kw_kvpool_opts *o, kw_kvpool **out,
                  kw_error *err)
{
    *out = NULL;
    if (o->dtype != KW_KV_F32 && o->dtype != KW_KV_I8 && !kw_kvdtype_kchan(o->dtype))
        return kw_error_set(err, KW_EINVAL, "kv pool: unknown page type %d", (int)o->dtype);
    if (kw_kvdtype_kchan(o->dtype) && o->device_pages)
        return kw_error_set(err, KW_ENOSYS, "kv pool: pages with K quantized per channel "
                            "(int8_kchan, int4_kchan) are host pages only");
    if (o->dtype == KW_KV_I4K && cfg->head_dim % 2)
        return kw_error_set(err, KW_EINVAL, "kv pool: int4 pages need an even head_dim (%d)",
                            cfg->head_dim);
    if (o->page_tokens < 1 || o->page_tokens > 4096 || o->n_pages < 1 || o->n_pages > INT32_MAX
        || o->n_tmp_pages < 0 || o->n_tmp_pages > INT32_MAX || o->residual < 0)
        return kw_error_set(err, KW_EINVAL, "kv pool: page_tokens %d, n_pages %lld, "
                            "n_tmp_pages %lld, residual %d out of range", o->page_tokens,
                            (long long)o->n_pages, (long long)o->n_tmp_pages, o->residual);
    if (cfg->n_layer < 1 || cfg->n_head_kv < 1 || cfg->head_dim < 2 || cfg->n_head < 1
        || cfg->n_head % cfg->n_head_kv)
        return kw_error_set(err, KW_EINVAL, "kv pool: bad model shape (layers %d, heads "
                            "%d/%d, head_dim %d)", cfg->n_layer, cfg->n_head,
                            cfg->n_head_kv, cfg->head_dim);
    kw_kvpool *p = calloc(1, sizeof *p);
    if (!p)
        return kw_error_set(err, KW_ENOMEM, "kv pool: out of memory");
    p->o = *o;
    p->n_layer = cfg->n_layer;
    p->n_kv = cfg->n_head_kv;
    p->n_head = cfg->n_head;
    p->hd = cfg->head_dim;
    p->P = o->page_tokens;
    p->page_floats = 2 * (int64_t)p->P * p->hd;
    p->page_bytes = kw_kvpool_page_bytes(o->dtype, p->P, p->hd);
    p->bits = o->dtype == KW_KV_I4K ? 4 : o->dtype == KW_KV_I8K ? 8 : 0;
    p->code_bytes = (int64_t)p->P * p->hd * p->bits / 8;
    int64_t n = o->n_pages, nt = o->n_tmp_pages > 0 ? o->n_tmp_pages : 1;
    p->arena = o->device_pages ? NULL : malloc((size_t)(n * p->page_bytes));
    p->pos = malloc((size_t)(n * p->P) * sizeof(int32_t));
    p->refc = calloc((size_t)n, sizeof(int32_t));
    p->freel = malloc((size_t)n * sizeof(int32_t));
    p->tmp = malloc((size_t)(nt * p->page_floats) * sizeof(float));
    p->tmp_pos = malloc((size_t)(nt * p->P) * sizeof(int32_t));
    if (p->bits)
        p->stage = calloc((size_t)n, sizeof *p->stage);
    if ((!p->arena && !o->device_pages) || !p->pos || !p->refc || !p->freel || !p->tmp
        || !p->tmp_pos || (p->bits && !p->stage)) {
        kw_kvpool_free(p);
        return kw_error_set(err, KW_ENOMEM, "kv pool: cannot allocate %lld pages of %lld "
                            "bytes", (long long)n, (long long)p->page_bytes);
    }
    for (int64_t i = 0; i < n; i++) /* lowest page ids first */
        p->freel[i] = (int32_t)(n - 1 - i);
    p->n_free = n;
    *out = p;
    return 0;
}

kw_kvpool *kw_kvpool_free(kw_kvpool *p)
{
    if (!p)
        return NULL;
    free(p->arena);
    free(p->pos);
    free(p->refc);
    free(p->freel);
    free(p->tmp);
    free(p->tmp_pos);
    for (int64_t g = 0; p->stage && g < p->o.n_pages; g++)
        free(p->stage[g]);
    free(p->stage);
    free(p);
    return NULL;
}


const kw_kvpool_opts *kw_kvpool_options(const kw_kvpool *p) { return &p->o; }

kw_kvmem kw_kvpool_mem(const kw_kvpool *p)
{
    kw_kvmem m = {.base = {p->arena, (const uint8_t *)p->tmp},
                  .page_bytes = {p->page_bytes, p->page_floats * 4},
                  .dtype = {p->o.dtype, KW_KV_F32}, .pos = {p->pos, p->tmp_pos},
                  .page_tokens = p->P, .head_dim = p->hd, .pre_rope = p->o.pre_rope,
                  .stage = p->stage};
    return m;
}

int64_t kw_kvpool_free_pages(const kw_kvpool *p) { return p->n_free; }

void kw_kvpool_stats(const kw_kvpool *p, kw_kvmem_stats *s)
{
    memset(s, 0, sizeof *s);
    s->pages_total = p->o.n_pages;
    s->pages_used = p->o.n_pages - p->n_free;
    s->tmp_pages_total = p->o.n_tmp_pages;
    s->tmp_pages_used = p->tmp_used;
    s->page_bytes = p->page_bytes + p->P * (int64_t)sizeof(int32_t);
    s->alloc_bytes = s->pages_used * s->page_bytes + p->n_open * p->P * p->hd * 4; /* + stages */
    s->tmp_bytes = s->tmp_pages_used * (p->page_floats * 4 + p->P * (int64_t)sizeof(int32_t));
    s->meta_bytes = p->table_bytes + p->o.n_pages * 2 * (int64_t)sizeof(int32_t);
}

int64_t kw_kvpool_pages_for(const kw_kvpool *p, int64_t n_tokens)
{
    return (n_tokens + p->P - 1) / p->P * p->n_layer * p->n_kv;
}


static int32_t page_alloc(kw_kvpool *p)
{
    if (p->n_free == 0)
        return -1;
    int32_t g = p->freel[--p->n_free];
    p->refc[g] = 1;
    return g;
}

static void page_unref(kw_kvpool *p, int32_t g)
{
    if (--p->refc[g] == 0) {
        p->freel[p->n_free++] = g;
        if (p->stage && p->stage[g]) {
            free(p->stage[g]);
            p->stage[g] = NULL;
            p->n_open--;
        }
    }
}

static int tab_reserve(kw_kvpool *p, kw_ptab *t, int n)
{
    if (n <= t->cap)
        return 0;
    int cap = t->cap ? t->cap : 8;
    while (cap < n)
        cap *= 2;
    int32_t *np = realloc(t->pages, (size_t)cap * sizeof *np);
    if (!np)
        return KW_ENOMEM;
    p->table_bytes += (int64_t)(cap - t->cap) * (int64_t)sizeof *np;
    t->pages = np;
    t->cap = cap;
    return 0;
}

/* A per-channel-K page quantized, if it is still open. */
static void close_open(kw_kvpool *p, int32_t g)
{
    if (p->stage[g])
        kw__page_close(p, g);
}

/* Makes page index pi of t private to this table (copy on write). */
static int own_page(kw_kvpool *p, kw_ptab *t, int pi)
{
    int32_t g = t->pages[pi];
    if (p->refc[g] == 1)
        return 0;
    int32_t ng = page_alloc(p);
    if (ng < 0)
        return KW_ELIMIT;
    if (p->stage && p->stage[g]) {
        size_t sz = sizeof(float) * (size_t)p->P * p->hd;
        if (!(p->stage[ng] = malloc(sz))) {
            page_unref(p, ng);
            return KW_ENOMEM;
        }
        memcpy(p->stage[ng], p->stage[g], sz);
        p->n_open++;
    }
    if (p->arena)
        memcpy(page_ptr(p, ng), page_ptr(p, g), (size_t)p->page_bytes);
    else if (p->dev.copy)
        p->dev.copy(p->dev.ud, ng, g);
    memcpy(page_pos(p, ng), page_pos(p, g), (size_t)p->P * sizeof(int32_t));
    page_unref(p, g);
    t->pages[pi] = ng;
    t->edits++;
    return 0;
}

kw_kvseq *kw_kvseq_new(kw_kvpool *p)
{
    kw_kvseq *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = p;
    s->uid = atomic_fetch_add(&next_uid, 1);
    s->t = calloc((size_t)p->n_layer * p->n_kv, sizeof *s->t);
    if (!s->t) {
        free(s);
        return NULL;
    }
    return s;
}

kw_kvseq *kw_kvseq_free(kw_kvseq *s)
{
    if (!s)
        return NULL;
    kw_kvpool *p = s->p;
    for (int i = 0; i < p->n_layer * p->n_kv; i++) {
        kw_ptab *t = &s->t[i];
        for (int j = 0; j < t->n_pages; j++)
            page_unref(p, t->pages[j]);
        p->table_bytes -= (int64_t)t->cap * (int64_t)sizeof(int32_t);
        free(t->pages);
    }
    free(s->t);
    free(s);
    return NULL;
}

/* Empty table b takes a's pages, shared (their references counted), and a private copy
 * of a partly filled last page, which appends will write; the caller has checked that
 * the pool has a free page for it. */
static int tab_share(kw_kvpool *p, kw_ptab *b, const kw_ptab *a)
{
    if (tab_reserve(p, b, a->n_pages) < 0)
        return KW_ENOMEM;
    for (int j = 0; j < a->n_pages; j++) {
        b->pages[j] = a->pages[j];
        p->refc[a->pages[j]]++;
    }
    b->n_pages = a->n_pages;
    b->n_tok = a->n_tok;
    b->edits++;
    if (b->n_tok % p->P) /* the page is counted by the caller; a stage's copy may fail */
        return own_page(p, b, b->n_pages - 1);
    return 0;
}

kw_kvseq *kw_kvseq_fork(kw_kvseq *s)
{
    kw_kvpool *p = s->p;
    int64_t need = 0;
    int nt = p->n_layer * p->n_kv;
    for (int i = 0; i < nt; i++)
        need += (s->t[i].n_tok % p->P) != 0;
    if (need > p->n_free)
        return NULL;
    kw_kvseq *f = kw_kvseq_new(p);
    if (!f)
        return NULL;
    for (int i = 0; i < nt; i++)
        if (tab_share(p, &f->t[i], &s->t[i]) < 0)
            return kw_kvseq_free(f);
    return f;
}

int kw_kvseq_share_layer(kw_kvseq *dst, kw_kvseq *src, int layer)
{
    kw_kvpool *p = src->p;
    if (dst->p != p || layer < 0 || layer >= p->n_layer)
        return KW_EINVAL;
    int64_t need = 0;
    for (int h = 0; h < p->n_kv; h++) {
        if (dst->t[layer * p->n_kv + h].n_pages)
            return KW_EINVAL; /* only into an empty layer */
        need += (src->t[layer * p->n_kv + h].n_tok % p->P) != 0;
    }
    if (need > p->n_free)
        return KW_ELIMIT;
    for (int h = 0; h < p->n_kv; h++)
        if (tab_share(p, &dst->t[layer * p->n_kv + h], &src->t[layer * p->n_kv + h]) < 0)
            return KW_ENOMEM;
    return 0;
}

static int append(kw_kvseq *s, int layer, const float *k, const float *v, const int32_t *pos,
                  int n_tok, int32_t *slots)
{
    kw_kvpool *p = s->p;
    if (layer < 0 || layer >= p->n_layer || n_tok < 0)
        return KW_EINVAL;
    int P = p->P, hd = p->hd;
    int64_t need = 0;
    for (int h = 0; h < p->n_kv; h++) {
        const kw_ptab *t = &s->t[layer * p->n_kv + h];
        int have = t->n_pages * P - t->n_tok;
        if (n_tok > have)
            need += (n_tok - have + P - 1) / P;
        if (t->n_tok % P && p->refc[t->pages[t->n_pages - 1]] > 1)
            need++;
    }
    if (need > p->n_free)
        return KW_ELIMIT;
    for (int h = 0; h < p->n_kv; h++) {
        kw_ptab *t = &s->t[layer * p->n_kv + h];
        if (tab_reserve(p, t, (t->n_tok + n_tok + P - 1) / P) < 0)
            return KW_ENOMEM;
        if (t->n_tok % P && own_page(p, t, t->n_pages - 1) < 0)
            return KW_ENOMEM;
        for (int i = 0; i < n_tok; i++) {
            int slot = t->n_tok % P;
            if (slot == 0)
                t->pages[t->n_pages++] = page_alloc(p);
            int32_t g = t->pages[t->n_pages - 1];
            if (p->bits && slot == 0 && !slots) { /* a new page: a fresh stage */
                if (!(p->stage[g] = malloc(sizeof(float) * (size_t)P * hd)))
                    return KW_ENOMEM;
                p->n_open++;
            }
            if (slots)
                slots[(int64_t)i * p->n_kv + h] = g * P + slot;
            else if (kw__page_row_put(p, g, slot, 0, k + ((int64_t)i * p->n_kv + h) * hd) < 0
                     || kw__page_row_put(p, g, slot, 1, v + ((int64_t)i * p->n_kv + h) * hd) < 0)
                return KW_ENOMEM;
            page_pos(p, g)[slot] = pos[i];
            t->n_tok++;
            /* K per channel: the full page that `residual` tokens now follow */
            int64_t behind = t->n_tok - p->o.residual;
            if (p->bits && behind >= P && behind % P == 0)
                close_open(p, t->pages[behind / P - 1]);
        }
    }
    return 0;
}

int kw_kvseq_append(kw_kvseq *s, int layer, const float *k, const float *v,
                    const int32_t *pos, int n_tok)
{
    kw_kvpool *p = s->p;
    if (p->arena)
        return append(s, layer, k, v, pos, n_tok, NULL);
    if (!p->dev.write)
        return KW_ENOSYS;
    if (n_tok <= 0)
        return n_tok < 0 ? KW_EINVAL : 0;
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)n_tok * p->n_kv);
    if (!slots)
        return KW_ENOMEM;
    int rc = append(s, layer, NULL, NULL, pos, n_tok, slots);
    if (rc == 0)
        rc = p->dev.write(p->dev.ud, slots, n_tok, p->n_kv, k, v, pos);
    free(slots);
    return rc;
}

int kw_kvseq_append_slots(kw_kvseq *s, int layer, const int32_t *pos, int n_tok,
                          int32_t *slots)
{
    if (s->p->arena || !slots)
        return KW_EINVAL;
    return append(s, layer, NULL, NULL, pos, n_tok, slots);
}

void kw_kvpool_set_device(kw_kvpool *p, const kw_kvpool_device *d)
{
    p->dev = d ? *d : (kw_kvpool_device){0};
}

static const kw_ptab *tab_c(const kw_kvseq *s, int layer, int kvh)
{
    if (layer < 0 || layer >= s->p->n_layer || kvh < 0 || kvh >= s->p->n_kv)
        return NULL;
    return &s->t[layer * s->p->n_kv + kvh];
}

int kw_kvseq_len(const kw_kvseq *s, int layer, int kvh)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    return t ? t->n_tok : KW_EINVAL;
}

uint64_t kw_kvseq_uid(const kw_kvseq *s) { return s->uid; }

uint32_t kw_kvseq_pages_edits(const kw_kvseq *s, int layer, int kvh)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    return t ? t->edits : 0;
}

const int32_t *kw_kvseq_pages(const kw_kvseq *s, int layer, int kvh, int *n)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    *n = t ? t->n_pages : 0;
    return t ? t->pages : NULL;
}

int kw_kvseq_token(const kw_kvseq *s, int layer, int kvh, int j, const float **k,
                   const float **v, int32_t *pos)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    if (!t || j < 0 || j >= t->n_tok)
        return KW_EINVAL;
    kw_kvpool *p = s->p;
    if ((k || v) && (p->o.dtype != KW_KV_F32 || !p->arena))
        return KW_ENOSYS;
    int32_t g = t->pages[j / p->P];
    const float *pk = (const float *)(void *)page_ptr(p, g) + (int64_t)(j % p->P) * p->hd;
    if (k)
        *k = pk;
    if (v)
        *v = pk + (int64_t)p->P * p->hd;
    if (pos)
        *pos = page_pos(p, g)[j % p->P];
    return 0;
}

int kw_kvseq_rows_f32(const kw_kvseq *s, int layer, int kvh, int j0, int n, int which,
                      float *out)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    if (!t || j0 < 0 || n < 0 || j0 + n > t->n_tok || (which != 0 && which != 1))
        return KW_EINVAL;
    kw_kvpool *p = s->p;
    if (!p->arena && !p->dev.read)
        return KW_ENOSYS;
    int P = p->P;
    if (!p->arena)
        return n ? p->dev.read(p->dev.ud, t->pages + j0 / P, j0 % P, n, which, out) : 0;
    kw_kvmem m = kw_kvpool_mem(p);
    for (int j = j0; j < j0 + n;) {
        int32_t g = t->pages[j / P];
        int slot = j % P, cnt = P - slot < j0 + n - j ? P - slot : j0 + n - j;
        float *o = out + (int64_t)(j - j0) * p->hd;
        for (int r = 0; r < cnt; r++) {
            const float *x = kw_kvmem_row(&m, KW_POOL_MAIN, g, slot + r, which,
                                          o + (int64_t)r * p->hd);
            if (x != o + (int64_t)r * p->hd)
                memcpy(o + (int64_t)r * p->hd, x, (size_t)p->hd * sizeof(float));
        }
        j += cnt;
    }
    return 0;
}

int kw_kvseq_token_f32(const kw_kvseq *s, int layer, int kvh, int j, float *k, float *v,
                       int32_t *pos)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    if (!t || j < 0 || j >= t->n_tok)
        return KW_EINVAL;
    int rc = 0;
    if (k)
        rc = kw_kvseq_rows_f32(s, layer, kvh, j, 1, 0, k);
    if (v && rc == 0)
        rc = kw_kvseq_rows_f32(s, layer, kvh, j, 1, 1, v);
    if (rc == 0 && pos)
        *pos = page_pos(s->p, t->pages[j / s->p->P])[j % s->p->P];
    return rc;
}

/* kw_kvseq_keep on a device_pages pool: positions move here, payloads through the
 * device's compact, given the table's pages before and after copy-on-write. */
static int keep_device(kw_kvpool *p, kw_ptab *t, const int32_t *keep, int n_keep)
{
    int P = p->P, np = (n_keep + P - 1) / P, first = n_keep;
    for (int i = 0; i < n_keep && first == n_keep; i++)
        if (keep[i] != i)
            first = i;
    if (first == n_keep) /* a prefix: nothing moves */
        return 0;
    int32_t *src = malloc((size_t)t->n_pages * sizeof *src);
    if (!src)
        return KW_ENOMEM;
    memcpy(src, t->pages, (size_t)t->n_pages * sizeof *src);
    int rc = 0;
    for (int pi = first / P; pi < np && rc == 0; pi++)
        rc = own_page(p, t, pi);
    if (rc == 0) {
        /* positions of the kept tokens, read from the pages as they were; packing forward
         * never overwrites one still to be read (keep[i] >= i) */
        for (int i = first; i < n_keep; i++)
            page_pos(p, t->pages[i / P])[i % P] = page_pos(p, src[keep[i] / P])[keep[i] % P];
        rc = p->dev.compact(p->dev.ud, keep, n_keep, src, t->n_pages, t->pages, np);
    }
    free(src);
    return rc;
}

int kw_kvseq_keep(kw_kvseq *s, int layer, int kvh, const int32_t *keep, int n_keep)
{
    kw_kvpool *p = s->p;
    if (!tab_c(s, layer, kvh))
        return KW_EINVAL;
    kw_ptab *t = &s->t[layer * p->n_kv + kvh];
    int P = p->P;
    if (!p->arena && !p->dev.compact)
        return KW_ENOSYS; /* compaction moves payloads the pool does not hold */
    for (int i = 0; i < n_keep; i++)
        if (keep[i] < 0 || keep[i] >= t->n_tok || (i && keep[i] <= keep[i - 1]))
            return KW_EINVAL;
    if (!p->arena) {
        int rc = keep_device(p, t, keep, n_keep);
        if (rc < 0)
            return rc;
    }
    /* keep[i] >= i, so packing forward never overwrites a token still to be read */
    for (int i = 0; p->arena && i < n_keep; i++) {
        int src = keep[i];
        if (src == i)
            continue;
        int rc = own_page(p, t, i / P);
        if (rc < 0)
            return rc;
        int32_t gs = t->pages[src / P], gd = t->pages[i / P];
        if (p->bits)
            rc = kw__page_slot_copy_kchan(p, gd, i % P, gs, src % P);
        else
            kw__page_slot_copy(p, page_ptr(p, gd), i % P, page_ptr(p, gs), src % P);
        if (rc < 0)
            return rc;
        page_pos(p, gd)[i % P] = page_pos(p, gs)[src % P];
    }
    /* per-channel K: the pages compaction refilled close again (the last, partial one
     * and those within the residual stay open) */
    for (int j = 0; p->bits && j < (n_keep - p->o.residual) / P; j++)
        close_open(p, t->pages[j]);
    int np = (n_keep + P - 1) / P;
    for (int j = np; j < t->n_pages; j++)
        page_unref(p, t->pages[j]);
    t->n_pages = np;
    t->n_tok = n_keep;
    t->edits++;
    return 0;
}

int64_t kw_kvseq_pages_held(const kw_kvseq *s)
{
    int64_t n = 0;
    for (int i = 0; i < s->p->n_layer * s->p->n_kv; i++)
        n += s->t[i].n_pages;
    return n;
}

int64_t kw_kvseq_payload_bytes(const kw_kvseq *s)
{
    const kw_kvpool *p = s->p;
    int64_t hd = p->hd, n = kw_kvseq_tokens_stored(s);
    if (!p->bits)
        return n * 2 * (p->o.dtype == KW_KV_I8 ? hd + 4 : hd * 4);
    int64_t b = n * (2 * hd * p->bits / 8 + 8); /* codes, V's scale and minimum */
    for (int i = 0; i < p->n_layer * p->n_kv; i++) {
        const kw_ptab *t = &s->t[i];
        for (int j = 0; j < t->n_pages; j++) {
            int cnt = t->n_tok - j * p->P < p->P ? t->n_tok - j * p->P : p->P;
            b += p->stage[t->pages[j]] ? (int64_t)cnt * hd * 4 : 8 * hd;
        }
    }
    return b;
}

int64_t kw_kvseq_tokens_stored(const kw_kvseq *s)
{
    int64_t n = 0;
    for (int i = 0; i < s->p->n_layer * s->p->n_kv; i++)
        n += s->t[i].n_tok;
    return n;
}

int kw_kvpool_tmp_alloc(kw_kvpool *p, int32_t *page)
{
    if (p->tmp_used >= p->o.n_tmp_pages)
        return KW_ELIMIT;
    *page = (int32_t)p->tmp_used++;
    if (p->tmp_used > p->tmp_peak)
        p->tmp_peak = p->tmp_used;
    return 0;
}

int64_t kw_kvpool_tmp_used(const kw_kvpool *p) { return p->tmp_used; }

void kw_kvpool_tmp_truncate(kw_kvpool *p, int64_t n_used)
{
    if (n_used >= 0 && n_used < p->tmp_used)
        p->tmp_used = n_used;
}

float *kw_kvpool_tmp_page(kw_kvpool *p, int32_t page, int32_t **pos)
{
    if (page < 0 || page >= p->tmp_used)
        return NULL;
    if (pos)
        *pos = p->tmp_pos + (int64_t)page * p->P;
    return p->tmp + page * p->page_floats;
}

void kw_kvpool_tmp_reset(kw_kvpool *p) { p->tmp_used = 0; }

int64_t kw_kvpool_tmp_peak(kw_kvpool *p)
{
    int64_t v = p->tmp_peak;
    p->tmp_peak = p->tmp_used;
    return v;
}

/* ---- views over a sequence's tables (the view container: kvview.c) ---- */

bool kw_view_is_dense(const kw_view *w, const kw_kvseq *s, int layer)
{
    int64_t n = 0;
    for (int h = 0; h < s->p->n_kv; h++)
        n += kw_kvseq_len(s, layer, h);
    return !w->per_qhead && w->n_rows == s->p->n_kv && kw_view_tokens(w) == n;
}

int kw_view_dense(kw_view *w, const kw_kvseq *s, int layer, bool per_qhead)
{
    kw_kvpool *p = s->p;
    int n_rows = per_qhead ? p->n_head : p->n_kv, g = p->n_head / p->n_kv;
    int rc = kw_view_reset(w, n_rows, per_qhead);
    for (int r = 0; rc == 0 && r < n_rows; r++) {
        const kw_ptab *t = tab_c(s, layer, per_qhead ? r / g : r);
        if (!t)
            return KW_EINVAL;
        rc = kw_view_begin_row(w, r);
        for (int j = 0; rc == 0 && j < t->n_pages; j++) {
            int n = t->n_tok - j * p->P;
            rc = kw_view_add(w, KW_POOL_MAIN, t->pages[j], 0, n < p->P ? n : p->P);
        }
    }
    return rc;
}

int kw_view_add_token(kw_view *w, const kw_kvseq *s, int layer, int kvh, int j)
{
    const kw_ptab *t = tab_c(s, layer, kvh);
    if (!t || j < 0 || j >= t->n_tok)
        return KW_EINVAL;
    int P = s->p->P;
    int32_t g = t->pages[j / P];
    int slot = j % P, ns = w->row_ptr[w->n_rows];
    if (ns > w->row_ptr[w->cur_row]) {
        kw_span *last = &w->spans[ns - 1];
        if (last->pool == KW_POOL_MAIN && last->page == g && last->first + last->n == slot) {
            last->n++;
            return 0;
        }
    }
    return kw_view_add(w, KW_POOL_MAIN, g, slot, 1);
}
