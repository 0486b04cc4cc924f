/* The budget payload: construction, checks, and its canonical JSON round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvweave/budget.h"

static void test_budget_round_trips_through_its_canonical_bytes(void **s)
{
    (void)s;
    kw_budget *b = kw_budget_new(3, 2, true);
    assert_non_null(b);
    for (int i = 0; i < 6; i++)
        b->tokens[i] = 100 + 7 * i;
    kw_value *v = kw_value_budget(b);
    void *buf = NULL;
    size_t n = 0;
    assert_int_equal(kw_type_budget.serialize(b, &buf, &n), 0);
    assert_string_equal((char *)buf, "{\"n_kv_head\":2,\"n_layer\":3,\"per_head\":true,"
                                     "\"tokens\":[100,107,114,121,128,135]}");
    void *back = NULL;
    kw_error err = {0};
    assert_int_equal(kw_type_budget.deserialize(buf, n, &back, &err), 0);
    kw_budget *c = back;
    assert_int_equal(c->n_layer, 3);
    assert_int_equal(c->n_kv_head, 2);
    assert_true(c->per_head);
    assert_int_equal(kw_budget_at(c, 2, 1), 135);
    assert_int_equal(kw_budget_total(c), 6 * 100 + 7 * 15);
    uint8_t h1[32], h2[32];
    kw_value *w = kw_value_budget(c);
    assert_int_equal(kw_value_hash(v, h1), 0);
    assert_int_equal(kw_value_hash(w, h2), 0);
    assert_memory_equal(h1, h2, 32);
    free(buf);
    kw_value_unref(v);
    kw_value_unref(w);
}

static void test_budget_set_layer_fills_every_head(void **s)
{
    (void)s;
    kw_budget *b = kw_budget_new(2, 3, false);
    kw_budget_set_layer(b, 1, 64);
    assert_int_equal(kw_budget_at(b, 0, 2), 0);
    for (int h = 0; h < 3; h++)
        assert_int_equal(kw_budget_at(b, 1, h), 64);
    kw_error err = {0};
    assert_int_equal(kw_budget_check(b, 2, 3, &err), 0);
    assert_int_equal(kw_budget_check(b, 30, 3, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "2 layers x 3 KV heads, the model has 30 x 3"));
    b->tokens[4] = -1;
    assert_int_equal(kw_budget_check(b, 2, 3, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "layer 1 head 1"));
    kw_budget_free(b);
    assert_null(kw_budget_new(0, 3, false));
}

static void test_budget_from_json_rejects_bad_shapes(void **s)
{
    (void)s;
    const char *bad[] = {
        "{\"n_layer\":2,\"n_kv_head\":2,\"tokens\":[1,2,3]}",
        "{\"n_layer\":2,\"tokens\":[1,2]}",
        "{\"n_layer\":1,\"n_kv_head\":2,\"tokens\":[1,-2]}",
        "{\"n_layer\":1,\"n_kv_head\":1,\"tokens\":[\"x\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        kw_budget *b = (kw_budget *)1;
        kw_error err = {0};
        assert_int_equal(kw_budget_from_json(j, &b, &err), KW_EFORMAT);
        assert_null(b);
        assert_true(strlen(err.msg) > 0);
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_budget_round_trips_through_its_canonical_bytes),
        cmocka_unit_test(test_budget_set_layer_fills_every_head),
        cmocka_unit_test(test_budget_from_json_rejects_bad_shapes),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
