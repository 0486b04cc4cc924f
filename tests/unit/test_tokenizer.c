/* Tokenizer: ids identical to the Hugging Face tokenizer built from the same vocabulary
 * and merges (goldens made by tests/golden/make_tokenizer_golden.py), decode round trips,
 * streaming decode, the tokenizer.json loader and its refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

#include "kvweave/model.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "tok_fixture.h"

static kw_tokenizer *g_tk; /* SmolLM2's, NULL when the model is not installed */

static int setup(void **s)
{
    (void)s;
    char *p = tokfix_model_path();
    if (tokfix_load_gguf(p, &g_tk, NULL) < 0)
        g_tk = NULL;
    free(p);
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    g_tk = kw_tokenizer_free(g_tk);
    return 0;
}

#define NEED_MODEL() do { if (!g_tk) { skip(); return; } } while (0)

static int32_t *encode(const kw_tokenizer *tk, const char *text, int special, int *n)
{
    int k = kw_tokenize(tk, text, special, NULL, 0);
    assert_true(k >= 0);
    int32_t *ids = malloc(((size_t)k + 1) * sizeof *ids);
    assert_int_equal(kw_tokenize(tk, text, special, ids, k), k);
    *n = k;
    return ids;
}

static void assert_ids_equal(const char *text, const int32_t *ids, int n, json_t *want)
{
    int ok = (size_t)n == json_array_size(want);
    for (int i = 0; ok && i < n; i++)
        ok = ids[i] == json_integer_value(json_array_get(want, (size_t)i));
    if (!ok) {
        fprintf(stderr, "text %s\n got", text);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\nwant");
        size_t i;
        json_t *v;
        json_array_foreach(want, i, v) fprintf(stderr, " %lld", (long long)json_integer_value(v));
        fprintf(stderr, "\n");
    }
    assert_true(ok);
}

static void test_smollm2_ids_match_hf_and_round_trip(void **s)
{
    (void)s;
    NEED_MODEL();
    json_t *g = tokfix_golden("tokenizer_smollm2.json");
    assert_non_null(g);
    json_t *cases = json_object_get(g, "cases"), *c;
    size_t i;
    assert_true(json_array_size(cases) >= 30);
    json_array_foreach(cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        int n;
        int32_t *ids = encode(g_tk, text, 1, &n);
        assert_ids_equal(text, ids, n, json_object_get(c, "ids"));
        char *back = kw_detokenize(g_tk, ids, n, 0);
        assert_non_null(back);
        assert_string_equal(back, text);
        free(back);
        free(ids);
    }
    json_decref(g);
}

static void test_arbitrary_bytes_round_trip(void **s)
{
    (void)s;
    NEED_MODEL();
    const char *texts[] = {"\x80\xbf broken \xc3 lead", "\xe2\x82 cut euro", "\x80\x80\x80",
                           "ok \xf0\x9f\x98 cut emoji"};
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int n;
        int32_t *ids = encode(g_tk, texts[k], 0, &n);
        assert_true(n > 0);
        char *back = kw_detokenize(g_tk, ids, n, 0);
        assert_string_equal(back, texts[k]);
        free(back);
        free(ids);
    }
    /* 0x04 and 0xFF have no token in SmolLM2's vocabulary: dropped, as the reference
     * does ("a\x04b" -> [81, 82] there) */
    int32_t ids[8];
    assert_int_equal(kw_tokenize(g_tk, "\xff", 0, ids, 8), 0);
    assert_int_equal(kw_tokenize(g_tk, "a\x04" "b", 0, ids, 8), 2);
    assert_int_equal(ids[0], 81);
    assert_int_equal(ids[1], 82);
}

