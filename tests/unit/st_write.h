/* Writes small safetensors files for tests (the layout safetensors.h reads): an 8-byte
 * little-endian header size, the JSON header, then the tensors' bytes in order. Tensors
 * are given as f32 values and stored as F32 or BF16 (round to nearest even). */
#ifndef KW_TEST_ST_WRITE_H
#define KW_TEST_ST_WRITE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_item {
    const char *name;
    int bf16;           /* store as BF16, else F32 */
    int ndim;           /* 1 or 2 */
    int64_t shape[2];
    const float *data;  /* shape[0] (x shape[1]) values */
} st_item;

static inline uint16_t st_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float st_bf16_value(float f)
{
    uint32_t u = (uint32_t)st_bf16(f) << 16;
    float g;
    memcpy(&g, &u, 4);
    return g;
}

/* 0, or -1 when the file cannot be written. */
static inline int st_write(const char *path, const st_item *it, int n)
{
    size_t cap = 256 + (size_t)n * 200, len = 0;
    char *js = malloc(cap);
    uint64_t off = 0;
    if (!js)
        return -1;
    len += (size_t)snprintf(js + len, cap - len, "{");
    for (int i = 0; i < n; i++) {
        int64_t cnt = it[i].ndim == 2 ? it[i].shape[0] * it[i].shape[1] : it[i].shape[0];
        uint64_t bytes = (uint64_t)cnt * (it[i].bf16 ? 2 : 4);
        char shp[64];
        if (it[i].ndim == 2)
            snprintf(shp, sizeof shp, "%lld,%lld", (long long)it[i].shape[0],
                     (long long)it[i].shape[1]);
        else
            snprintf(shp, sizeof shp, "%lld", (long long)it[i].shape[0]);
        len += (size_t)snprintf(js + len, cap - len,
                                "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%llu,%llu]}",
                                i ? "," : "", it[i].name, it[i].bf16 ? "BF16" : "F32", shp,
                                (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    len += (size_t)snprintf(js + len, cap - len, "}");
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(js);
        return -1;
    }
    uint64_t hl = len;
    uint8_t le[8];
    for (int b = 0; b < 8; b++)
        le[b] = (uint8_t)(hl >> (8 * b));
    int ok = fwrite(le, 1, 8, fp) == 8 && fwrite(js, 1, len, fp) == len;
    for (int i = 0; ok && i < n; i++) {
        int64_t cnt = it[i].ndim == 2 ? it[i].shape[0] * it[i].shape[1] : it[i].shape[0];
        for (int64_t j = 0; ok && j < cnt; j++) {
            if (it[i].bf16) {
                uint16_t h = st_bf16(it[i].data[j]);
                ok = fwrite(&h, 2, 1, fp) == 1;
            } else
                ok = fwrite(&it[i].data[j], 4, 1, fp) == 1;
        }
    }
    free(js);
    return fclose(fp) == 0 && ok ? 0 : -1;
}

#endif
