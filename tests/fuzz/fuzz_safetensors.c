/* Fuzz target: the safetensors header and tensor table, and conversion of every tensor
 * it accepts. With -DKW_FUZZ it is a libFuzzer target; without, main() replays every
 * file of the directories (or files) it is given. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
            fprintf(stderr, "fuzz_safetensors: cannot stat %s\n", argv[a]);
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
    printf("fuzz_safetensors: replayed %d inputs\n", files);
    return files > 0 ? 0 : 1;
}
#endif
