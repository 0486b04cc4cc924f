/* kw_utf8_valid_copy against Python's bytes.decode("utf-8", "replace") (the expected
 * strings were produced by it): truncated characters, stray continuation bytes,
 * overlong forms, surrogates, code points past U+10FFFF. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvweave/util.h"

static void test_utf8_valid_copy_matches_python_replace(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"\x70\x6c\x61\x69\x6e\x20\x61\x73\x63\x69\x69", "plain ascii"},
        {"\x61\xe4", "\x61\xef\xbf\xbd"},
        {"\x96\x87\x62", "\xef\xbf\xbd\xef\xbf\xbd\x62"},
        {"\x61\xe4\xb8\xe6\x96\x87\x62", "\x61\xef\xbf\xbd\xe6\x96\x87\x62"},
        {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x9f\x98", "\xef\xbf\xbd"},
        {"\xe4\xb8\xad\xe6\x96\x87", "\xe4\xb8\xad\xe6\x96\x87"},
        {"\x78\xc3", "\x78\xef\xbf\xbd"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *o = kw_utf8_valid_copy(cases[i][0]);
        assert_non_null(o);
        assert_string_equal(o, cases[i][1]);
        free(o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_valid_copy_matches_python_replace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
