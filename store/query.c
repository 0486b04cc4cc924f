/* Read-only queries of the results store (results.h): kw_db_query, kw_db_resolve_run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

/* Copies one row's columns into text; blobs become lowercase hex. */
static int row_text(sqlite3_stmt *st, int ncol, char **vals, int *types)
{
    static const char *x = "0123456789abcdef";
    for (int i = 0; i < ncol; i++) {
        vals[i] = NULL;
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER: types[i] = KW_DB_T_INT; break;
        case SQLITE_FLOAT: types[i] = KW_DB_T_REAL; break;
        case SQLITE_TEXT: types[i] = KW_DB_T_TEXT; break;
        case SQLITE_BLOB: types[i] = KW_DB_T_BLOB; break;
        default: types[i] = KW_DB_T_NULL; continue;
        }
        if (types[i] == KW_DB_T_BLOB) {
            const unsigned char *b = sqlite3_column_blob(st, i);
            int n = sqlite3_column_bytes(st, i);
            vals[i] = malloc(2 * (size_t)n + 1);
            if (!vals[i])
                return -1;
            for (int k = 0; k < n; k++) {
                vals[i][2 * k] = x[b[k] >> 4];
                vals[i][2 * k + 1] = x[b[k] & 15];
            }
            vals[i][2 * n] = '\0';
        } else {
            const char *t = (const char *)sqlite3_column_text(st, i);
            vals[i] = strdup(t ? t : "");
            if (!vals[i])
                return -1;
        }
    }
    return 0;
}

static int run_stmt(kw_db *db, sqlite3_stmt *st, kw_db_row_fn fn, void *ud, kw_error *err)
{
    int ncol = sqlite3_column_count(st);
    const char **names = calloc((size_t)ncol + 1, sizeof *names);
    char **vals = calloc((size_t)ncol + 1, sizeof *vals);
    int *types = calloc((size_t)ncol + 1, sizeof *types);
    int rc = KW_OK;
    if (!names || !vals || !types) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < ncol; i++)
        names[i] = sqlite3_column_name(st, i);
    if (ncol > 0 && fn)
        rc = fn(ud, ncol, names, NULL, types);
    while (rc == KW_OK) {
        int s = sqlite3_step(st);
        if (s == SQLITE_DONE)
            break;
        if (s != SQLITE_ROW) {
            rc = kw__db_fail(db, sqlite3_extended_errcode(db->h), err, "query failed");
            break;
        }
        if (row_text(st, ncol, vals, types) != 0)
            rc = kw_error_set(err, KW_ENOMEM, "out of memory reading a row");
        else if (fn)
            rc = fn(ud, ncol, names, (const char *const *)vals, types);
        for (int i = 0; i < ncol; i++) {
            free(vals[i]);
            vals[i] = NULL;
        }
    }
out:
    free(names);
    free(vals);
    free(types);
    return rc;
}

static int prepare_all(kw_db *db, const char *sql, sqlite3_stmt ***out, int *n,
                       kw_error *err)
{
    sqlite3_stmt **v = NULL;
    int cnt = 0, rc = KW_OK;
    const char *tail = sql;
    while (tail && *tail) {
        sqlite3_stmt *st = NULL;
        const char *next = NULL;
        int s = sqlite3_prepare_v2(db->h, tail, -1, &st, &next);
        if (s != SQLITE_OK) {
            int x = sqlite3_extended_errcode(db->h);
            if (x == SQLITE_ERROR) /* syntax, unknown table or column: the user's SQL */
                rc = kw_error_set(err, KW_EINVAL, "bad query: %s", sqlite3_errmsg(db->h));
            else
                rc = kw__db_fail(db, x, err, "query failed");
            break;
        }
        tail = next;
        if (!st) /* whitespace or a comment */
            continue;
        if (!sqlite3_stmt_readonly(st)) {
            rc = kw_error_set(err, KW_EINVAL, "'%s': the query must be read-only; refusing "
                              "to run '%.200s'", db->path, sqlite3_sql(st));
            sqlite3_finalize(st);
            break;
        }
        sqlite3_stmt **nv = realloc(v, (size_t)(cnt + 1) * sizeof *v);
        if (!nv) {
            sqlite3_finalize(st);
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
            break;
        }
        v = nv;
        v[cnt++] = st;
    }
    *out = v;
    *n = cnt;
    return rc;
}