static void test_special_tokens_only_when_parsed(void **s)
{
    (void)s;
    NEED_MODEL();
    int n;
    int32_t *ids = encode(g_tk, "<|im_start|>user", 1, &n);
    assert_int_equal(ids[0], kw_tokenizer_find(g_tk, "<|im_start|>"));
    assert_int_equal(ids[0], 1);
    free(ids);
    ids = encode(g_tk, "<|im_start|>user", 0, &n);
    assert_true(n > 2);
    for (int i = 0; i < n; i++)
        assert_int_not_equal(ids[i], 1);
    char *back = kw_detokenize(g_tk, ids, n, 0);
    assert_string_equal(back, "<|im_start|>user");
    free(back);
    free(ids);
    int32_t seq[] = {1, 4093, 2};
    back = kw_detokenize(g_tk, seq, 3, 1); /* control tokens dropped */
    char piece[64];
    int k = kw_token_piece(g_tk, 4093, piece, sizeof piece);
    assert_true(k > 0);
    assert_int_equal(strlen(back), (size_t)k);
    assert_memory_equal(back, piece, (size_t)k);
    free(back);
    assert_int_equal(kw_token_piece(g_tk, 4093, piece, 0), KW_ERANGE);
    assert_int_equal(kw_token_piece(g_tk, -1, piece, 64), KW_EINVAL);
    assert_int_equal(kw_token_piece(g_tk, kw_tokenizer_n_vocab(g_tk), piece, 64), KW_EINVAL);
    assert_int_equal(kw_tokenizer_n_vocab(g_tk), 49152);
    assert_int_equal(kw_tokenizer_find(g_tk, "no such piece at all"), -1);
}

static void test_small_buffer_gets_the_count(void **s)
{
    (void)s;
    NEED_MODEL();
    const char *t = "one two three four five six seven";
    int n;
    int32_t *all = encode(g_tk, t, 1, &n);
    int32_t few[3] = {-7, -7, -7};
    assert_int_equal(kw_tokenize(g_tk, t, 1, few, 2), n);
    assert_int_equal(few[0], all[0]);
    assert_int_equal(few[1], all[1]);
    assert_int_equal(few[2], -7);
    assert_int_equal(kw_tokenize(NULL, t, 1, few, 2), KW_EINVAL);
    assert_int_equal(kw_tokenize(g_tk, t, 1, NULL, 2), KW_EINVAL);
    assert_int_equal(kw_tokenize(g_tk, "", 1, few, 2), 0);
    free(all);
}

static char *read_prefix(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(max + 1);
    size_t n = fread(b, 1, max, f);
    fclose(f);
    /* drop a character cut at the end, as the golden script does */
    size_t back = 0;
    while (back < 3 && back < n && ((unsigned char)b[n - 1 - back] & 0xC0) == 0x80) back++;
    if (back < n && (unsigned char)b[n - 1 - back] >= 0xC0) {
        unsigned char c = (unsigned char)b[n - 1 - back];
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (back + 1 < need) n -= back + 1;
    }
    b[n] = '\0';
    *len = n;
    return b;
}

static void sha256_ids_hex(const int32_t *ids, int n, char hex[65])
{
    unsigned char *le = malloc((size_t)n * 4 + 1);
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) le[4 * i + b] = (unsigned char)((uint32_t)ids[i] >> (8 * b));
    unsigned char md[32];
    unsigned mdlen = 0;
    assert_int_equal(EVP_Digest(le, (size_t)n * 4, md, &mdlen, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    free(le);
}

/* 100k-character runs of one piece: whitespace lookaheads and long words */
static void test_long_runs_match_hf(void **s)
{
    (void)s;
    NEED_MODEL();
    json_t *g = tokfix_golden("tokenizer_smollm2.json"), *r;
    size_t i;
    assert_true(json_array_size(json_object_get(g, "runs")) >= 10);
    json_array_foreach(json_object_get(g, "runs"), i, r) {
        const char *fill = json_string_value(json_object_get(r, "fill"));
        const char *then = json_string_value(json_object_get(r, "then"));
        size_t rep = (size_t)json_integer_value(json_object_get(r, "repeat")), l = strlen(fill);
        char *text = malloc(rep * l + strlen(then) + 1);
        for (size_t k = 0; k < rep; k++) memcpy(text + k * l, fill, l);
        strcpy(text + rep * l, then);
        int n;
        int32_t *ids = encode(g_tk, text, 1, &n);
        char hex[65];
        sha256_ids_hex(ids, n, hex);
        assert_int_equal(n, json_integer_value(json_object_get(r, "count")));
        assert_string_equal(hex, json_string_value(json_object_get(r, "sha256_le_i32")));
        free(ids);
        free(text);
    }
    json_decref(g);
}

static void test_book_ids_count_and_hash_match_hf(void **s)
{
    (void)s;
    NEED_MODEL();
    json_t *g = tokfix_golden("tokenizer_smollm2.json");
    json_t *book = json_object_get(g, "book");
    char path[4096];
    const char *data = getenv("KVWEAVE_DATA");
    snprintf(path, sizeof path, "%s/%s", data ? data : "../shared/data",
             json_string_value(json_object_get(book, "file")));
    size_t len = 0;
    char *text = read_prefix(path, (size_t)json_integer_value(json_object_get(book, "bytes")),
                             &len);
    assert_non_null(text);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int n;
    int32_t *ids = encode(g_tk, text, 1, &n); /* encodes twice: count, then ids */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "book: %zu bytes -> %d tokens, 2 passes in %.3f s (%.0f tokens/s)\n",
            len, n, sec, 2.0 * n / sec);
    assert_int_equal(n, json_integer_value(json_object_get(book, "count")));
    unsigned char *le = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) le[4 * i + b] = (unsigned char)((uint32_t)ids[i] >> (8 * b));
    unsigned char md[32];
    unsigned mdlen = 0;
    assert_int_equal(EVP_Digest(le, (size_t)n * 4, md, &mdlen, EVP_sha256(), NULL), 1);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(hex, json_string_value(json_object_get(book, "sha256_le_i32")));
    char *back = kw_detokenize(g_tk, ids, n, 0);
    assert_string_equal(back, text);
    assert_true(sec < 5.0); /* loose: shared machines; the figure is printed above */
    free(back);
    free(le);
    free(ids);
    free(text);
    json_decref(g);
}

