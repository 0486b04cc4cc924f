/* Stage-output cache (results.h): content-addressed blobs at
 * $KVWEAVE_HOME/cache/<first 2 hex of key>/<key>, one row each in the cache table; and
 * run artifacts stored the same durable way under $KVWEAVE_HOME/artifacts.
 *
 * put: the blob is made durable first (temp file in the same folder, fsync, rename,
 * fsync of the folder), then the row commits; a crash leaves at worst a file without a
 * row, never a row without its file. get: the row names the file, its size and sha256; a
 * missing, short or changed file is a miss and its row is dropped. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "store_internal.h"

static int check_key(const char *key, kw_error *err)
{
    size_t n = key ? strnlen(key, 65) : 0;
    if (n != 64 || strspn(key, "0123456789abcdef") != 64)
        return kw_error_set(err, KW_EINVAL, "cache key '%.70s' is not 64 lowercase hex "
                            "digits (a sha256)", key ? key : "(null)");
    return KW_OK;
}

static int mkdirs(char *path, kw_error *err)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        int bad = mkdir(path, 0777) != 0 && errno != EEXIST;
        *p = c;
        if (bad)
            return kw_error_set(err, KW_EIO, "cannot create cache folder '%s': %s", path,
                                strerror(errno));
        if (!c)
            return KW_OK;
    }
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Writes buf durably at path (temp, fsync, rename, fsync dir). */
static int write_durable(const char *dir, const char *path, const void *buf, size_t n,
                         kw_error *err)
{
    char tmp[4400], rnd[37];
    int rc = kw__store_uuid4(rnd, err);
    if (rc < 0)
        return rc;
    snprintf(tmp, sizeof tmp, "%s.tmp.%s", path, rnd);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return kw_error_set(err, KW_EIO, "cannot create '%s': %s", tmp, strerror(errno));
    int bad = write_all(fd, buf, n) != 0 || fsync(fd) != 0;
    int e = errno;
    bad |= close(fd) != 0;
    if (!bad && rename(tmp, path) != 0) {
        e = errno;
        bad = 1;
    }
    if (bad) {
        unlink(tmp);
        return kw_error_set(err, KW_EIO, "cannot write cache file '%s': %s", path,
                            strerror(e));
    }
    if (fsync_dir(dir) != 0)
        return kw_error_set(err, KW_EIO, "cannot sync cache folder '%s': %s", dir,
                            strerror(errno));
    return KW_OK;
}

int kw__store_write_durable(const char *dir, const char *name, const void *buf, size_t n,
                            kw_error *err)
{
    char d[4200], path[4400];
    snprintf(d, sizeof d, "%s", dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = mkdirs(d, err);
    return rc < 0 ? rc : write_durable(dir, path, buf ? buf : "", n, err);
}

int kw_db_artifact_put(kw_db *db, const char *uuid, const char *name, const void *buf,
                       size_t n, char sha256[65], kw_error *err)
{
    if (!db || !uuid || !name || (!buf && n))
        return kw_error_set(err, KW_EINVAL, "artifact put: no database, run, name or data");
    if (db->readonly)
        return kw_error_set(err, KW_EDB, "'%s': opened read-only; cannot record an artifact",
                            db->path);
    char sha[65], dir[4200], path[4300];
    kw_sha256_hex(buf ? buf : "", n, sha);
    snprintf(dir, sizeof dir, "%s/artifacts/%.2s", kw_home(), sha);
    snprintf(path, sizeof path, "%s/%s", dir, sha);
    int rc = kw__store_write_durable(dir, sha, buf, n, err);
    if (rc == KW_OK)
        rc = kw_db_artifact(db, uuid, name, sha, path, err);
    if (rc == KW_OK && sha256)
        memcpy(sha256, sha, 65);
    return rc;
}

int kw_cache_put(kw_db *db, const char key[65], const char *what, const void *buf, size_t n,
                 kw_error *err)
{
    int rc = check_key(key, err);
    if (rc < 0)
        return rc;
    if (!db || (!buf && n))
        return kw_error_set(err, KW_EINVAL, "cache put: no database or data");
    if (db->readonly)
        return kw_error_set(err, KW_EDB, "'%s': opened read-only; cannot add to the cache",
                            db->path);
    char dir[4200], path[4300], sha[65];
    snprintf(dir, sizeof dir, "%s/cache/%.2s", kw_home(), key);
    snprintf(path, sizeof path, "%s/%s", dir, key);
    rc = kw__store_write_durable(dir, key, buf, n, err);
    if (rc < 0)
        return rc;
    kw_sha256_hex(buf ? buf : "", n, sha);
    return kw__db_write(db, err, "cannot record a cache entry", NULL,
                        "INSERT OR REPLACE INTO cache (key, what, path, bytes, sha256, "
                        "created) VALUES (?, ?, ?, ?, ?, ?)",
                        "tttitd", key, what, path, (int64_t)n, sha, kw_wall_time());
}

/* Reads the blob; 1 when it is there with the recorded size and hash. */
static int read_blob(const char *path, int64_t bytes, const char *sha, void **buf, size_t *n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    char *b = NULL;
    int ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == bytes;
    if (ok)
        ok = (b = malloc((size_t)bytes + 1)) != NULL;
    size_t got = 0;
    while (ok && got < (size_t)bytes) {
        ssize_t r = read(fd, b + got, (size_t)bytes - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            ok = 0;
        else
            got += (size_t)r;
    }
    close(fd);
    char hex[65];
    if (ok) {
        kw_sha256_hex(b, (size_t)bytes, hex);
        ok = sha && !strcmp(hex, sha);
    }
    if (!ok) {
        free(b);
        return 0;
    }
    b[bytes] = '\0';
    *buf = b;
    *n = (size_t)bytes;
    return 1;
}

int kw_cache_get(kw_db *db, const char key[65], void **buf, size_t *n, kw_error *err)
{
    *buf = NULL;
    *n = 0;
    int rc = check_key(key, err);
    if (rc < 0)
        return rc;
    if (!db)
        return kw_error_set(err, KW_EINVAL, "cache get: no database");
    char path[4300], sha[65];
    int64_t bytes = -1;
    kw__db_lock(db);
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db->h, "SELECT path, bytes, sha256 FROM cache WHERE key = ?",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        src = sqlite3_step(st);
        if (src == SQLITE_ROW) {
            const char *p = (const char *)sqlite3_column_text(st, 0);
            const char *s = (const char *)sqlite3_column_text(st, 2);
            snprintf(path, sizeof path, "%s", p ? p : "");
            snprintf(sha, sizeof sha, "%s", s ? s : "");
            bytes = sqlite3_column_int64(st, 1);
        }
        src = src == SQLITE_ROW || src == SQLITE_DONE ? SQLITE_OK : src;
    }
    if (src != SQLITE_OK)
        rc = kw__db_fail(db, sqlite3_extended_errcode(db->h), err, "cannot read the cache");
    sqlite3_finalize(st);
    kw__db_unlock(db);
    if (rc < 0 || bytes < 0)
        return rc < 0 ? rc : 0;
    if (read_blob(path, bytes, sha, buf, n))
        return 1;
    if (!db->readonly) /* the file is gone or changed: forget it */
        kw__db_write(db, NULL, "cannot drop a cache entry", NULL,
                     "DELETE FROM cache WHERE key = ? AND path = ?", "tt", key, path);
    return 0;
}
