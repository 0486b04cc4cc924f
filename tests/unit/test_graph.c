/* Graph builder: operators resolved from the fake-operator plug-in (testops.c), params
 * typed against their schemas, ports wired and checked, cycles, phases, describe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "registry.h"

static kw_registry *reg;

static int setup(void **st)
{
    (void)st;
    kw_error e = {0};
    if (kw_registry_new(NULL, &reg, &e) < 0 ||
        kw_registry_load_plugin(reg, KW_TEST_KWTESTOPS, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    reg = kw_registry_free(reg);
    return 0;
}

/* The calibration example: dataset -> tok -> probe -> budget (reduce) -> evict -> gen. */
static const char *calib =
    "name: calib\n"                                                               /* 1 */
    "model: m\n"                                                                  /* 2 */
    "dataset: { op: test.source, with: { n: 20 } }\n"                             /* 3 */
    "run: { seed: 7, limit: 5 }\n"                                                /* 4 */
    "stages:\n"                                                                   /* 5 */
    "  - { id: tok, op: test.tok, with: { system: no, template: llama3 } }\n"     /* 6 */
    "  - { id: probe, op: test.probe, in: [tok] }\n"                              /* 7 */
    "  - { id: budget, op: test.budget, in: [probe], with: { total: 0x100, layers: [0, 2] } }\n"
    "  - { id: evict, op: test.evict, in: [budget] }\n"                           /* 9 */
    "  - { id: gen, op: test.gen, in: [evict, tok], with: { seed_offset: -3 } }\n" /* 10 */
    "  - { id: score, op: test.score, in: [gen] }\n";                             /* 11 */

static int build_text(const char *text, const char **sets, kw_graph **g, kw_error *e)
{
    kw_pdesc *d;
    memset(e, 0, sizeof *e);
    *g = NULL;
    int rc = kw_pipeline_parse("p.yaml", text, strlen(text), &d, e);
    if (rc < 0)
        return rc;
    for (int i = 0; sets && sets[i] && rc >= 0; i += 2)
        rc = kw_pdesc_set(d, sets[i], sets[i + 1], e);
    if (rc >= 0)
        rc = kw_graph_build(d, reg, g, e);
    kw_pdesc_free(d);
    return rc;
}

/* Builds calib with one line replaced (1-based). */
static int build_edit(int line, const char *repl, const char **sets, kw_graph **g, kw_error *e)
{
    char text[4096] = "";
    const char *p = calib;
    for (int l = 1; *p; l++) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p) + 1;
        if (l == line)
            strcat(text, repl);
        else
            strncat(text, p, n);
        p += n;
    }
    return build_text(text, sets, g, e);
}

static void expect(int line, const char *repl, const char **sets, int code, const char *needle)
{
    kw_graph *g;
    kw_error e;
    int rc = build_edit(line, repl, sets, &g, &e);
    if (rc != code || !strstr(e.msg, needle))
        fail_msg("want %d with \"%s\", got %d: %s", code, needle, rc, e.msg);
    if (code == KW_OK) {
        assert_non_null(g);
        kw_graph_free(g);
        return;
    }
    assert_null(g);
    assert_int_equal(kw_exit_code(rc), 2);
}

static int find(const kw_graph *g, const char *id)
{
    for (int i = 0; i < g->n_stages; i++)
        if (!strcmp(g->stages[i].id, id))
            return i;
    fail_msg("no stage %s", id);
    return -1;
}

static const kw_pval *param(const kw_graph *g, const char *id, const char *name)
{
    const kw_gstage *s = &g->stages[find(g, id)];
    for (int j = 0; j < s->op->n_params; j++)
        if (!strcmp(s->op->params[j].name, name))
            return &s->params[j];
    fail_msg("no param %s.%s", id, name);
    return NULL;
}

