/* kvweave — a file-backed KV block store: where an offloading method (retrieve.kvstar)
 * puts KV blocks that leave the pool, and reads them back from.
 *
 *   kw_kvstore *s; kw_kvstore_open("/tmp/kv", block_bytes, &s, &err);
 *   kw_blockid id = kw_blockid_from_hex(digest);   // 128 bits naming the block
 *   kw_kvstore_create(s, id, &err);                // <root>/data/<hi>/<lo>.act, sized
 *   kw_kvstore_write(s, id, off, buf, n, &err);    // any byte ranges, any order
 *   kw_kvstore_commit(s, id, &err);                // renamed to <lo>.dat: complete
 *   kw_kvstore_read(s, id, off, buf, n, &err);     // from the .dat
 *   s = kw_kvstore_free(s);
 *
 * Layout (as UCM's NFS store): one file per block at <root>/data/<hi64 as 16 lowercase
 * hex>/<lo64 as 16 lowercase hex>.dat, written under the name .act and renamed when
 * complete, so a .dat file is always whole. Every block file has the store's
 * block_bytes (kv_block_size); what the bytes mean is the caller's. Writes and reads
 * are pwrite and pread on a file opened for the call, so any thread may read while the
 * owner writes other blocks. Nothing is fsynced: the store is a working tier, not a
 * record (a crash leaves .act files, which are never read).
 *
 * Errors name the file, the offset and the sizes: a block file whose size is not
 * block_bytes is KW_EFORMAT; a short read or a missing file is KW_EIO or KW_ENOTFOUND.
 */
#ifndef KVWEAVE_STORE_KVSTORE_H
#define KVWEAVE_STORE_KVSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvweave/status.h"

typedef struct kw_kvstore kw_kvstore;

typedef struct kw_blockid {
    uint64_t hi, lo;
} kw_blockid;

/* The first 32 hex digits of a digest (e.g. kw_sha256_hex's) as a block id. */
kw_blockid kw_blockid_from_hex(const char *hex);

/* Opens (creating <root>/data as needed) a store of blocks of block_bytes bytes. */
int kw_kvstore_open(const char *root, int64_t block_bytes, kw_kvstore **out, kw_error *err);
/* Accepts NULL; returns NULL. Files stay. */
kw_kvstore *kw_kvstore_free(kw_kvstore *s);
const char *kw_kvstore_root(const kw_kvstore *s);
int64_t kw_kvstore_block_bytes(const kw_kvstore *s);

/* The block's file name (the .act one when active) into buf; KW_ELIMIT when it does
 * not fit in n bytes. */
int kw_kvstore_path(const kw_kvstore *s, kw_blockid id, bool active, char *buf, size_t n);
/* 1 when the block's .dat exists with block_bytes bytes, 0 when there is none,
 * KW_EFORMAT (another size) or KW_EIO with the file and sizes in err. */
int kw_kvstore_lookup(const kw_kvstore *s, kw_blockid id, kw_error *err);
/* Creates the block's .act file (exclusively) with block_bytes bytes: KW_EINVAL when
 * one exists already (another writer, or a crash), KW_EIO on other errors. */
int kw_kvstore_create(kw_kvstore *s, kw_blockid id, kw_error *err);
/* n bytes at off of the block's .act file; KW_ERANGE outside [0, block_bytes). */
int kw_kvstore_write(kw_kvstore *s, kw_blockid id, int64_t off, const void *buf, int64_t n,
                     kw_error *err);
/* Renames the .act file to .dat. */
int kw_kvstore_commit(kw_kvstore *s, kw_blockid id, kw_error *err);
/* n bytes at off of the block's .dat file into buf; thread-safe. */
int kw_kvstore_read(const kw_kvstore *s, kw_blockid id, int64_t off, void *buf, int64_t n,
                    kw_error *err);
/* Removes the block's file (the .act one when active); a missing file is not an error. */
int kw_kvstore_remove(kw_kvstore *s, kw_blockid id, bool active);

#endif
