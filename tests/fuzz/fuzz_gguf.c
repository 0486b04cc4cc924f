/* Fuzz target: the GGUF reader, the model configuration and vocabulary read from its
 * metadata, the tensor checks, and dequantization of every tensor it accepts. With
 * -DKW_FUZZ it is a libFuzzer target; without, main() replays every file of the
 * directories (or files) it is given. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

#ifndef KW_FUZZ
static int replay_file(const char *path)
{
    char *buf;
    size_t n;
    kw_error err = {0};
    if (kw_read_file(path, &buf, &n, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    /* an exact-size copy, so a sanitizer build sees any read past the end */
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0;
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        if (stat(argv[a], &sb) < 0) {
            fprintf(stderr, "fuzz_gguf: cannot stat %s\n", argv[a]);
            return 1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            if (replay_file(argv[a]) < 0)
                return 1;
            files++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            if (replay_file(path) < 0)
                return 1;
            files++;
        }
        if (d)
            closedir(d);
    }
    printf("fuzz_gguf: replayed %d inputs\n", files);
    return files > 0 ? 0 : 1;
}
#endif
