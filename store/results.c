/* Results store (results.h): opening and checking the database, migrations, transactions
 * and the writes of the run executor. Reads are in query.c, shard merging in merge.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "kw_commit.h"
#include "kw_config.h"
#include "migrations.h"
#include "store_internal.h"

#define KW_DB_BUSY_MS 10000

int kw_db_schema_latest(void) { return kw__migrations_n; }

void kw__db_lock(kw_db *db) { pthread_mutex_lock(&db->mu); }
void kw__db_unlock(kw_db *db) { pthread_mutex_unlock(&db->mu); }

int kw__db_fail(kw_db *db, int rc, kw_error *err, const char *what)
{
    int code;
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_READONLY:
    case SQLITE_SCHEMA:
    case SQLITE_ERROR:
        code = KW_EDB;
        break;
    case SQLITE_NOMEM:
        code = KW_ENOMEM;
        break;
    case SQLITE_CONSTRAINT:
        code = rc == SQLITE_CONSTRAINT_FOREIGNKEY ? KW_ENOTFOUND : KW_EINVAL;
        break;
    case SQLITE_MISUSE:
    case SQLITE_INTERNAL:
        code = KW_EINTERNAL;
        break;
    default: /* IOERR, FULL, BUSY, LOCKED, CANTOPEN, PERM, ... */
        code = KW_EIO;
        break;
    }
    const char *msg = db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        msg = "no such run (FOREIGN KEY constraint failed)";
    return kw_error_set(err, code, "'%s': %s: %s", db->path, what, msg);
}

int kw__db_exec(kw_db *db, kw_error *err, const char *what, const char *sql)
{
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? KW_OK : kw__db_fail(db, rc, err, what);
}

/* ---- transactions ---- */

int kw_db_begin(kw_db *db, kw_error *err)
{
    if (!db)
        return kw_error_set(err, KW_EINVAL, "no database");
    if (db->readonly)
        return kw_error_set(err, KW_EDB, "'%s': opened read-only; refusing to write",
                            db->path);
    kw__db_lock(db);
    if (db->depth == 0) {
        int rc = kw__db_exec(db, err, "cannot begin a transaction", "BEGIN IMMEDIATE");
        if (rc < 0) {
            kw__db_unlock(db);
            return rc;
        }
        db->doomed = false;
    }
    db->depth++;
    return KW_OK; /* the lock stays held until the matching commit */
}

static int end_level(kw_db *db, bool rollback, kw_error *err)
{
    kw__db_lock(db);
    if (db->depth == 0) {
        kw__db_unlock(db);
        return kw_error_set(err, KW_EINVAL, "'%s': commit or rollback without begin",
                            db->path);
    }
    if (rollback)
        db->doomed = true;
    int rc = KW_OK;
    if (--db->depth == 0) {
        if (db->doomed) {
            sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
            if (!rollback)
                rc = kw_error_set(err, KW_EDB,
                                  "'%s': the transaction was rolled back (a nested level "
                                  "failed)", db->path);
        } else {
            rc = kw__db_exec(db, err, "cannot commit", "COMMIT");
            if (rc < 0 && !sqlite3_get_autocommit(db->h))
                sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
        }
        db->doomed = false;
    }
    kw__db_unlock(db); /* this call's */
    kw__db_unlock(db); /* the matching begin's */
    return rc;
}

int kw_db_commit(kw_db *db, kw_error *err)
{
    if (!db)
        return kw_error_set(err, KW_EINVAL, "no database");
    return end_level(db, false, err);
}

int kw_db_rollback(kw_db *db, kw_error *err)
{
    if (!db)
        return kw_error_set(err, KW_EINVAL, "no database");
    return end_level(db, true, err);
}

static int bind_args(sqlite3_stmt *st, const char *fmt, va_list ap)
{
    int rc = SQLITE_OK;
    for (int i = 0; fmt[i] && rc == SQLITE_OK; i++) {
        switch (fmt[i]) {
        case 't': {
            const char *s = va_arg(ap, const char *);
            rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
            break;
        }
        case 'i':
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
            break;
        case 'd':
            rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
            break;
        default:
            rc = SQLITE_MISUSE;
        }
    }
    return rc;
}

