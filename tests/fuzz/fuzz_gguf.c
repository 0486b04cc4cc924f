/* Fuzz target: the GGUF reader, the model configuration and vocabulary read from its
 * metadata, the tensor checks, and dequantization of every tensor it accepts. A
 * libFuzzer target with -Dfuzz=true; else replay.c's main() replays the corpus. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kvweave/util.h"
#include "weights_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch_values(const kw_gguf *g)
{
    for (int i = 0; i < kw_gguf_n_kv(g); i++) {
        const kw_gguf_value *v = kw_gguf_value_at(g, i);
        int64_t x;
        double f;
        (void)kw_gguf_get_int(g, kw_gguf_key_at(g, i), &x);
        (void)kw_gguf_get_float(g, kw_gguf_key_at(g, i), &f);
        if (v->type == KW_GGUF_STRING && strlen(v->str.s) > v->str.len)
            abort();
        if (v->type == KW_GGUF_ARRAY)
            for (uint64_t k = 0; k < v->arr.n && k < 4096; k++) {
                (void)kw_gguf_arr_int(v, k, &x);
                (void)kw_gguf_arr_float(v, k, &f);
            }
    }
}

static void touch_tensors(const kw_gguf *g, const uint8_t *data, size_t size)
{
    for (int i = 0; i < kw_gguf_n_tensors(g); i++) {
        const kw_gguf_tensor *t = kw_gguf_tensor_at(g, i);
        const uint8_t *p = t->data;
        if (p < data || p > data + size || t->nbytes > (size_t)(data + size - p))
            abort(); /* the reader promised the bytes are inside the buffer */
        kw_tensor kt = {t->name, t->dtype, t->ndim, {0}, t->data, t->nbytes};
        memcpy(kt.shape, t->shape, sizeof kt.shape);
        int64_t n = kw_tensor_nelems(&kt);
        if (n > (1 << 20))
            continue;
        float *out = malloc((size_t)(n ? n : 1) * sizeof *out);
        if (out && kw_to_f32(t->dtype, t->data, out, n) < 0)
            abort();
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kw_error err = {0};
    kw_gguf *g = NULL;
    if (kw_gguf_parse(data, size, "fuzz.gguf", &g, &err) < 0) {
        if (!err.msg[0] || err.code >= 0 || g)
            abort(); /* every failure explains itself */
        return 0;
    }
    touch_values(g);
    touch_tensors(g, data, size);
    /* the model on top: configuration, vocabulary, tokenizer, tensor checks */
    kw_model *m = calloc(1, sizeof *m);
    kw__model_impl *im = calloc(1, sizeof *im);
    if (!m || !im)
        abort();
    m->impl = im;
    im->gguf = g;
    int rc = kw__model_from_gguf(m, "fuzz.gguf", &err);
    if (rc == 0)
        rc = kw__model_check(m, "fuzz.gguf", &err);
    if (rc < 0 && (!err.msg[0] || err.code >= 0))
        abort();
    kw_model_free(m);
    return 0;
}
