/* RULER-style generation: sizing, needles, determinism, scores, bad input. Uses a fake
 * token counter (one token per 4 bytes) so the test needs no model; the model's own
 * tokenizer is exercised by the pipeline tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dataset/ruler_gen.h"
#include "kvweave/util.h"

static kw_ruler_res *res;

static int count4(void *ud, const char *text)
{
    (void)ud;
    return (int)((strlen(text) + 3) / 4);
}

static int setup(void **s)
{
    (void)s;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ruler", kw_data_dir());
    kw_error err = {0};
    if (kw_ruler_res_load(dir, &res, &err) < 0) {
        fprintf(stderr, "cannot load RULER data: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    res = kw_ruler_res_free(res);
    return 0;
}

static json_t *make(const char *task, int length, uint64_t seed, int64_t index)
{
    kw_ruler_gen g = {.res = res, .task = task, .length = length, .seed = seed,
                      .count = count4};
    kw_error err = {0};
    assert_int_equal(kw_ruler_fit(&g, &err), 0);
    json_t *rec = NULL;
    assert_int_equal(kw_ruler_make(&g, index, &rec, &err), 0);
    return rec;
}

static int count_occ(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_every_task_fits_its_length_tightly(void **s)
{
    (void)s;
    for (int i = 0; kw_ruler_tasks[i]; i++)
        for (int length = 1024; length <= 4096; length *= 4) {
            json_t *rec = make(kw_ruler_tasks[i], length, 3, 1);
            const char *in = json_string_value(json_object_get(rec, "input"));
            const char *ap = json_string_value(json_object_get(rec, "answer_prefix"));
            int max_new = (int)json_integer_value(json_object_get(rec, "max_new"));
            int n = count4(NULL, in) + count4(NULL, ap) + max_new;
            if (n > length || n < length * 0.85)
                fail_msg("%s at %d: %d tokens", kw_ruler_tasks[i], length, n);
            assert_true(json_array_size(json_object_get(rec, "outputs")) > 0);
            json_decref(rec);
        }
}

static void test_niah_needles_are_in_the_context_and_query_in_prefix(void **s)
{
    (void)s;
    const char *tasks[] = {"niah_single_1", "niah_single_2", "niah_single_3",
                           "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
                           "niah_multivalue", "niah_multiquery"};
    for (int t = 0; t < 8; t++) {
        json_t *rec = make(tasks[t], 2048, 11, 4);
        const char *in = json_string_value(json_object_get(rec, "input"));
        const char *ap = json_string_value(json_object_get(rec, "answer_prefix"));
        json_t *outs = json_object_get(rec, "outputs");
        size_t i;
        json_t *o;
        json_array_foreach(outs, i, o) {
            const char *v = json_string_value(o);
            assert_int_equal(count_occ(in, v), 1); /* each value exactly once */
        }
        int single = json_array_size(outs) == 1;
        assert_true(!strncmp(in, single ? "A special magic" : "Some special magic", 15));
        assert_non_null(strstr(ap, single ? " is" : " are"));
        json_decref(rec);
    }
}

static void test_generation_is_deterministic_per_seed_and_index(void **s)
{
    (void)s;
    json_t *a = make("niah_multikey_1", 1024, 5, 2), *b = make("niah_multikey_1", 1024, 5, 2);
    json_t *c = make("niah_multikey_1", 1024, 6, 2), *d = make("niah_multikey_1", 1024, 5, 3);
    assert_true(json_equal(a, b));
    assert_false(json_equal(json_object_get(a, "input"), json_object_get(c, "input")));
    assert_false(json_equal(json_object_get(a, "input"), json_object_get(d, "input")));
    json_decref(a), json_decref(b), json_decref(c), json_decref(d);
}

static void test_vt_chain_links_every_variable(void **s)
{
    (void)s;
    json_t *rec = make("vt", 2048, 1, 0);
    const char *in = json_string_value(json_object_get(rec, "input"));
    json_t *outs = json_object_get(rec, "outputs");
    assert_int_equal(json_array_size(outs), 5);
    char buf[64];
    for (size_t i = 1; i < 5; i++) {
        snprintf(buf, sizeof buf, "VAR %s = VAR %s ", json_string_value(json_array_get(outs, i)),
                 json_string_value(json_array_get(outs, i - 1)));
        assert_non_null(strstr(in, buf));
    }
    json_decref(rec);
}

