/* Stage-output cache (store/cache.c): durable put, verified get, misses drop their row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "results.h"

static char tmpdir[256];
static kw_db *db;

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "%s/kw_cache_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir))
        return -1;
    char home[300], path[320];
    snprintf(home, sizeof home, "%s/home", tmpdir); /* created by the first put */
    setenv("KVWEAVE_HOME", home, 1);
    snprintf(path, sizeof path, "%s/results.db", tmpdir);
    kw_error err = {0};
    return kw_db_open(path, false, &db, &err);
}

static int teardown(void **s)
{
    (void)s;
    db = kw_db_close(db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void random_key(char key[65])
{
    unsigned char b[16];
    for (int i = 0; i < 16; i++)
        b[i] = (unsigned char)next();
    kw_sha256_hex(b, sizeof b, key);
}

static void *random_bytes(size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)next();
    return b;
}

static const char *blob_path(const char *key)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/home/cache/%.2s/%s", tmpdir, key, key);
    return p;
}

static int on_count(void *ud, int ncol, const char *const *names, const char *const *vals,
                    const int *types)
{
    if (vals)
        *(long *)ud = atol(vals[0]);
    return 0;
}

static long rows(const char *key)
{
    long n = -1;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM cache WHERE key = '%s'", key);
    kw_error err = {0};
    assert_int_equal(kw_db_query(db, sql, NULL, 0, on_count, &n, &err), KW_OK);
    return n;
}

static void put_ok(const char *key, const void *buf, size_t n)
{
    kw_error err = {0};
    if (kw_cache_put(db, key, "stage.test", buf, n, &err) != KW_OK)
        fail_msg("put: %s", err.msg);
}

static void test_put_get_round_trips_random_blobs(void **s)
{
    (void)s;
    const size_t sizes[] = {0, 1, 4095, 4096, 100003, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char key[65];
        random_key(key);
        void *data = random_bytes(sizes[i]);
        put_ok(key, data, sizes[i]);
        struct stat sb;
        assert_int_equal(stat(blob_path(key), &sb), 0);
        assert_int_equal(sb.st_size, (off_t)sizes[i]);
        void *got = NULL;
        size_t n = 99;
        kw_error err = {0};
        assert_int_equal(kw_cache_get(db, key, &got, &n, &err), 1);
        assert_int_equal(n, sizes[i]);
        assert_memory_equal(got, data, sizes[i]);
        free(got);
        free(data);
        /* no temp files stay behind */
        char dir[400];
        snprintf(dir, sizeof dir, "%s/home/cache/%.2s", tmpdir, key);
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)))
            assert_null(strstr(e->d_name, ".tmp"));
        closedir(d);
    }
}

static void test_unknown_key_is_a_miss(void **s)
{
    (void)s;
    char key[65];
    random_key(key);
    void *got = (void *)1;
    size_t n = 5;
    kw_error err = {0};
    assert_int_equal(kw_cache_get(db, key, &got, &n, &err), 0);
    assert_null(got);
    assert_int_equal(n, 0);
}

static void test_missing_or_changed_file_is_a_miss_and_drops_the_row(void **s)
{
    (void)s;
    for (int how = 0; how < 3; how++) {
        char key[65];
        random_key(key);
        void *data = random_bytes(5000);
        put_ok(key, data, 5000);
        assert_int_equal(rows(key), 1);
        const char *p = blob_path(key);
        if (how == 0) {
            assert_int_equal(unlink(p), 0);
        } else if (how == 1) {
            assert_int_equal(truncate(p, 4999), 0);
        } else { /* same size, one byte flipped */
            FILE *f = fopen(p, "r+b");
            fseek(f, 2500, SEEK_SET);
            int c = fgetc(f);
            fseek(f, 2500, SEEK_SET);
            fputc(c ^ 0x40, f);
            fclose(f);
        }
        void *got = NULL;
        size_t n = 0;
        kw_error err = {0};
        assert_int_equal(kw_cache_get(db, key, &got, &n, &err), 0);
        assert_null(got);
        assert_int_equal(rows(key), 0);
        put_ok(key, data, 5000); /* and it can be stored again */
        assert_int_equal(kw_cache_get(db, key, &got, &n, &err), 1);
        assert_memory_equal(got, data, 5000);
        free(got);
        free(data);
    }
}

static void test_put_replaces_an_entry(void **s)
{
    (void)s;
    char key[65];
    random_key(key);
    put_ok(key, "first", 5);
    put_ok(key, "second!", 7);
    void *got = NULL;
    size_t n = 0;
    kw_error err = {0};
    assert_int_equal(kw_cache_get(db, key, &got, &n, &err), 1);
    assert_int_equal(n, 7);
    assert_memory_equal(got, "second!", 7);
    free(got);
    assert_int_equal(rows(key), 1);
}

static void test_bad_keys_are_refused(void **s)
{
    (void)s;
    const char *bad[] = {"", "abc", "../../../../etc/passwd",
                         "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
                         "g000000000000000000000000000000000000000000000000000000000000000",
                         "00000000000000000000000000000000000000000000000000000000000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kw_error err = {0};
        void *got = NULL;
        size_t n = 0;
        assert_int_equal(kw_cache_put(db, bad[i], "x", "y", 1, &err), KW_EINVAL);
        assert_int_equal(kw_cache_get(db, bad[i], &got, &n, &err), KW_EINVAL);
    }
}

static void test_readonly_db_gets_but_does_not_put(void **s)
{
    (void)s;
    char key[65], other[65];
    random_key(key);
    random_key(other);
    put_ok(key, "shared", 6);
    kw_db *ro = NULL;
    kw_error err = {0};
    assert_int_equal(kw_db_open(kw_db_path(db), true, &ro, &err), KW_OK);
    void *got = NULL;
    size_t n = 0;
    assert_int_equal(kw_cache_get(ro, key, &got, &n, &err), 1);
    assert_memory_equal(got, "shared", 6);
    free(got);
    assert_int_equal(kw_cache_put(ro, other, "x", "y", 1, &err), KW_EDB);
    struct stat sb;
    assert_int_not_equal(stat(blob_path(other), &sb), 0); /* no file without a row */
    kw_db_close(ro);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_round_trips_random_blobs),
        cmocka_unit_test(test_unknown_key_is_a_miss),
        cmocka_unit_test(test_missing_or_changed_file_is_a_miss_and_drops_the_row),
        cmocka_unit_test(test_put_replaces_an_entry),
        cmocka_unit_test(test_bad_keys_are_refused),
        cmocka_unit_test(test_readonly_db_gets_but_does_not_put),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
