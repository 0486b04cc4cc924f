/* Pipeline parser: YAML -> description (names, raw values, places), limits, --set and
 * sweep cells. No operator is resolved here (graph tests do that). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph.h"
#include "pdesc.h"

static int parse(const char *text, kw_pdesc **d, kw_error *e)
{
    memset(e, 0, sizeof *e);
    return kw_pipeline_parse("p.yaml", text, strlen(text), d, e);
}

static const char *good =
    "name: demo\n"                                                   /* 1 */
    "model: m\n"                                                     /* 2 */
    "dataset: { op: test.source, with: { n: 5 } }\n"                 /* 3 */
    "stages:\n"                                                      /* 4 */
    "  - { id: tok, op: test.tok, with: { system: no, x: '5' } }\n"  /* 5 */
    "  - id: gen\n"                                                  /* 6 */
    "    op: test.gen\n"                                             /* 7 */
    "    in: [tok, evict.method]\n"                                  /* 8 */
    "    with: { max_new: 32, list: [1, 2] }\n"                      /* 9 */
    "sweep: { gen.max_new: [16, 32], tok.system: [a, b, c] }\n";     /* 10 */

static void test_parse_keeps_names_places_and_styles(void **st)
{
    (void)st;
    kw_pdesc *d;
    kw_error e;
    assert_int_equal(parse(good, &d, &e), 0);
    assert_string_equal(kw_pdesc_name(d), "demo");
    assert_int_equal(d->n_stages, 3);
    assert_true(d->has_dataset);
    assert_string_equal(d->stages[0].id, "dataset");
    assert_string_equal(d->stages[0].op, "test.source");
    assert_string_equal(d->stages[1].id, "tok");
    assert_int_equal(d->stages[1].op_line, 5);
    assert_int_equal(d->stages[1].op_col, 20);
    const kw_pkv *sys = kw__pkv_find(d->stages[1].with, d->stages[1].n_with, "system");
    assert_non_null(sys);
    assert_string_equal(sys->val->text, "no"); /* raw text, not a YAML 1.1 boolean */
    assert_false(sys->val->quoted);
    const kw_pkv *x = kw__pkv_find(d->stages[1].with, d->stages[1].n_with, "x");
    assert_true(x->val->quoted);
    assert_int_equal(x->val->line, 5);
    assert_int_equal(x->val->col, 53);
    const kw_pstage *g = &d->stages[2];
    assert_int_equal(g->n_in, 2);
    assert_string_equal(g->in[1].text, "evict.method");
    assert_int_equal(g->in[1].line, 8);
    assert_int_equal(g->in[1].col, 15);
    const kw_pkv *l = kw__pkv_find(g->with, g->n_with, "list");
    assert_int_equal(l->val->kind, KW_Y_SEQ);
    assert_int_equal(l->val->n, 2);
    assert_false(d->stages[1].has_in);
    assert_int_equal(kw_pdesc_sweep_cells(d), 6);
    kw_pdesc_free(d);
}

static void test_sweep_cells_are_the_grid_in_order(void **st)
{
    (void)st;
    kw_pdesc *d, *c;
    kw_error e;
    assert_int_equal(parse(good, &d, &e), 0);
    static const char *const labels[] = {
        "gen.max_new=16,tok.system=a", "gen.max_new=16,tok.system=b",
        "gen.max_new=16,tok.system=c", "gen.max_new=32,tok.system=a",
        "gen.max_new=32,tok.system=b", "gen.max_new=32,tok.system=c",
    };
    for (int i = 0; i < 6; i++) {
        assert_string_equal(kw_pdesc_cell_label(d, i), labels[i]);
        assert_int_equal(kw_pdesc_sweep_cell(d, i, &c, &e), 0);
        assert_int_equal(c->n_sweep, 0);
        assert_string_equal(c->cell_label, labels[i]);
        const kw_pkv *mn = kw__pkv_find(c->stages[2].with, c->stages[2].n_with, "max_new");
        const kw_pkv *sy = kw__pkv_find(c->stages[1].with, c->stages[1].n_with, "system");
        assert_string_equal(mn->val->text, i < 3 ? "16" : "32");
        assert_int_equal(mn->val->line, 10); /* the place of the sweep value */
        static const char *const sys[] = {"a", "b", "c"};
        assert_string_equal(sy->val->text, sys[i % 3]);
        kw_pdesc_free(c);
    }
    assert_int_equal(kw_pdesc_sweep_cell(d, 6, &c, &e), KW_ERANGE);
    assert_null(c);
    kw_pdesc_free(d);
}