typedef struct book_job { const char *text; int n; const int32_t *want; int ok; } book_job;

static void *encode_job(void *p)
{
    book_job *j = p;
    int32_t *ids = malloc(((size_t)j->n + 1) * sizeof *ids);
    for (int rep = 0; rep < 3; rep++)
        j->ok = kw_tokenize(g_tk, j->text, 1, ids, j->n) == j->n &&
                !memcmp(ids, j->want, (size_t)j->n * sizeof *ids);
    free(ids);
    return NULL;
}

static void test_concurrent_encodes_agree(void **s)
{
    (void)s;
    NEED_MODEL();
    char path[4096];
    const char *data = getenv("KVWEAVE_DATA");
    snprintf(path, sizeof path, "%s/text/pg19_frank_merriwell_down_south.txt",
             data ? data : "../shared/data");
    size_t len;
    char *text = read_prefix(path, 60000, &len);
    assert_non_null(text);
    int n;
    int32_t *want = encode(g_tk, text, 1, &n);
    pthread_t th[4];
    book_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (book_job){text, n, want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, encode_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(jobs[i].ok);
    }
    free(want);
    free(text);
}

static int valid_utf8(const char *s, int n)
{
    for (int i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int l = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        if (!l || i + l > n) return 0;
        for (int k = 1; k < l; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
        i += l;
    }
    return 1;
}

static void test_streaming_decode_never_splits_a_character(void **s)
{
    (void)s;
    NEED_MODEL();
    const char *text = "emoji 😀🎉 family 👨‍👩‍👧‍👦 中文字符很好 日本語 ok";
    int n;
    int32_t *ids = encode(g_tk, text, 0, &n);
    kw_detok_stream ds = {0};
    char out[4096] = "", chunk[256];
    int split_pieces = 0;
    for (int i = 0; i < n; i++) {
        char piece[256];
        int pl = kw_token_piece(g_tk, ids[i], piece, sizeof piece);
        split_pieces += !valid_utf8(piece, pl);
        int k = kw_detok_stream_push(g_tk, &ds, ids[i], chunk, sizeof chunk);
        assert_true(k >= 0);
        assert_true(valid_utf8(chunk, k));
        strncat(out, chunk, (size_t)k);
    }
    assert_int_equal(kw_detok_stream_flush(&ds, chunk, sizeof chunk), 0);
    assert_string_equal(out, text);
    assert_true(split_pieces > 0); /* the text does split characters across tokens */
    /* a cut-off character comes out at flush, as is */
    kw_detok_stream d2 = {0};
    int32_t last = ids[1]; /* "😀"'s first token: a partial character */
    char p[64];
    int pl = kw_token_piece(g_tk, last, p, sizeof p);
    if (!valid_utf8(p, pl)) {
        assert_int_equal(kw_detok_stream_push(g_tk, &d2, last, chunk, sizeof chunk), 0);
        assert_int_equal(kw_detok_stream_flush(&d2, chunk, sizeof chunk), pl);
    }
    assert_int_equal(kw_detok_stream_push(g_tk, &d2, ids[0], chunk, 1), KW_ERANGE);
    free(ids);
}

/* ---- tokenizer.json ---- */

static void check_hf_dir(const char *name, int byte_level)
{
    char *dir = tokfix_golden_path(name);
    kw_tokenizer *tk = NULL;
    kw_error err = {0};
    int rc = kw_tokenizer_from_hf_dir(dir, &tk, &err);
    if (rc < 0) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    char gp[4200];
    snprintf(gp, sizeof gp, "%s/golden.json", name);
    json_t *g = tokfix_golden(gp), *c;
    assert_non_null(g);
    size_t i;
    json_array_foreach(json_object_get(g, "cases"), i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        int n;
        int32_t *ids = encode(tk, text, 1, &n);
        assert_ids_equal(text, ids, n, json_object_get(c, "ids"));
        if (byte_level) { /* 2: the tokenizer NFC-normalizes */
            char *back = kw_detokenize(tk, ids, n, 0);
            char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text);
            assert_string_equal(back, byte_level == 2 ? nfc : text);
            free(nfc);
            free(back);
        }
        free(ids);
    }
    json_decref(g);
    kw_tokenizer_free(tk);
    free(dir);
}

