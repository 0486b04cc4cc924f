/* Per-layer, per-KV-head key importance and the "stats" value type (stats.h). */
#include <stdlib.h>
#include <string.h>

#include "kvweave/stats.h"

kw_stats *kw_stats_new(int n_layer, int n_kv_head)
{
    if (n_layer < 1 || n_kv_head < 1 || n_layer > (1 << 20) / n_kv_head)
        return NULL;
    kw_stats *s = calloc(1, sizeof *s);
    if (s && !(s->importance = calloc((size_t)n_layer * n_kv_head, sizeof(double)))) {
        free(s);
        return NULL;
    }
    if (s) {
        s->n_layer = n_layer;
        s->n_kv_head = n_kv_head;
    }
    return s;
}

kw_stats *kw_stats_free(kw_stats *s)
{
    if (!s)
        return NULL;
    for (int i = 0; i < s->n_samples; i++)
        free(s->profiles[i]);
    free(s->profiles);
    free(s->n_keys);
    free(s->importance);
    free(s);
    return NULL;
}

int kw_stats_add_sample(kw_stats *s, int n_keys, float *profile)
{
    int *nk = realloc(s->n_keys, sizeof(int) * (size_t)(s->n_samples + 1));
    if (nk)
        s->n_keys = nk;
    float **pr = nk ? realloc(s->profiles, sizeof(float *) * (size_t)(s->n_samples + 1)) : NULL;
    if (pr)
        s->profiles = pr;
    if (!nk || !pr || n_keys < 0) {
        free(profile);
        return nk && pr ? KW_EINVAL : KW_ENOMEM;
    }
    s->n_keys[s->n_samples] = n_keys;
    s->profiles[s->n_samples++] = profile;
    return 0;
}

void kw_stats_finish(kw_stats *s)
{
    int L = s->n_layer, H = s->n_kv_head;
    memset(s->importance, 0, sizeof(double) * (size_t)L * H);
    for (int i = 0; i < s->n_samples; i++)
        for (int64_t lh = 0; lh < (int64_t)L * H; lh++) {
            const float *p = s->profiles[i] + lh * s->n_keys[i];
            double sum = 0;
            for (int j = 0; j < s->n_keys[i]; j++)
                sum += p[j];
            s->importance[lh] += sum / s->n_samples;
        }
}

static void stats_free(void *p) { kw_stats_free(p); }

static void put32(uint8_t **w, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        *(*w)++ = (uint8_t)(x >> (8 * i));
}

static uint32_t get32(const uint8_t *r)
{
    return (uint32_t)r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 24;
}

static int stats_ser(const void *pp, void **buf, size_t *n)
{
    const kw_stats *s = pp;
    size_t per = (size_t)s->n_layer * s->n_kv_head, sz = 4 + 4 * 6;
    for (int i = 0; i < s->n_samples; i++)
        sz += 4 + 4 * per * (size_t)s->n_keys[i];
    uint8_t *b = malloc(sz), *w = b;
    if (!b)
        return KW_ENOMEM;
    memcpy(w, "KWST", 4);
    w += 4;
    uint32_t head[6] = {1, (uint32_t)s->n_layer, (uint32_t)s->n_kv_head,
                        (uint32_t)s->n_samples, (uint32_t)s->window, (uint32_t)s->kernel};
    for (int i = 0; i < 6; i++)
        put32(&w, head[i]);
    for (int i = 0; i < s->n_samples; i++) {
        put32(&w, (uint32_t)s->n_keys[i]);
        for (size_t j = 0; j < per * (size_t)s->n_keys[i]; j++) {
            uint32_t x;
            memcpy(&x, &s->profiles[i][j], 4);
            put32(&w, x);
        }
    }
    *buf = b;
    *n = sz;
    return 0;
}

static int stats_deser(const void *buf, size_t n, void **out, kw_error *err)
{
    const uint8_t *r = buf, *end = r + n;
    *out = NULL;
    if (n < 28 || memcmp(r, "KWST", 4) || get32(r + 4) != 1)
        return kw_error_set(err, KW_EFORMAT, "cached stats: not a version 1 stats blob "
                            "(%zu bytes)", n);
    int32_t L = (int32_t)get32(r + 8), H = (int32_t)get32(r + 12), ns = (int32_t)get32(r + 16);
    kw_stats *s = ns >= 0 ? kw_stats_new(L, H) : NULL;
    if (!s)
        return kw_error_set(err, KW_EFORMAT, "cached stats: %d layers x %d heads, %d samples",
                            L, H, ns);
    s->window = (int)get32(r + 20);
    s->kernel = (int)get32(r + 24);
    r += 28;
    size_t per = (size_t)L * H;
    for (int i = 0; i < ns; i++) {
        int32_t nk = end - r >= 4 ? (int32_t)get32(r) : -1;
        r += 4;
        if (nk < 0 || (size_t)(end - r) / 4 / per < (size_t)nk) {
            kw_stats_free(s);
            return kw_error_set(err, KW_EFORMAT, "cached stats: sample %d is cut short", i);
        }
        float *p = malloc(sizeof(float) * (per * (size_t)nk + 1));
        for (size_t j = 0; p && j < per * (size_t)nk; j++, r += 4) {
            uint32_t x = get32(r);
            memcpy(&p[j], &x, 4);
        }
        if (!p || kw_stats_add_sample(s, nk, p) < 0) {
            kw_stats_free(s);
            return kw_error_set(err, KW_ENOMEM, "cached stats: out of memory");
        }
    }
    if (r != end) {
        kw_stats_free(s);
        return kw_error_set(err, KW_EFORMAT, "cached stats: %zu bytes left over",
                            (size_t)(end - r));
    }
    kw_stats_finish(s);
    *out = s;
    return 0;
}

const kw_type kw_type_stats = {KW_T_STATS, stats_free, stats_ser, stats_deser};

kw_value *kw_value_stats(kw_stats *s) { return kw_value_new(&kw_type_stats, s); }
