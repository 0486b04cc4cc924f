/* The branches of a run (engine/cli/branches.h): which keys are a stage's, how keyed
 * stages group under their decode stage, branch names, columns and the reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "branches.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *in_tok[] = {"tok"};
static const char *in_gen_full[] = {"gen_full", "dataset"};
static const char *in_gen_snap[] = {"tok", "kv_snapkv_10"};
static const char *in_snap[] = {"gen_snapkv_10.generation", "dataset"};
static const char *in_xkv_budget[] = {"probe"};
static const char *in_kv_xkv[] = {"xkv_budget_10"};
static const char *in_gen_xkv[] = {"tok", "kv_xkv_10"};
static const char *in_xkv[] = {"gen_xkv_10", "dataset"};

/* The RULER budget sweep as gen_sweep.py writes it, small. */
static const kw_bstage ruler[] = {
    {"dataset", "dataset.ruler", NULL, 0},
    {"tok", "tokenize.chat", NULL, 0},
    {"gen_full", "decode.greedy", in_tok, 1},
    {"full", "score.ruler", in_gen_full, 2},
    {"probe", "mini_prefill.snap", in_tok, 1},
    {"kv_snapkv_10", "compress.snapkv", NULL, 0},
    {"gen_snapkv_10", "decode.greedy", in_gen_snap, 2},
    {"snapkv_10", "score.ruler", in_snap, 2},
    {"xkv_budget_10", "layer_budget.xkv", in_xkv_budget, 1},
    {"kv_xkv_10", "compress.snapkv", in_kv_xkv, 1},
    {"gen_xkv_10", "decode.greedy", in_gen_xkv, 2},
    {"xkv_10", "score.ruler", in_xkv, 2},
};

static const char *ruler_keys[] = {
    "full/score", "full/score/niah_single_1", "gen_full/gen/ttft_s",
    "gen_full/mem/pages_peak", "gen_snapkv_10/mem/pages_peak", "snapkv_10/score",
    "xkv_10/score", "gen_xkv_10/mem/pages_peak", "wall_s", "overlap",
};

static void test_branches_group_each_scorer_under_its_decode_stage(void **s)
{
    (void)s;
    kw_branches b;
    kw_error err = {0};
    assert_int_equal(kw__branches_build(&b, ruler, N(ruler), ruler_keys, N(ruler_keys), &err),
                     0);
    assert_int_equal(b.n, 3);
    assert_string_equal(b.v[0].name, "full");
    assert_string_equal(b.v[1].name, "snapkv_10");
    assert_string_equal(b.v[2].name, "xkv_10");
    /* the decode stage first, then the scorer; kvmethod stages have no keys */
    assert_int_equal(b.v[1].root, 6);
    assert_int_equal(b.v[1].n_stages, 2);
    assert_int_equal(b.v[1].stages[0], 6);
    assert_int_equal(b.v[1].stages[1], 7);
    assert_int_equal(b.keys[0].branch, 0);
    assert_string_equal(b.keys[0].column, "score");
    assert_string_equal(b.keys[1].column, "score/niah_single_1");
    assert_string_equal(b.keys[2].column, "gen/ttft_s");
    assert_int_equal(b.keys[4].branch, 1);
    assert_int_equal(b.keys[4].stage, 6);
    assert_string_equal(b.keys[4].column, "mem/pages_peak");
    assert_int_equal(b.keys[6].branch, 2);
    for (int k = 8; k < 10; k++) { /* run-level figures are no branch's */
        assert_int_equal(b.keys[k].branch, -1);
        assert_null(b.keys[k].column);
    }
    int ref = -1;
    assert_int_equal(kw__branches_reference(&b, ruler, NULL, &ref, &err), 0);
    assert_int_equal(ref, 0);
    kw__branches_clear(&b);
}

static void test_branches_name_what_stage_ids_share(void **s)
{
    (void)s;
    static const char *in_g[] = {"tok"}, *in_full[] = {"gen_full"}, *in_q[] = {"gen_quest_05"};
    const kw_bstage st[] = {
        {"tok", "tokenize.ids", NULL, 0},
        {"gen_full", "decode.fidelity", in_g, 1},
        {"full_fid", "score.fidelity", in_full, 1},
        {"full_ppl", "score.ppl", in_full, 1},
        {"gen_quest_05", "decode.fidelity", in_g, 1},
        {"quest_05_fid", "score.fidelity", in_q, 1},
        {"quest_05_ppl", "score.ppl", in_q, 1},
    };
    const char *keys[] = {"full_fid/kl", "full_ppl/ppl", "gen_full/gen/nll_mean",
                          "quest_05_fid/kl", "quest_05_ppl/ppl", "gen_quest_05/mem/pages_peak"};
    kw_branches b;
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.v[0].name, "full");
    assert_string_equal(b.v[1].name, "quest_05");
    assert_int_equal(b.v[1].n_stages, 3);
    assert_string_equal(b.keys[3].column, "kl");
    assert_string_equal(b.keys[4].column, "ppl");
    kw__branches_clear(&b);
}

