/* Fuzz target: the tokenizer.json loader and the encoder/decoder.
 *
 * Input byte 0 chooses: even -> the rest is a tokenizer.json (must load or fail with a
 * message, never crash); odd -> the rest is text for a fixed byte-level tokenizer (ids
 * must decode back to the same bytes, and streaming decode must give the same bytes).
 * A libFuzzer target with -Dfuzz=true (clang); else replay.c's main() replays the corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/model.h"
#include "model/tokenizer_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static kw_tokenizer *g_text_tk;

/* A byte-level tokenizer: every byte, a few merges, two special tokens, Llama-3 regex. */
static kw_tokenizer *make_text_tokenizer(void)
{
    const char *toks[256 + 8];
    char *own[256];
    for (int b = 0; b < 256; b++) {
        uint32_t cp = kw__tok_byte_cp((uint8_t)b);
        char buf[4];
        int l = cp < 0x80 ? (buf[0] = (char)cp, 1)
                          : (buf[0] = (char)(0xC0 | (cp >> 6)),
                             buf[1] = (char)(0x80 | (cp & 0x3F)), 2);
        own[b] = strndup(buf, (size_t)l);
        toks[b] = own[b];
    }
    toks[256] = "th"; toks[257] = "the"; toks[258] = "\xC4\xA0t"; toks[259] = "\xC4\xA0the";
    toks[260] = "in"; toks[261] = "<|a|>"; toks[262] = "<|ab|>"; toks[263] = "\xC4\xA0\xC4\xA0";
    int32_t types[264];
    for (int i = 0; i < 264; i++) types[i] = i == 261 || i == 262 ? 3 : 1;
    const char *ml[] = {"t", "th", "\xC4\xA0", "\xC4\xA0t", "i", "\xC4\xA0"};
    const char *mr[] = {"h", "e", "t", "he", "n", "\xC4\xA0"};
    kw_tokenizer_spec sp = {.model = "gpt2", .n_vocab = 264, .tokens = toks, .types = types,
                            .n_merges = 6, .bos_id = -1, .eos_id = -1, .unk_id = -1,
                            .pad_id = -1};
    kw__tok_opts o = {.byte_level = true, .merge_left = ml, .merge_right = mr};
    kw__tok_pre_by_name("llama-bpe", &o, NULL);
    o.ignore_merges = false;
    kw_tokenizer *tk = NULL;
    kw__tokenizer_build(&sp, &o, &tk, NULL);
    for (int b = 0; b < 256; b++) free(own[b]);
    return tk;
}

static void check_text(const uint8_t *d, size_t n, int special)
{
    char *text = malloc(n + 1);
    memcpy(text, d, n);
    text[n] = '\0'; /* text stops at the first NUL, as for any C string */
    size_t len = strlen(text);
    int k = kw_tokenize(g_text_tk, text, special, NULL, 0);
    if (k < 0) abort();
    int32_t *ids = malloc(((size_t)k + 1) * sizeof *ids);
    if (kw_tokenize(g_text_tk, text, special, ids, k) != k) abort();
    char *back = kw_detokenize(g_text_tk, ids, k, 0);
    if (!back || strcmp(back, text)) abort();
    char *acc = malloc(len + 16), chunk[64];
    size_t an = 0;
    kw_detok_stream ds = {0};
    for (int i = 0; i < k; i++) {
        int w = kw_detok_stream_push(g_text_tk, &ds, ids[i], chunk, sizeof chunk);
        if (w < 0 || an + (size_t)w > len) abort();
        memcpy(acc + an, chunk, (size_t)w);
        an += (size_t)w;
    }
    int w = kw_detok_stream_flush(&ds, chunk, sizeof chunk);
    if (w < 0) abort();
    memcpy(acc + an, chunk, (size_t)w);
    an += (size_t)w;
    if (an != len || memcmp(acc, text, len)) abort();
    free(acc);
    free(back);
    free(ids);
    free(text);
}

static void free_text_tokenizer(void)
{
    kw_tokenizer_free(g_text_tk);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (!g_text_tk) {
        if (!(g_text_tk = make_text_tokenizer()))
            abort();
        atexit(free_text_tokenizer);
    }
    if (n == 0)
        return 0;
    if (d[0] & 1) {
        check_text(d + 1, n - 1, d[0] & 2);
    } else {
        kw_tokenizer *tk = NULL;
        kw_error err = {0};
        int rc = kw__tokenizer_from_hf_json((const char *)d + 1, n - 1, "fuzz.json", &tk, &err);
        if (rc < 0 && (tk || !err.msg[0])) abort(); /* a failure says why and gives nothing */
        if (rc == 0) {
            int32_t ids[256];
            int k = kw_tokenize(tk, "Hello wörld 123 <s> 😀", 1, ids, 256);
            if (k > 256) k = 256;
            if (k >= 0) free(kw_detokenize(tk, ids, k, 1));
        }
        kw_tokenizer_free(tk);
    }
    return 0;
}