int kw__db_write(kw_db *db, kw_error *err, const char *what, int *changes, const char *sql,
                 const char *fmt, ...)
{
    int rc = kw_db_begin(db, err);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (src == SQLITE_OK && sqlite3_bind_parameter_count(st) != (int)strlen(fmt))
        src = SQLITE_MISUSE; /* a programming error: the format does not fit the SQL */
    if (src == SQLITE_OK) {
        va_list ap;
        va_start(ap, fmt);
        src = bind_args(st, fmt, ap);
        va_end(ap);
    }
    if (src == SQLITE_OK)
        src = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db->h);
    if (src == SQLITE_OK && changes)
        *changes = sqlite3_changes(db->h);
    if (src != SQLITE_OK) {
        int xrc = sqlite3_extended_errcode(db->h);
        rc = kw__db_fail(db, xrc != SQLITE_OK ? xrc : src, err, what);
    }
    sqlite3_finalize(st);
    if (rc < 0) {
        /* The failed statement undid itself; the caller's other writes stand. */
        kw_db_commit(db, NULL);
        return rc;
    }
    return kw_db_commit(db, err);
}

/* ---- opening ---- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks the file before SQLite sees it, so that nothing is written to a file that is
 * not a SQLite database, and truncation is named with its numbers. 0 also for a missing
 * or empty file (a new database). */
static int check_file(const char *path, bool readonly, kw_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT && !readonly)
            return KW_OK;
        if (errno == ENOENT)
            return kw_error_set(err, KW_ENOTFOUND, "no results database at '%s'", path);
        return kw_error_set(err, KW_EIO, "cannot stat '%s': %s", path, strerror(errno));
    }
    if (S_ISDIR(sb.st_mode))
        return kw_error_set(err, KW_EDB, "'%s' is a directory, not a SQLite database", path);
    /* Another process may be creating or checkpointing the file while it is read here: the
     * header is read first, then whether a -wal file exists, then the size, so a size
     * taken before the header was written cannot make a growing file look truncated. */
    unsigned char h[100];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kw_error_set(err, KW_EIO, "cannot open '%s': %s", path, strerror(errno));
    ssize_t n = pread(fd, h, sizeof h, 0);
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat wb;
    bool has_wal = stat(wal, &wb) == 0 && wb.st_size > 0;
    if (fstat(fd, &sb) != 0)
        sb.st_size = 0;
    close(fd);
    if (n == 0)
        return KW_OK; /* empty: a new store */
    if (n < 16 || memcmp(h, "SQLite format 3", 16) != 0)
        return kw_error_set(err, KW_EDB, "'%s' is not a SQLite database (no SQLite header; "
                            "%lld bytes)", path, (long long)sb.st_size);
    if (n < (ssize_t)sizeof h)
        return kw_error_set(err, KW_EDB, "'%s' is truncated: %lld bytes, less than the "
                            "100-byte SQLite header", path, (long long)sb.st_size);
    uint32_t page = (uint32_t)h[16] << 8 | h[17];
    if (page == 1)
        page = 65536;
    if (page < 512 || page > 65536 || (page & (page - 1)))
        return kw_error_set(err, KW_EDB, "'%s' is not a usable SQLite database (page size "
                            "%u)", path, page);
    /* The page count of the header is valid when the change counter matches
     * "version-valid-for". A -wal file means a checkpoint may be extending the file right
     * now, so the size is only compared when there is none. */
    uint32_t pages = be32(h + 28);
    if (pages && be32(h + 24) == be32(h + 92) && !has_wal &&
        (uint64_t)sb.st_size < (uint64_t)pages * page)
        return kw_error_set(err, KW_EDB, "'%s' is truncated: its header says %u pages of %u "
                            "bytes (%llu bytes) but the file has %lld bytes", path, pages,
                            page, (unsigned long long)pages * page, (long long)sb.st_size);
    return KW_OK;
}

static int mkdir_parents(const char *path, kw_error *err)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return kw_error_set(err, KW_EIO, "cannot create folder '%s': %s", buf,
                                strerror(errno));
        *p = '/';
    }
    return KW_OK;
}

static int query_int(kw_db *db, const char *sql, int64_t *out, kw_error *err,
                     const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            *out = 0;
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK)
        rc = sqlite3_extended_errcode(db->h);
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? KW_OK : kw__db_fail(db, rc, err, what);
}

