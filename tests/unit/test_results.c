/* Results store (store/results.h): schema, provenance, writes, transactions, concurrency,
 * broken databases, read-only queries, run names and shard merging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "kw_commit.h"
#include "kw_config.h"
#include "results.h"

static char tmpdir[256];

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "%s/kw_results_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(tmpdir));
    setenv("KVWEAVE_HOME", tmpdir, 1);
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tpath(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static kw_db *open_ok(const char *path, bool ro)
{
    kw_db *db = NULL;
    kw_error err = {0};
    int rc = kw_db_open(path, ro, &db, &err);
    if (rc != KW_OK)
        fail_msg("open %s: %s", path, err.msg);
    return db;
}

/* First column of the first row as text ("" when no row, "NULL" for NULL). */
struct first {
    char text[512];
    int rows;
};

static int on_first(void *ud, int ncol, const char *const *names, const char *const *vals,
                    const int *types)
{
    struct first *f = ud;
    if (!vals)
        return 0;
    if (f->rows++ == 0)
        snprintf(f->text, sizeof f->text, "%s", vals[0] ? vals[0] : "NULL");
    return 0;
}

static const char *q1(kw_db *db, const char *sql)
{
    static struct first f;
    memset(&f, 0, sizeof f);
    kw_error err = {0};
    if (kw_db_query(db, sql, NULL, 0, on_first, &f, &err) != KW_OK)
        fail_msg("query '%s': %s", sql, err.msg);
    return f.text;
}

static long qn(kw_db *db, const char *sql) { return atol(q1(db, sql)); }