int kw_db_query(kw_db *db, const char *sql, const char *const *args, int nargs,
                kw_db_row_fn fn, void *ud, kw_error *err)
{
    if (!db || !sql)
        return kw_error_set(err, KW_EINVAL, "query: no database or SQL");
    kw__db_lock(db);
    sqlite3_stmt **v = NULL;
    int n = 0;
    int rc = prepare_all(db, sql, &v, &n, err);
    if (rc == KW_OK && nargs > 0 && n != 1)
        rc = kw_error_set(err, KW_EINVAL, "query: arguments need exactly one statement, "
                          "got %d", n);
    if (rc == KW_OK && n == 1 && sqlite3_bind_parameter_count(v[0]) != nargs)
        rc = kw_error_set(err, KW_EINVAL, "query: the statement has %d parameters, %d "
                          "arguments given", sqlite3_bind_parameter_count(v[0]), nargs);
    for (int i = 0; rc == KW_OK && i < nargs; i++)
        if (sqlite3_bind_text(v[0], i + 1, args[i], -1, SQLITE_STATIC) != SQLITE_OK)
            rc = kw__db_fail(db, sqlite3_extended_errcode(db->h), err, "cannot bind");
    for (int i = 0; rc == KW_OK && i < n; i++)
        rc = run_stmt(db, v[i], fn, ud, err);
    for (int i = 0; i < n; i++)
        sqlite3_finalize(v[i]);
    free(v);
    kw__db_unlock(db);
    return rc;
}

struct resolve {
    char uuid[37];
    int n;
};

static int on_match(void *ud, int ncol, const char *const *names, const char *const *vals,
                    const int *types)
{
    struct resolve *r = ud;
    if (!vals)
        return 0;
    if (r->n++ == 0)
        snprintf(r->uuid, sizeof r->uuid, "%s", vals[0] ? vals[0] : "");
    return 0;
}

int kw_db_resolve_run(kw_db *db, const char *ref, char uuid[37], kw_error *err)
{
    if (!db || !ref || !*ref)
        return kw_error_set(err, KW_EINVAL, "no run given");
    struct resolve r = {.n = 0};
    int rc;
    if (!strcmp(ref, "last")) {
        rc = kw_db_query(db, "SELECT uuid FROM runs ORDER BY start_time DESC, rowid DESC "
                         "LIMIT 1", NULL, 0, on_match, &r, err);
        if (rc == KW_OK && r.n == 0)
            return kw_error_set(err, KW_ENOTFOUND, "'%s' has no runs yet", db->path);
    } else {
        size_t len = strlen(ref);
        if (len < 6 || len > 36 || strspn(ref, "0123456789abcdefABCDEF-") != len)
            return kw_error_set(err, KW_EINVAL, "'%s' is not a run: give 'last', a uuid or "
                                "a uuid prefix of at least 6 hex digits", ref);
        char pat[40];
        snprintf(pat, sizeof pat, "%s", ref);
        for (char *p = pat; *p; p++)
            if (*p >= 'A' && *p <= 'F')
                *p = (char)(*p - 'A' + 'a');
        const char *args[] = {pat};
        rc = kw_db_query(db, "SELECT uuid FROM runs WHERE uuid >= ?1 AND uuid < ?1 || '~' "
                         "LIMIT 2", args, 1, on_match, &r, err);
        if (rc == KW_OK && r.n == 0)
            return kw_error_set(err, KW_ENOTFOUND, "no run '%s' in '%s'", ref, db->path);
        if (rc == KW_OK && r.n > 1)
            return kw_error_set(err, KW_EINVAL, "run prefix '%s' is ambiguous in '%s'; give "
                                "more digits", ref, db->path);
    }
    if (rc == KW_OK)
        snprintf(uuid, 37, "%s", r.uuid);
    return rc;
}