/* The schema version: the larger of PRAGMA user_version and schema_migrations; *tables:
 * how many tables the file has at all. Reading sqlite_master is also the first read that
 * fails on a file SQLite cannot use. */
static int read_version(kw_db *db, int64_t *version, int64_t *tables, kw_error *err)
{
    const char *what = "cannot read the schema";
    int64_t uv = 0, has_mig = 0, mig = 0;
    int rc = query_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", tables,
                       err, what);
    if (rc == KW_OK)
        rc = query_int(db, "PRAGMA user_version", &uv, err, what);
    if (rc == KW_OK)
        rc = query_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'schema_migrations'", &has_mig, err, what);
    if (rc == KW_OK && has_mig)
        rc = query_int(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", &mig,
                       err, what);
    *version = uv > mig ? uv : mig;
    return rc;
}

static int migrate(kw_db *db, kw_error *err)
{
    int rc = kw__db_exec(db, err, "cannot begin the migration", "BEGIN IMMEDIATE");
    if (rc < 0)
        return rc;
    int64_t cur = 0, tables = 0;
    rc = read_version(db, &cur, &tables, err); /* again: another process may have won */
    if (rc == KW_OK && cur > kw__migrations_n)
        rc = kw_error_set(err, KW_EDB, "'%s' has results schema version %lld, newer than "
                          "the %d this kvweave %s knows; use a newer kvweave", db->path,
                          (long long)cur, kw__migrations_n, KW_VERSION);
    if (rc == KW_OK)
        rc = kw__db_exec(db, err, "cannot create schema_migrations",
                         "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                         "PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)");
    for (int i = 0; rc == KW_OK && i < kw__migrations_n; i++) {
        const kw__migration *m = &kw__migrations[i];
        if (m->version <= cur)
            continue;
        char what[128], sql[256];
        snprintf(what, sizeof what, "migration %04d_%s failed", m->version, m->name);
        rc = kw__db_exec(db, err, what, m->sql);
        snprintf(sql, sizeof sql, "INSERT INTO schema_migrations VALUES (%d, '%s', %.6f); "
                 "PRAGMA user_version = %d", m->version, m->name, kw_wall_time(), m->version);
        if (rc == KW_OK)
            rc = kw__db_exec(db, err, what, sql);
    }
    if (rc == KW_OK)
        rc = kw__db_exec(db, err, "cannot commit the migration", "COMMIT");
    if (rc < 0)
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* After the version check: every table of the schema must be readable (a damaged file
 * fails here, at open, rather than in the middle of a run). */
static int probe_tables(kw_db *db, kw_error *err)
{
    static const char *const q[] = {
        "SELECT count(*) FROM (SELECT 1 FROM runs LIMIT 1)",
        "SELECT count(*) FROM (SELECT 1 FROM params LIMIT 1)",
        "SELECT count(*) FROM (SELECT 1 FROM metrics LIMIT 1)",
        "SELECT count(*) FROM (SELECT 1 FROM samples LIMIT 1)",
        "SELECT count(*) FROM (SELECT 1 FROM stages LIMIT 1)",
        "SELECT count(*) FROM (SELECT 1 FROM artifacts LIMIT 1)",
        "SELECT count(*) FROM (SELECT 1 FROM cache LIMIT 1)",
    };
    int64_t n;
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        int rc = query_int(db, q[i], &n, err, "cannot read the results tables");
        if (rc < 0)
            return rc;
    }
    return KW_OK;
}

/* Switching a new store to WAL takes the file for a moment. When several processes open
 * the same new store at once, SQLite can answer "database is locked" here without calling
 * the busy handler (where waiting could deadlock), so the switch is tried again every 2 ms
 * for up to the busy timeout. */
static int set_wal(kw_db *db, kw_error *err)
{
    bool wal = false;
    int rc = SQLITE_OK;
    for (int waited = 0;; waited += 2) {
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(db->h, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(st, 0);
            wal = m && !strcmp(m, "wal");
        }
        rc = sqlite3_extended_errcode(db->h);
        sqlite3_finalize(st);
        const int prim = rc & 0xff;
        if (wal || (prim != SQLITE_BUSY && prim != SQLITE_LOCKED) || waited >= KW_DB_BUSY_MS)
            break;
        sqlite3_sleep(2);
    }
    if (!wal)
        return kw__db_fail(db, rc ? rc : SQLITE_ERROR, err, "cannot switch to WAL mode");
    return kw__db_exec(db, err, "cannot set the connection up",
                       "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON");
}