/* Pragmas that kw_db_query refuses (they could write), read on the raw handle. */
static const char *pragma(kw_db *db, const char *sql)
{
    static char buf[64];
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(kw_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(buf, sizeof buf, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return buf;
}

static void new_run(kw_db *db, const char *pipeline, const char *cell, char uuid[37])
{
    kw_run_info info = {.pipeline = pipeline, .yaml = "name: p\n", .yaml_sha256 = "ab12",
                        .cell_label = cell, .device = "cpu", .seed = 7};
    kw_error err = {0};
    if (kw_db_run_begin(db, &info, uuid, &err) != KW_OK)
        fail_msg("run_begin: %s", err.msg);
}

static void file_sha(const char *path, char hex[65])
{
    kw_error err = {0};
    assert_int_equal(kw_sha256_file(path, hex, &err), KW_OK);
}

static void test_open_creates_schema_and_reopens(void **s)
{
    (void)s;
    const char *p = tpath("a/b/results.db"); /* parent folders are created */
    kw_db *db = open_ok(p, false);
    assert_int_equal(kw_db_schema_version(db), kw_db_schema_latest());
    assert_true(kw_db_schema_latest() >= 1);
    assert_string_equal(pragma(db, "PRAGMA journal_mode"), "wal");
    assert_string_equal(pragma(db, "PRAGMA foreign_keys"), "1");
    assert_string_equal(pragma(db, "PRAGMA busy_timeout"), "10000");
    assert_int_equal(atoi(pragma(db, "PRAGMA user_version")), kw_db_schema_latest());
    assert_int_equal(qn(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                            "name IN ('runs', 'params', 'metrics', 'samples', 'stages', "
                            "'artifacts', 'cache', 'schema_migrations')"), 8);
    db = kw_db_close(db);
    assert_null(db);
    db = open_ok(p, false); /* a second open applies nothing twice */
    assert_int_equal(qn(db, "SELECT count(*) FROM schema_migrations"), kw_db_schema_latest());
    kw_db_close(db);
    db = open_ok(p, true);
    assert_int_equal(kw_db_schema_version(db), kw_db_schema_latest());
    assert_string_equal(kw_db_path(db), p);
    kw_db_close(db);
}

static void test_run_records_provenance(void **s)
{
    (void)s;
    kw_db *db = open_ok(tpath("prov.db"), false);
    kw_run_info info = {.pipeline = "ruler-niah", .yaml = "name: ruler-niah\n",
                        .yaml_sha256 = "00ff", .cell_label = "sel.budget=256",
                        .model_id = "smollm2", .dataset_id = "ruler", .device = "cpu",
                        .seed = 1234567890123ull};
    char u[37];
    kw_error err = {0};
    assert_int_equal(kw_db_run_begin(db, &info, u, &err), KW_OK);
    assert_int_equal(strlen(u), 36);
    assert_int_equal(u[14], '4'); /* version 4 uuid */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT status || '|' || pipeline || '|' || cell_label || '|' || "
             "kw_version || '|' || git_commit || '|' || seed || '|' || model_id || '|' || "
             "device || '|' || (gpu IS NULL) || (cuda IS NULL) FROM runs WHERE uuid = '%s'", u);
    char want[512];
    snprintf(want, sizeof want, "RUNNING|ruler-niah|sel.budget=256|%s|%s|1234567890123|"
             "smollm2|cpu|11", KW_VERSION, KW_GIT_COMMIT);
    assert_string_equal(q1(db, sql), want);
    char host[256] = "";
    gethostname(host, sizeof host);
    snprintf(sql, sizeof sql, "SELECT host FROM runs WHERE uuid = '%s'", u);
    assert_string_equal(q1(db, sql), host);
    snprintf(sql, sizeof sql, "SELECT length(cpu) > 0 FROM runs WHERE uuid = '%s'", u);
    assert_string_equal(q1(db, sql), "1");

    char v[37], yhex[65];
    kw_run_info bare = {.pipeline = "p", .yaml = "name: p\n"}; /* no sha256 given */
    assert_int_equal(kw_db_run_begin(db, &bare, v, &err), KW_OK);
    kw_sha256_hex(bare.yaml, strlen(bare.yaml), yhex);
    snprintf(sql, sizeof sql, "SELECT yaml_sha256 FROM runs WHERE uuid = '%s'", v);
    assert_string_equal(q1(db, sql), yhex);

    assert_int_equal(kw_db_run_set(db, u, "model_sha256", "beef", &err), KW_OK);
    assert_int_equal(kw_db_run_set(db, u, "host; DROP TABLE runs", "x", &err), KW_EINVAL);
    assert_int_equal(kw_db_run_end(db, u, "DONE", &err), KW_EINVAL);
    assert_int_equal(kw_db_run_end(db, "00000000-0000-4000-8000-000000000000", "FINISHED",
                                   &err), KW_ENOTFOUND);
    assert_int_equal(kw_db_run_end(db, u, "FINISHED", &err), KW_OK);
    snprintf(sql, sizeof sql, "SELECT status || model_sha256 || (end_time >= start_time) "
             "FROM runs WHERE uuid = '%s'", u);
    assert_string_equal(q1(db, sql), "FINISHEDbeef1");
    kw_db_close(db);
}

static void test_writes_replace_and_unknown_run_fails(void **s)
{
    (void)s;
    kw_db *db = open_ok(tpath("writes.db"), false);
    char u[37];
    new_run(db, "p", "", u);
    kw_error err = {0};
    assert_int_equal(kw_db_param(db, u, "sel.budget", "256", &err), KW_OK);
    assert_int_equal(kw_db_param(db, u, "sel.budget", "512", &err), KW_OK);
    assert_int_equal(kw_db_metric(db, u, -1, "score", 0.25, 0, &err), KW_OK);
    assert_int_equal(kw_db_metric(db, u, -1, "score", 0.5, 0, &err), KW_OK);  /* replaces */
    assert_int_equal(kw_db_metric(db, u, -1, "score", 0.75, 1, &err), KW_OK); /* new step */
    assert_int_equal(kw_db_metric(db, u, 3, "score", 1.0, 0, &err), KW_OK);   /* per sample */
    assert_int_equal(kw_db_metric(db, u, 3, "score", 0.0, 0, &err), KW_OK);
    assert_int_equal(kw_db_sample(db, u, 3, "s3", "h", "x", "[\"y\"]", "FAILED", "oom", &err),
                     KW_OK);
    assert_int_equal(kw_db_sample(db, u, 3, "s3", "h", "y", "[\"y\"]", "FINISHED", NULL, &err),
                     KW_OK);
    assert_int_equal(kw_db_sample(db, u, 4, "s4", "h", "y", "[]", "BAD", NULL, &err), KW_EINVAL);
    assert_int_equal(kw_db_stage(db, u, "gen", "gpu", 10, 1.5, 0.25, 1 << 20, &err), KW_OK);
    assert_int_equal(kw_db_stage(db, u, "gen", "gpu", 12, 2.5, 0.5, 1 << 21, &err), KW_OK);
    assert_int_equal(kw_db_artifact(db, u, "budget", "aa", tpath("missing.bin"), &err),
                     KW_ENOTFOUND);
    FILE *f = fopen(tpath("budget.bin"), "w");
    fputs("x", f);
    fclose(f);
    assert_int_equal(kw_db_artifact(db, u, "budget", "aa", tpath("budget.bin"), &err), KW_OK);

    assert_string_equal(q1(db, "SELECT group_concat(value) FROM params"), "512");
    assert_string_equal(q1(db, "SELECT group_concat(value || '@' || step, ' ') FROM (SELECT * "
                               "FROM metrics WHERE sample IS NULL ORDER BY step)"),
                        "0.5@0 0.75@1");
    assert_string_equal(q1(db, "SELECT group_concat(value) FROM metrics WHERE sample = 3"),
                        "0.0");
    assert_string_equal(q1(db, "SELECT prediction || status || (error IS NULL) FROM samples"),
                        "yFINISHED1");
    assert_string_equal(q1(db, "SELECT tasks || '/' || busy_s FROM stages"), "12/2.5");
    assert_int_equal(qn(db, "SELECT count(*) FROM artifacts"), 1);

    /* a write for a run that does not exist names the problem */
    const char *ghost = "11111111-2222-4333-8444-555555555555";
    assert_int_equal(kw_db_metric(db, ghost, -1, "score", 1, 0, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no such run"));
    assert_int_equal(kw_db_sample(db, ghost, 0, "s", NULL, NULL, NULL, "FINISHED", NULL, &err),
                     KW_ENOTFOUND);
    kw_db_close(db);
}

static void test_artifact_put_writes_the_file_before_the_row(void **s)
{
    (void)s;
    kw_db *db = open_ok(tpath("art.db"), false);
    char u[37], sha[65], want[65];
    new_run(db, "p", "", u);
    unsigned char blob[3000];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (unsigned char)(i * 131 + 7);
    kw_error err = {0};
    assert_int_equal(kw_db_artifact_put(db, u, "budgets", blob, sizeof blob, sha, &err), 0);
    kw_sha256_hex(blob, sizeof blob, want);
    assert_string_equal(sha, want);
    char path[600], sql[200];
    snprintf(path, sizeof path, "%s/artifacts/%.2s/%s", tmpdir, sha, sha);
    char *back = NULL;
    size_t n = 0;
    assert_int_equal(kw_read_file(path, &back, &n, &err), 0);
    assert_int_equal(n, sizeof blob);
    assert_memory_equal(back, blob, sizeof blob);
    free(back);
    snprintf(sql, sizeof sql, "SELECT sha256 || '|' || path FROM artifacts WHERE run = '%s' "
             "AND name = 'budgets'", u);
    char row[700];
    snprintf(row, sizeof row, "%s|%s", sha, path);
    assert_string_equal(q1(db, sql), row);
    assert_int_equal(kw_db_artifact_put(db, "no-such-run", "x", "y", 1, NULL, &err),
                     KW_ENOTFOUND);
    kw_db_close(db);
    db = open_ok(tpath("art.db"), true);
    assert_int_equal(kw_db_artifact_put(db, u, "x", "y", 1, NULL, &err), KW_EDB);
    kw_db_close(db);
}

static void test_resume_finds_newest_unfinished(void **s)
{
    (void)s;
    kw_db *db = open_ok(tpath("resume.db"), false);
    char a[37], b[37], c[37], got[37];
    kw_error err = {0};
    assert_int_equal(kw_db_find_resumable(db, "ab12", "", got, &err), 0);
    new_run(db, "p", "", a);
    assert_int_equal(kw_db_run_end(db, a, "FAILED", &err), KW_OK);
    new_run(db, "p", "cell=1", c); /* another cell: never chosen for "" */
    assert_int_equal(kw_db_run_end(db, c, "KILLED", &err), KW_OK);
    assert_int_equal(kw_db_find_resumable(db, "ab12", "", got, &err), 1);
    assert_string_equal(got, a);
    assert_int_equal(kw_db_find_resumable(db, "ab12", "cell=1", got, &err), 1);
    assert_string_equal(got, c);
    assert_int_equal(kw_db_find_resumable(db, "other", "", got, &err), 0);
    new_run(db, "p", NULL, b);
    assert_int_equal(kw_db_run_end(db, b, "FINISHED", &err), KW_OK);
    assert_int_equal(kw_db_find_resumable(db, "ab12", "", got, &err), 1);
    assert_string_equal(got, a); /* finished runs are not resumed */

    assert_int_equal(kw_db_sample(db, a, 0, "s0", "h", "p", "[]", "FINISHED", NULL, &err), 0);
    assert_int_equal(kw_db_sample(db, a, 1, "s1", "h", NULL, "[]", "FAILED", "x", &err), 0);
    assert_int_equal(kw_db_sample_done(db, a, 0), 1);
    assert_int_equal(kw_db_sample_done(db, a, 1), 0);
    assert_int_equal(kw_db_sample_done(db, a, 2), 0);
    assert_int_equal(kw_db_sample_done(db, b, 0), 0);
    assert_int_equal(kw_db_run_reopen(db, a, &err), KW_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT status || (end_time IS NULL) FROM runs WHERE uuid = '%s'",
             a);
    assert_string_equal(q1(db, sql), "RUNNING1");
    kw_db_close(db);
}

static void test_transactions_nest_and_hide_until_outer_commit(void **s)
{
    (void)s;
    const char *p = tpath("tx.db");
    kw_db *db = open_ok(p, false);
    char u[37];
    new_run(db, "p", "", u);
    kw_db *rd = open_ok(p, true);
    kw_error err = {0};
    assert_int_equal(kw_db_begin(db, &err), KW_OK);
    assert_int_equal(kw_db_begin(db, &err), KW_OK);
    assert_int_equal(kw_db_param(db, u, "k1", "v", &err), KW_OK);
    assert_int_equal(kw_db_commit(db, &err), KW_OK);
    assert_int_equal(qn(rd, "SELECT count(*) FROM params"), 0); /* inner commit: not yet */
    assert_int_equal(kw_db_commit(db, &err), KW_OK);
    assert_int_equal(qn(rd, "SELECT count(*) FROM params"), 1);
    assert_int_equal(kw_db_commit(db, &err), KW_EINVAL); /* unbalanced */

    /* a nested rollback undoes the whole outer transaction */
    assert_int_equal(kw_db_begin(db, &err), KW_OK);
    assert_int_equal(kw_db_param(db, u, "k2", "v", &err), KW_OK);
    assert_int_equal(kw_db_begin(db, &err), KW_OK);
    assert_int_equal(kw_db_param(db, u, "k3", "v", &err), KW_OK);
    assert_int_equal(kw_db_rollback(db, &err), KW_OK);
    assert_int_equal(kw_db_commit(db, &err), KW_EDB);
    assert_int_equal(qn(rd, "SELECT count(*) FROM params"), 1);
    assert_int_equal(qn(db, "SELECT count(*) FROM params"), 1);

    /* a failed write inside a transaction leaves the other writes in it */
    assert_int_equal(kw_db_begin(db, &err), KW_OK);
    assert_int_equal(kw_db_param(db, u, "k4", "v", &err), KW_OK);
    assert_int_equal(kw_db_param(db, "no-such-run", "k5", "v", &err), KW_ENOTFOUND);
    assert_int_equal(kw_db_commit(db, &err), KW_OK);
    assert_int_equal(qn(rd, "SELECT count(*) FROM params"), 2);
    kw_db_close(rd);
    kw_db_close(db);
}

struct thr {
    kw_db *db;
    const char *run;
    int base;
};

static void *writer(void *arg)
{
    struct thr *t = arg;
    kw_error err = {0};
    for (int i = 0; i < 100; i++) {
        bool batch = i % 10 == 0;
        if (batch && kw_db_begin(t->db, &err) != KW_OK)
            return strdup(err.msg);
        char id[32];
        snprintf(id, sizeof id, "s%d", t->base + i);
        if (kw_db_sample(t->db, t->run, t->base + i, id, "h", "p", "[]", "FINISHED", NULL,
                         &err) != KW_OK ||
            kw_db_metric(t->db, t->run, t->base + i, "score", i, 0, &err) != KW_OK)
            return strdup(err.msg);
        if (batch && kw_db_commit(t->db, &err) != KW_OK)
            return strdup(err.msg);
    }
    return NULL;
}

static void test_threads_write_concurrently(void **s)
{
    (void)s;
    kw_db *db = open_ok(tpath("thr.db"), false);
    char u[37];
    new_run(db, "p", "", u);
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct thr){db, u, i * 1000};
        pthread_create(&th[i], NULL, writer, &t[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        if (r)
            fail_msg("writer %d: %s", i, (const char *)r); /* leaks r: the test fails */
    }
    assert_int_equal(qn(db, "SELECT count(*) FROM samples"), 400);
    assert_int_equal(qn(db, "SELECT count(*) FROM metrics"), 400);
    kw_db_close(db);
}

/* Two processes, two connections: BEGIN IMMEDIATE and the busy timeout serialize them. */
static void test_two_processes_write_concurrently(void **s)
{
    (void)s;
    const char *p = tpath("proc.db");
    kw_db *db = open_ok(p, false);
    char a[37], b[37];
    new_run(db, "p", "", a);
    new_run(db, "p", "", b);
    kw_db_close(db);
    pid_t pid = fork();
    assert_true(pid >= 0);
    const char *mine = pid == 0 ? a : b;
    kw_db *d = NULL;
    kw_error err = {0};
    int bad = kw_db_open(p, false, &d, &err) != KW_OK;
    for (int i = 0; !bad && i < 200; i++)
        bad = kw_db_sample(d, mine, i, "s", "h", "p", "[]", "FINISHED", NULL, &err) != KW_OK;
    kw_db_close(d);
    if (pid == 0)
        _exit(bad ? 1 : 0);
    int st = 0;
    waitpid(pid, &st, 0);
    if (bad)
        fail_msg("parent: %s", err.msg);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    db = open_ok(p, true);
    assert_int_equal(qn(db, "SELECT count(*) FROM samples"), 400);
    kw_db_close(db);
}

/* Several processes opening a new database at once: one migrates, none fails. */
static void test_concurrent_first_opens_migrate_once(void **s)
{
    (void)s;
    const char *p = tpath("race/first.db");
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            kw_db *d = NULL;
            kw_error err = {0};
            char u[37];
            kw_run_info info = {.pipeline = "race"};
            int bad = kw_db_open(p, false, &d, &err) != KW_OK ||
                      kw_db_run_begin(d, &info, u, &err) != KW_OK;
            if (bad)
                fprintf(stderr, "child %d: %s\n", k, err.msg);
            kw_db_close(d);
            _exit(bad);
        }
    }
    for (int k = 0; k < 4; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    kw_db *db = open_ok(p, true);
    assert_int_equal(qn(db, "SELECT count(*) FROM schema_migrations"), kw_db_schema_latest());
    assert_int_equal(qn(db, "SELECT count(*) FROM runs"), 4);
    kw_db_close(db);
}

static void test_text_file_is_not_a_db_and_stays_unchanged(void **s)
{
    (void)s;
    const char *p = tpath("notes.txt");
    FILE *f = fopen(p, "w");
    fputs("these are my notes, not a database\n", f);
    fclose(f);
    char before[65], after[65];
    file_sha(p, before);
    for (int ro = 0; ro < 2; ro++) {
        kw_db *db = NULL;
        kw_error err = {0};
        assert_int_equal(kw_db_open(p, ro, &db, &err), KW_EDB);
        assert_null(db);
        assert_non_null(strstr(err.msg, p));
        assert_non_null(strstr(err.msg, "not a SQLite database"));
        assert_int_equal(kw_exit_code(err.code), 2);
    }
    file_sha(p, after);
    assert_string_equal(before, after);
    struct stat sb;
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", p);
    assert_int_not_equal(stat(wal, &sb), 0);
}

static void set_raw(const char *path, const char *sql)
{
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(h, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(h);
}

static void test_newer_schema_is_refused_and_kept(void **s)
{
    (void)s;
    int latest = kw_db_schema_latest();
    const char *paths[2] = {tpath("newer_uv.db"), tpath("newer_mig.db")};
    for (int k = 0; k < 2; k++) {
        kw_db *db = open_ok(paths[k], false);
        char u[37];
        new_run(db, "keep-me", "", u);
        kw_db_close(db);
        char sql[256];
        if (k == 0)
            snprintf(sql, sizeof sql, "PRAGMA user_version = %d", latest + 5);
        else /* only the migrations table knows the newer version */
            snprintf(sql, sizeof sql, "INSERT INTO schema_migrations VALUES (%d, 'future', 0)",
                     latest + 5);
        set_raw(paths[k], sql);
        set_raw(paths[k], "PRAGMA wal_checkpoint(TRUNCATE)");
        char before[65], after[65];
        file_sha(paths[k], before);
        for (int ro = 0; ro < 2; ro++) {
            kw_error err = {0};
            assert_int_equal(kw_db_open(paths[k], ro, &db, &err), KW_EDB);
            char want[64];
            snprintf(want, sizeof want, "schema version %d", latest + 5);
            assert_non_null(strstr(err.msg, want));
            snprintf(want, sizeof want, "the %d this kvweave", latest);
            assert_non_null(strstr(err.msg, want));
            assert_non_null(strstr(err.msg, paths[k]));
        }
        file_sha(paths[k], after);
        assert_string_equal(before, after);
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(paths[k], &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(h, "SELECT pipeline FROM runs", -1, &st, NULL);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "keep-me");
        sqlite3_finalize(st);
        sqlite3_close(h);
    }
}

static void test_truncated_db_is_refused(void **s)
{
    (void)s;
    const char *p = tpath("trunc.db");
    kw_db *db = open_ok(p, false);
    char u[37], big[2000];
    new_run(db, "p", "", u);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    kw_error err = {0};
    assert_int_equal(kw_db_begin(db, &err), KW_OK);
    for (int i = 0; i < 200; i++)
        assert_int_equal(kw_db_sample(db, u, i, "s", "h", big, "[]", "FINISHED", NULL, &err), 0);
    assert_int_equal(kw_db_commit(db, &err), KW_OK);
    kw_db_close(db); /* the last close checkpoints and removes the WAL */
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(sb.st_size > 100000);
    assert_int_equal(truncate(p, sb.st_size / 2), 0);
    for (int ro = 0; ro < 2; ro++) {
        assert_int_equal(kw_db_open(p, ro, &db, &err), KW_EDB);
        assert_non_null(strstr(err.msg, "truncated"));
        assert_non_null(strstr(err.msg, p));
    }
    struct stat sa;
    assert_int_equal(stat(p, &sa), 0);
    assert_int_equal(sa.st_size, sb.st_size / 2); /* not "repaired" */
    assert_int_equal(truncate(p, 60), 0);
    assert_int_equal(kw_db_open(p, true, &db, &err), KW_EDB);
    assert_non_null(strstr(err.msg, "truncated"));
}

static void test_foreign_sqlite_db_is_refused(void **s)
{
    (void)s;
    const char *p = tpath("other.db");
    set_raw(p, "CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine')");
    char before[65], after[65];
    file_sha(p, before);
    kw_db *db = NULL;
    kw_error err = {0};
    assert_int_equal(kw_db_open(p, false, &db, &err), KW_EDB);
    assert_non_null(strstr(err.msg, "not a kvweave results store"));
    file_sha(p, after);
    assert_string_equal(before, after);
    assert_int_equal(kw_db_open(tpath("absent.db"), true, &db, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "absent.db"));
}

static void test_readonly_refuses_every_write(void **s)
{
    (void)s;
    const char *p = tpath("ro.db");
    kw_db *db = open_ok(p, false);
    char u[37];
    new_run(db, "p", "", u);
    kw_db_close(db);
    db = open_ok(p, true);
    kw_error err = {0};
    assert_int_equal(kw_db_param(db, u, "k", "v", &err), KW_EDB);
    assert_non_null(strstr(err.msg, "read-only"));
    char v[37];
    kw_run_info info = {.pipeline = "p"};
    assert_true(kw_db_run_begin(db, &info, v, &err) < 0);
    assert_int_equal(kw_db_query(db, "DELETE FROM runs", NULL, 0, NULL, NULL, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "read-only"));
    assert_int_equal(kw_db_query(db, "SELECT 1; UPDATE runs SET status = 'KILLED'", NULL, 0,
                                 NULL, NULL, &err), KW_EINVAL);
    assert_true(kw_is_input_error(
        kw_db_query(db, "ATTACH DATABASE 'x.db' AS x", NULL, 0, NULL, NULL, &err)));
    assert_int_equal(kw_db_query(db, "SELEC 1", NULL, 0, NULL, NULL, &err), KW_EINVAL);
    assert_int_equal(qn(db, "SELECT count(*) FROM runs WHERE status = 'RUNNING'"), 1);
    kw_db_close(db);
}

struct rows {
    int headers, rows;
    char seen[256];
};

static int on_rows(void *ud, int ncol, const char *const *names, const char *const *vals,
                   const int *types)
{
    struct rows *r = ud;
    size_t n = strlen(r->seen);
    if (!vals) {
        r->headers++;
        snprintf(r->seen + n, sizeof r->seen - n, "[%s,%s,%s,%s]", names[0], names[1],
                 names[2], names[3]);
        return 0;
    }
    r->rows++;
    snprintf(r->seen + n, sizeof r->seen - n, "%s:%d %s:%d %s:%d %s:%d;", vals[0], types[0],
             vals[1], types[1], vals[2] ? vals[2] : "-", types[2], vals[3], types[3]);
    return 0;
}

static void test_query_passes_types_and_arguments(void **s)
{
    (void)s;
    kw_db *db = open_ok(tpath("q.db"), false);
    struct rows r = {0};
    kw_error err = {0};
    const char *args[] = {"7"};
    assert_int_equal(kw_db_query(db, "SELECT ?1 + 1 AS i, 2.5 AS r, NULL AS n, x'0aff' AS b",
                                 args, 1, on_rows, &r, &err), KW_OK);
    assert_int_equal(r.headers, 1);
    assert_int_equal(r.rows, 1);
    char want[128];
    snprintf(want, sizeof want, "[i,r,n,b]8:%d 2.5:%d -:%d 0aff:%d;", KW_DB_T_INT, KW_DB_T_REAL,
             KW_DB_T_NULL, KW_DB_T_BLOB);
    assert_string_equal(r.seen, want);
    memset(&r, 0, sizeof r); /* zero rows still give the header */
    assert_int_equal(kw_db_query(db, "SELECT uuid, status, cpu, host FROM runs", NULL, 0,
                                 on_rows, &r, &err), KW_OK);
    assert_int_equal(r.headers, 1);
    assert_int_equal(r.rows, 0);
    assert_int_equal(kw_db_query(db, "SELECT ?1, ?2", args, 1, on_rows, &r, &err), KW_EINVAL);
    kw_db_close(db);
}

static void test_resolve_run_by_prefix_and_last(void **s)
{
    (void)s;
    const char *p = tpath("resolve.db");
    kw_db *db = open_ok(p, false);
    char a[37], got[37];
    new_run(db, "p", "", a);
    kw_db_close(db);
    set_raw(p, "INSERT INTO runs (uuid, pipeline, start_time) VALUES "
               "('abcdef01-0000-4000-8000-000000000000', 'p', 1), "
               "('abcdef02-0000-4000-8000-000000000000', 'p', 2)");
    db = open_ok(p, true);
    kw_error err = {0};
    assert_int_equal(kw_db_resolve_run(db, "last", got, &err), KW_OK);
    assert_string_equal(got, a); /* started now, after 1970 */
    char pre[10];
    snprintf(pre, sizeof pre, "%.8s", a);
    assert_int_equal(kw_db_resolve_run(db, pre, got, &err), KW_OK);
    assert_string_equal(got, a);
    assert_int_equal(kw_db_resolve_run(db, a, got, &err), KW_OK);
    assert_int_equal(kw_db_resolve_run(db, "ABCDEF02", got, &err), KW_OK);
    assert_string_equal(got, "abcdef02-0000-4000-8000-000000000000");
    assert_int_equal(kw_db_resolve_run(db, "abcdef0", got, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "ambiguous"));
    assert_int_equal(kw_db_resolve_run(db, "abcde", got, &err), KW_EINVAL);
    assert_int_equal(kw_db_resolve_run(db, "0123456789", got, &err), KW_ENOTFOUND);
    assert_int_equal(kw_db_resolve_run(db, "zzzzzzzz", got, &err), KW_EINVAL);
    assert_int_equal(kw_db_resolve_run(db, "abc' OR '1", got, &err), KW_EINVAL);
    kw_db_close(db);
    db = open_ok(tpath("empty.db"), false);
    assert_int_equal(kw_db_resolve_run(db, "last", got, &err), KW_ENOTFOUND);
    kw_db_close(db);
}

/* A run with params, metrics, samples and stages; n samples. */
static void full_run(kw_db *db, const char *status, int n, char u[37])
{
    kw_error err = {0};
    new_run(db, "shard", "", u);
    assert_int_equal(kw_db_param(db, u, "k", "v", &err), 0);
    assert_int_equal(kw_db_metric(db, u, -1, "score", 0.5, 0, &err), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(kw_db_sample(db, u, i, "s", "h", "p", "[]", "FINISHED", NULL, &err),
                         0);
        assert_int_equal(kw_db_metric(db, u, i, "score", i % 2, 0, &err), 0);
    }
    assert_int_equal(kw_db_stage(db, u, "gen", "gpu", n, 1, 0, 0, &err), 0);
    if (status)
        assert_int_equal(kw_db_run_end(db, u, status, &err), 0);
}

static void test_merge_is_idempotent_and_finishes_running_runs(void **s)
{
    (void)s;
    kw_db *dest = open_ok(tpath("dest.db"), false);
    kw_db *s1 = open_ok(tpath("shard1.db"), false);
    kw_db *s2 = open_ok(tpath("shard2.db"), false);
    char d0[37], a[37], b[37], c[37];
    full_run(dest, "FINISHED", 2, d0);
    full_run(s1, "FINISHED", 3, a);
    full_run(s1, "FAILED", 4, b);
    full_run(s2, NULL, 1, c); /* still RUNNING when first merged */
    kw_db_close(s1);
    kw_db_merge_stats st;
    kw_error err = {0};
    char before[65], after[65];
    file_sha(tpath("shard1.db"), before);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(kw_db_merge(dest, tpath("shard1.db"), &st, &err), KW_OK);
        assert_int_equal(st.added, pass ? 0 : 2);
        assert_int_equal(st.skipped, pass ? 2 : 0);
        assert_int_equal(kw_db_merge(dest, tpath("shard2.db"), &st, &err), KW_OK);
        assert_int_equal(st.added, pass ? 0 : 1);
    }
    file_sha(tpath("shard1.db"), after);
    assert_string_equal(before, after); /* shards are only read */
    assert_int_equal(qn(dest, "SELECT count(*) FROM runs"), 4);
    assert_int_equal(qn(dest, "SELECT count(*) FROM samples"), 2 + 3 + 4 + 1);
    assert_int_equal(qn(dest, "SELECT count(*) FROM metrics"), 4 + 2 + 3 + 4 + 1);
    assert_int_equal(qn(dest, "SELECT count(*) FROM params"), 4);
    assert_int_equal(qn(dest, "SELECT count(*) FROM stages"), 4);
    /* the shard's run ends with more samples: the next merge replaces it */
    kw_error e2 = {0};
    for (int i = 1; i < 5; i++)
        assert_int_equal(kw_db_sample(s2, c, i, "s", "h", "p", "[]", "FINISHED", NULL, &e2), 0);
    assert_int_equal(kw_db_run_end(s2, c, "FINISHED", &e2), 0);
    kw_db_close(s2);
    assert_int_equal(kw_db_merge(dest, tpath("shard2.db"), &st, &err), KW_OK);
    assert_int_equal(st.updated, 1);
    assert_int_equal(st.added, 0);
    assert_int_equal(kw_db_merge(dest, tpath("shard2.db"), &st, &err), KW_OK);
    assert_int_equal(st.updated + st.added, 0);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT r.status || count(s.idx) FROM runs r JOIN samples s ON "
             "s.run = r.uuid WHERE r.uuid = '%s'", c);
    assert_string_equal(q1(dest, sql), "FINISHED5");
    assert_int_equal(qn(dest, "SELECT count(*) FROM samples"), 2 + 3 + 4 + 5);

    /* broken shards are refused with their name, and nothing changes */
    FILE *f = fopen(tpath("shard.txt"), "w");
    fputs("not sqlite", f);
    fclose(f);
    assert_int_equal(kw_db_merge(dest, tpath("shard.txt"), &st, &err), KW_EDB);
    assert_non_null(strstr(err.msg, "shard.txt"));
    kw_db *s3 = open_ok(tpath("shard3.db"), false);
    full_run(s3, "FINISHED", 1, c);
    kw_db_close(s3);
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", kw_db_schema_latest() + 1);
    set_raw(tpath("shard3.db"), sql);
    assert_int_equal(kw_db_merge(dest, tpath("shard3.db"), &st, &err), KW_EDB);
    assert_int_equal(qn(dest, "SELECT count(*) FROM runs"), 4);
    kw_db_close(dest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_creates_schema_and_reopens),
        cmocka_unit_test(test_run_records_provenance),
        cmocka_unit_test(test_writes_replace_and_unknown_run_fails),
        cmocka_unit_test(test_artifact_put_writes_the_file_before_the_row),
        cmocka_unit_test(test_resume_finds_newest_unfinished),
        cmocka_unit_test(test_transactions_nest_and_hide_until_outer_commit),
        cmocka_unit_test(test_threads_write_concurrently),
        cmocka_unit_test(test_two_processes_write_concurrently),
        cmocka_unit_test(test_concurrent_first_opens_migrate_once),
        cmocka_unit_test(test_text_file_is_not_a_db_and_stays_unchanged),
        cmocka_unit_test(test_newer_schema_is_refused_and_kept),
        cmocka_unit_test(test_truncated_db_is_refused),
        cmocka_unit_test(test_foreign_sqlite_db_is_refused),
        cmocka_unit_test(test_readonly_refuses_every_write),
        cmocka_unit_test(test_query_passes_types_and_arguments),
        cmocka_unit_test(test_resolve_run_by_prefix_and_last),
        cmocka_unit_test(test_merge_is_idempotent_and_finishes_running_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