static void test_hf_bytelevel_pair_merges_match_hf(void **s)
{
    (void)s;
    check_hf_dir("tok_tiny_bytelevel", 1);
}

static void test_hf_split_regex_string_merges_nfc_match_hf(void **s)
{
    (void)s;
    check_hf_dir("tok_tiny_llama3", 2);
}

static void test_hf_qwen2_split_regex_matches_hf(void **s)
{
    (void)s;
    check_hf_dir("tok_tiny_qwen2", 2);
    json_t *j = tokfix_golden("tok_tiny_qwen2/tokenizer.json");
    assert_non_null(j);
    const char *hf = json_string_value(json_object_get(json_object_get(json_array_get(
        json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers"), 0), "pattern"),
        "Regex"));
    kw__tok_opts o = {0};
    assert_int_equal(kw__tok_pre_by_name("qwen2", &o, NULL), 0);
    assert_string_equal(o.splits[0], hf); /* the built-in "qwen2" is the same pattern */
    assert_true(o.nfc);
    json_decref(j);
}

static void test_hf_sentencepiece_byte_fallback_matches_hf(void **s)
{
    (void)s;
    check_hf_dir("tok_tiny_spm", 0);
    char *dir = tokfix_golden_path("tok_tiny_spm");
    kw_tokenizer *tk;
    kw_error err = {0};
    assert_int_equal(kw_tokenizer_from_hf_dir(dir, &tk, &err), 0);
    int n;
    assert_int_equal(kw_tokenizer_find(tk, "<0x0A>"), 3 + 0x0A);
    const char *t = "the cat 😀 sat";
    int32_t *ids = encode(tk, t, 1, &n);
    char *back = kw_detokenize(tk, ids, n, 1);
    assert_string_equal(back, t); /* byte tokens and the stripped "▁" prefix */
    free(back);
    free(ids);
    kw_tokenizer_free(tk);
    free(dir);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_hf_broken_files_give_clear_errors(void **s)
{
    (void)s;
    char dir[4096];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kwtokXXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    static const struct { const char *json; int code; const char *says; } cases[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,", KW_EPARSE, ":1:"},
        {"[1, 2]", KW_EFORMAT, "top level"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"dropout\": 0.1}}",
         KW_EFORMAT, "model.dropout"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", KW_EFORMAT, "model.type"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": []}}", KW_EFORMAT, "model.vocab"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", KW_EFORMAT, "empty"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}}}", KW_EFORMAT, "\"a\""},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 900000000}}}", KW_EFORMAT,
         "900000000 is far beyond the 1 tokens"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
         " \"merges\": [\"a\"]}}", KW_EFORMAT, "merges[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", 1]]}}",
         KW_EFORMAT, "merges[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\":"
         " [{\"id\": \"x\"}]}", KW_EFORMAT, "added_tokens[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\":"
         " {\"type\": \"Whitespace\"}}", KW_EFORMAT, "Whitespace"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\":"
         " {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
         KW_EINVAL, "regex"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\":"
         " {\"type\": \"Lowercase\"}}", KW_EFORMAT, "Lowercase"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        write_file(dir, "tokenizer.json", cases[k].json);
        kw_tokenizer *tk = (kw_tokenizer *)1;
        kw_error err = {0};
        int rc = kw_tokenizer_from_hf_dir(dir, &tk, &err);
        if (rc != cases[k].code || !strstr(err.msg, cases[k].says) ||
            !strstr(err.msg, "tokenizer.json"))
            fprintf(stderr, "case %zu: rc %d msg '%s'\n", k, rc, err.msg);
        assert_int_equal(rc, cases[k].code);
        assert_null(tk);
        assert_non_null(strstr(err.msg, cases[k].says));
        assert_non_null(strstr(err.msg, "tokenizer.json"));
    }
    char p[4200];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    kw_tokenizer *tk;
    kw_error err = {0};
    assert_int_equal(kw_tokenizer_from_hf_dir(dir, &tk, &err), KW_ENOTFOUND);
    rmdir(dir);
}

