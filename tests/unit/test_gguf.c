/* GGUF reader (gguf.c): every metadata value type, tensor infos and alignment, and broken
 * files that must give clear errors naming the file and the numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "tiny_model.h"

static void bytes_of(kw_gw *w, uint8_t **b, size_t *n)
{
    kw_gw_bytes(w, b, n);
    kw_gw_free(w);
}

/* Parses; on failure returns the code and leaves the message in err. */
static int parse(const uint8_t *b, size_t n, kw_error *err)
{
    kw_gguf *g = NULL;
    memset(err, 0, sizeof *err);
    int rc = kw_gguf_parse(b, n, "t.gguf", &g, err);
    if (rc == 0)
        assert_non_null(g);
    else
        assert_null(g);
    kw_gguf_free(g);
    return rc;
}

static void expect_error(const uint8_t *b, size_t n, const char *needle)
{
    kw_error err;
    int rc = parse(b, n, &err);
    if (rc >= 0)
        fail_msg("parsed, expected an error containing \"%s\"", needle);
    if (!kw_is_input_error(rc))
        fail_msg("code %d is not an input error: %s", rc, err.msg);
    if (strncmp(err.msg, "t.gguf: ", 8) != 0 || !strstr(err.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static kw_gw *all_types(uint32_t version)
{
    kw_gw *w = kw_gw_new(version);
    kw_gw_u8(w, "u8", 200);
    kw_gw_i8(w, "i8", -100);
    kw_gw_u16(w, "u16", 60000);
    kw_gw_i16(w, "i16", -30000);
    kw_gw_u32(w, "u32", 4000000000u);
    kw_gw_i32(w, "i32", -2000000000);
    kw_gw_f32(w, "f32", 0.25f);
    kw_gw_bool(w, "bool", true);
    kw_gw_str(w, "str", "h\xc3\xa9llo");
    kw_gw_u64(w, "u64", 1ull << 40);
    kw_gw_i64(w, "i64", -(1ll << 40));
    kw_gw_f64(w, "f64", 1e300);
    int32_t ints[5] = {1, -2, 3, -4, 5};
    kw_gw_arr(w, "arr.i32", KW_GGUF_I32, 5, ints);
    float fl[3] = {0.5f, -1.5f, 2.5f};
    kw_gw_arr(w, "arr.f32", KW_GGUF_F32, 3, fl);
    uint8_t bools[2] = {1, 0};
    kw_gw_arr(w, "arr.bool", KW_GGUF_BOOL, 2, bools);
    const char *ss[3] = {"a", "", "\xc4\xa0the"};
    kw_gw_arr_str(w, "arr.str", 3, ss);
    kw_gw_arr(w, "arr.empty", KW_GGUF_U64, 0, NULL);
    /* an array of two arrays of u16, written raw */
    uint8_t nested[4 + 8 + 2 * (4 + 8 + 4)], *p = nested;
    uint32_t u16t = KW_GGUF_U16;
    uint64_t two = 2;
    uint16_t vals[4] = {7, 8, 9, 10};
    memcpy(p, &u16t, 4), p += 4;
    *(uint32_t *)(void *)nested = KW_GGUF_ARRAY;
    memcpy(p, &two, 8), p += 8;
    for (int i = 0; i < 2; i++) {
        memcpy(p, &u16t, 4), p += 4;
        memcpy(p, &two, 8), p += 8;
        memcpy(p, vals + 2 * i, 4), p += 4;
    }
    kw_gw_raw(w, "arr.nested", KW_GGUF_ARRAY, nested, sizeof nested);
    return w;
}

static void check_all_types(uint32_t version)
{
    uint8_t *b;
    size_t n;
    bytes_of(all_types(version), &b, &n);
    kw_gguf *g;
    kw_error err = {0};
    assert_int_equal(kw_gguf_parse(b, n, "t.gguf", &g, &err), 0);
    assert_int_equal(kw_gguf_version(g), version);
    assert_int_equal(kw_gguf_n_kv(g), 18);
    assert_int_equal(kw_gguf_n_tensors(g), 0);
    int64_t i;
    double f;
    bool bo;
    static const struct { const char *k; int64_t v; kw_gguf_type t; } ints[] = {
        {"u8", 200, KW_GGUF_U8},        {"i8", -100, KW_GGUF_I8},
        {"u16", 60000, KW_GGUF_U16},    {"i16", -30000, KW_GGUF_I16},
        {"u32", 4000000000ll, KW_GGUF_U32}, {"i32", -2000000000, KW_GGUF_I32},
        {"u64", 1ll << 40, KW_GGUF_U64}, {"i64", -(1ll << 40), KW_GGUF_I64}, {"bool", 1, KW_GGUF_BOOL}};
    for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
        assert_int_equal(kw_gguf_get_int(g, ints[k].k, &i), 0);
        assert_int_equal(i, ints[k].v);
        assert_int_equal(kw_gguf_find(g, ints[k].k)->type, ints[k].t);
    }
    assert_int_equal(kw_gguf_get_float(g, "f32", &f), 0);
    assert_true(f == 0.25);
    assert_int_equal(kw_gguf_get_float(g, "f64", &f), 0);
    assert_true(f == 1e300);
    assert_int_equal(kw_gguf_get_int(g, "f32", &i), KW_ETYPE);
    assert_int_equal(kw_gguf_get_int(g, "missing", &i), KW_ENOTFOUND);
    assert_int_equal(kw_gguf_get_bool(g, "bool", &bo), 0);
    assert_true(bo);
    assert_string_equal(kw_gguf_get_str(g, "str"), "h\xc3\xa9llo");
    assert_null(kw_gguf_get_str(g, "u8"));
    kw_gguf_type et;
    uint64_t len;
    const void *data;
    assert_int_equal(kw_gguf_get_arr(g, "arr.i32", &et, &len, &data), 0);
    assert_int_equal(et, KW_GGUF_I32);
    assert_int_equal(len, 5);
    assert_int_equal(((const int32_t *)data)[3], -4);
    assert_int_equal(kw_gguf_arr_int(kw_gguf_find(g, "arr.i32"), 4, &i), 0);
    assert_int_equal(i, 5);
    assert_int_equal(kw_gguf_arr_int(kw_gguf_find(g, "arr.i32"), 5, &i), KW_ERANGE);
    assert_int_equal(kw_gguf_arr_float(kw_gguf_find(g, "arr.f32"), 1, &f), 0);
    assert_true(f == -1.5);
    assert_int_equal(kw_gguf_arr_int(kw_gguf_find(g, "arr.bool"), 0, &i), 0);
    assert_int_equal(i, 1);
    assert_int_equal(kw_gguf_get_arr(g, "arr.str", &et, &len, &data), 0);
    assert_int_equal(et, KW_GGUF_STRING);
    assert_string_equal(((char *const *)data)[2], "\xc4\xa0the");
    assert_string_equal(((char *const *)data)[1], "");
    assert_int_equal(kw_gguf_get_arr(g, "arr.empty", &et, &len, &data), 0);
    assert_int_equal(len, 0);
    const kw_gguf_value *nest = kw_gguf_find(g, "arr.nested");
    assert_int_equal(nest->arr.type, KW_GGUF_ARRAY);
    assert_int_equal(nest->arr.n, 2);
    const kw_gguf_value *inner = &((const kw_gguf_value *)nest->arr.data)[1];
    assert_int_equal(kw_gguf_arr_int(inner, 1, &i), 0);
    assert_int_equal(i, 10);
    assert_string_equal(kw_gguf_key_at(g, 0), "u8");
    g = kw_gguf_free(g);
    free(b);
}

static void test_reads_every_value_type_v3(void **st) { (void)st; check_all_types(3); }
static void test_reads_every_value_type_v2(void **st) { (void)st; check_all_types(2); }

static kw_gw *with_tensors(uint32_t alignment, int write_key)
{
    kw_gw *w = kw_gw_new(3);
    if (write_key)
        kw_gw_u32(w, "general.alignment", alignment);
    kw_gw_set_alignment(w, alignment);
    float a[6] = {1, 2, 3, 4, 5, 6};
    kw_gw_tensor(w, "a", KW_GGML_F32, 2, (uint64_t[]){3, 2}, a, sizeof a);
    uint8_t q[34 * 2];
    for (int i = 0; i < (int)sizeof q; i++)
        q[i] = (uint8_t)i;
    kw_gw_tensor(w, "b.q8", KW_GGML_Q8_0, 3, (uint64_t[]){32, 1, 2}, q, sizeof q);
    return w;
}

static void test_tensor_infos_shapes_and_alignment(void **st)
{
    (void)st;
    uint32_t aligns[] = {32, 64, 8};
    for (int k = 0; k < 3; k++) {
        uint8_t *b;
        size_t n;
        bytes_of(with_tensors(aligns[k], aligns[k] != 32), &b, &n);
        kw_gguf *g;
        kw_error err = {0};
        assert_int_equal(kw_gguf_parse(b, n, "t.gguf", &g, &err), 0);
        assert_int_equal(kw_gguf_alignment(g), aligns[k]);
        assert_int_equal(kw_gguf_data_offset(g) % aligns[k], 0);
        const kw_gguf_tensor *a = kw_gguf_find_tensor(g, "a");
        assert_int_equal(a->ndim, 2);
        assert_int_equal(a->shape[0], 2); /* outermost first */
        assert_int_equal(a->shape[1], 3);
        assert_int_equal(a->ne[0], 3);
        assert_int_equal(a->nbytes, 24);
        assert_true(((const float *)a->data)[5] == 6.0f);
        const kw_gguf_tensor *q = kw_gguf_find_tensor(g, "b.q8");
        assert_int_equal(q->dtype, KW_DT_Q8_0);
        assert_int_equal(q->shape[0], 2);
        assert_int_equal(q->shape[2], 32);
        assert_int_equal(q->nbytes, 68);
        assert_int_equal(q->offset % aligns[k], 0);
        assert_int_equal(((const uint8_t *)q->data)[67], 67);
        assert_null(kw_gguf_find_tensor(g, "c"));
        kw_gguf_free(g);
        free(b);
    }
}

static void test_wrong_magic_and_html_and_empty(void **st)
{
    (void)st;
    uint8_t *b;
    size_t n;
    bytes_of(with_tensors(32, 0), &b, &n);
    b[3] = 'X';
    expect_error(b, n, "not a GGUF file");
    free(b);
    const char *html = "<!DOCTYPE html>\n<html><head><title>Model</title></head></html>\n";
    expect_error((const uint8_t *)html, strlen(html),
                 "not a GGUF file (starts with '<!DOCTYPE html>' \u2014 an HTML page saved instead "
                 "of the file?)");
    const char *lfs = "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n";
    expect_error((const uint8_t *)lfs, strlen(lfs), "Git LFS pointer");
    expect_error((const uint8_t *)"", 0, "the file is empty");
    expect_error((const uint8_t *)"GGUF\3\0\0", 7, "truncated: 7 bytes, a GGUF header needs 24");
}

static void test_every_truncation_fails_cleanly(void **st)
{
    (void)st;
    uint8_t *b;
    size_t n;
    kw_gw *w = all_types(3);
    float a[64];
    for (int i = 0; i < 64; i++)
        a[i] = (float)i;
    kw_gw_tensor(w, "a", KW_GGML_F32, 1, (uint64_t[]){64}, a, sizeof a);
    bytes_of(w, &b, &n);
    kw_error err;
    assert_int_equal(parse(b, n, &err), 0);
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(k ? k : 1); /* exact size, so ASan sees any over-read */
        memcpy(c, b, k);
        int rc = parse(c, k, &err);
        if (rc != KW_EFORMAT)
            fail_msg("prefix of %zu bytes: rc %d (%s)", k, rc, err.msg);
        assert_true(strstr(err.msg, "truncated") || strstr(err.msg, "but the file has") ||
                    strstr(err.msg, "remain") || strstr(err.msg, "not a GGUF") ||
                    strstr(err.msg, "cannot fit"));
        free(c);
    }
    free(b);
}

static void test_tensor_out_of_bounds_names_bytes(void **st)
{
    (void)st;
    uint8_t *b;
    size_t n;
    bytes_of(with_tensors(32, 0), &b, &n);
    kw_gguf *g;
    kw_error err = {0};
    assert_int_equal(kw_gguf_parse(b, n, "t.gguf", &g, &err), 0);
    size_t off = kw_gguf_data_offset(g);
    const kw_gguf_tensor *q = kw_gguf_find_tensor(g, "b.q8");
    char want[200];
    snprintf(want, sizeof want, "tensor 'b.q8' needs bytes [%zu, %zu) but the file has %zu",
             off + (size_t)q->offset, off + (size_t)q->offset + 68, n - 10);
    kw_gguf_free(g);
    expect_error(b, n - 10, want);
    free(b);
}

/* Patches the u32 that follows the first occurrence of `after` (e.g. a tensor name). */
static void patch_after(uint8_t *b, size_t n, const char *after, size_t skip, uint32_t v)
{
    /* after is a GGUF string: its u64 length is part of the pattern */
    uint8_t pat[72];
    uint64_t len = strlen(after);
    memcpy(pat, &len, 8);
    memcpy(pat + 8, after, len);
    uint8_t *p = memmem(b, n, pat, 8 + len);
    assert_non_null(p);
    memcpy(p + 8 + len + skip, &v, 4);
}

static void test_unknown_type_and_bad_values(void **st)
{
    (void)st;
    uint8_t *b;
    size_t n;
    /* tensor "a": name | u32 n_dims | 2 x u64 ne | u32 type */
    bytes_of(with_tensors(32, 0), &b, &n);
    patch_after(b, n, "a", 4 + 16, 10);
    expect_error(b, n, "tensor 'a' has ggml type 10 (Q2_K), which kvweave cannot read");
    patch_after(b, n, "a", 4 + 16, 77);
    expect_error(b, n, "ggml type 77 (?)");
    patch_after(b, n, "a", 0, 5);
    expect_error(b, n, "tensor 'a' has 5 dimensions; GGUF allows 1 to 4");
    free(b);
    bytes_of(with_tensors(32, 0), &b, &n);
    patch_after(b, n, "b.q8", 4, 16); /* ne[0] = 16: not a whole Q8_0 block */
    expect_error(b, n, "tensor 'b.q8': row length 16 is not a multiple of the Q8_0 block size 32");
    free(b);
    bytes_of(with_tensors(32, 0), &b, &n);
    patch_after(b, n, "b.q8", 4 + 24 + 4, 8); /* offset 8: misaligned */
    expect_error(b, n, "tensor 'b.q8': offset 8 is not a multiple of the alignment 32");
    free(b);

    kw_gw *w = kw_gw_new(3);
    kw_gw_u32(w, "k", 1);
    bytes_of(w, &b, &n);
    patch_after(b, n, "k", 0, 13);
    expect_error(b, n, "key 'k': value type 13 at offset");
    patch_after(b, n, "k", 0, KW_GGUF_BOOL);
    ((uint8_t *)memmem(b, n, "\1\0\0\0\0\0\0\0k", 9))[9 + 4] = 2;
    expect_error(b, n, "key 'k': bool value 2");
    free(b);

    w = kw_gw_new(1);
    bytes_of(w, &b, &n);
    expect_error(b, n, "GGUF version 1 is not supported");
    free(b);
    w = kw_gw_new(3);
    kw_gw_u32(w, "k", 1);
    kw_gw_u32(w, "k", 2);
    bytes_of(w, &b, &n);
    expect_error(b, n, "duplicate metadata key 'k'");
    free(b);
    w = kw_gw_new(3);
    kw_gw_u32(w, "general.alignment", 48);
    bytes_of(w, &b, &n);
    expect_error(b, n, "general.alignment must be a power of two (got uint32 48)");
    free(b);
}

static void test_huge_counts_and_lengths_are_rejected(void **st)
{
    (void)st;
    uint8_t *b;
    size_t n;
    kw_gw *w = kw_gw_new(3);
    kw_gw_str(w, "s", "abc");
    int32_t x[2] = {1, 2};
    kw_gw_arr(w, "a", KW_GGUF_I32, 2, x);
    bytes_of(w, &b, &n);
    uint64_t big = 1ull << 60;
    memcpy(b + 16, &big, 8); /* kv_count */
    expect_error(b, n, "metadata count 1152921504606846976 cannot fit");
    uint64_t two = 2;
    memcpy(b + 16, &two, 8);
    memcpy(b + 8, &big, 8); /* tensor_count */
    expect_error(b, n, "tensor count 1152921504606846976 cannot fit");
    uint64_t zero = 0;
    memcpy(b + 8, &zero, 8);
    uint8_t *s = memmem(b, n, "abc", 3);
    memcpy(s - 8, &big, 8); /* the string's length */
    expect_error(b, n, "claims 1152921504606846976 bytes");
    free(b);
    w = kw_gw_new(3);
    kw_gw_arr(w, "a", KW_GGUF_I32, 2, x);
    bytes_of(w, &b, &n);
    uint8_t *key = memmem(b, n, "\1\0\0\0\0\0\0\0a", 9);
    memcpy(key + 9 + 4 + 4, &big, 8); /* the array's length */
    expect_error(b, n, "key 'a': array of 1152921504606846976 int32");
    free(b);
}

static void test_open_names_the_path(void **st)
{
    (void)st;
    char dir[] = "/tmp/kw_gguf_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/page.gguf", dir);
    FILE *f = fopen(path, "w");
    fputs("<!DOCTYPE html><html>Not Found</html>", f);
    fclose(f);
    kw_gguf *g;
    kw_error err = {0};
    assert_int_equal(kw_gguf_open(path, &g, &err), KW_EFORMAT);
    assert_int_equal(strncmp(err.msg, path, strlen(path)), 0);
    assert_non_null(strstr(err.msg, "HTML page"));
    unlink(path);
    assert_int_equal(kw_gguf_open(path, &g, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    /* the tiny model opens through the mapping */
    kw_tiny_spec s = kw_tiny_default(7);
    assert_int_equal(kw_tiny_write_gguf(&s, path, &err), 0);
    assert_int_equal(kw_gguf_open(path, &g, &err), 0);
    assert_string_equal(kw_gguf_get_str(g, "general.architecture"), "llama");
    assert_int_equal(kw_gguf_n_tensors(g), kw_tiny_n_tensors(&s));
    kw_gguf_free(g);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_every_value_type_v3),
        cmocka_unit_test(test_reads_every_value_type_v2),
        cmocka_unit_test(test_tensor_infos_shapes_and_alignment),
        cmocka_unit_test(test_wrong_magic_and_html_and_empty),
        cmocka_unit_test(test_every_truncation_fails_cleanly),
        cmocka_unit_test(test_tensor_out_of_bounds_names_bytes),
        cmocka_unit_test(test_unknown_type_and_bad_values),
        cmocka_unit_test(test_huge_counts_and_lengths_are_rejected),
        cmocka_unit_test(test_open_names_the_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
