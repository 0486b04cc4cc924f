/* Fuzz target: the JSONL reader with the LongBench record check and prompt filling, in
 * fail and skip modes. A libFuzzer target with -Dfuzz=true (clang); else replay.c's main()
 * replays the corpus. */
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
