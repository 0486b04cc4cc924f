/* Fuzz target: the JSONL reader with the LongBench record check and prompt filling, in
 * fail and skip modes. Built for libFuzzer with -Dfuzz=true (clang); otherwise main()
 * below replays every file of the corpus directories given on the command line. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../operators/dataset/jsonl_reader.h"
#include "../../operators/dataset/longbench_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_stream(const uint8_t *data, size_t size, bool skip)
{
    if (size == 0)
        return;
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f)
        return;
    kw_jsonl_opts o = {.skip_bad = skip, .check = kw_lb_record_check, .max_line = 1 << 20};
    kw_jsonl *r = NULL;
    kw_error err = {0};
    if (kw_jsonl_open_stream(f, "fuzz.jsonl", &o, &r, &err) == 0) {
        json_t *rec;
        int rc, guard = 0;
        while ((rc = kw_jsonl_next(r, &rec, &err)) != KW_END && guard++ < 100000) {
            if (rc < 0)
                continue; /* fail mode: the reader goes on with the next line */
            char *p = NULL;
            if (kw_lb_prompt_fill("{{q}} {input}\n{context}", rec, &p, &err) == 0)
                free(p);
            json_decref(rec);
        }
        kw_jsonl_close(r);
    }
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_stream(data, size, false);
    read_stream(data, size, true);
    return 0;
}

#ifndef KW_LIBFUZZER
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_jsonl: cannot open %s\n", path);
        return 1;
    }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            bad |= replay_file(argv[i]);
            files++;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            bad |= replay_file(p);
            files++;
        }
        closedir(d);
    }
    printf("fuzz_jsonl: replayed %d inputs\n", files);
    return bad || files == 0;
}
#endif
