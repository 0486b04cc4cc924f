/* LongBench v1 metrics on hand-worked cases of each official definition, the quirks
 * included; the bulk comparison with the official Python is tests/eval/compare_metrics.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../operators/score/longbench_metrics.h"

static double metric(kw_lb_metric m, const char *pred, const char *ans,
                     const char *const *cls, int n)
{
    double s = -1;
    kw_error err = {0};
    assert_int_equal(kw_lb_metric_score(m, NULL, pred, ans, cls, n, &s, &err), 0);
    return s;
}

static void test_qa_f1_normalizes_and_counts_overlap(void **state)
{
    (void)state;
    /* "the cat sat." -> [cat, sat]; "A cat" -> [cat]: p = 1/2, r = 1 */
    double p = 0.5, r = 1.0;
    assert_true(metric(KW_LB_QA_F1, "The cat sat.", "A cat", NULL, 0) ==
                (2 * p * r) / (p + r));
    assert_true(metric(KW_LB_QA_F1, "anthem, theory", "the an a", NULL, 0) == 0.0);
    /* multiset: [x, x] vs [x]: same = 1 */
    p = 0.5, r = 1.0;
    assert_true(metric(KW_LB_QA_F1, "x x", "x", NULL, 0) == (2 * p * r) / (p + r));
    /* Unicode white space splits; U+0130 lowers to "i" + U+0307 */
    assert_true(metric(KW_LB_QA_F1, "a\xe3\x80\x80" "b", "B", NULL, 0) == 1.0);
    assert_true(metric(KW_LB_QA_F1, "\xc4\xb0", "i\xcc\x87", NULL, 0) == 1.0);
}

static void test_classification_skips_after_a_removal(void **state)
{
    (void)state;
    const char *cls[] = {"A", "B", "AB"};
    /* em = [A, B, AB]; A is removed, the iterator then skips B: [B, AB] -> 1/2 */
    assert_true(metric(KW_LB_CLASSIFICATION, "A B AB", "AB", cls, 3) == 0.5);
    const char *cls2[] = {"A", "AB", "B"};
    /* em = [A, AB, B]: A removed, AB skipped, B removed: [AB] -> 1 */
    assert_true(metric(KW_LB_CLASSIFICATION, "A B AB", "AB", cls2, 3) == 1.0);
    assert_true(metric(KW_LB_CLASSIFICATION, "nothing", "AB", cls, 3) == 0.0);
    double s;
    kw_error err = {0};
    assert_int_equal(kw_lb_metric_score(KW_LB_CLASSIFICATION, NULL, "A", "A", NULL, 0, &s, &err),
                     KW_EINVAL);
    assert_non_null(strstr(err.msg, "all_classes"));
}

static void test_retrieval_and_count_score_numbers(void **state)
{
    (void)state;
    assert_true(metric(KW_LB_RETRIEVAL, "Paragraph 3, not 13 or 3", "Paragraph 3", NULL, 0) ==
                2.0 / 3.0);
    assert_true(metric(KW_LB_RETRIEVAL_ZH, "\xe6\xae\xb5\xe8\x90\xbd" "7",
                       "\xe6\xae\xb5\xe8\x90\xbd" "7", NULL, 0) == 1.0);
    assert_true(metric(KW_LB_COUNT, "there are 4 or 5", "4", NULL, 0) == 0.5);
    assert_true(metric(KW_LB_COUNT, "none", "4", NULL, 0) == 0.0);
    double s;
    kw_error err = {0};
    assert_int_equal(kw_lb_metric_score(KW_LB_RETRIEVAL, NULL, "1", "no id here", NULL, 0, &s,
                                        &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "Paragraph "));
}

static void test_code_sim_uses_difflib_ratio_rounded_half_even(void **state)
{
    (void)state;
    kw_error err = {0};
    /* 2*5/16 = 0.625 -> 62.5 -> 62 (Python's round) */
    assert_int_equal(kw_fuzz_ratio("abcdefgh", "abcdexyz", &err), 62);
    assert_int_equal(kw_fuzz_ratio("", "", &err), 100);
    assert_int_equal(kw_fuzz_ratio("a", "", &err), 0);
    assert_true(metric(KW_LB_CODE_SIM, "\n\n# c\n// d\nreturn x", "return x", NULL, 0) == 1.0);
    /* autojunk: 'a' is popular in b (len 211 >= 200), only the 'b' matches: 2*1/212 */
    char a[16], b[256];
    memset(a, 'a', sizeof a), a[0] = 'b', a[11] = '\0';
    memset(b, 'a', 200), b[200] = 'b', b[201] = '\0';
    uint32_t ca[16], cb[256];
    for (int i = 0; i < 11; i++)
        ca[i] = (unsigned char)a[i];
    for (int i = 0; i < 201; i++)
        cb[i] = (unsigned char)b[i];
    assert_true(kw_seqmatch_ratio(ca, 11, cb, 201) == 2.0 * 1 / 212);
}

