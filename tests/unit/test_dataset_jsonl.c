/* The JSONL reader and the LongBench data helpers: records stream in order, every bad
 * line is named by file, line and byte offset (or skipped and counted), the selection is
 * seeded and deterministic, prompts fill like Python's str.format, and the real
 * multifieldqa_zh file reads clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../operators/dataset/jsonl_reader.h"
#include "../../operators/dataset/longbench_data.h"

static char tmp_path[64];

static const char *write_tmp(const char *s, size_t n)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/kw_jsonl_XXXXXX");
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, n), (ssize_t)n);
    close(fd);
    return tmp_path;
}

static int read_all(const char *path, bool skip, kw_jsonl_check_fn check, int64_t *n,
                    int64_t *skipped, kw_error *err)
{
    kw_jsonl_opts o = {.skip_bad = skip, .check = check};
    kw_jsonl *r;
    int rc = kw_jsonl_open(path, &o, &r, err);
    if (rc < 0)
        return rc;
    json_t *rec;
    while ((rc = kw_jsonl_next(r, &rec, err)) == 0)
        json_decref(rec);
    *n = kw_jsonl_records(r);
    *skipped = kw_jsonl_skipped(r);
    kw_jsonl_close(r);
    return rc;
}

static void test_jsonl_streams_records_in_order_skipping_blank_lines(void **state)
{
    (void)state;
    const char s[] = "{\"a\": 1}\n\n{\"a\": 2}\r\n  \n{\"a\": 3}";
    const char *p = write_tmp(s, sizeof s - 1);
    kw_jsonl *r;
    kw_error err = {0};
    assert_int_equal(kw_jsonl_open(p, NULL, &r, &err), 0);
    json_t *rec;
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(kw_jsonl_next(r, &rec, &err), 0);
        assert_int_equal(json_integer_value(json_object_get(rec, "a")), i);
        json_decref(rec);
    }
    assert_int_equal(kw_jsonl_line(r), 5);
    assert_int_equal(kw_jsonl_next(r, &rec, &err), KW_END);
    kw_jsonl_close(r);
    int64_t n, sk;
    assert_int_equal(kw_jsonl_count(p, NULL, &n, &sk, &err), 0);
    assert_int_equal(n, 3);
    unlink(p);
}

static void test_jsonl_bad_lines_name_line_and_byte_offset(void **state)
{
    (void)state;
    struct {
        const char *text;
        size_t len;
        const char *want;
    } c[] = {
        {"{\"a\": 1}\n{\"a\": }\n", 17, ":2:"},         /* bad JSON on line 2 */
        {"{\"a\": 1}\n[1, 2]\n", 16, "not a JSON object"},
        {"{\"a\": 1}\n{\"a\": \"\xff\"}\n", 20, "invalid UTF-8 (byte 0xff)"},
        {"{\"a\": 1}\n{\"a\": \"\xff\"}\n", 20, "byte offset 16"},
        {"{\"a\": 1, \"a\": 2}\n", 17, "duplicate"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        const char *p = write_tmp(c[i].text, c[i].len);
        int64_t n, sk;
        kw_error err = {0};
        assert_int_equal(read_all(p, false, NULL, &n, &sk, &err), KW_EPARSE);
        if (!strstr(err.msg, c[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, c[i].want);
        assert_non_null(strstr(err.msg, p));
        /* skip mode: the bad line is counted, the good ones read */
        assert_int_equal(read_all(p, true, NULL, &n, &sk, &err), KW_END);
        assert_int_equal(sk, 1);
        unlink(p);
    }
}

static void test_jsonl_empty_and_missing_files_are_errors(void **state)
{
    (void)state;
    int64_t n, sk;
    kw_error err = {0};
    const char *p = write_tmp("\n\n", 2);
    assert_int_equal(kw_jsonl_count(p, NULL, &n, &sk, &err), KW_EFORMAT);
    assert_non_null(strstr(err.msg, "no records"));
    unlink(p);
    p = write_tmp("", 0);
    assert_int_equal(kw_jsonl_count(p, NULL, &n, &sk, &err), KW_EFORMAT);
    unlink(p);
    assert_int_equal(kw_jsonl_count("/nonexistent/x.jsonl", NULL, &n, &sk, &err),
                     KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/x.jsonl"));
}

static void test_longbench_record_check_names_the_field(void **state)
{
    (void)state;
    const char *good = "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"], "
                       "\"length\": 3, \"dataset\": \"qasper\", \"language\": \"en\", "
                       "\"all_classes\": null, \"_id\": \"x\"}";
    char why[256];
    json_t *j = json_loads(good, 0, NULL);
    assert_int_equal(kw_lb_record_check(j, NULL, why, sizeof why), 0);
    struct {
        const char *key;
        json_t *val; /* NULL: delete */
        const char *want;
    } c[] = {
        {"answers", NULL, "'answers' is missing"},
        {"answers", json_string("a"), "'answers' must be an array"},
        {"answers", json_pack("[i]", 1), "'answers' item 0"},
        {"length", json_string("3"), "'length' must be an integer"},
        {"context", json_integer(1), "'context' must be a string"},
        {"all_classes", json_pack("[s,i]", "a", 2), "'all_classes' item 1"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        json_t *r = json_deep_copy(j);
        if (c[i].val)
            json_object_set_new(r, c[i].key, c[i].val);
        else
            json_object_del(r, c[i].key);
        assert_int_not_equal(kw_lb_record_check(r, NULL, why, sizeof why), 0);
        if (!strstr(why, c[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, why, c[i].want);
        json_decref(r);
    }
    /* through the reader: the field and the line are named */
    char file[600];
    snprintf(file, sizeof file, "%s\n{\"input\": 1}\n", good);
    const char *p = write_tmp(file, strlen(file));
    int64_t n, sk;
    kw_error err = {0};
    assert_int_equal(read_all(p, false, kw_lb_record_check, &n, &sk, &err), KW_EPARSE);
    assert_non_null(strstr(err.msg, ":2:"));
    assert_non_null(strstr(err.msg, "'input' must be a string"));
    unlink(p);
    json_decref(j);
}

static void test_selection_is_seeded_sorted_and_bounded(void **state)
{
    (void)state;
    int64_t *a, *b, na, nb;
    kw_error err = {0};
    kw_jsonl_pick p = {.offset = 10, .sample = 20, .seed = 42};
    assert_int_equal(kw_jsonl_select(100, &p, &a, &na, &err), 0);
    assert_int_equal(kw_jsonl_select(100, &p, &b, &nb, &err), 0);
    assert_int_equal(na, 20);
    assert_memory_equal(a, b, sizeof *a * 20);
    for (int i = 0; i < 20; i++) {
        assert_true(a[i] >= 10 && a[i] < 100);
        if (i)
            assert_true(a[i] > a[i - 1]);
    }
    free(b);
    p.seed = 43;
    assert_int_equal(kw_jsonl_select(100, &p, &b, &nb, &err), 0);
    assert_memory_not_equal(a, b, sizeof *a * 20);
    free(a), free(b);
    kw_jsonl_pick q = {.offset = 3, .limit = 4};
    assert_int_equal(kw_jsonl_select(5, &q, &a, &na, &err), 0);
    assert_int_equal(na, 2);
    assert_int_equal(a[0], 3);
    assert_int_equal(a[1], 4);
    free(a);
    kw_jsonl_pick bad = {.limit = -1};
    assert_int_equal(kw_jsonl_select(5, &bad, &a, &na, &err), KW_ERANGE);
}

static void test_prompt_fill_follows_str_format(void **state)
{
    (void)state;
    json_t *rec = json_pack("{s:s, s:s, s:i}", "context", "C", "input", "I", "length", 7);
    char *out;
    kw_error err = {0};
    assert_int_equal(kw_lb_prompt_fill("{{x}} {context}/{input} {length}", rec, &out, &err), 0);
    assert_string_equal(out, "{x} C/I 7");
    free(out);
    assert_int_equal(kw_lb_prompt_fill("{nope}", rec, &out, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "nope"));
    assert_int_equal(kw_lb_prompt_fill("{context", rec, &out, &err), KW_EINVAL);
    assert_int_equal(kw_lb_prompt_fill("a } b", rec, &out, &err), KW_EINVAL);
    json_decref(rec);
    char *t = kw_lb_task_from_path("/x/y/multifieldqa_zh.jsonl");
    assert_string_equal(t, "multifieldqa_zh");
    free(t);
}

static void test_real_multifieldqa_zh_reads_clean(void **state)
{
    (void)state;
    const char *data = getenv("KVWEAVE_DATA");
    char path[1024], pp[1024], mp[1024];
    snprintf(path, sizeof path, "%s/longbench/multifieldqa_zh.jsonl", data ? data : ".");
    snprintf(pp, sizeof pp, "%s/longbench/dataset2prompt.json", data ? data : ".");
    snprintf(mp, sizeof mp, "%s/longbench/dataset2maxlen.json", data ? data : ".");
    if (access(path, R_OK) != 0)
        skip();
    int64_t n, sk;
    kw_error err = {0};
    kw_jsonl_opts o = {.check = kw_lb_record_check};
    assert_int_equal(kw_jsonl_count(path, &o, &n, &sk, &err), 0);
    assert_int_equal(n, 200);
    assert_int_equal(sk, 0);
    kw_lb_tables tb;
    assert_int_equal(kw_lb_tables_load(pp, mp, "multifieldqa_zh", &tb, &err), 0);
    assert_int_equal(tb.max_new, 64);
    kw_jsonl *r;
    json_t *rec;
    assert_int_equal(kw_jsonl_open(path, &o, &r, &err), 0);
    assert_int_equal(kw_jsonl_next(r, &rec, &err), 0);
    char *prompt;
    assert_int_equal(kw_lb_prompt_fill(tb.prompt, rec, &prompt, &err), 0);
    assert_non_null(strstr(prompt, json_string_value(json_object_get(rec, "input"))));
    assert_true(strlen(prompt) > json_string_length(json_object_get(rec, "context")));
    free(prompt);
    json_decref(rec);
    kw_jsonl_close(r);
    kw_lb_tables_clear(&tb);
    assert_int_equal(kw_lb_tables_load(pp, mp, "no_such_task", &tb, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no_such_task"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_streams_records_in_order_skipping_blank_lines),
        cmocka_unit_test(test_jsonl_bad_lines_name_line_and_byte_offset),
        cmocka_unit_test(test_jsonl_empty_and_missing_files_are_errors),
        cmocka_unit_test(test_longbench_record_check_names_the_field),
        cmocka_unit_test(test_selection_is_seeded_sorted_and_bounded),
        cmocka_unit_test(test_prompt_fill_follows_str_format),
        cmocka_unit_test(test_real_multifieldqa_zh_reads_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
