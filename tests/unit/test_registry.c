/* Operator registry: built-in tables, suggestions, plug-ins and their refusals (ABI,
 * kw_op size, duplicates), $KVWEAVE_PLUGIN_PATH, a pipeline's `plugins:`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph.h"
#include "registry.h"

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)c, (void)st, (void)t;
    return KW_OK;
}

static const kw_op op_a = {.size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "retrieve.quest",
                           .version = 1, .run = run};
static const kw_op op_b = {.size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "compress.snapkv",
                           .version = 2, .run = run};
static const kw_op op_old = {.size = sizeof(kw_op), .abi = KW_OP_ABI + 1, .name = "old.op",
                             .version = 1, .run = run};

static void test_builtins_are_found_by_name_and_index(void **st)
{
    (void)st;
    const kw_op *const table[] = {&op_a, &op_b, NULL};
    kw_registry *r;
    kw_error e = {0};
    assert_int_equal(kw_registry_new(table, &r, &e), 0);
    assert_int_equal(kw_registry_count(r), 2);
    assert_ptr_equal(kw_registry_find(r, "compress.snapkv"), &op_b);
    assert_null(kw_registry_find(r, "compress.snap"));
    assert_ptr_equal(kw_registry_at(r, 0), &op_a);
    assert_null(kw_registry_at(r, 2));
    assert_string_equal(kw_registry_suggest(r, "retreive.quest"), "retrieve.quest");
    assert_string_equal(kw_registry_suggest(r, "compress.snap"), "compress.snapkv");
    assert_null(kw_registry_suggest(r, "decode.greedy"));
    assert_null(kw_registry_free(r));
}

static void test_builtin_table_refuses_duplicates_and_other_abis(void **st)
{
    (void)st;
    const kw_op *const dup[] = {&op_a, &op_b, &op_a, NULL};
    const kw_op *const old[] = {&op_a, &op_old, NULL};
    kw_registry *r = (kw_registry *)1;
    kw_error e = {0};
    assert_int_equal(kw_registry_new(dup, &r, &e), KW_EINVAL);
    assert_null(r);
    assert_non_null(strstr(e.msg, "'retrieve.quest' from the built-in table is already"));
    assert_int_equal(kw_registry_new(old, &r, &e), KW_EABI);
    assert_non_null(strstr(e.msg, "ABI 2, this kvweave has ABI 1"));
}

static const kw_port kv_out[] = {{"method", KW_T_KVMETHOD, KW_ONCE, 0, NULL}};

/* An operator built with the op.h of before kv_roles: its size ends where kv_roles
 * starts, so whatever lies there is not its own and reads as "not declared". */
static void test_kw_op_of_an_older_header_is_taken_without_kv_roles(void **st)
{
    (void)st;
    static const kw_op older = {.size = KW_OP_MIN_SIZE, .abi = KW_OP_ABI, .name = "old.kv",
                                .version = 1, .outputs = kv_out, .n_outputs = 1, .run = run,
                                .kv_roles = KW_ROLE_EVICT};
    static const kw_op newer = {.size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "new.kv",
                                .version = 1, .outputs = kv_out, .n_outputs = 1, .run = run,
                                .kv_roles = KW_ROLE_EVICT | KW_ROLE_STORE};
    assert_true(KW_OP_MIN_SIZE < sizeof(kw_op));
    const kw_op *const table[] = {&older, &newer, NULL};
    kw_registry *r;
    kw_error e = {0};
    assert_int_equal(kw_registry_new(table, &r, &e), 0);
    assert_int_equal(kw_op_kv_roles(kw_registry_find(r, "old.kv")), 0);
    assert_int_equal(kw_op_kv_roles(kw_registry_find(r, "new.kv")),
                     KW_ROLE_EVICT | KW_ROLE_STORE);
    kw_registry_free(r);
}

static void test_kv_roles_need_a_kvmethod_output_and_known_bits(void **st)
{
    (void)st;
    static const kw_op no_kv = {.size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "x.nokv",
                                .version = 1, .run = run, .kv_roles = KW_ROLE_SELECT};
    static const kw_op odd = {.size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "x.odd",
                              .version = 1, .outputs = kv_out, .n_outputs = 1, .run = run,
                              .kv_roles = KW_ROLE_SELECT | 0x40};
    const kw_op *const t1[] = {&op_a, &no_kv, NULL}, *const t2[] = {&odd, NULL};
    kw_registry *r;
    kw_error e = {0};
    assert_int_equal(kw_registry_new(t1, &r, &e), KW_EINVAL);
    assert_non_null(strstr(e.msg, "operator 'x.nokv' from the built-in table declares "
                                  "kv_roles 0x2: it has no kvmethod output"));
    assert_int_equal(kw_registry_new(t2, &r, &e), KW_EINVAL);
    assert_non_null(strstr(e.msg, "declares kv_roles 0x42: unknown role bits"));
}

static kw_registry *fresh(void)
{
    kw_registry *r;
    kw_error e = {0};
    assert_int_equal(kw_registry_new(NULL, &r, &e), 0);
    return r;
}

static void test_plugin_adds_its_operators_once(void **st)
{
    (void)st;
    kw_registry *r = fresh();
    kw_error e = {0};
    assert_int_equal(kw_registry_load_plugin(r, KW_TEST_KWTESTOPS, &e), 0);
    int n = kw_registry_count(r);
    assert_true(n >= 8);
    const kw_op *g = kw_registry_find(r, "test.gen");
    assert_non_null(g);
    assert_int_equal(g->n_inputs, 2);
    /* the same library again (any path to it) is not loaded twice */
    assert_int_equal(kw_registry_load_plugin(r, KW_TEST_KWTESTOPS, &e), 0);
    assert_int_equal(kw_registry_count(r), n);
    kw_registry_free(r);
}

