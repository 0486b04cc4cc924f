/* jieba segmenter: known cuts on the installed dictionary (skipped without the data),
 * broken data files and broken text give clear errors. The full comparison with
 * python3-jieba is tests/eval/compare_jieba.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kvweave/util.h"
#include "../../operators/score/jieba.h"

static kw_jieba *open_or_skip(void)
{
    kw_jieba *jb = NULL;
    kw_error err = {0};
    if (kw_jieba_open(NULL, &jb, &err) < 0) {
        fprintf(stderr, "skipping: %s\n", err.msg);
        skip();
    }
    return jb;
}

/* "|"-joined tokens of text. */
static char *cut_joined(const kw_jieba *jb, const char *text)
{
    kw_jieba_spans sp = {0};
    kw_error err = {0};
    assert_int_equal(kw_jieba_cut(jb, text, strlen(text), &sp, &err), 0);
    char *o = calloc(strlen(text) + sp.n + 1, 1);
    for (size_t i = 0; i < sp.n; i++) {
        if (i)
            strcat(o, "|");
        strncat(o, text + sp.v[i].off, sp.v[i].len);
    }
    kw_jieba_spans_clear(&sp);
    return o;
}

static void test_jieba_cuts_dictionary_words_and_hmm_words(void **state)
{
    (void)state;
    kw_jieba *jb = open_or_skip();
    struct {
        const char *in, *want;
    } c[] = {
        {"我来到北京清华大学", "我|来到|北京|清华大学"},
        {"他来到了网易杭研大厦", "他|来到|了|网易|杭研|大厦"}, /* 杭研: HMM */
        {"", ""},
        {"a b\r\nc", "a| |b|\r\n|c"},
        {"价格3.5%的AT&T", "价格|3.5%|的|AT&T"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        char *got = cut_joined(jb, c[i].in);
        assert_string_equal(got, c[i].want);
        free(got);
    }
    assert_true(kw_jieba_freq(jb, "北京", strlen("北京")) > 0);
    assert_int_equal(kw_jieba_freq(jb, "北京大学研究生院没有的词", 36), -1);
    kw_jieba_free(jb);
}

static void test_jieba_rejects_invalid_utf8_with_offset(void **state)
{
    (void)state;
    kw_jieba *jb = open_or_skip();
    kw_jieba_spans sp = {0};
    kw_error err = {0};
    const char bad[] = "ab\xff";
    assert_int_equal(kw_jieba_cut(jb, bad, 3, &sp, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "byte 2"));
    kw_jieba_spans_clear(&sp);
    kw_jieba_free(jb);
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void test_jieba_small_dictionary_routes_by_frequency(void **state)
{
    (void)state;
    char dir[] = "/tmp/kw_jieba_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256];
    snprintf(p, sizeof p, "%s/dict.txt", dir);
    write_file(p, "ab 1000 n\nc 1000 n\na 1 n\nb 1 n\nxyz 5\n");
    snprintf(p, sizeof p, "%s/hmm.tsv", dir);
    write_file(p, "start B -0.5\nstart S -1.0\ntrans B E -0.5\n");
    kw_jieba *jb = NULL;
    kw_error err = {0};
    assert_int_equal(kw_jieba_open(dir, &jb, &err), 0);
    char *got = cut_joined(jb, "abc");
    assert_string_equal(got, "ab|c");
    free(got);
    assert_int_equal(kw_jieba_freq(jb, "xy", 2), 0); /* a prefix */
    kw_jieba_free(jb);
    /* broken files name the file and the line */
    snprintf(p, sizeof p, "%s/dict.txt", dir);
    write_file(p, "ab 1000 n\nnofrequency\n");
    assert_int_equal(kw_jieba_open(dir, &jb, &err), KW_EFORMAT);
    assert_non_null(strstr(err.msg, "dict.txt:2"));
    write_file(p, "ab 1000 n\n");
    snprintf(p, sizeof p, "%s/hmm.tsv", dir);
    write_file(p, "start B -0.5\nbogus line\n");
    assert_int_equal(kw_jieba_open(dir, &jb, &err), KW_EFORMAT);
    assert_non_null(strstr(err.msg, "hmm.tsv:2"));
    snprintf(p, sizeof p, "%s/dict.txt", dir);
    unlink(p);
    assert_int_equal(kw_jieba_open(dir, &jb, &err), KW_ENOTFOUND);
    snprintf(p, sizeof p, "%s/hmm.tsv", dir);
    unlink(p);
    rmdir(dir);
}

static void test_jieba_dictionary_loads_fast(void **state)
{
    (void)state;
    kw_jieba *jb = open_or_skip();
    kw_jieba_free(jb);
    double t = kw_now();
    kw_error err = {0};
    assert_int_equal(kw_jieba_open(NULL, &jb, &err), 0);
    t = kw_now() - t;
    fprintf(stderr, "jieba data loaded in %.3f s\n", t);
    assert_true(t < 2.0); /* target < 0.5 s; loose here for loaded machines */
    kw_jieba_free(jb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jieba_cuts_dictionary_words_and_hmm_words),
        cmocka_unit_test(test_jieba_rejects_invalid_utf8_with_offset),
        cmocka_unit_test(test_jieba_small_dictionary_routes_by_frequency),
        cmocka_unit_test(test_jieba_dictionary_loads_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