static void test_set_overrides_and_replaces_a_sweep_axis(void **st)
{
    (void)st;
    kw_pdesc *d, *c;
    kw_error e;
    assert_int_equal(parse(good, &d, &e), 0);
    assert_int_equal(kw_pdesc_set(d, "gen.max_new", "64", &e), 0);
    assert_int_equal(kw_pdesc_sweep_cells(d), 3);
    assert_int_equal(kw_pdesc_set(d, "tok.template", "'llama3'", &e), 0);
    assert_int_equal(kw_pdesc_set(d, "gen.list", "[4, 5, 6]", &e), 0);
    assert_int_equal(kw_pdesc_set(d, "run.seed", "9", &e), 0);
    assert_int_equal(kw_pdesc_set(d, "model", "other", &e), 0);
    assert_int_equal(kw_pdesc_sweep_cell(d, 2, &c, &e), 0);
    const kw_pkv *mn = kw__pkv_find(c->stages[2].with, c->stages[2].n_with, "max_new");
    assert_string_equal(mn->val->text, "64");
    assert_int_equal(mn->val->line, 0);
    assert_string_equal(mn->origin, "--set gen.max_new");
    const kw_pkv *t = kw__pkv_find(c->stages[1].with, c->stages[1].n_with, "template");
    assert_true(t->val->quoted);
    const kw_pkv *l = kw__pkv_find(c->stages[2].with, c->stages[2].n_with, "list");
    assert_int_equal(l->val->n, 3);
    assert_string_equal(c->model.val->text, "other");
    assert_string_equal(kw__pkv_find(c->run, c->n_run, "seed")->val->text, "9");
    kw_pdesc_free(c);
    assert_int_equal(kw_pdesc_set(d, "nope.x", "1", &e), KW_ENOTFOUND);
    assert_non_null(strstr(e.msg, "'nope.x'"));
    assert_int_equal(kw_pdesc_set(d, "run.sede", "1", &e), KW_ENOTFOUND);
    assert_int_equal(kw_pdesc_set(d, "justaword", "1", &e), KW_EINVAL);
    assert_int_equal(kw_pdesc_set(d, "gen.max_new", "{a: 1}", &e), KW_EINVAL);
    assert_int_equal(kw_pdesc_set(d, "gen.max_new", "[1, ", &e), KW_EPARSE);
    assert_non_null(strstr(e.msg, "--set gen.max_new"));
    kw_pdesc_free(d);
}

static void expect_error(const char *text, int code, const char *needle)
{
    kw_pdesc *d = (kw_pdesc *)1;
    kw_error e;
    int rc = parse(text, &d, &e);
    if (rc != code || !strstr(e.msg, needle))
        fail_msg("want %d with \"%s\", got %d: %s", code, needle, rc, e.msg);
    assert_null(d);
    assert_int_equal(e.code, code);
}

static void test_empty_and_comment_only_files_are_errors(void **st)
{
    (void)st;
    expect_error("", KW_EPARSE, "p.yaml: empty pipeline");
    expect_error("# nothing\n\n", KW_EPARSE, "p.yaml: empty pipeline");
}

static void test_not_yaml_gives_the_place(void **st)
{
    (void)st;
    expect_error("name: x\nstages: [ {id: a\n", KW_EPARSE, "p.yaml:3:1: not valid YAML");
    expect_error("name: x\n  bad: indent\n", KW_EPARSE, "p.yaml:2:");
    expect_error("name: \xc3\x28 garbage\n", KW_EPARSE, "not valid YAML");
    expect_error("just a sentence\n", KW_ETYPE, "p.yaml:1:1: the pipeline must be a mapping");
    expect_error("name: a\n---\nname: b\n", KW_EPARSE, "second");
}

static void test_structure_errors_name_key_and_place(void **st)
{
    (void)st;
    expect_error("name: a\nstagse: []\n", KW_ENOTFOUND,
                 "p.yaml:2:1: unknown key 'stagse' in the pipeline (did you mean 'stages'?)");
    expect_error("name: a\nstages:\n  - { id: a, op: x }\n  - { id: a, op: y }\n", KW_EINVAL,
                 "p.yaml:4:5: duplicate stage id 'a' (first at line 3)");
    expect_error("name: a\nname: b\n", KW_EPARSE, "p.yaml:2:1: duplicate key 'name'");
    expect_error("name: a\nstages: [{ op: x }]\n", KW_EINVAL, "needs `id:`");
    expect_error("name: a\nstages: [{ id: a }]\n", KW_EINVAL, "needs `op:`");
    expect_error("name: a\nstages: [{ id: a.b, op: x }]\n", KW_EINVAL, "may only hold");
    expect_error("name: a\nstages: [{ id: a, op: x, whit: {} }]\n", KW_ENOTFOUND,
                 "did you mean 'with'?");
    expect_error("name: a\nstages: {}\n", KW_ETYPE, "`stages:` must be a list");
    expect_error("stages: [{ id: a, op: x }]\n", KW_EINVAL, "needs `name:`");
    expect_error("name: a\n", KW_EINVAL, "no stages");
    expect_error("name: a\nrun: { seeds: 1 }\nstages: [{ id: a, op: x }]\n", KW_ENOTFOUND,
                 "did you mean 'seed'?");
    expect_error("name: a\nstages: [{ id: a, op: x }]\nsweep: { b.c: [1] }\n", KW_ENOTFOUND,
                 "p.yaml:3:10: sweep key 'b.c'");
    expect_error("name: a\nstages: [{ id: a, op: x }]\nsweep: { a.c: [] }\n", KW_EINVAL,
                 "has no values");
    expect_error("name: a\nstages: [{ id: a, op: !!python/object x }]\n", KW_EPARSE,
                 "unsupported tag");
    expect_error("name: *nope\n", KW_EPARSE, "unknown alias");
}