static void test_build_wires_ports_and_orders_topologically(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    assert_int_equal(build_text(calib, NULL, &g, &e), 0);
    assert_int_equal(g->n_stages, 7);
    assert_int_equal(g->source, 0);
    int tok = find(g, "tok"), gen = find(g, "gen");
    /* tok has no `in:` and takes samples: wired from the dataset */
    assert_int_equal(g->stages[tok].n_in, 1);
    assert_int_equal(g->stages[tok].in[0].from, 0);
    /* gen lists evict first, but each value goes to the port of its type */
    const kw_gstage *s = &g->stages[gen];
    assert_int_equal(s->n_in, 2);
    assert_int_equal(s->in[0].port, 1);
    assert_int_equal(s->in[0].from, find(g, "evict"));
    assert_int_equal(s->in[1].port, 0);
    assert_int_equal(s->in[1].from, tok);
    /* every edge goes forward in the topological order */
    int pos[16];
    for (int k = 0; k < g->n_stages; k++)
        pos[g->topo[k]] = k;
    for (int i = 0; i < g->n_stages; i++)
        for (int k = 0; k < g->stages[i].n_in; k++)
            assert_true(pos[g->stages[i].in[k].from] < pos[i]);
    assert_string_equal(g->model, "m");
    assert_string_equal(g->device, "cpu");
    assert_int_equal(g->seed, 7);
    assert_int_equal(g->limit, 5);
    assert_int_equal(g->calib.seed, 7); /* follows the run's seed */
    assert_true(g->calib.sample_ratio > 0.0999 && g->calib.sample_ratio < 0.1001);
    assert_null(g->db);
    assert_int_equal(strlen(g->sha256), 64);
    kw_graph_free(g);
}

static void test_phases_split_at_the_reduce(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    assert_int_equal(build_text(calib, NULL, &g, &e), 0);
    static const struct { const char *id; kw_phase ph; bool main_too, each, reduce; } want[] = {
        {"dataset", KW_PHASE_CALIB, true, true, false},
        {"tok", KW_PHASE_CALIB, true, true, false},
        {"probe", KW_PHASE_CALIB, false, true, false},
        {"budget", KW_PHASE_CALIB, false, true, true},
        {"evict", KW_PHASE_MAIN, false, false, false},
        {"gen", KW_PHASE_MAIN, false, true, false},
        {"score", KW_PHASE_MAIN, false, true, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const kw_gstage *s = &g->stages[find(g, want[i].id)];
        if (s->phase != want[i].ph || s->main_too != want[i].main_too ||
            s->runs_each != want[i].each || s->is_reduce != want[i].reduce)
            fail_msg("stage %s: phase %d main_too %d each %d reduce %d", s->id, s->phase,
                     s->main_too, s->runs_each, s->is_reduce);
    }
    kw_graph_free(g);
    /* without the reduce there is no calibration phase */
    const char *plain = "name: p\nmodel: m\ndataset: { op: test.source }\nstages:\n"
                        "  - { id: tok, op: test.tok }\n"
                        "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 0 } }\n";
    assert_int_equal(build_text(plain, NULL, &g, &e), 0);
    for (int i = 0; i < g->n_stages; i++)
        assert_int_equal(g->stages[i].phase, KW_PHASE_MAIN);
    kw_graph_free(g);
}

/* kv methods wired into one stage form its hook stack: their declared roles are checked
 * when the graph is built (test.evict EVICT, test.select SELECT, test.kvany undeclared). */
static int build_stack(const char *methods, kw_graph **g, kw_error *e)
{
    char text[1024];
    snprintf(text, sizeof text,
             "name: stack\n"                                                      /* 1 */
             "model: m\n"                                                         /* 2 */
             "dataset: { op: test.source }\n"                                     /* 3 */
             "stages:\n"                                                          /* 4 */
             "  - { id: tok, op: test.tok }\n"                                    /* 5 */
             "  - { id: probe, op: test.probe, in: [tok] }\n"                     /* 6 */
             "  - { id: budget, op: test.budget, in: [probe] }\n"                 /* 7 */
             "  - { id: ev1, op: test.evict, in: [budget] }\n"                    /* 8 */
             "  - { id: ev2, op: test.evict, in: [budget] }\n"                    /* 9 */
             "  - { id: sel, op: test.select }\n"                                 /* 10 */
             "  - { id: any, op: test.kvany }\n"                                  /* 11 */
             "  - { id: gen, op: test.gen, in: [tok, %s], with: { seed_offset: 0 } }\n",
             methods);
    return build_text(text, NULL, g, e);
}

static void test_stack_of_two_evict_methods_is_refused_at_build(void **st)
{
    (void)st;
    static const char *ok[] = {"ev1", "ev1, sel", "sel, ev2, sel", "ev1, any, any", "sel, sel"};
    kw_graph *g;
    kw_error e;
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        if (build_stack(ok[i], &g, &e) != 0)
            fail_msg("[%s] refused: %s", ok[i], e.msg);
        kw_graph_free(g);
    }
    assert_int_equal(build_stack("sel, ev1, any, ev2", &g, &e), KW_EINVAL);
    assert_null(g);
    assert_int_equal(kw_exit_code(e.code), 2);
    assert_string_equal(e.msg, "p.yaml:12:5: stage 'gen' (test.gen): kv methods 'ev1' "
                               "(test.evict, EVICT) and 'ev2' (test.evict, EVICT) both EVICT; "
                               "a stack of kv methods holds at most one EVICT and at most one "
                               "STORE method (any number of SELECT)");
    /* one EVICT method listed twice is two EVICT hooks too */
    assert_int_equal(build_stack("ev2, ev2", &g, &e), KW_EINVAL);
    assert_non_null(strstr(e.msg, "kv methods 'ev2' (test.evict, EVICT) and 'ev2'"));
}