static void test_cwe_common_words_are_repeated(void **s)
{
    (void)s;
    json_t *rec = make("cwe", 4096, 2, 0);
    const char *in = json_string_value(json_object_get(rec, "input"));
    const char *list = strrchr(in, '\n'); /* the question line is last; list before it */
    (void)list;
    json_t *outs = json_object_get(rec, "outputs");
    assert_int_equal(json_array_size(outs), 10);
    char buf[128];
    for (size_t i = 0; i < 10; i++) {
        snprintf(buf, sizeof buf, ". %s ", json_string_value(json_array_get(outs, i)));
        assert_true(count_occ(in, buf) >= 29); /* 30 times, the last maybe at the end */
    }
    json_decref(rec);
}

static void test_fwe_answers_are_the_most_frequent_codes(void **s)
{
    (void)s;
    json_t *rec = make("fwe", 4096, 9, 0);
    const char *in = json_string_value(json_object_get(rec, "input"));
    json_t *outs = json_object_get(rec, "outputs");
    char buf[32];
    int prev = 1 << 30;
    for (size_t i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, " %s", json_string_value(json_array_get(outs, i)));
        int c = count_occ(in, buf);
        assert_true(c > 0 && c <= prev);
        prev = c;
    }
    json_decref(rec);
}

static void test_sentence_splitter_keeps_abbreviations(void **s)
{
    (void)s;
    int *st, *ln;
    const char *t = "Mr. Smith went to Washington. He said \"hi!\" Then e.g. left? Yes";
    int n = kw_ruler_split_sentences(t, &st, &ln);
    assert_int_equal(n, 4);
    assert_int_equal(ln[0], (int)strlen("Mr. Smith went to Washington."));
    assert_int_equal(strncmp(t + st[1], "He said \"hi!\"", (size_t)ln[1]), 0);
    assert_int_equal(strncmp(t + st[3], "Yes", 3), 0);
    free(st), free(ln);
}

static void test_scores_follow_string_match_all_and_part(void **s)
{
    (void)s;
    const char *refs[] = {"1234567", "ABC-def"};
    assert_float_equal(kw_ruler_match_all("the numbers are 1234567 and abc-DEF", refs, 2), 1, 0);
    assert_float_equal(kw_ruler_match_all(" 1234567\x01", refs, 2), 0.5, 0);
    assert_float_equal(kw_ruler_match_part("nothing here", refs, 2), 0, 0);
    assert_float_equal(kw_ruler_match_part("x abc-def", refs, 2), 1, 0);
}

static void test_bad_inputs_name_the_problem(void **s)
{
    (void)s;
    kw_error err = {0};
    kw_ruler_gen g = {.res = res, .task = "niah_single_9", .length = 4096, .count = count4};
    assert_int_equal(kw_ruler_fit(&g, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "niah_single_9"));
    g.task = "niah_single_2";
    g.length = 100;
    assert_int_equal(kw_ruler_fit(&g, &err), KW_ERANGE);
    assert_non_null(strstr(err.msg, "length 100"));
    g.length = 2000000; /* more than the essay holds */
    assert_int_equal(kw_ruler_fit(&g, &err), KW_ERANGE);
    assert_non_null(strstr(err.msg, "too short"));
    kw_ruler_res *r2;
    assert_int_equal(kw_ruler_res_load("/nonexistent-dir", &r2, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "PaulGrahamEssays.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_task_fits_its_length_tightly),
        cmocka_unit_test(test_niah_needles_are_in_the_context_and_query_in_prefix),
        cmocka_unit_test(test_generation_is_deterministic_per_seed_and_index),
        cmocka_unit_test(test_vt_chain_links_every_variable),
        cmocka_unit_test(test_cwe_common_words_are_repeated),
        cmocka_unit_test(test_fwe_answers_are_the_most_frequent_codes),
        cmocka_unit_test(test_sentence_splitter_keeps_abbreviations),
        cmocka_unit_test(test_scores_follow_string_match_all_and_part),
        cmocka_unit_test(test_bad_inputs_name_the_problem),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
