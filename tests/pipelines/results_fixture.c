/* Builds results databases for tests/pipelines/results_cli.sh through the store's C API.
 *
 *   results_fixture main DB      three runs (A finished, B finished sweep cell, C running);
 *                                prints their uuids, one a line, A B C
 *   results_fixture shard DB N   one finished run with N samples; prints its uuid
 *   results_fixture newer DB     a store whose schema version is one past this build's
 *
 * Start and end times are then set to fixed values so that wall times and the overlap
 * ratio are known: A 10 s, B 20 s, C still running. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "results.h"

static kw_error err;

#define CHECK(x)                                                                          \
    do {                                                                                  \
        if ((x) < 0) {                                                                    \
            fprintf(stderr, "results_fixture: %s: %s\n", #x, err.msg);                  \
            exit(3);                                                                      \
        }                                                                                 \
    } while (0)

static void raw(kw_db *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(kw_db_handle(db), sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "results_fixture: %s: %s\n", sql, msg);
        exit(3);
    }
}

static void times(kw_db *db, const char *u, double start, double end)
{
    char sql[256];
    if (end > 0)
        snprintf(sql, sizeof sql, "UPDATE runs SET start_time = %.1f, end_time = %.1f WHERE "
                 "uuid = '%s'", start, end, u);
    else
        snprintf(sql, sizeof sql, "UPDATE runs SET start_time = %.1f WHERE uuid = '%s'",
                 start, u);
    raw(db, sql);
}

static void begin(kw_db *db, const char *pipeline, const char *cell, char u[37])
{
    kw_run_info info = {.pipeline = pipeline, .yaml = "name: x\nstages: []\n",
                        .yaml_sha256 = "5eed", .cell_label = cell, .model_id = "smollm2-135m",
                        .model_sha256 = "b179c952", .dataset_id = "ruler/niah",
                        .dataset_sha256 = "d47a", .device = "cpu", .seed = 42};
    CHECK(kw_db_run_begin(db, &info, u, &err));
}

static void run_a(kw_db *db, char u[37])
{
    begin(db, "ruler-niah", "", u);
    CHECK(kw_db_param(db, u, "sel.budget", "256", &err));
    CHECK(kw_db_param(db, u, "gen.max_new_tokens", "32", &err));
    CHECK(kw_db_metric(db, u, -1, "score/niah_single_1", 0.8, 0, &err));
    CHECK(kw_db_metric(db, u, -1, "score/niah_multikey_1", 0.6, 0, &err));
    CHECK(kw_db_metric(db, u, -1, "tokens_per_s", 120.0, 0, &err));
    static const char *pred[] = {"plain answer", "a, comma", "say \"hi\"\nbye", NULL};
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "niah-%d", i);
        CHECK(kw_db_sample(db, u, i, id, "feed", i == 3 ? NULL : pred[i], "[\"42\"]",
                           i == 3 ? "FAILED" : "FINISHED", i == 3 ? "sequence over budget" : NULL,
                           &err));
        if (i < 3) {
            CHECK(kw_db_metric(db, u, i, "score/niah_single_1", i == 1 ? 0.0 : 1.0, 0, &err));
            CHECK(kw_db_metric(db, u, i, "latency_s", 0.5 + i, 0, &err));
        }
    }
    CHECK(kw_db_stage(db, u, "tok", "cpu", 4, 2.0, 0.1, 1024, &err));
    CHECK(kw_db_stage(db, u, "gen", "gpu", 4, 8.0, 0.5, 3 << 20, &err));
    CHECK(kw_db_stage(db, u, "score", "cpu", 3, 5.0, 0.2, 2048, &err));
    CHECK(kw_db_run_end(db, u, "FINISHED", &err));
    times(db, u, 1700000000.0, 1700000010.0);
}

static void run_b(kw_db *db, char u[37])
{
    begin(db, "ruler-niah", "sel.budget=512", u);
    CHECK(kw_db_param(db, u, "sel.budget", "512", &err));
    CHECK(kw_db_param(db, u, "gen.max_new_tokens", "32", &err));
    CHECK(kw_db_metric(db, u, -1, "score/niah_single_1", 0.9, 0, &err));
    CHECK(kw_db_metric(db, u, -1, "score/niah_multikey_1", 0.3, 0, &err));
    CHECK(kw_db_metric(db, u, -1, "overlap", 3.25, 0, &err));
    for (int i = 0; i < 2; i++) {
        CHECK(kw_db_sample(db, u, i, "niah-b", "feed", "42", "[\"42\"]", "FINISHED", NULL,
                           &err));
        CHECK(kw_db_metric(db, u, i, "score/niah_single_1", 1.0, 0, &err));
    }
    CHECK(kw_db_stage(db, u, "gen", "gpu", 2, 9.0, 0.0, 1 << 20, &err));
    CHECK(kw_db_stage(db, u, KW_DB_LANE_TOTAL, "gpu", 2, 9.0, 0.0, 1 << 20, &err));
    CHECK(kw_db_run_end(db, u, "FINISHED", &err));
    times(db, u, 1700000100.0, 1700000120.0);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: results_fixture main|shard|newer DB [N]\n");
        return 2;
    }
    kw_db *db = NULL;
    CHECK(kw_db_open(argv[2], false, &db, &err));
    char a[37], b[37], c[37];
    if (!strcmp(argv[1], "main")) {
        run_a(db, a);
        run_b(db, b);
        begin(db, "other", "", c);
        CHECK(kw_db_sample(db, c, 0, "o-0", "feed", "x", "[]", "FINISHED", NULL, &err));
        times(db, c, 1700000200.0, 0);
        printf("%s\n%s\n%s\n", a, b, c);
    } else if (!strcmp(argv[1], "shard") && argc > 3) {
        begin(db, "sharded", "", a);
        for (int i = 0; i < atoi(argv[3]); i++)
            CHECK(kw_db_sample(db, a, i, "s", "feed", "p", "[]", "FINISHED", NULL, &err));
        CHECK(kw_db_metric(db, a, -1, "score/x", 0.5, 0, &err));
        CHECK(kw_db_run_end(db, a, "FINISHED", &err));
        printf("%s\n", a);
    } else if (!strcmp(argv[1], "newer")) {
        begin(db, "from-the-future", "", a);
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", kw_db_schema_latest() + 1);
        raw(db, sql);
        printf("%d %d\n", kw_db_schema_latest(), kw_db_schema_latest() + 1);
    } else {
        fprintf(stderr, "results_fixture: unknown mode '%s'\n", argv[1]);
        return 2;
    }
    kw_db_close(db);
    return 0;
}