static void test_spec_errors_are_refused(void **s)
{
    (void)s;
    const char *toks[] = {"a", "b", "ab"};
    const char *bad_merges[] = {"ab"};
    kw_tokenizer_spec sp = {.model = "llama", .n_vocab = 3, .tokens = toks, .n_merges = 1,
                            .merges = bad_merges, .bos_id = -1, .eos_id = -1, .unk_id = -1,
                            .pad_id = -1};
    kw_tokenizer *tk = NULL;
    kw_error err = {0};
    assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), KW_EFORMAT);
    assert_non_null(strstr(err.msg, "merge 0 'ab'"));
    sp.n_merges = 0;
    sp.model = "wordpiece";
    assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "wordpiece"));
    sp.model = "gpt2";
    sp.pre = "mystery";
    assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "mystery"));
    sp.model = "llama";
    sp.bos_id = 3;
    assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), KW_ERANGE);
    assert_non_null(strstr(err.msg, "bos id 3"));
    sp.bos_id = -1;
    sp.n_vocab = 0;
    assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), KW_EINVAL);
    assert_null(tk);
    /* a valid SentencePiece spec: merges by score without a merge list */
    const char *v[] = {"<unk>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a", "ab",
                       "\xE2\x96\x81" "ab"};
    float sc[] = {0, -1, -2, -2, -3, -1, -0.5f};
    int32_t ty[] = {2, 1, 1, 1, 1, 1, 1};
    kw_tokenizer_spec ok = {.model = "llama", .n_vocab = 7, .tokens = v, .scores = sc,
                            .types = ty, .bos_id = -1, .eos_id = -1, .unk_id = 0,
                            .pad_id = -1};
    assert_int_equal(kw_tokenizer_new(&ok, &tk, &err), 0);
    int32_t ids[8];
    /* "▁" "a" "b": ab (-1) merges before ▁a (-3); then ▁ + ab -> ▁ab */
    assert_int_equal(kw_tokenize(tk, "ab", 0, ids, 8), 1);
    assert_int_equal(ids[0], 6);
    assert_int_equal(kw_tokenize(tk, "ab c", 0, ids, 8), 3); /* ▁ab ▁ c -> unk for c */
    assert_int_equal(ids[0], 6);
    assert_int_equal(ids[1], 1);
    assert_int_equal(ids[2], 0);
    tk = kw_tokenizer_free(tk);
    ok.no_space_prefix = true; /* no "▁" in front: "a" "b" -> ab */
    assert_int_equal(kw_tokenizer_new(&ok, &tk, &err), 0);
    assert_int_equal(kw_tokenize(tk, "ab", 0, ids, 8), 1);
    assert_int_equal(ids[0], 5);
    char *back = kw_detokenize(tk, ids, 1, 0);
    assert_string_equal(back, "ab");
    free(back);
    tk = kw_tokenizer_free(tk);
}

