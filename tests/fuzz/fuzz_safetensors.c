/* Fuzz target: the safetensors header and tensor table, and conversion of every tensor
 * it accepts. A libFuzzer target with -Dfuzz=true; else replay.c's main() replays
 * the corpus. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kw_error err = {0};
    kw_st *st = NULL;
    if (kw_st_parse(data, size, "fuzz.safetensors", &st, &err) < 0) {
        if (!err.msg[0] || err.code >= 0 || st)
            abort(); /* every failure explains itself */
        return 0;
    }
    (void)kw_st_metadata(st, "format");
    for (int i = 0; i < kw_st_n_tensors(st); i++) {
        const kw_st_tensor *t = kw_st_tensor_at(st, i);
        if (kw_st_find(st, t->name) != t)
            abort();
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size)
            abort(); /* the reader promised the bytes are inside the buffer */
        kw_tensor kt = {t->name, t->dtype, t->ndim, {0}, t->data, t->nbytes};
        memcpy(kt.shape, t->shape, sizeof kt.shape);
        int64_t n = kw_tensor_nelems(&kt);
        if (n > (1 << 20))
            continue;
        float *out = NULL;
        if (kw_tensor_to_f32(&kt, &out, &err) < 0)
            abort();
        free(out);
    }
    kw_st_free(st);
    return 0;
}