static int open_checked(kw_db *db, kw_error *err)
{
    int64_t version = 0, tables = 0;
    int rc = read_version(db, &version, &tables, err);
    if (rc == KW_EDB)
        return kw_error_set(err, KW_EDB, "'%s' is not a usable SQLite database: %s",
                            db->path, sqlite3_errmsg(db->h));
    if (rc < 0)
        return rc;
    if (version > kw__migrations_n)
        return kw_error_set(err, KW_EDB, "'%s' has results schema version %lld, newer than "
                            "the %d this kvweave %s knows; use a newer kvweave (the file "
                            "was not changed)", db->path, (long long)version,
                            kw__migrations_n, KW_VERSION);
    if (version == 0 && tables > 0)
        return kw_error_set(err, KW_EDB, "'%s' is a SQLite database but not a kvweave "
                            "results store (%lld tables, no schema version); refusing to "
                            "use it", db->path, (long long)tables);
    if (db->readonly) {
        if (version == 0)
            return kw_error_set(err, KW_EDB, "'%s' is an empty database, not a kvweave "
                                "results store", db->path);
        sqlite3_limit(db->h, SQLITE_LIMIT_ATTACHED, 0);
        rc = kw__db_exec(db, err, "cannot set the connection up", "PRAGMA query_only = 1");
    } else {
        rc = set_wal(db, err);
        if (rc == KW_OK && version < kw__migrations_n)
            rc = migrate(db, err);
    }
    if (rc == KW_OK)
        rc = probe_tables(db, err);
    db->version = db->readonly ? (int)version : kw__migrations_n;
    return rc;
}

int kw_db_open(const char *path, bool readonly, kw_db **out, kw_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return kw_error_set(err, KW_EINVAL, "no results database path given");
    if (strlen(path) >= sizeof((kw_db *)0)->path - 8)
        return kw_error_set(err, KW_EINVAL, "database path too long: '%.64s...'", path);
    int rc = check_file(path, readonly, err);
    if (rc == KW_OK && !readonly)
        rc = mkdir_parents(path, err);
    if (rc < 0)
        return rc;
    kw_db *db = calloc(1, sizeof *db);
    if (!db)
        return kw_error_set(err, KW_ENOMEM, "out of memory opening '%s'", path);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->mu, &a);
    pthread_mutexattr_destroy(&a);
    snprintf(db->path, sizeof db->path, "%s", path);
    db->readonly = readonly;
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    /* URI filenames only so that kw_db_merge can attach a shard with mode=ro; a plain
     * path is still a plain path. */
    int src = sqlite3_open_v2(path, &db->h, flags | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_URI,
                              NULL);
    if (src != SQLITE_OK) {
        rc = kw__db_fail(db, src, err, "cannot open");
    } else {
        sqlite3_extended_result_codes(db->h, 1);
        sqlite3_busy_timeout(db->h, KW_DB_BUSY_MS);
        rc = open_checked(db, err);
    }
    if (rc < 0) {
        kw_db_close(db);
        return rc;
    }
    *out = db;
    return KW_OK;
}

