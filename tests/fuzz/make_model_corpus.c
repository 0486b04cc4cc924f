/* Writes the seed corpora of fuzz_gguf and fuzz_safetensors:
 *   make_model_corpus tests/fuzz/corpus
 * (run by hand when the formats change; the outputs are committed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "tiny_model.h"

static void spit(const char *dir, const char *name, const void *b, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        exit(1);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n)
        exit(1);
    fclose(f);
    return b;
}

static kw_tiny_spec small(uint64_t seed)
{
    kw_tiny_spec s = kw_tiny_default(seed);
    s.n_layer = 1;
    s.n_embd = 32;
    s.n_head = 2;
    s.n_head_kv = 1;
    s.n_ff = 32;
    return s;
}

static void gguf_seeds(const char *dir)
{
    kw_error err = {0};
    char tmp[] = "/tmp/kw_corpus_XXXXXX", path[256];
    if (!mkdtemp(tmp))
        exit(1);
    kw_tiny_spec s = small(1);
    s.gguf_dtype = KW_DT_Q8_0;
    snprintf(path, sizeof path, "%s/a.gguf", tmp);
    size_t n;
    if (kw_tiny_write_gguf(&s, path, &err) < 0)
        exit(1);
    uint8_t *b = slurp(path, &n);
    spit(dir, "tiny_llama_q8_0", b, n);
    spit(dir, "tiny_llama_truncated", b, n / 3);
    free(b);
    s = small(2);
    s.qwen2 = s.tie_embeddings = true;
    s.gguf_dtype = KW_DT_F16;
    if (kw_tiny_write_gguf(&s, path, &err) < 0)
        exit(1);
    b = slurp(path, &n);
    spit(dir, "tiny_qwen2_f16_tied", b, n);
    free(b);
    remove(path);
    remove(tmp);

    /* one tensor of each type kvweave reads, random payload with sane f16 scales */
    kw_gw *w = kw_gw_new(2);
    kw_gw_u32(w, "general.alignment", 16);
    kw_gw_set_alignment(w, 16);
    uint64_t rng = 9;
    for (int t = 0; t < KW_DT_COUNT; t++) {
        size_t be, bb;
        uint32_t gt;
        kw_dtype_block((kw_dtype)t, &be, &bb);
        if (kw_dtype_to_ggml((kw_dtype)t, &gt) < 0)
            continue;
        uint8_t blk[2 * 256 * 4];
        for (size_t i = 0; i < 2 * bb; i++)
            blk[i] = (uint8_t)kw_tiny_rand(&rng);
        char name[32];
        snprintf(name, sizeof name, "t.%s", kw_dtype_name((kw_dtype)t));
        kw_gw_tensor(w, name, gt, 2, (uint64_t[]){be, 2}, blk, 2 * bb);
    }
    kw_gw_str(w, "general.architecture", "llama");
    float sc[3] = {0.5f, -1, 2};
    kw_gw_arr(w, "tokenizer.ggml.scores", KW_GGUF_F32, 3, sc);
    kw_gw_i64(w, "i64", -5);
    kw_gw_f64(w, "f64", 2.5);
    kw_gw_bool(w, "bool", true);
    kw_gw_u16(w, "u16", 7);
    kw_gw_i8(w, "i8", -3);
    kw_gw_u8(w, "u8", 3);
    kw_gw_i16(w, "i16", -300);
    uint8_t *wb;
    kw_gw_bytes(w, &wb, &n);
    spit(dir, "every_type_v2", wb, n);
    free(wb);
    kw_gw_free(w);
    const char *html = "<!DOCTYPE html>\n<html><body>404</body></html>\n";
    spit(dir, "html_page", html, strlen(html));
    spit(dir, "empty", "", 0);
}

static void st_seeds(const char *dir)
{
    kw_error err = {0};
    char tmp[] = "/tmp/kw_corpus_XXXXXX", path[300];
    if (!mkdtemp(tmp))
        exit(1);
    kw_tiny_spec s = small(3);
    s.hf_dtype = KW_DT_BF16;
    s.n_shards = 4;
    if (kw_tiny_write_hf(&s, tmp, &err) < 0)
        exit(1);
    size_t n;
    snprintf(path, sizeof path, "%s/model-00002-of-00004.safetensors", tmp);
    uint8_t *b = slurp(path, &n);
    spit(dir, "tiny_shard_bf16", b, n);
    spit(dir, "tiny_shard_truncated", b, n / 2);
    free(b);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        exit(1);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                      "\"c\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[32,33]},"
                      "\"d\":{\"dtype\":\"I32\",\"shape\":[1,1],\"data_offsets\":[36,40]}}";
    uint64_t hl = strlen(hdr);
    uint8_t buf[1024];
    memcpy(buf, &hl, 8);
    memcpy(buf + 8, hdr, hl);
    for (int i = 0; i < 40; i++)
        buf[8 + hl + (size_t)i] = (uint8_t)(i * 7);
    spit(dir, "every_dtype", buf, 8 + hl + 40);
    const char *html = "<!DOCTYPE html>\n<html><body>Sign in</body></html>\n";
    spit(dir, "html_page", html, strlen(html));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_model_corpus CORPUS_DIR\n");
        return 2;
    }
    char g[4096], s[4096];
    snprintf(g, sizeof g, "%s/gguf", argv[1]);
    snprintf(s, sizeof s, "%s/safetensors", argv[1]);
    mkdir(g, 0755);
    mkdir(s, 0755);
    gguf_seeds(g);
    st_seeds(s);
    return 0;
}