static void test_rouge_l_is_summary_level_over_distinct_words(void **state)
{
    (void)state;
    double f;
    kw_error err = {0};
    /* hyp [a b], [c]; ref [a c]: union LCS {a, c}; m = 2, n = 3 */
    assert_int_equal(kw_rouge_l("a b. c", "a c", KW_ROUGE_DEPTH_BUDGET, &f, &err), 0);
    double r = 2.0 / 2, p = 2.0 / 3;
    assert_true(f == 2.0 * ((p * r) / (p + r + 1e-8)));
    assert_int_equal(kw_rouge_l("...", "a", KW_ROUGE_DEPTH_BUDGET, &f, &err), 1);
    assert_true(metric(KW_LB_ROUGE, "", "a b", NULL, 0) == 0.0);
    /* a path longer than the recursion budget fails (0 in the scorer) */
    assert_int_equal(kw_rouge_l("a a a a", "a a a a", 4, &f, &err), 1);
    assert_int_equal(kw_rouge_l("a a a", "a a a", 4, &f, &err), 0);
}

static void test_scorer_cuts_first_line_takes_max_and_rounds(void **state)
{
    (void)state;
    const char *cls[] = {"Animal", "Food"};
    const char *ans[] = {"Food", "Animal"};
    double s;
    kw_error err = {0};
    assert_int_equal(kw_lb_sample_score("trec", NULL, "\n\nAnimal\nFood", ans, 2, cls, 2, &s,
                                        &err), 0);
    assert_true(s == 1.0);
    assert_int_equal(kw_lb_sample_score("nosuchtask", NULL, "x", ans, 1, NULL, 0, &s, &err),
                     KW_ENOTFOUND);
    double a[] = {1, 0, 0}, b[] = {0.5, 1}, c[] = {2.0 / 3};
    assert_true(kw_lb_task_score(a, 3) == 33.33);
    assert_true(kw_lb_task_score(b, 2) == 75.0);
    assert_true(kw_lb_task_score(c, 1) == 66.67);
    assert_true(kw_lb_task_score(NULL, 0) == 0.0);
    assert_true(kw_lb_task_no_chat("lcc") && !kw_lb_task_no_chat("qasper"));
}

static void test_metrics_reject_invalid_utf8_and_missing_jieba(void **state)
{
    (void)state;
    double s;
    kw_error err = {0};
    assert_int_equal(kw_lb_metric_score(KW_LB_QA_F1, NULL, "ok\xc3", "x", NULL, 0, &s, &err),
                     KW_EINVAL);
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_int_equal(kw_lb_metric_score(KW_LB_QA_F1_ZH, NULL, "x", "x", NULL, 0, &s, &err),
                     KW_EINVAL);
    assert_non_null(strstr(err.msg, "jieba"));
}

static void test_chinese_f1_uses_jieba_tokens(void **state)
{
    (void)state;
    kw_jieba *jb = NULL;
    kw_error err = {0};
    if (kw_jieba_open(NULL, &jb, &err) < 0)
        skip();
    double s;
    assert_int_equal(kw_lb_metric_score(KW_LB_QA_F1_ZH, jb, "\xe5\x8e\xa6\xe9\x97\xa8\xe5\xa4\xa7\xe5\xad\xa6\xe3\x80\x82",
                                        "\xe5\x8e\xa6\xe9\x97\xa8\xe5\xa4\xa7\xe5\xad\xa6", NULL, 0, &s, &err), 0);
    assert_true(s == 1.0); /* 厦门大学。 vs 厦门大学: the 。 token normalizes away */
    kw_jieba_free(jb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qa_f1_normalizes_and_counts_overlap),
        cmocka_unit_test(test_classification_skips_after_a_removal),
        cmocka_unit_test(test_retrieval_and_count_score_numbers),
        cmocka_unit_test(test_code_sim_uses_difflib_ratio_rounded_half_even),
        cmocka_unit_test(test_rouge_l_is_summary_level_over_distinct_words),
        cmocka_unit_test(test_scorer_cuts_first_line_takes_max_and_rounds),
        cmocka_unit_test(test_metrics_reject_invalid_utf8_and_missing_jieba),
        cmocka_unit_test(test_chinese_f1_uses_jieba_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
