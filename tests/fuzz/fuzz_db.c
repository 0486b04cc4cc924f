/* Fuzz target: arbitrary bytes as a results database file. The bytes are written to a
 * scratch file which is opened read-only (then queried like `runs`, `show last` and
 * `export` do) and read-write (then a run is recorded). Every refusal must explain itself
 * with a kw_error; nothing may crash. A libFuzzer target with -Dfuzz=true; else replay.c's main() replays
 * the corpus.
 * Seed corpus: tests/fuzz/corpus/db (tests/fuzz/make_db_corpus.py). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "results.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[512];

static void scratch_clear(void)
{
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static int count_rows(void *ud, int ncol, const char *const *names, const char *const *vals,
                      const int *types)
{
    (void)ncol, (void)names, (void)types;
    if (vals)
        (*(long *)ud)++;
    return 0;
}

static void explained(int rc, const kw_error *err)
{
    if (rc < 0 && (!err->msg[0] || err->code >= 0))
        abort(); /* every failure explains itself */
}

static void read_back(kw_db *db)
{
    kw_error err = {0};
    char u[37];
    long n = 0;
    static const char *const q[] = {
        "SELECT r.uuid, r.status, (SELECT count(*) FROM samples s WHERE s.run = r.uuid) "
        "FROM runs r ORDER BY start_time DESC LIMIT 20",
        "SELECT s.run, s.idx, s.prediction, s.answers, (SELECT value FROM metrics m WHERE "
        "m.run = s.run AND m.sample = s.idx LIMIT 1) FROM samples s",
        "SELECT * FROM stages", "SELECT key, value FROM params",
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        explained(kw_db_query(db, q[i], NULL, 0, count_rows, &n, &err), &err);
    int rc = kw_db_resolve_run(db, "last", u, &err);
    explained(rc, &err);
    if (rc == 0)
        explained(kw_db_resolve_run(db, u, u, &err), &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/kw_fuzz_db_%ld.db", t && *t ? t : "/tmp",
                 (long)getpid());
    }
    scratch_clear();
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    kw_db *db = NULL;
    kw_error err = {0};
    int rc = kw_db_open(path, true, &db, &err);
    explained(rc, &err);
    if (rc == 0)
        read_back(db);
    db = kw_db_close(db);
    rc = kw_db_open(path, false, &db, &err);
    explained(rc, &err);
    if (rc == 0) {
        kw_run_info info = {.pipeline = "fuzz", .yaml = "name: fuzz\n"};
        char u[37];
        rc = kw_db_run_begin(db, &info, u, &err);
        explained(rc, &err);
        if (rc == 0)
            explained(kw_db_run_end(db, u, "FINISHED", &err), &err);
        read_back(db);
    }
    kw_db_close(db);
    scratch_clear();
    return 0;
}