static void test_params_are_typed_and_defaults_marked(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    const char *sets[] = {"gen.temperature", "1.5e-1", "gen.max_new", "0x20", NULL};
    assert_int_equal(build_text(calib, sets, &g, &e), 0);
    const kw_pval *v = param(g, "tok", "system");
    assert_string_equal(v->s, "no"); /* a string param keeps `no` as written */
    assert_true(v->set);
    assert_int_equal(v->line, 6);
    v = param(g, "tok", "add_bos");
    assert_false(v->set);
    assert_int_equal(v->i, 1);
    assert_string_equal(param(g, "tok", "template")->s, "llama3");
    assert_int_equal(param(g, "budget", "total")->i, 256);
    v = param(g, "budget", "layers");
    assert_int_equal(v->n_ints, 2);
    assert_int_equal(v->ints[1], 2);
    assert_int_equal(param(g, "gen", "seed_offset")->i, -3);
    assert_int_equal(param(g, "gen", "max_new")->i, 32);
    assert_true(param(g, "gen", "temperature")->f == 0.15);
    assert_int_equal(param(g, "gen", "temperature")->line, 0); /* from the command line */
    assert_int_equal(param(g, "budget", "layers")->kind, KW_PARAM_INTLIST);
    char *t = kw_gstage_params_text(&g->stages[find(g, "tok")]);
    assert_string_equal(t, "template=\"llama3\";add_bos=true;system=\"no\"");
    free(t);
    t = kw_gstage_params_text(&g->stages[find(g, "gen")]);
    assert_string_equal(t, "max_new=32;temperature=0.15;seed_offset=-3");
    free(t);
    kw_graph_free(g);
}

static void test_string_params_expand_environment_variables(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    setenv("KW_TEST_DIR", "/data/x", 1);
    unsetenv("KW_TEST_UNSET");
    const char *sets[] = {"tok.system", "${KW_TEST_DIR}/a.jsonl $$5 ${KW_TEST_UNSET:-dflt}", NULL};
    assert_int_equal(build_text(calib, sets, &g, &e), 0);
    assert_string_equal(param(g, "tok", "system")->s, "/data/x/a.jsonl $5 dflt");
    kw_graph_free(g);
    const char *bad[] = {"tok.system", "${KW_TEST_UNSET}/a", NULL};
    assert_int_equal(build_text(calib, bad, &g, &e), KW_ENOTFOUND);
    assert_non_null(strstr(e.msg, "KW_TEST_UNSET, which is not set"));
    assert_int_equal(kw_exit_code(e.code), 2);
    const char *open_[] = {"tok.system", "${KW_TEST_DIR", NULL};
    assert_int_equal(build_text(calib, open_, &g, &e), KW_EPARSE);
}

static void test_intlist_takes_a_comma_string(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    const char *sets[] = {"budget.layers", "'3, 1,2'", NULL};
    assert_int_equal(build_text(calib, sets, &g, &e), 0);
    const kw_pval *v = param(g, "budget", "layers");
    assert_int_equal(v->n_ints, 3);
    assert_int_equal(v->ints[0], 3);
    assert_int_equal(v->ints[2], 2);
    kw_graph_free(g);
    const char *bad[] = {"budget.layers", "1,x", NULL};
    expect(0, "", bad, KW_ETYPE, "--set budget.layers: stage 'budget' (test.budget): param "
                                 "'layers' item 2 of \"1,x\": wants an int, got 'x'");
    const char *range[] = {"budget.layers", "[1, 5000]", NULL};
    expect(0, "", range, KW_ERANGE, "item 2: 5000 is out of range [0, 1000]");
}

