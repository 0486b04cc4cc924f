/* Results store: SQLite in WAL mode, busy_timeout set, one writer per process
 * (BEGIN IMMEDIATE), forward-only migrations from schemas/sql. Tables in MLflow's shape:
 * runs, params, metrics, samples, stages, artifacts, cache (ARCHITECTURE.md section 6).
 * Every function is safe to call from several threads (a mutex serializes them).
 * Connections use synchronous=NORMAL: a committed write survives a crash of the process;
 * a power loss may drop the last transactions, never corrupt the file.
 *
 *   kw_db *db; kw_error err = {0};
 *   kw_db_open(path, 0, &db, &err);     // KW_EDB: not SQLite, or a newer schema
 *   char run[37];
 *   kw_db_run_begin(db, &info, run, &err);
 *   kw_db_sample(db, run, 0, "id-0", hash, "prediction", "[\"answer\"]", "FINISHED", NULL, &err);
 *   kw_db_metric(db, run, 0, "score", 0.5, 0, &err);
 *   kw_db_run_end(db, run, "FINISHED", &err);
 *   db = kw_db_close(db);
 */
#ifndef KW_STORE_RESULTS_H
#define KW_STORE_RESULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvweave/status.h"

typedef struct kw_db kw_db;

/* Opens (read-write: creates, with parent folders, and migrates) the store at path.
 * Errors, and the file is left as it was: KW_EDB for a file that is not SQLite, is
 * truncated, is another program's SQLite database, or has a newer schema version than
 * this build knows (both numbers in the message); KW_ENOTFOUND when readonly and the file
 * is missing. readonly opens with SQLITE_OPEN_READONLY and refuses every write. */
int kw_db_open(const char *path, bool readonly, kw_db **out, kw_error *err);
/* (nullable) Rolls back a transaction left open; returns NULL. */
kw_db *kw_db_close(kw_db *db);
int kw_db_schema_version(kw_db *db);
/* The schema version this build knows (the number of embedded migrations). */
int kw_db_schema_latest(void);
/* (transfer none) the path given to kw_db_open */
const char *kw_db_path(kw_db *db);

typedef struct kw_run_info {
    const char *parent;       /* nullable: the sweep's parent run uuid */
    const char *pipeline;     /* pipeline name */
    const char *yaml;         /* full text */
    const char *yaml_sha256;
    const char *cell_label;   /* sweep cell ("" or NULL if none) */
    const char *model_id;     /* nullable */
    const char *model_sha256; /* nullable */
    const char *dataset_id;   /* nullable */
    const char *dataset_sha256;
    const char *device;
    uint64_t seed;
} kw_run_info;

/* Creates a RUNNING run; also records the kvweave version and git commit, host, CPU
 * model, GPU and CUDA version when present. uuid: 36 chars + NUL. */
int kw_db_run_begin(kw_db *db, const kw_run_info *info, char uuid[37], kw_error *err);
/* status: "FINISHED" | "FAILED" | "KILLED" */
int kw_db_run_end(kw_db *db, const char *uuid, const char *status, kw_error *err);
/* Fills provenance fields learnt after begin (model, data set): key is a column name of
 * runs ("model_id", "model_sha256", "dataset_id", "dataset_sha256"). */
int kw_db_run_set(kw_db *db, const char *uuid, const char *key, const char *value,
                  kw_error *err);
int kw_db_param(kw_db *db, const char *uuid, const char *key, const char *value,
                kw_error *err);
/* sample < 0: a run-level metric. One value per (run, sample, key, step): a second
 * write replaces the first. */
int kw_db_metric(kw_db *db, const char *uuid, int64_t sample, const char *key, double value,
                 int64_t step, kw_error *err);
/* status: "FINISHED" | "FAILED"; error nullable. Replaces an earlier row of the sample. */
int kw_db_sample(kw_db *db, const char *uuid, int64_t idx, const char *sample_id,
                 const char *input_hash, const char *prediction, const char *answers_json,
                 const char *status, const char *error, kw_error *err);
/* Timings of one stage on one lane; a second write for (run, stage, lane) replaces the
 * first. stage "*" (KW_DB_LANE_TOTAL) holds a lane's totals for the whole run: `show`
 * takes the overlap ratio (sum of lane busy time / wall time) from those rows when
 * present, else from the per-stage rows, unless a run metric "overlap" was recorded. */
#define KW_DB_LANE_TOTAL "*"
int kw_db_stage(kw_db *db, const char *uuid, const char *stage, const char *lane,
                int64_t tasks, double busy_s, double wait_s, int64_t peak_bytes,
                kw_error *err);
