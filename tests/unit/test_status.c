#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "kvweave/status.h"
#include "kvweave/value.h"

static void test_error_at_prefixes_place(void **s)
{
    (void)s;
    kw_error e = {0};
    int rc = kw_error_at(&e, KW_ENOTFOUND, "p.yaml", 4, 9, "unknown operator '%s'", "x.y");
    assert_int_equal(rc, KW_ENOTFOUND);
    assert_string_equal(e.msg, "p.yaml:4:9: unknown operator 'x.y'");
    assert_int_equal(kw_exit_code(rc), 2);
    assert_int_equal(kw_exit_code(KW_EIO), 3);
}

static void test_error_prefix_adds_context_once(void **s)
{
    (void)s;
    kw_error e = {0};
    kw_error_set(&e, KW_ENOTFOUND, "tensor 'x' is missing");
    assert_int_equal(kw_error_prefix(&e, "model '%s'", "m.gguf"), KW_ENOTFOUND);
    assert_string_equal(e.msg, "model 'm.gguf': tensor 'x' is missing");
    /* an outer layer naming the same model adds nothing */
    kw_error_prefix(&e, "model '%s'", "m.gguf");
    assert_string_equal(e.msg, "model 'm.gguf': tensor 'x' is missing");
    kw_error_set(&e, KW_ENOTFOUND, "model 'm' is not registered");
    kw_error_prefix(&e, "model 'm'");
    assert_string_equal(e.msg, "model 'm' is not registered");
    kw_error_prefix(&e, "run");
    assert_string_equal(e.msg, "run: model 'm' is not registered");
    /* a message that starts with the same letters but another word still gets it */
    kw_error_set(&e, KW_EIO, "running out of disk");
    kw_error_prefix(&e, "run");
    assert_string_equal(e.msg, "run: running out of disk");
}

static void test_json_value_hash_is_canonical(void **s)
{
    (void)s;
    kw_value *a = kw_value_json(KW_T_SAMPLE, json_pack("{s:i,s:s}", "b", 1, "a", "x"));
    kw_value *b = kw_value_json(KW_T_SAMPLE, json_pack("{s:s,s:i}", "a", "x", "b", 1));
    kw_value *c = kw_value_json(KW_T_METRICS, json_pack("{s:s,s:i}", "a", "x", "b", 1));
    uint8_t ha[32], hb[32], hc[32];
    assert_int_equal(kw_value_hash(a, ha), 0);
    assert_int_equal(kw_value_hash(b, hb), 0);
    assert_int_equal(kw_value_hash(c, hc), 0);
    assert_memory_equal(ha, hb, 32);
    assert_memory_not_equal(ha, hc, 32); /* the type is part of the hash */
    assert_string_equal(kw_value_type(c), KW_T_METRICS);
    kw_value_unref(a);
    kw_value_unref(b);
    assert_null(kw_value_unref(c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_at_prefixes_place),
        cmocka_unit_test(test_error_prefix_adds_context_once),
        cmocka_unit_test(test_json_value_hash_is_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
