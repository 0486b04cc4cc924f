/* A streaming JSONL reader for the data set operators: one JSON object per line, read
 * line by line (the file is never loaded whole), with every bad line named by file, line
 * number and byte offset.
 *
 *   kw_jsonl_opts o = {.skip_bad = false, .check = my_check};
 *   kw_jsonl *r = NULL;
 *   if (kw_jsonl_open("data.jsonl", &o, &r, &err) < 0) ...
 *   json_t *rec;
 *   while ((rc = kw_jsonl_next(r, &rec, &err)) == 0) { ...; json_decref(rec); }
 *   // rc == KW_END at the end; < 0: err says "data.jsonl:7: byte 5123: ..."
 *   r = kw_jsonl_close(r);
 *
 * A bad line is one that is not valid UTF-8, not JSON, not an object, or that `check`
 * refuses. With skip_bad it is counted (kw_jsonl_skipped) and passed over; otherwise
 * kw_jsonl_next fails with KW_EPARSE (the reader stays usable: the next call goes on with
 * the following line). Blank lines are ignored.
 */
#ifndef KW_OPERATORS_DATASET_JSONL_READER_H
#define KW_OPERATORS_DATASET_JSONL_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#include "kvweave/status.h"

/* Returns 0 to accept rec, or nonzero after writing the reason ("field 'answers' is
 * missing") into why. */
typedef int (*kw_jsonl_check_fn)(const json_t *rec, void *arg, char *why, size_t cap);

typedef struct kw_jsonl_opts {
    bool skip_bad;
    kw_jsonl_check_fn check; /* nullable */
    void *check_arg;
    size_t max_line;         /* longest accepted line in bytes; 0 = 1 GiB */
} kw_jsonl_opts;

typedef struct kw_jsonl kw_jsonl;

/* Opens path (KW_ENOTFOUND when it cannot). */
int kw_jsonl_open(const char *path, const kw_jsonl_opts *o, kw_jsonl **out, kw_error *err);
/* Reads from an open stream instead (not closed by the reader); name is used in
 * messages. */
int kw_jsonl_open_stream(FILE *f, const char *name, const kw_jsonl_opts *o, kw_jsonl **out,
                         kw_error *err);
/* 0 and *rec (transfer full), KW_END after the last line, < 0 on a bad line or I/O. */
int kw_jsonl_next(kw_jsonl *r, json_t **rec, kw_error *err);
int64_t kw_jsonl_line(const kw_jsonl *r);      /* line number of the last line read */
uint64_t kw_jsonl_offset(const kw_jsonl *r);   /* byte offset where that line starts */
int64_t kw_jsonl_records(const kw_jsonl *r);   /* good records returned so far */
int64_t kw_jsonl_skipped(const kw_jsonl *r);   /* bad lines passed over (skip_bad) */
/* Accepts NULL; returns NULL. */
kw_jsonl *kw_jsonl_close(kw_jsonl *r);

/* Scans a whole file: counts its good records (and skipped lines), stopping at the
 * first bad line unless skip_bad. An empty file (no records) is KW_EFORMAT. */
int kw_jsonl_count(const char *path, const kw_jsonl_opts *o, int64_t *records,
                   int64_t *skipped, kw_error *err);

/* Which records to emit: skip the first `offset`, then a seeded random subset of
 * `sample` (0 = all) of the rest, in file order, then at most `limit` (0 = no limit). */
typedef struct kw_jsonl_pick {
    int64_t offset, limit, sample;
    uint64_t seed;
} kw_jsonl_pick;

/* The ascending record indices to emit out of n records (malloc'd; *n_idx may be 0). */
int kw_jsonl_select(int64_t n, const kw_jsonl_pick *p, int64_t **idx, int64_t *n_idx,
                    kw_error *err);

#endif
