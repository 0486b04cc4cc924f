/* `kvweave db merge`: folds a shard database (one per cluster task) into the host's
 * database (results.h, kw_db_merge). A run is copied with all its rows when dest lacks
 * it, or replaced when dest has it as RUNNING and the shard has it ended; anything else
 * is skipped, so merging the same shard twice changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

/* The tables that belong to a run, and the column naming the run. runs first: the
 * others reference it. */
static const struct {
    const char *table, *key;
} run_tables[] = {
    {"runs", "uuid"},     {"params", "run"}, {"metrics", "run"},
    {"samples", "run"},   {"stages", "run"}, {"artifacts", "run"},
};

static int step_sql(kw_db *db, const char *sql, const char *arg, int64_t *changes,
                    char *text, size_t text_n, kw_error *err, const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && arg)
        rc = sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && text) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            snprintf(text, text_n, "%s", t ? t : "");
        }
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    if (rc == SQLITE_OK && changes)
        *changes = sqlite3_changes64(db->h);
    if (rc != SQLITE_OK)
        rc = kw__db_fail(db, sqlite3_extended_errcode(db->h), err, what);
    sqlite3_finalize(st);
    return rc;
}

static int copy_table(kw_db *db, const char *table, const char *key, kw_error *err)
{
    char cols[2048], sql[4096 + 256], what[96];
    snprintf(what, sizeof what, "cannot copy the rows of %s", table);
    int rc = step_sql(db, "SELECT group_concat('\"' || name || '\"', ', ') FROM "
                      "pragma_table_info(?1, 'main')", table, NULL, cols, sizeof cols, err,
                      what);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql, "INSERT INTO main.%s (%s) SELECT %s FROM kw_shard.%s WHERE %s "
             "IN (SELECT uuid FROM temp.kw_merge)", table, cols, cols, table, key);
    return step_sql(db, sql, NULL, NULL, NULL, 0, err, what);
}

static int fold(kw_db *db, kw_db_merge_stats *st, kw_error *err)
{
    int64_t total = 0;
    int rc = step_sql(db, "CREATE TEMP TABLE kw_merge (uuid TEXT PRIMARY KEY, upd INTEGER)",
                      NULL, NULL, NULL, 0, err, "cannot plan the merge");
    if (rc == KW_OK)
        rc = step_sql(db, "INSERT INTO temp.kw_merge SELECT s.uuid, 0 FROM kw_shard.runs s "
                      "WHERE NOT EXISTS (SELECT 1 FROM main.runs m WHERE m.uuid = s.uuid)",
                      NULL, &st->added, NULL, 0, err, "cannot plan the merge");
    if (rc == KW_OK)
        rc = step_sql(db, "INSERT INTO temp.kw_merge SELECT s.uuid, 1 FROM kw_shard.runs s "
                      "JOIN main.runs m ON m.uuid = s.uuid WHERE m.status = 'RUNNING' AND "
                      "s.status <> 'RUNNING'", NULL, &st->updated, NULL, 0, err,
                      "cannot plan the merge");
    if (rc == KW_OK) {
        char n[32];
        rc = step_sql(db, "SELECT count(*) FROM kw_shard.runs", NULL, NULL, n, sizeof n, err,
                      "cannot count the shard's runs");
        total = strtoll(n, NULL, 10);
    }
    if (rc == KW_OK) /* replaced runs: their rows go with them (ON DELETE CASCADE) */
        rc = step_sql(db, "DELETE FROM main.runs WHERE uuid IN (SELECT uuid FROM "
                      "temp.kw_merge WHERE upd = 1)", NULL, NULL, NULL, 0, err,
                      "cannot replace unfinished runs");
    for (size_t i = 0; rc == KW_OK && i < sizeof run_tables / sizeof run_tables[0]; i++)
        rc = copy_table(db, run_tables[i].table, run_tables[i].key, err);
    sqlite3_exec(db->h, "DROP TABLE IF EXISTS temp.kw_merge", NULL, NULL, NULL);
    st->skipped = total - st->added - st->updated;
    return rc;
}

/* file:<path>?mode=ro, so that the shard is never written (not even checkpointed). */
static void shard_uri(const char *path, char *out, size_t n)
{
    static const char *x = "0123456789ABCDEF";
    size_t o = (size_t)snprintf(out, n, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p && o + 4 < n; p++) {
        if (*p == '%' || *p == '?' || *p == '#' || *p < 0x20 || *p >= 0x7f) {
            out[o++] = '%';
            out[o++] = x[*p >> 4];
            out[o++] = x[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    snprintf(out + o, n - o, "?mode=ro");
}

int kw_db_merge(kw_db *dest, const char *shard_path, kw_db_merge_stats *stats, kw_error *err)
{
    kw_db_merge_stats st = {0};
    if (!dest || !shard_path)
        return kw_error_set(err, KW_EINVAL, "merge: no database or shard");
    if (dest->readonly)
        return kw_error_set(err, KW_EDB, "'%s': opened read-only; cannot merge into it",
                            dest->path);
    kw_db *sh = NULL;
    int rc = kw_db_open(shard_path, true, &sh, err); /* checks it, changes nothing */
    if (rc < 0)
        return rc;
    int sv = kw_db_schema_version(sh);
    sh = kw_db_close(sh);
    if (sv != dest->version)
        return kw_error_set(err, KW_EDB, "shard '%s' has results schema version %d but '%s' "
                            "has %d; open the older one once with this kvweave to migrate it",
                            shard_path, sv, dest->path, dest->version);
    char uri[3 * 4096 + 32];
    shard_uri(shard_path, uri, sizeof uri);
    kw__db_lock(dest);
    rc = step_sql(dest, "ATTACH DATABASE ?1 AS kw_shard", uri, NULL, NULL, 0, err,
                  "cannot attach the shard");
    if (rc == KW_OK) {
        rc = kw_db_begin(dest, err);
        if (rc == KW_OK) {
            rc = fold(dest, &st, err);
            int c = rc == KW_OK ? kw_db_commit(dest, err) : kw_db_rollback(dest, NULL);
            if (rc == KW_OK)
                rc = c;
        }
        sqlite3_exec(dest->h, "DETACH DATABASE kw_shard", NULL, NULL, NULL);
    }
    kw__db_unlock(dest);
    if (rc < 0) {
        kw_error_prefix(err, "merging '%s'", shard_path);
        return rc;
    }
    if (stats)
        *stats = st;
    return KW_OK;
}
