/* A host mirror that stands in for a device's pages behind a device_pages pool
 * (kvpool.h, kw_kvpool_device): f32 pages in the host pool's layout, K (P, head_dim) then
 * V (P, head_dim), positions beside them. Its compact is a plain gather (every kept token
 * read from the pages as they were, then written), so a pool with it must hold exactly
 * what an arena pool holds after the same calls (test_kvpool.c checks that; the method
 * tests run their hooks over both). */
#ifndef KW_TEST_MIRROR_DEVICE_H
#define KW_TEST_MIRROR_DEVICE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/kvpool.h"

typedef struct mirror {
    float *kv;    /* (n_pages, 2, P, hd) */
    int32_t *pos; /* (n_pages, P) */
    int64_t n_pages;
    int P, hd, n_compact, n_read, n_write;
} mirror;

static inline float *mir_row(mirror *m, int64_t g, int which, int slot)
{
    return m->kv + ((g * 2 + which) * m->P + slot) * m->hd;
}

static inline void mir_copy(void *ud, int32_t dst, int32_t src)
{
    mirror *m = ud;
    memcpy(mir_row(m, dst, 0, 0), mir_row(m, src, 0, 0), sizeof(float) * 2 * m->P * m->hd);
    memcpy(m->pos + (size_t)dst * m->P, m->pos + (size_t)src * m->P, sizeof(int32_t) * m->P);
}

static inline int mir_compact(void *ud, const int32_t *keep, int n_keep, const int32_t *src,
                              int n_src, const int32_t *dst, int n_dst)
{
    mirror *m = ud;
    int P = m->P, hd = m->hd;
    if (n_dst != (n_keep + P - 1) / P)
        return KW_EINVAL;
    float *tmp = malloc(sizeof(float) * 2 * hd * (n_keep ? n_keep : 1));
    int32_t *tp = malloc(sizeof(int32_t) * (n_keep ? n_keep : 1));
    if (!tmp || !tp) {
        free(tmp), free(tp);
        return KW_ENOMEM;
    }
    for (int i = 0; i < n_keep; i++) {
        if (keep[i] / P >= n_src) {
            free(tmp), free(tp);
            return KW_EINVAL;
        }
        int32_t g = src[keep[i] / P];
        int sl = keep[i] % P;
        for (int w = 0; w < 2; w++)
            memcpy(tmp + ((size_t)i * 2 + w) * hd, mir_row(m, g, w, sl), sizeof(float) * hd);
        tp[i] = m->pos[(size_t)g * P + sl];
    }
    for (int i = 0; i < n_keep; i++) {
        int32_t g = dst[i / P];
        for (int w = 0; w < 2; w++)
            memcpy(mir_row(m, g, w, i % P), tmp + ((size_t)i * 2 + w) * hd, sizeof(float) * hd);
        m->pos[(size_t)g * P + i % P] = tp[i];
    }
    free(tmp), free(tp);
    m->n_compact++;
    return 0;
}

static inline int mir_read(void *ud, const int32_t *pages, int first, int n, int which,
                           float *out)
{
    mirror *m = ud;
    if (first < 0 || first >= m->P)
        return KW_EINVAL;
    for (int j = first; j < first + n; j++)
        memcpy(out + (size_t)(j - first) * m->hd, mir_row(m, pages[j / m->P], which, j % m->P),
               sizeof(float) * m->hd);
    m->n_read++;
    return 0;
}

static inline int mir_write(void *ud, const int32_t *slots, int n_tok, int n_kv,
                            const float *k, const float *v, const int32_t *pos)
{
    mirror *m = ud;
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_kv; h++) {
            int32_t sl = slots[t * n_kv + h];
            memcpy(mir_row(m, sl / m->P, 0, sl % m->P), k + ((size_t)t * n_kv + h) * m->hd,
                   sizeof(float) * m->hd);
            memcpy(mir_row(m, sl / m->P, 1, sl % m->P), v + ((size_t)t * n_kv + h) * m->hd,
                   sizeof(float) * m->hd);
            m->pos[sl] = pos[t];
        }
    m->n_write++;
    return 0;
}

/* A mirror of n_pages pages of P tokens (NULL on out of memory). */
static inline mirror *mir_new(int64_t n_pages, int P, int hd)
{
    mirror *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    *m = (mirror){.kv = calloc((size_t)n_pages * 2 * P * hd, sizeof(float)),
                  .pos = calloc((size_t)n_pages * P, sizeof(int32_t)), .n_pages = n_pages,
                  .P = P, .hd = hd};
    if (!m->kv || !m->pos) {
        free(m->kv), free(m->pos), free(m);
        return NULL;
    }
    return m;
}

static inline void mir_free(mirror *m)
{
    if (m)
        free(m->kv), free(m->pos);
    free(m);
}

/* Makes m the device of pool p (every callback). */
static inline void mir_attach(kw_kvpool *p, mirror *m)
{
    kw_kvpool_set_device(p, &(kw_kvpool_device){.ud = m, .copy = mir_copy,
                                                .compact = mir_compact, .read = mir_read,
                                                .write = mir_write});
}

#endif
