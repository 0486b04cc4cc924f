/* The KV block store (store/kvstore.h): the file layout, a round trip of byte ranges, and
 * broken stores: a file of another size, a file cut short after it was found, a missing
 * file, a second writer, reads and writes outside the block, an unusable root. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "kvstore.h"

static void mkroot(char *root, size_t n)
{
    const char *td = getenv("TMPDIR");
    snprintf(root, n, "%s/kw_kvstore_XXXXXX", td && *td ? td : "/tmp");
    assert_non_null(mkdtemp(root));
}

static void rm_root(const char *root)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -r '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void test_layout_and_round_trip(void **state)
{
    (void)state;
    char root[128], want[300], path[300];
    mkroot(root, sizeof root);
    kw_kvstore *s;
    kw_error err = {0};
    assert_int_equal(kw_kvstore_open(root, 4096, &s, &err), 0);
    kw_blockid id = kw_blockid_from_hex("0123456789ABCDEFfedcba9876543210ffff");
    assert_true(id.hi == 0x0123456789abcdefull && id.lo == 0xfedcba9876543210ull);
    assert_int_equal(kw_kvstore_path(s, id, false, path, sizeof path), 0);
    snprintf(want, sizeof want, "%s/data/0123456789abcdef/fedcba9876543210.dat", root);
    assert_string_equal(path, want);
    assert_int_equal(kw_kvstore_path(s, id, false, path, 20), KW_ELIMIT);
    assert_int_equal(kw_kvstore_lookup(s, id, &err), 0);
    assert_int_equal(kw_kvstore_create(s, id, &err), 0);
    /* while written: a .act file of the block's size, no .dat */
    struct stat st;
    snprintf(want, sizeof want, "%s/data/0123456789abcdef/fedcba9876543210.act", root);
    assert_int_equal(stat(want, &st), 0);
    assert_int_equal(st.st_size, 4096);
    assert_int_equal(kw_kvstore_lookup(s, id, &err), 0);
    unsigned char a[4096], b[4096];
    for (int i = 0; i < 4096; i++)
        a[i] = (unsigned char)(i * 7 + 3);
    assert_int_equal(kw_kvstore_write(s, id, 3000, a + 3000, 1096, &err), 0); /* any order */
    assert_int_equal(kw_kvstore_write(s, id, 0, a, 3000, &err), 0);
    assert_int_equal(kw_kvstore_read(s, id, 0, b, 16, &err), KW_ENOTFOUND); /* not complete */
    assert_int_equal(kw_kvstore_commit(s, id, &err), 0);
    assert_int_equal(kw_kvstore_lookup(s, id, &err), 1);
    memset(b, 0xee, sizeof b);
    assert_int_equal(kw_kvstore_read(s, id, 0, b, 4096, &err), 0);
    assert_memory_equal(a, b, 4096);
    assert_int_equal(kw_kvstore_read(s, id, 1000, b, 24, &err), 0);
    assert_memory_equal(a + 1000, b, 24);
    /* outside the block */
    assert_int_equal(kw_kvstore_read(s, id, 4090, b, 7, &err), KW_ERANGE);
    assert_non_null(strstr(err.msg, "7 bytes at offset 4090 outside the block's 4096"));
    assert_int_equal(kw_kvstore_write(s, id, -1, a, 1, &err), KW_ERANGE);
    assert_int_equal(kw_kvstore_remove(s, id, false), 0);
    assert_int_equal(kw_kvstore_remove(s, id, false), 0); /* gone already: fine */
    assert_int_equal(kw_kvstore_lookup(s, id, &err), 0);
    s = kw_kvstore_free(s);
    rm_root(root);
}

static void test_broken_stores(void **state)
{
    (void)state;
    char root[128], path[300];
    mkroot(root, sizeof root);
    kw_kvstore *s;
    kw_error err = {0};
    assert_int_equal(kw_kvstore_open(root, 1000, &s, &err), 0);
    kw_blockid id = {0xabc, 0xdef};
    /* a second writer of the same block */
    assert_int_equal(kw_kvstore_create(s, id, &err), 0);
    assert_int_equal(kw_kvstore_create(s, id, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "0000000000000def.act"));
    assert_non_null(strstr(err.msg, "another writer"));
    assert_int_equal(kw_kvstore_commit(s, id, &err), 0);
    /* a block file of another size (another model or block size wrote it) */
    assert_int_equal(kw_kvstore_path(s, id, false, path, sizeof path), 0);
    assert_int_equal(truncate(path, 999), 0);
    assert_int_equal(kw_kvstore_lookup(s, id, &err), KW_EFORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "has 999 bytes, want 1000"));
    /* cut short after it was found */
    assert_int_equal(truncate(path, 300), 0);
    char buf[1000];
    assert_int_equal(kw_kvstore_read(s, id, 200, buf, 400, &err), KW_EIO);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "ends at offset 300, want 400 bytes from offset 200"));
    /* missing */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(kw_kvstore_read(s, id, 0, buf, 10, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    /* writing a block never created */
    kw_blockid other = {1, 2};
    assert_int_equal(kw_kvstore_write(s, other, 0, buf, 10, &err), KW_EIO);
    assert_non_null(strstr(err.msg, "0000000000000002.act"));
    s = kw_kvstore_free(s);
    /* a root under a regular file */
    char file[200];
    snprintf(file, sizeof file, "%s/plain", root);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    strcat(file, "/store");
    assert_int_equal(kw_kvstore_open(file, 1000, &s, &err), KW_EIO);
    assert_null(s);
    assert_non_null(strstr(err.msg, "cannot create directory"));
    assert_non_null(strstr(err.msg, "plain/store"));
    assert_int_equal(kw_kvstore_open(root, 0, &s, &err), KW_EINVAL);
    rm_root(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_round_trip),
        cmocka_unit_test(test_broken_stores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