static void test_named_pre_tokenizers_compile_and_match_hf_patterns(void **s)
{
    (void)s;
    /* the built-in Llama-3 pattern is the one of the Llama-3 tokenizer.json Split */
    json_t *j = tokfix_golden("tok_tiny_llama3/tokenizer.json");
    assert_non_null(j);
    const char *hf = json_string_value(json_object_get(json_object_get(json_array_get(
        json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers"), 0), "pattern"),
        "Regex"));
    kw__tok_opts o = {0};
    assert_int_equal(kw__tok_pre_by_name("llama-bpe", &o, NULL), 0);
    assert_string_equal(o.splits[0], hf);
    assert_true(o.ignore_merges);
    json_decref(j);
    /* every name builds a tokenizer (its regexes compile) over a byte vocabulary */
    char *toks[256];
    const char *ctoks[256];
    for (int b = 0; b < 256; b++) {
        char buf[8];
        uint32_t cp = kw__tok_byte_cp((uint8_t)b);
        int l = cp < 0x80 ? (buf[0] = (char)cp, 1)
                          : (buf[0] = (char)(0xC0 | (cp >> 6)), buf[1] = (char)(0x80 | (cp & 0x3F)), 2);
        toks[b] = strndup(buf, (size_t)l);
        ctoks[b] = toks[b];
    }
    const char *names[] = {"gpt2", "default", "smollm", "llama-bpe", "llama3", "qwen2", NULL};
    for (int i = 0; i < 7; i++) {
        kw_tokenizer_spec sp = {.model = "gpt2", .pre = names[i], .n_vocab = 256,
                                .tokens = ctoks, .bos_id = -1, .eos_id = -1, .unk_id = -1,
                                .pad_id = -1};
        kw_tokenizer *tk = NULL;
        kw_error err = {0};
        assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), 0);
        const char *t = "Héllo  wörld 12345 \r\n 😀";
        int32_t ids[64];
        int n = kw_tokenize(tk, t, 0, ids, 64);
        assert_int_equal(n, (int)strlen(t)); /* no merges: one token per byte */
        char *back = kw_detokenize(tk, ids, n, 0);
        assert_string_equal(back, t);
        free(back);
        kw_tokenizer_free(tk);
    }
    for (int b = 0; b < 256; b++) free(toks[b]);
}

static void test_user_tokens_match_without_parse_special(void **s)
{
    (void)s;
    const char *toks[258];
    char *own[256];
    int32_t types[258];
    for (int b = 0; b < 256; b++) {
        char buf[4];
        uint32_t cp = kw__tok_byte_cp((uint8_t)b);
        int l = cp < 0x80 ? (buf[0] = (char)cp, 1)
                          : (buf[0] = (char)(0xC0 | (cp >> 6)), buf[1] = (char)(0x80 | (cp & 0x3F)), 2);
        own[b] = strndup(buf, (size_t)l);
        toks[b] = own[b];
        types[b] = 1;
    }
    toks[256] = "<ctl>";
    types[256] = 3;
    toks[257] = "<usr>";
    types[257] = 4;
    kw_tokenizer_spec sp = {.model = "gpt2", .pre = "gpt2", .n_vocab = 258, .tokens = toks,
                            .types = types, .bos_id = 256, .eos_id = -1, .unk_id = -1,
                            .pad_id = -1, .add_bos = true};
    kw_tokenizer *tk;
    kw_error err = {0};
    assert_int_equal(kw_tokenizer_new(&sp, &tk, &err), 0);
    int32_t ids[64];
    int n = kw_tokenize(tk, "a<usr>b<ctl>", 0, ids, 64);
    /* BOS, a, <usr>, b, then "<ctl>" as five bytes */
    assert_int_equal(n, 1 + 1 + 1 + 1 + 5);
    assert_int_equal(ids[0], 256);
    assert_int_equal(ids[2], 257);
    n = kw_tokenize(tk, "a<usr>b<ctl>", 1, ids, 64);
    assert_int_equal(n, 5);
    assert_int_equal(ids[4], 256);
    /* a prompt that starts with BOS gets no second one */
    n = kw_tokenize(tk, "<ctl>a", 1, ids, 64);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 256);
    assert_int_equal(ids[1], 'a');
    kw_tokenizer_free(tk);
    for (int b = 0; b < 256; b++) free(own[b]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2_ids_match_hf_and_round_trip),
        cmocka_unit_test(test_arbitrary_bytes_round_trip),
        cmocka_unit_test(test_special_tokens_only_when_parsed),
        cmocka_unit_test(test_small_buffer_gets_the_count),
        cmocka_unit_test(test_book_ids_count_and_hash_match_hf),
        cmocka_unit_test(test_long_runs_match_hf),
        cmocka_unit_test(test_concurrent_encodes_agree),
        cmocka_unit_test(test_streaming_decode_never_splits_a_character),
        cmocka_unit_test(test_hf_bytelevel_pair_merges_match_hf),
        cmocka_unit_test(test_hf_split_regex_string_merges_nfc_match_hf),
        cmocka_unit_test(test_hf_qwen2_split_regex_matches_hf),
        cmocka_unit_test(test_hf_sentencepiece_byte_fallback_matches_hf),
        cmocka_unit_test(test_hf_broken_files_give_clear_errors),
        cmocka_unit_test(test_spec_errors_are_refused),
        cmocka_unit_test(test_named_pre_tokenizers_compile_and_match_hf_patterns),
        cmocka_unit_test(test_user_tokens_match_without_parse_special),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