static void test_scalar_typing_errors_name_place_and_numbers(void **st)
{
    (void)st;
    expect(6, "  - { id: tok, op: test.tok, with: { add_bos: yes } }\n", NULL, KW_ETYPE,
           "p.yaml:6:47: stage 'tok' (test.tok): param 'add_bos' wants true or false, got "
           "'yes' (YAML 1.2: only true and false are booleans)");
    expect(6, "  - { id: tok, op: test.tok, with: { add_bos: 'true' } }\n", NULL, KW_ETYPE,
           "quoted string \"true\"");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 1, max_new: 5000 } }\n",
           NULL, KW_ERANGE, "p.yaml:10:74: stage 'gen' (test.gen): param 'max_new' 5000 is "
           "out of range [1, 4096]");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: '1' } }\n", NULL,
           KW_ETYPE, "param 'seed_offset' wants an int, got the quoted string \"1\"");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 1.5 } }\n", NULL,
           KW_ETYPE, "wants an int, got '1.5'");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 99999999999999999999 } }\n",
           NULL, KW_ERANGE, "does not fit in a 64-bit int");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 1, temperature: .inf } }\n",
           NULL, KW_ERANGE, "param 'temperature' .inf is out of range [0, 10]");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 1, temperature: [1] } }\n",
           NULL, KW_ETYPE, "wants a number, got a list");
    expect(6, "  - { id: tok, op: test.tok, with: { template: llama-3 } }\n", NULL, KW_EINVAL,
           "must be one of chatml|llama3|mistral, got 'llama-3' (did you mean 'llama3'?)");
    expect(6, "  - { id: tok, op: test.tok, with: { system: [a] } }\n", NULL, KW_ETYPE,
           "param 'system' wants a string, got a list");
    const char *sets[] = {"gen.max_new", "abc", NULL};
    expect(0, "", sets, KW_ETYPE, "--set gen.max_new: stage 'gen' (test.gen): param 'max_new' "
                                  "wants an int, got 'abc'");
    expect(4, "run: { device: gpu }\n", NULL, KW_EINVAL,
           "p.yaml:4:16: run.device: expected cpu, cuda or cuda:N, got 'gpu'");
    expect(4, "run: { limit: -1 }\n", NULL, KW_ERANGE, "run.limit: -1 is out of range");
}

static void test_unknown_names_get_the_nearest_suggestion(void **st)
{
    (void)st;
    expect(7, "  - { id: probe, op: test.prob, in: [tok] }\n", NULL, KW_ENOTFOUND,
           "p.yaml:7:22: stage 'probe': unknown operator 'test.prob' (did you mean "
           "'test.probe'?)");
    expect(7, "  - { id: probe, op: zzz.qqqqqq, in: [tok] }\n", NULL, KW_ENOTFOUND,
           "unknown operator 'zzz.qqqqqq' (`kvweave ops` lists them)");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 1, max_nwe: 3 } }\n",
           NULL, KW_ENOTFOUND, "p.yaml:10:65: stage 'gen' (test.gen): unknown param 'max_nwe' "
           "(did you mean 'max_new'?)");
    expect(7, "  - { id: probe, op: test.probe, in: [tk] }\n", NULL, KW_ENOTFOUND,
           "input 'tk' names no stage (did you mean 'tok'?)");
    expect(7, "  - { id: probe, op: test.probe, in: [tok.outt] }\n", NULL, KW_ENOTFOUND,
           "'tok' has no output 'outt'");
}

static void test_wiring_errors(void **st)
{
    (void)st;
    expect(7, "  - { id: probe, op: test.probe, in: [] }\n", NULL, KW_EINVAL,
           "p.yaml:7:5: stage 'probe' (test.probe): required input 'in' (tokens, each) is not "
           "wired");
    expect(11, "  - { id: score, op: test.score, in: [tok] }\n", NULL, KW_ETYPE,
           "p.yaml:11:39: stage 'score' (test.score): no free input port takes what 'tok' "
           "(test.tok) gives");
    expect(9, "  - { id: evict, op: test.evict, in: [pb] }\n"
              "  - { id: pb, op: test.perbudget, in: [probe] }\n", NULL, KW_ETYPE,
           "p.yaml:9:39: stage 'evict' (test.evict): input 'budget' needs a once value, but "
           "'pb' gives budget for each sample; reduce it first");
    expect(10, "  - { id: gen, op: test.gen, in: [tok, tok], with: { seed_offset: 1 } }\n", NULL,
           KW_ETYPE, "no free input port");
    expect(10, "  - { id: gen, op: test.gen, in: [tok], with: { seed_offset: 1 } }\n", NULL,
           KW_OK, ""); /* the kvmethod port is optional */
    expect(2, "\n", NULL, KW_EINVAL, "stage 'gen' (test.gen) needs a model; set `model:`");
    expect(10, "  - { id: gen, op: test.gen, in: [tok] }\n", NULL, KW_EINVAL,
           "required param 'seed_offset' is not set");
}