static void test_branches_column_says_the_role_when_two_stages_give_one_key(void **s)
{
    (void)s;
    static const char *in_g[] = {"tok"}, *in_a[] = {"gen_a_25"};
    const kw_bstage st[] = {
        {"tok", "tokenize.raw", NULL, 0},
        {"gen_a_25", "decode.greedy", in_g, 1},
        {"a_25_fid", "t.judge", in_a, 1},
        {"a_25_ppl", "t.judge", in_a, 1},
        {"a_25", "t.judge", in_a, 1},
    };
    const char *keys[] = {"a_25_fid/score", "a_25_ppl/score", "a_25_ppl/hits",
                          "gen_a_25/gen/n_gen", "a_25/score"};
    kw_branches b;
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    assert_int_equal(b.n, 1);
    assert_string_equal(b.v[0].name, "a_25");
    assert_string_equal(b.keys[0].column, "fid:score");
    assert_string_equal(b.keys[1].column, "ppl:score");
    assert_string_equal(b.keys[2].column, "hits");
    /* the stage named as its branch keeps the plain key */
    assert_string_equal(b.keys[4].column, "score");
    kw__branches_clear(&b);
}

static void test_branches_none_when_one_decode_and_one_scorer_of_a_kind(void **s)
{
    (void)s;
    static const char *in_g[] = {"tok"}, *in_s[] = {"gen", "dataset"};
    const kw_bstage st[] = {
        {"dataset", "dataset.ruler", NULL, 0},
        {"tok", "tokenize.chat", NULL, 0},
        {"gen", "decode.greedy", in_g, 1},
        {"score", "score.ruler", in_s, 2},
    };
    /* the quickstart's keys: "gen/..." and "score/<task>" are not keyed by stage */
    const char *keys[] = {"score", "score/niah_single_1", "gen/ttft_s", "mem/pages_peak"};
    kw_branches b;
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    assert_int_equal(b.n, 0);
    for (int k = 0; k < N(keys); k++)
        assert_int_equal(b.keys[k].branch, -1);
    int ref = -1;
    assert_int_equal(kw__branches_reference(&b, st, NULL, &ref, NULL), 1);
    kw__branches_clear(&b);
}

static void test_branches_of_scorers_alone_and_without_wiring(void **s)
{
    (void)s;
    /* two scorers of one operator, no decode stage, wiring unknown: one branch each */
    const kw_bstage st[] = {
        {"dataset", "t.count", NULL, 0},
        {"s_full", "t.score", NULL, 0},
        {"s_half", "t.score", NULL, 0},
        {"gen_a", "t.gen", NULL, 0},
        {"gen_b", "t.gen", NULL, 0},
        {"a", "t.judge", NULL, 0},
    };
    const char *keys[] = {"s_half/score", "s_full/score", "s_full/x", "gen_a/mem/p",
                          "gen_b/mem/p", "a/score"};
    kw_branches b;
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    /* "a" is a t.judge used once: its keys are not keyed by stage */
    assert_int_equal(b.n, 4);
    assert_string_equal(b.v[0].name, "s_full");
    assert_int_equal(b.v[0].root, -1);
    assert_string_equal(b.v[1].name, "s_half");
    assert_string_equal(b.v[2].name, "gen_a");
    assert_int_equal(b.v[2].root, 3);
    assert_int_equal(b.keys[5].branch, -1);
    kw__branches_clear(&b);
}

static void test_branches_a_scorer_of_two_decode_stages_is_its_own(void **s)
{
    (void)s;
    static const char *in_g[] = {"tok"}, *in_both[] = {"gen_x", "gen_y"},
                      *in_x[] = {"gen_x"};
    /* the scorer comes first in the pipeline: its root still leads its branch */
    const kw_bstage st[] = {
        {"tok", "tokenize.raw", NULL, 0},
        {"x", "t.judge", in_x, 1},
        {"both", "t.judge", in_both, 2},
        {"gen_x", "t.gen", in_g, 1},
        {"gen_y", "t.gen", in_g, 1},
    };
    const char *keys[] = {"x/score", "both/score", "gen_x/gen/n_gen", "gen_y/gen/n_gen"};
    kw_branches b;
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    assert_int_equal(b.n, 3);
    assert_string_equal(b.v[0].name, "gen_x"); /* "x" alone is too short a name */
    assert_int_equal(b.v[0].root, 3);
    assert_int_equal(b.v[0].n_stages, 2);
    assert_int_equal(b.v[0].stages[0], 3);
    assert_int_equal(b.v[0].stages[1], 1);
    assert_string_equal(b.v[1].name, "both");
    assert_int_equal(b.v[1].root, -1);
    assert_string_equal(b.v[2].name, "gen_y");
    kw__branches_clear(&b);
}

