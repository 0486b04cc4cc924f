/* Internals shared by the files of store/ (results.c, query.c, merge.c, cache.c,
 * provenance.c). Nothing outside store/ includes this or sqlite3.h. */
#ifndef KW_STORE_INTERNAL_H
#define KW_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "results.h"

struct kw_db {
    sqlite3 *h;
    pthread_mutex_t mu; /* recursive; held from kw_db_begin to the outermost commit */
    int depth;          /* transaction nesting */
    bool doomed;        /* a nested rollback: the outermost commit rolls back */
    bool readonly;
    int version;
    char path[4096];
};

void kw__db_lock(kw_db *db);
void kw__db_unlock(kw_db *db);
/* Sets err from the connection's last error: KW_EDB (not a database, corrupt, read-only),
 * KW_EIO (I/O, disk full, locked too long), KW_ENOTFOUND (foreign key), KW_EINVAL (other
 * constraints), KW_ENOMEM. Message: "'<path>': <what>: <sqlite message>". */
int kw__db_fail(kw_db *db, int rc, kw_error *err, const char *what);
/* One write statement in its own (or the caller's) IMMEDIATE transaction. fmt gives the
 * bound arguments: 't' text (nullable), 'i' int64_t, 'd' double. changes (nullable)
 * receives sqlite3_changes(). */
int kw__db_write(kw_db *db, kw_error *err, const char *what, int *changes, const char *sql,
                 const char *fmt, ...);
/* Runs a script (no arguments) on the connection; the caller holds the lock. */
int kw__db_exec(kw_db *db, kw_error *err, const char *what, const char *sql);

/* cache.c: writes buf at dir/name durably (temp file in dir, fsync, rename, fsync of
 * dir), creating dir and its parents. */
int kw__store_write_durable(const char *dir, const char *name, const void *buf, size_t n,
                            kw_error *err);

/* provenance.c: (transfer none) static strings, NULL when unknown. */
const char *kw__store_host(void);
const char *kw__store_cpu(void);
/* The GPU model and (out, nullable) the CUDA version of the device a run uses: NULL
 * for now (nvidia-smi is never run; filled once the CUDA runtime reports devices). */
const char *kw__store_gpu_info(const char **cuda_version);
/* A random (version 4) uuid: 36 characters + NUL. */
int kw__store_uuid4(char out[37], kw_error *err);

#endif