static void test_cycle_names_its_path(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    const char *t = "name: c\ndataset: { op: test.source }\nstages:\n"
                    "  - { id: a, op: test.map, in: [c] }\n"
                    "  - { id: b, op: test.map, in: [a] }\n"
                    "  - { id: c, op: test.map, in: [b] }\n";
    assert_int_equal(build_text(t, NULL, &g, &e), KW_ECYCLE);
    assert_string_equal(e.msg, "p.yaml:4:5: the pipeline has a cycle: a -> b -> c -> a");
    assert_null(g);
    const char *self = "name: c\nstages:\n  - { id: a, op: test.map, in: [a] }\n";
    assert_int_equal(build_text(self, NULL, &g, &e), KW_ECYCLE);
    assert_non_null(strstr(e.msg, "a -> a"));
}

static void test_sweep_cells_build_and_errors_point_at_the_value(void **st)
{
    (void)st;
    char text[4096];
    snprintf(text, sizeof text, "%ssweep: { gen.max_new: [16, 9999] }\n", calib);
    kw_pdesc *d, *c;
    kw_graph *g;
    kw_error e = {0};
    assert_int_equal(kw_pipeline_parse("p.yaml", text, strlen(text), &d, &e), 0);
    assert_int_equal(kw_graph_build(d, reg, &g, &e), KW_EINVAL); /* cells, not the whole */
    assert_int_equal(kw_pdesc_sweep_cell(d, 0, &c, &e), 0);
    assert_int_equal(kw_graph_build(c, reg, &g, &e), 0);
    assert_string_equal(g->cell_label, "gen.max_new=16");
    assert_int_equal(param(g, "gen", "max_new")->i, 16);
    kw_graph_free(g);
    kw_pdesc_free(c);
    assert_int_equal(kw_pdesc_sweep_cell(d, 1, &c, &e), 0);
    assert_int_equal(kw_graph_build(c, reg, &g, &e), KW_ERANGE);
    assert_non_null(strstr(e.msg, "p.yaml:12:28: stage 'gen' (test.gen): param 'max_new' 9999"));
    kw_pdesc_free(c);
    kw_pdesc_free(d);
}

static void test_describe_shows_phases_wiring_and_defaults(void **st)
{
    (void)st;
    kw_graph *g;
    kw_error e;
    assert_int_equal(build_text(calib, NULL, &g, &e), 0);
    char *t = kw_graph_describe(g);
    assert_non_null(t);
    const char *want[] = {
        "phase calibration (4 stages; samples: ratio 0.1, seed 7)",
        "  budget: test.budget@1  lanes=cpu  runs=each  reduce\n",
        "    in  stats (stats, each) <- probe.stats (stats, each)\n",
        "    out budget (budget, once)\n",
        "phase main (3 stages)",
        "    in  methods (kvmethod, once) <- evict.method (kvmethod, once)\n",
        "    param add_bos = true  (default)\n",
        "    param total = 256\n",
        "  tok: test.tok@1  lanes=cpu  runs=each  (also in main)\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(t, want[i]))
            fail_msg("missing \"%s\" in:\n%s", want[i], t);
    assert_true(strstr(t, "phase calibration") < strstr(t, "phase main"));
    free(t);
    kw_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_wires_ports_and_orders_topologically),
        cmocka_unit_test(test_phases_split_at_the_reduce),
        cmocka_unit_test(test_stack_of_two_evict_methods_is_refused_at_build),
        cmocka_unit_test(test_params_are_typed_and_defaults_marked),
        cmocka_unit_test(test_string_params_expand_environment_variables),
        cmocka_unit_test(test_intlist_takes_a_comma_string),
        cmocka_unit_test(test_scalar_typing_errors_name_place_and_numbers),
        cmocka_unit_test(test_unknown_names_get_the_nearest_suggestion),
        cmocka_unit_test(test_wiring_errors),
        cmocka_unit_test(test_cycle_names_its_path),
        cmocka_unit_test(test_sweep_cells_build_and_errors_point_at_the_value),
        cmocka_unit_test(test_describe_shows_phases_wiring_and_defaults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