static void test_branches_fall_back_to_stage_ids_when_names_clash(void **s)
{
    (void)s;
    static const char *in_g[] = {"tok"}, *in_1[] = {"m_1"}, *in_a[] = {"gen_k1"},
                      *in_b[] = {"run_k1"};
    const kw_bstage st[] = {
        {"tok", "tokenize.raw", NULL, 0},
        {"m_1", "t.gen", in_g, 1},
        {"x_1", "t.judge", in_1, 1},
        {"gen_k1", "t.gen", in_g, 1},
        {"k1_s", "t.judge", in_a, 1},
        {"run_k1", "t.gen", in_g, 1},
        {"k1_t", "t.judge", in_b, 1},
    };
    const char *keys[] = {"m_1/gen/n", "x_1/s", "gen_k1/gen/n", "k1_s/s", "run_k1/gen/n",
                          "k1_t/s"};
    kw_branches b;
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    assert_int_equal(b.n, 3);
    /* m_1 and x_1 share "_1", "1" once trimmed: too short, so the root's id */
    assert_string_equal(b.v[0].name, "m_1");
    /* both other branches would be "k1": each takes its root's id */
    assert_string_equal(b.v[1].name, "gen_k1");
    assert_string_equal(b.v[2].name, "run_k1");
    kw__branches_clear(&b);
}

static void test_branches_reference_by_name_stage_or_prefix(void **s)
{
    (void)s;
    kw_branches b;
    kw_error err = {0};
    assert_int_equal(kw__branches_build(&b, ruler, N(ruler), ruler_keys, N(ruler_keys), &err),
                     0);
    int ref = -1;
    assert_int_equal(kw__branches_reference(&b, ruler, "snapkv_10", &ref, &err), 0);
    assert_int_equal(ref, 1);
    assert_int_equal(kw__branches_reference(&b, ruler, "gen_xkv_10", &ref, &err), 0);
    assert_int_equal(ref, 2);
    assert_int_equal(kw__branches_reference(&b, ruler, "snap", &ref, &err), 0);
    assert_int_equal(ref, 1);
    assert_int_equal(kw__branches_reference(&b, ruler, "h2o", &ref, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no branch or stage 'h2o' (branches: full, snapkv_10, "
                                    "xkv_10)"));
    kw__branches_clear(&b);

    /* two names hold "full" and none is "full": ambiguous without --reference */
    static const char *in_g[] = {"tok"}, *in_a[] = {"gen_full_a"}, *in_b[] = {"gen_full_b"};
    const kw_bstage st[] = {
        {"tok", "tokenize.raw", NULL, 0},
        {"gen_full_a", "t.gen", in_g, 1},
        {"full_a", "t.judge", in_a, 1},
        {"gen_full_b", "t.gen", in_g, 1},
        {"full_b", "t.judge", in_b, 1},
    };
    const char *keys[] = {"gen_full_a/gen/n", "full_a/s", "gen_full_b/gen/n", "full_b/s"};
    assert_int_equal(kw__branches_build(&b, st, N(st), keys, N(keys), NULL), 0);
    assert_string_equal(b.v[0].name, "full_a");
    assert_int_equal(kw__branches_reference(&b, st, NULL, &ref, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "several branches contain 'full'"));
    assert_int_equal(kw__branches_reference(&b, st, "full", &ref, &err), KW_EINVAL);
    assert_int_equal(kw__branches_reference(&b, st, "full_b", &ref, &err), 0);
    assert_int_equal(ref, 1);
    kw__branches_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_branches_group_each_scorer_under_its_decode_stage),
        cmocka_unit_test(test_branches_name_what_stage_ids_share),
        cmocka_unit_test(test_branches_column_says_the_role_when_two_stages_give_one_key),
        cmocka_unit_test(test_branches_none_when_one_decode_and_one_scorer_of_a_kind),
        cmocka_unit_test(test_branches_of_scorers_alone_and_without_wiring),
        cmocka_unit_test(test_branches_a_scorer_of_two_decode_stages_is_its_own),
        cmocka_unit_test(test_branches_fall_back_to_stage_ids_when_names_clash),
        cmocka_unit_test(test_branches_reference_by_name_stage_or_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