static void test_aliases_within_limits_are_copied(void **st)
{
    (void)st;
    const char *t = "name: a\n"
                    "stages:\n"
                    "  - { id: a, op: x, with: &w { n: 3, l: [1, 2] } }\n"
                    "  - { id: b, op: x, with: *w }\n";
    kw_pdesc *d;
    kw_error e;
    assert_int_equal(parse(t, &d, &e), 0);
    assert_int_equal(d->stages[1].n_with, 2);
    assert_string_equal(kw__pkv_find(d->stages[1].with, 2, "n")->val->text, "3");
    assert_int_equal(kw__pkv_find(d->stages[1].with, 2, "l")->val->n, 2);
    kw_pdesc_free(d);
}

static void test_billion_laughs_fails_fast_with_elimit(void **st)
{
    (void)st;
    char t[4096];
    size_t n = (size_t)sprintf(t, "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (int i = 1; i < 10; i++)
        n += (size_t)sprintf(t + n, "a%d: &a%d [*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d]\n",
                             i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    clock_t t0 = clock();
    expect_error(t, KW_ELIMIT, "document too large");
    assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 2.0);
}

static void test_alias_count_depth_and_size_limits(void **st)
{
    (void)st;
    size_t cap = 64 + 8 * (KW_PIPELINE_MAX_ALIASES + 10);
    char *t = malloc(cap);
    size_t n = (size_t)sprintf(t, "x: &x 1\ny: [");
    for (int i = 0; i <= KW_PIPELINE_MAX_ALIASES; i++)
        n += (size_t)sprintf(t + n, "*x,");
    sprintf(t + n, "]\n");
    expect_error(t, KW_ELIMIT, "too many aliases: more than 256");
    free(t);

    char deep[512];
    n = (size_t)sprintf(deep, "a: ");
    for (int i = 0; i < KW_PIPELINE_MAX_DEPTH + 5; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    expect_error(deep, KW_ELIMIT, "nesting too deep: more than 64 levels");

    size_t big = (size_t)KW_PIPELINE_MAX_BYTES + 1;
    char *b = malloc(big);
    memset(b, ' ', big);
    kw_pdesc *d = (kw_pdesc *)1;
    kw_error e = {0};
    assert_int_equal(kw_pipeline_parse("big.yaml", b, big, &d, &e), KW_ELIMIT);
    assert_non_null(strstr(e.msg, "big.yaml: file too large: 4194305 bytes, the limit is "
                                  "4194304"));
    assert_null(d);
    free(b);
}

static void test_null_values_mean_not_given(void **st)
{
    (void)st;
    kw_pdesc *d;
    kw_error e;
    const char *t = "name: n\nmodel: ~\nrun:\nsweep: null\nstages:\n"
                    "  - { id: a, op: x, with: , in: ~ }\n";
    assert_int_equal(parse(t, &d, &e), 0);
    assert_null(d->model.val);
    assert_int_equal(d->n_run, 0);
    assert_int_equal(d->n_sweep, 0);
    assert_int_equal(d->stages[0].n_with, 0);
    assert_int_equal(d->stages[0].n_in, 0);
    assert_true(d->stages[0].has_in);
    kw_pdesc_free(d);
}

static void test_load_reports_missing_file(void **st)
{
    (void)st;
    kw_pdesc *d;
    kw_error e = {0};
    assert_int_equal(kw_pipeline_load("/nonexistent/p.yaml", &d, &e), KW_ENOTFOUND);
    assert_non_null(strstr(e.msg, "/nonexistent/p.yaml"));
}

static void test_value_text_round_trips_flow_form(void **st)
{
    (void)st;
    kw_ynode *v;
    kw_error e = {0};
    assert_int_equal(kw__ynode_parse_value("--set k", "[1, 'a', [2, 3]]", &v, &e), 0);
    char *s = kw__ynode_text(v);
    assert_string_equal(s, "[1, \"a\", [2, 3]]");
    free(s);
    kw__ynode_free(v);
    assert_int_equal(kw__ynode_parse_value("--set k", "", &v, &e), 0);
    assert_int_equal(v->kind, KW_Y_SCALAR);
    assert_string_equal(v->text, "");
    kw__ynode_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_keeps_names_places_and_styles),
        cmocka_unit_test(test_sweep_cells_are_the_grid_in_order),
        cmocka_unit_test(test_set_overrides_and_replaces_a_sweep_axis),
        cmocka_unit_test(test_empty_and_comment_only_files_are_errors),
        cmocka_unit_test(test_not_yaml_gives_the_place),
        cmocka_unit_test(test_structure_errors_name_key_and_place),
        cmocka_unit_test(test_aliases_within_limits_are_copied),
        cmocka_unit_test(test_billion_laughs_fails_fast_with_elimit),
        cmocka_unit_test(test_alias_count_depth_and_size_limits),
        cmocka_unit_test(test_null_values_mean_not_given),
        cmocka_unit_test(test_load_reports_missing_file),
        cmocka_unit_test(test_value_text_round_trips_flow_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