static void refused(const char *path, int code, const char *needle)
{
    kw_registry *r = fresh();
    kw_error e = {0};
    int rc = kw_registry_load_plugin(r, path, &e);
    if (rc != code || !strstr(e.msg, needle))
        fail_msg("%s: want %d with \"%s\", got %d: %s", path, code, needle, rc, e.msg);
    assert_int_equal(kw_registry_count(r), 0); /* nothing of it was kept */
    assert_null(kw_registry_find(r, "test.tok"));
    kw_registry_free(r);
}

static void test_plugin_refusals_name_the_numbers(void **st)
{
    (void)st;
    char msg[256];
    snprintf(msg, sizeof msg, "was built for operator ABI %d, this kvweave has ABI %d",
             KW_OP_ABI + 1, KW_OP_ABI);
    refused(KW_TEST_KWTESTOPS_ABI, KW_EABI, msg);
    snprintf(msg, sizeof msg, "operator 'test.broken' from %s was built for operator ABI %d",
             KW_TEST_KWTESTOPS_OPABI, KW_OP_ABI + 7);
    refused(KW_TEST_KWTESTOPS_OPABI, KW_EABI, msg);
    snprintf(msg, sizeof msg, "has a kw_op of 64 bytes, this kvweave needs at least %zu",
             (size_t)KW_OP_MIN_SIZE);
    refused(KW_TEST_KWTESTOPS_SMALL, KW_EABI, msg);
    refused(KW_TEST_KWTESTOPS_DUP, KW_EINVAL, "operator 'test.tok' from");
    refused("/nonexistent/libx.so", KW_ENOTFOUND, "cannot find plug-in '/nonexistent/libx.so'");
    char txt[] = "/tmp/kwregtxtXXXXXX";
    int fd = mkstemp(txt);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a library\n", 14), 14);
    close(fd);
    refused(txt, KW_EFORMAT, "cannot load plug-in");
    unlink(txt);
}

static void test_env_path_takes_files_and_directories(void **st)
{
    (void)st;
    kw_registry *r = fresh();
    kw_error e = {0};
    setenv("KVWEAVE_PLUGIN_PATH", KW_TEST_KWTESTOPS, 1);
    assert_int_equal(kw_registry_load_env(r, &e), 0);
    assert_non_null(kw_registry_find(r, "test.source"));
    kw_registry_free(r);

    char dir[] = "/tmp/kwregXXXXXX", link[512];
    assert_non_null(mkdtemp(dir));
    snprintf(link, sizeof link, "%s/libkwtestops.so", dir);
    assert_int_equal(symlink(KW_TEST_KWTESTOPS, link), 0);
    r = fresh();
    setenv("KVWEAVE_PLUGIN_PATH", dir, 1);
    assert_int_equal(kw_registry_load_env(r, &e), 0);
    assert_non_null(kw_registry_find(r, "test.map"));

    /* a pipeline's plugins: are relative to its directory; already loaded is fine */
    char yaml[600];
    snprintf(yaml, sizeof yaml, "%s/p.yaml", dir);
    const char *text = "name: p\nplugins: [libkwtestops.so]\nstages: [{ id: a, op: test.source }]\n";
    kw_pdesc *d;
    assert_int_equal(kw_pipeline_parse(yaml, text, strlen(text), &d, &e), 0);
    assert_int_equal(kw_pdesc_load_plugins(d, r, &e), 0);
    kw_registry_free(r);
    r = fresh();
    assert_int_equal(kw_pdesc_load_plugins(d, r, &e), 0);
    assert_non_null(kw_registry_find(r, "test.source"));
    kw_graph *g;
    assert_int_equal(kw_graph_build(d, r, &g, &e), 0);
    assert_int_equal(g->n_plugins, 1);
    assert_string_equal(g->plugins[0], link);
    assert_int_equal(g->source, 0); /* no dataset: the first source stage */
    kw_graph_free(g);
    kw_pdesc_free(d);
    kw_registry_free(r);

    text = "name: p\nplugins: [nope.so]\nstages: [{ id: a, op: test.source }]\n";
    assert_int_equal(kw_pipeline_parse(yaml, text, strlen(text), &d, &e), 0);
    r = fresh();
    assert_int_equal(kw_pdesc_load_plugins(d, r, &e), KW_ENOTFOUND);
    assert_non_null(strstr(e.msg, "p.yaml:2:11: plug-in 'nope.so': cannot find plug-in"));
    kw_pdesc_free(d);
    kw_registry_free(r);

    r = fresh();
    setenv("KVWEAVE_PLUGIN_PATH", KW_TEST_KWTESTOPS_ABI, 1);
    assert_int_equal(kw_registry_load_env(r, &e), KW_EABI);
    assert_non_null(strstr(e.msg, "KVWEAVE_PLUGIN_PATH: plug-in"));
    unsetenv("KVWEAVE_PLUGIN_PATH");
    kw_registry_free(r);
    unlink(link);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins_are_found_by_name_and_index),
        cmocka_unit_test(test_builtin_table_refuses_duplicates_and_other_abis),
        cmocka_unit_test(test_kw_op_of_an_older_header_is_taken_without_kv_roles),
        cmocka_unit_test(test_kv_roles_need_a_kvmethod_output_and_known_bits),
        cmocka_unit_test(test_plugin_adds_its_operators_once),
        cmocka_unit_test(test_plugin_refusals_name_the_numbers),
        cmocka_unit_test(test_env_path_takes_files_and_directories),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
