/* safetensors reader (safetensors.c): dtypes, shapes, offsets, metadata, and broken files
 * that must give clear errors naming the file and the numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "safetensors.h"
#include "tiny_model.h"

/* u64 length | header | data (bytes 0, 1, 2, ...). */
static uint8_t *mk(const char *header, size_t data_len, size_t *n)
{
    uint64_t hl = strlen(header);
    *n = 8 + hl + data_len;
    uint8_t *b = malloc(*n);
    memcpy(b, &hl, 8);
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hl + i] = (uint8_t)i;
    return b;
}

static int parse(const uint8_t *b, size_t n, kw_error *err)
{
    kw_st *st = NULL;
    memset(err, 0, sizeof *err);
    int rc = kw_st_parse(b, n, "m.safetensors", &st, err);
    if (rc == 0)
        assert_non_null(st);
    else
        assert_null(st);
    kw_st_free(st);
    return rc;
}

static void expect_error(const uint8_t *b, size_t n, const char *needle)
{
    kw_error err;
    int rc = parse(b, n, &err);
    if (rc >= 0)
        fail_msg("parsed, expected an error containing \"%s\"", needle);
    if (!kw_is_input_error(rc) || strncmp(err.msg, "m.safetensors: ", 15) || !strstr(err.msg, needle))
        fail_msg("rc %d, message \"%s\" lacks \"%s\"", rc, err.msg, needle);
}

static void expect_header_error(const char *header, size_t data_len, const char *needle)
{
    size_t n;
    uint8_t *b = mk(header, data_len, &n);
    expect_error(b, n, needle);
    free(b);
}

static const char *good =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"c\":{\"dtype\":\"F16\",\"shape\":[1,1,2],\"data_offsets\":[32,36]},"
    "\"d\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[36,37]},"
    "\"e\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[37,37]}}";

static void test_reads_dtypes_shapes_offsets(void **st)
{
    (void)st;
    size_t n;
    uint8_t *b = mk(good, 37, &n);
    kw_st *s;
    kw_error err = {0};
    assert_int_equal(kw_st_parse(b, n, "m.safetensors", &s, &err), 0);
    assert_int_equal(kw_st_n_tensors(s), 5);
    const kw_st_tensor *a = kw_st_find(s, "a");
    assert_int_equal(a->dtype, KW_DT_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->nbytes, 24);
    assert_ptr_equal(a->data, b + n - 37);
    const kw_st_tensor *bb = kw_st_find(s, "b");
    assert_int_equal(bb->dtype, KW_DT_BF16);
    assert_int_equal(((const uint8_t *)bb->data)[0], 24);
    assert_int_equal(kw_st_find(s, "c")->dtype, KW_DT_F16);
    assert_int_equal(kw_st_find(s, "d")->ndim, 0);
    assert_int_equal(kw_st_find(s, "e")->nbytes, 0);
    assert_string_equal(kw_st_metadata(s, "format"), "pt");
    assert_null(kw_st_metadata(s, "other"));
    assert_null(kw_st_find(s, "__metadata__"));
    kw_st_free(s);
    free(b);
}

static void test_every_truncation_fails_cleanly(void **st)
{
    (void)st;
    size_t n;
    uint8_t *b = mk(good, 37, &n);
    kw_error err;
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(k ? k : 1);
        memcpy(c, b, k);
        int rc = parse(c, k, &err);
        if (rc != KW_EFORMAT)
            fail_msg("prefix of %zu bytes: rc %d (%s)", k, rc, err.msg);
        free(c);
    }
    free(b);
    b = mk(good, 37, &n);
    expect_error(b, n - 5, "tensor 'c' needs bytes [");
    expect_error(b, 20, "truncated: the header claims");
    free(b);
}

static void test_broken_headers_give_clear_errors(void **st)
{
    (void)st;
    expect_header_error("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'a' has dtype 'F64', which kvweave cannot read");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
                        "tensor 'a': shape and dtype F32 need 24 bytes but data_offsets [0, 20) "
                        "hold 20");
    /* 8 + 57 header bytes, then 24 data bytes: [8, 32) of the data is [73, 97) */
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]}}", 24,
                        "tensor 'a' needs bytes [73, 97) but the file has 89");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 8,
                        "\"data_offsets\" is not [begin, end]");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 8,
                        "shape[0] is not a non-negative integer");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}",
                        8, "tensor 'a' has 5 dimensions");
    expect_header_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "no \"dtype\"");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        8, "header JSON");
    expect_header_error("{\"a\": [1,", 8, "header JSON, line 1 column");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                        "\"data_offsets\":[0,4]}}", 8, "overflows");
    expect_header_error("{\"__metadata__\":3}", 0, "\"__metadata__\" is not an object");
    const char *html = "<!DOCTYPE html>\n<html><body>Sign in to download</body></html>\n";
    expect_error((const uint8_t *)html, strlen(html),
                 "not a safetensors file (starts with '<!DOCTYPE html>' \u2014 an HTML page");
    expect_error((const uint8_t *)"", 0, "not a safetensors file (the file is empty)");
    uint8_t junk[64];
    for (int i = 0; i < 64; i++)
        junk[i] = (uint8_t)(i * 37 + 1);
    expect_error(junk, sizeof junk, "truncated: the header claims");
    uint64_t hl = 8;
    memcpy(junk, &hl, 8);
    expect_error(junk, sizeof junk, "does not start with '{'");
}

static void test_tiny_checkpoint_values_match(void **st)
{
    (void)st;
    char dir[] = "/tmp/kw_st_XXXXXX";
    assert_non_null(mkdtemp(dir));
    kw_tiny_spec s = kw_tiny_default(3);
    kw_error err = {0};
    assert_int_equal(kw_tiny_write_hf(&s, dir, &err), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    kw_st *st_;
    assert_int_equal(kw_st_open(path, &st_, &err), 0);
    assert_int_equal(kw_st_n_tensors(st_), kw_tiny_n_tensors(&s));
    const kw_st_tensor *t = kw_st_find(st_, "model.layers.1.self_attn.k_proj.weight");
    assert_non_null(t);
    int nd;
    int64_t sh[2];
    float *w = kw_tiny_weight(&s, "blk.1.attn_k.weight", &nd, sh);
    assert_int_equal(t->shape[0], sh[0]);
    assert_int_equal(t->shape[1], sh[1]);
    assert_memory_equal(t->data, w, (size_t)(sh[0] * sh[1]) * 4);
    free(w);
    kw_st_free(st_);
    /* truncate the file on disk: the error names the path and the numbers */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, size - 100), 0);
    assert_int_equal(kw_st_open(path, &st_, &err), KW_EFORMAT);
    assert_int_equal(strncmp(err.msg, path, strlen(path)), 0);
    char want[64];
    snprintf(want, sizeof want, "but the file has %ld", size - 100);
    assert_non_null(strstr(err.msg, want));
    assert_int_equal(truncate(path, 100), 0);
    assert_int_equal(kw_st_open(path, &st_, &err), KW_EFORMAT);
    assert_non_null(strstr(err.msg, "truncated: the header claims"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_dtypes_shapes_offsets),
        cmocka_unit_test(test_every_truncation_fails_cleanly),
        cmocka_unit_test(test_broken_headers_give_clear_errors),
        cmocka_unit_test(test_tiny_checkpoint_values_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