kw_db *kw_db_close(kw_db *db)
{
    if (!db)
        return NULL;
    if (db->h && !sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close_v2(db->h);
    pthread_mutex_destroy(&db->mu);
    free(db);
    return NULL;
}

int kw_db_schema_version(kw_db *db) { return db ? db->version : 0; }
const char *kw_db_path(kw_db *db) { return db ? db->path : NULL; }
struct sqlite3 *kw_db_handle(kw_db *db) { return db ? db->h : NULL; }

/* ---- the executor's writes ---- */

int kw_db_run_begin(kw_db *db, const kw_run_info *info, char uuid[37], kw_error *err)
{
    if (!db || !info || !info->pipeline)
        return kw_error_set(err, KW_EINVAL, "run_begin: no database or pipeline name");
    int rc = kw__store_uuid4(uuid, err);
    if (rc < 0)
        return rc;
    const char *cuda = NULL;
    const char *gpu = kw__store_gpu_info(&cuda);
    char yaml_sha[65];
    const char *ysha = info->yaml_sha256;
    if (!ysha && info->yaml) {
        kw_sha256_hex(info->yaml, strlen(info->yaml), yaml_sha);
        ysha = yaml_sha;
    }
    char what[96];
    snprintf(what, sizeof what, "cannot record run %s", uuid);
    return kw__db_write(
        db, err, what, NULL,
        "INSERT INTO runs (uuid, parent, pipeline, yaml, yaml_sha256, cell_label, status, "
        "start_time, kw_version, git_commit, host, cpu, gpu, cuda, model_id, model_sha256, "
        "dataset_id, dataset_sha256, device, seed) VALUES (?, ?, ?, ?, ?, ?, 'RUNNING', ?, "
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "ttttttdttttttttttti", uuid, info->parent && *info->parent ? info->parent : NULL,
        info->pipeline, info->yaml, ysha,
        info->cell_label ? info->cell_label : "", kw_wall_time(), KW_VERSION, KW_GIT_COMMIT,
        kw__store_host(), kw__store_cpu(), gpu, cuda, info->model_id, info->model_sha256,
        info->dataset_id, info->dataset_sha256, info->device, (int64_t)info->seed);
}

static int update_run(kw_db *db, const char *uuid, const char *sql, const char *what,
                      const char *fmt, const char *a, double t, kw_error *err)
{
    int n = 0, rc;
    if (fmt[0] == 't' && fmt[1] == 'd')
        rc = kw__db_write(db, err, what, &n, sql, "tdt", a, t, uuid);
    else if (fmt[0] == 't')
        rc = kw__db_write(db, err, what, &n, sql, "tt", a, uuid);
    else
        rc = kw__db_write(db, err, what, &n, sql, "t", uuid);
    if (rc == KW_OK && n == 0)
        rc = kw_error_set(err, KW_ENOTFOUND, "'%s': no run '%s'", db->path, uuid);
    return rc;
}

int kw_db_run_end(kw_db *db, const char *uuid, const char *status, kw_error *err)
{
    if (!status || (strcmp(status, "FINISHED") && strcmp(status, "FAILED") &&
                    strcmp(status, "KILLED")))
        return kw_error_set(err, KW_EINVAL, "run status '%s' is not FINISHED, FAILED or "
                            "KILLED", status ? status : "(null)");
    return update_run(db, uuid, "UPDATE runs SET status = ?, end_time = ? WHERE uuid = ?",
                      "cannot end the run", "td", status, kw_wall_time(), err);
}

int kw_db_run_reopen(kw_db *db, const char *uuid, kw_error *err)
{
    return update_run(db, uuid, "UPDATE runs SET status = 'RUNNING', end_time = NULL "
                      "WHERE uuid = ?", "cannot reopen the run", "", NULL, 0, err);
}

int kw_db_run_set(kw_db *db, const char *uuid, const char *key, const char *value,
                  kw_error *err)
{
    static const char *const cols[] = {"model_id", "model_sha256", "dataset_id",
                                       "dataset_sha256", "device", "gpu", "cuda", "parent"};
    for (size_t i = 0; key && i < sizeof cols / sizeof cols[0]; i++) {
        if (strcmp(key, cols[i]))
            continue;
        char sql[96];
        snprintf(sql, sizeof sql, "UPDATE runs SET %s = ? WHERE uuid = ?", cols[i]);
        return update_run(db, uuid, sql, "cannot set a run field", "t", value, 0, err);
    }
    return kw_error_set(err, KW_EINVAL, "run field '%s' cannot be set (model_id, "
                        "model_sha256, dataset_id, dataset_sha256, device, gpu, cuda, parent)",
                        key ? key : "(null)");
}

int kw_db_param(kw_db *db, const char *uuid, const char *key, const char *value,
                kw_error *err)
{
    if (!key)
        return kw_error_set(err, KW_EINVAL, "param without a key");
    return kw__db_write(db, err, "cannot record a param", NULL,
                        "INSERT OR REPLACE INTO params (run, key, value) VALUES (?, ?, ?)",
                        "ttt", uuid, key, value);
}

int kw_db_metric(kw_db *db, const char *uuid, int64_t sample, const char *key, double value,
                 int64_t step, kw_error *err)
{
    if (!key)
        return kw_error_set(err, KW_EINVAL, "metric without a key");
    char what[160];
    snprintf(what, sizeof what, "cannot record metric '%.100s'", key);
    if (sample < 0)
        return kw__db_write(db, err, what, NULL,
                            "INSERT OR REPLACE INTO metrics (run, sample, key, value, step, "
                            "timestamp) VALUES (?, NULL, ?, ?, ?, ?)",
                            "ttdid", uuid, key, value, step, kw_wall_time());
    return kw__db_write(db, err, what, NULL,
                        "INSERT OR REPLACE INTO metrics (run, sample, key, value, step, "
                        "timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                        "titdid", uuid, sample, key, value, step, kw_wall_time());
}

int kw_db_sample(kw_db *db, const char *uuid, int64_t idx, const char *sample_id,
                 const char *input_hash, const char *prediction, const char *answers_json,
                 const char *status, const char *error, kw_error *err)
{
    if (!status || (strcmp(status, "FINISHED") && strcmp(status, "FAILED")))
        return kw_error_set(err, KW_EINVAL, "sample status '%s' is not FINISHED or FAILED",
                            status ? status : "(null)");
    char what[64];
    snprintf(what, sizeof what, "cannot record sample %lld", (long long)idx);
    return kw__db_write(db, err, what, NULL,
                        "INSERT OR REPLACE INTO samples (run, idx, sample_id, input_hash, "
                        "prediction, answers, status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        "titttttt", uuid, idx, sample_id, input_hash, prediction,
                        answers_json, status, error);
}

int kw_db_stage(kw_db *db, const char *uuid, const char *stage, const char *lane,
                int64_t tasks, double busy_s, double wait_s, int64_t peak_bytes,
                kw_error *err)
{
    if (!stage || !lane)
        return kw_error_set(err, KW_EINVAL, "stage timings without a stage or lane name");
    return kw__db_write(db, err, "cannot record stage timings", NULL,
                        "INSERT OR REPLACE INTO stages (run, stage, lane, tasks, busy_s, "
                        "wait_s, peak_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        "tttiddi", uuid, stage, lane, tasks, busy_s, wait_s, peak_bytes);
}

int kw_db_artifact(kw_db *db, const char *uuid, const char *name, const char *sha256,
                   const char *path, kw_error *err)
{
    if (!name || !sha256 || !path)
        return kw_error_set(err, KW_EINVAL, "artifact without a name, sha256 or path");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kw_error_set(err, KW_ENOTFOUND, "artifact '%s': file '%s' does not exist "
                            "(write it durably before recording it)", name, path);
    return kw__db_write(db, err, "cannot record an artifact", NULL,
                        "INSERT OR REPLACE INTO artifacts (run, name, sha256, path) VALUES "
                        "(?, ?, ?, ?)", "tttt", uuid, name, sha256, path);
}

/* ---- resume ---- */

int kw_db_find_resumable(kw_db *db, const char *yaml_sha256, const char *cell_label,
                         char uuid[37], kw_error *err)
{
    if (!db || !yaml_sha256)
        return kw_error_set(err, KW_EINVAL, "find_resumable: no database or pipeline hash");
    kw__db_lock(db);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h,
                                "SELECT uuid FROM runs WHERE yaml_sha256 = ? AND cell_label = ? "
                                "AND status IN ('RUNNING', 'FAILED', 'KILLED') "
                                "ORDER BY start_time DESC, rowid DESC LIMIT 1", -1, &st, NULL);
    int found = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, yaml_sha256, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, cell_label ? cell_label : "", -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            snprintf(uuid, 37, "%s", (const char *)sqlite3_column_text(st, 0));
            found = 1;
        }
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    int out = rc == SQLITE_OK ? found
                              : kw__db_fail(db, sqlite3_extended_errcode(db->h), err,
                                            "cannot look for a run to resume");
    sqlite3_finalize(st);
    kw__db_unlock(db);
    return out;
}

int kw_db_sample_done(kw_db *db, const char *uuid, int64_t idx)
{
    if (!db || !uuid)
        return KW_EINVAL;
    kw__db_lock(db);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, "SELECT 1 FROM samples WHERE run = ? AND idx = ? AND "
                                "status = 'FINISHED'", -1, &st, NULL);
    int out = KW_EDB;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, uuid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, idx);
        rc = sqlite3_step(st);
        out = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : KW_EDB;
    }
    sqlite3_finalize(st);
    kw__db_unlock(db);
    return out;
}