/* The artifact file must already be durable (written, fsynced, renamed). */
int kw_db_artifact(kw_db *db, const char *uuid, const char *name, const char *sha256,
                   const char *path, kw_error *err);
/* Stores buf as a content-addressed artifact file
 * ($KVWEAVE_HOME/artifacts/<2 hex>/<sha256>; temp file, fsync, rename, fsync of the
 * folder) and then records it for the run. sha256 (nullable) receives the content hash. */
int kw_db_artifact_put(kw_db *db, const char *uuid, const char *name, const void *buf,
                       size_t n, char sha256[65], kw_error *err);

/* --resume: the newest unfinished (RUNNING/FAILED/KILLED) run of the same pipeline text
 * and cell; 1 found, 0 none, < 0 error. */
int kw_db_find_resumable(kw_db *db, const char *yaml_sha256, const char *cell_label,
                         char uuid[37], kw_error *err);
/* 1 if the sample finished in that run, 0 otherwise, < 0 on a database error. */
int kw_db_sample_done(kw_db *db, const char *uuid, int64_t idx);
/* Marks a resumed run RUNNING again. */
int kw_db_run_reopen(kw_db *db, const char *uuid, kw_error *err);

/* Groups writes: begin/commit an IMMEDIATE transaction (nesting counted; only the
 * outermost commit commits). The calling thread owns the transaction: other threads'
 * calls wait until its outermost commit. kw_db_rollback ends one level and makes the
 * outermost commit roll everything back (that commit then returns KW_EDB). */
int kw_db_begin(kw_db *db, kw_error *err);
int kw_db_commit(kw_db *db, kw_error *err);
int kw_db_rollback(kw_db *db, kw_error *err);

/* Stage-output cache (store/cache.c): content-addressed blobs under
 * $KVWEAVE_HOME/cache/<2 hex>/<key>, indexed in the cache table; key: 64 lowercase hex
 * digits (else KW_EINVAL). get: 1 hit (*buf transfer full, free(); one NUL byte past n),
 * 0 miss: no row, or the file is missing or its size or sha256 differ from the row (the
 * row is then dropped). put: durable file first (temp, fsync, rename, fsync of the
 * folder), then the row; a second put of a key replaces it. */
int kw_cache_get(kw_db *db, const char key[65], void **buf, size_t *n, kw_error *err);
int kw_cache_put(kw_db *db, const char key[65], const char *what, const void *buf, size_t n,
                 kw_error *err);

/* Raw handle (kept for callers that need SQLite itself; the CLI uses kw_db_query). */
struct sqlite3 *kw_db_handle(kw_db *db);

/* Read-only queries (store/query.c). Every statement of sql must be read-only (else
 * KW_EINVAL and nothing runs); args (nullable, text) bind ?1..?nargs of a single
 * statement. fn is called once per statement with vals == NULL (the header: column
 * names), then once per row; types[i] is a KW_DB_T_* value; vals[i] is NULL for SQL
 * NULL, blobs come as lowercase hex. Strings are valid during the call only. A non-zero
 * return of fn stops the query and is returned. */
enum { KW_DB_T_NULL, KW_DB_T_INT, KW_DB_T_REAL, KW_DB_T_TEXT, KW_DB_T_BLOB };
typedef int (*kw_db_row_fn)(void *ud, int ncol, const char *const *names,
                            const char *const *vals, const int *types);
int kw_db_query(kw_db *db, const char *sql, const char *const *args, int nargs,
                kw_db_row_fn fn, void *ud, kw_error *err);
/* A run named by the user: a full uuid, a prefix of >= 6 characters, or "last" (the
 * newest run). KW_ENOTFOUND none, KW_EINVAL ambiguous or too short. */
int kw_db_resolve_run(kw_db *db, const char *ref, char uuid[37], kw_error *err);

/* Folds the shard database at shard_path into dest (store/merge.c): copies every run
 * (with its params, metrics, samples, stages, artifacts) that dest lacks, and replaces a
 * run dest has as RUNNING when the shard has it ended. Idempotent. The shard is opened
 * read-only and must have dest's schema version. Counts (nullable) are filled. */
typedef struct kw_db_merge_stats {
    int64_t added, updated, skipped;
} kw_db_merge_stats;
int kw_db_merge(kw_db *dest, const char *shard_path, kw_db_merge_stats *st, kw_error *err);

#endif
