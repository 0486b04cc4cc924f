/* The file-backed KV block store (kvstore.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvstore.h"

struct kw_kvstore {
    char *root;
    int64_t block_bytes;
};

static uint64_t hex64(const char *h)
{
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = h[i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

kw_blockid kw_blockid_from_hex(const char *hex)
{
    return (kw_blockid){.hi = hex64(hex), .lo = hex64(hex + 16)};
}

/* mkdir -p of path (modified in place while walking, restored). */
static int mkdirs(char *path, kw_error *err)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p)
            continue;
        char c = *p;
        *p = 0;
        int rc = mkdir(path, 0777);
        int e = errno;
        *p = c;
        if (rc < 0 && e != EEXIST) {
            *p = 0;
            kw_error_set(err, KW_EIO, "kv block store: cannot create directory %s: %s", path,
                         strerror(e));
            *p = c;
            return KW_EIO;
        }
        if (!c)
            return 0;
    }
}

int kw_kvstore_open(const char *root, int64_t block_bytes, kw_kvstore **out, kw_error *err)
{
    *out = NULL;
    if (!root || !*root || block_bytes < 1)
        return kw_error_set(err, KW_EINVAL, "kv block store: root '%s', block of %" PRId64
                            " bytes", root ? root : "(null)", block_bytes);
    kw_kvstore *s = calloc(1, sizeof *s);
    size_t n = strlen(root);
    char *data = malloc(n + 6);
    if (!s || !data || !(s->root = strdup(root))) {
        free(data);
        kw_kvstore_free(s);
        return kw_error_set(err, KW_ENOMEM, "kv block store: out of memory");
    }
    while (n > 1 && s->root[n - 1] == '/')
        s->root[--n] = 0;
    snprintf(data, n + 6, "%s/data", s->root);
    int rc = mkdirs(data, err);
    free(data);
    if (rc < 0) {
        kw_kvstore_free(s);
        return rc;
    }
    s->block_bytes = block_bytes;
    *out = s;
    return 0;
}

kw_kvstore *kw_kvstore_free(kw_kvstore *s)
{
    if (s) {
        free(s->root);
        free(s);
    }
    return NULL;
}

const char *kw_kvstore_root(const kw_kvstore *s) { return s->root; }
int64_t kw_kvstore_block_bytes(const kw_kvstore *s) { return s->block_bytes; }

int kw_kvstore_path(const kw_kvstore *s, kw_blockid id, bool active, char *buf, size_t n)
{
    int w = snprintf(buf, n, "%s/data/%016" PRIx64 "/%016" PRIx64 ".%s", s->root, id.hi, id.lo,
                     active ? "act" : "dat");
    return w < 0 || (size_t)w >= n ? KW_ELIMIT : 0;
}

/* The block's file name, or an error naming the block. */
static int path_of(const kw_kvstore *s, kw_blockid id, bool active, char *buf, size_t n,
                   kw_error *err)
{
    if (kw_kvstore_path(s, id, active, buf, n) < 0)
        return kw_error_set(err, KW_ELIMIT, "kv block store: path of block %016" PRIx64
                            "%016" PRIx64 " under %s is too long", id.hi, id.lo, s->root);
    return 0;
}

int kw_kvstore_lookup(const kw_kvstore *s, kw_blockid id, kw_error *err)
{
    char path[4096];
    int rc = path_of(s, id, false, path, sizeof path, err);
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return kw_error_set(err, KW_EIO, "kv block store: %s: %s", path, strerror(errno));
    }
    if (st.st_size != s->block_bytes)
        return kw_error_set(err, KW_EFORMAT, "kv block store: %s has %lld bytes, want %" PRId64
                            " (another model, block size or KV type wrote it?)", path,
                            (long long)st.st_size, s->block_bytes);
    return 1;
}

int kw_kvstore_create(kw_kvstore *s, kw_blockid id, kw_error *err)
{
    char path[4096];
    int rc = path_of(s, id, true, path, sizeof path, err);
    if (rc < 0)
        return rc;
    char *slash = strrchr(path, '/');
    *slash = 0;
    if (mkdir(path, 0777) < 0 && errno != EEXIST) {
        int e = errno;
        return kw_error_set(err, KW_EIO, "kv block store: cannot create directory %s: %s",
                            path, strerror(e));
    }
    *slash = '/';
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        int e = errno;
        return kw_error_set(err, e == EEXIST ? KW_EINVAL : KW_EIO,
                            "kv block store: cannot create %s: %s%s", path, strerror(e),
                            e == EEXIST ? " (another writer, or left by a run that stopped; "
                                          "remove it if no run is writing)" : "");
    }
    if (ftruncate(fd, s->block_bytes) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return kw_error_set(err, KW_EIO, "kv block store: cannot size %s to %" PRId64
                            " bytes: %s", path, s->block_bytes, strerror(e));
    }
    close(fd);
    return 0;
}

static int range_check(const kw_kvstore *s, const char *path, int64_t off, int64_t n,
                       kw_error *err)
{
    if (off < 0 || n < 0 || off > s->block_bytes || n > s->block_bytes - off)
        return kw_error_set(err, KW_ERANGE, "kv block store: %s: %" PRId64 " bytes at offset %"
                            PRId64 " outside the block's %" PRId64, path, n, off,
                            s->block_bytes);
    return 0;
}

int kw_kvstore_write(kw_kvstore *s, kw_blockid id, int64_t off, const void *buf, int64_t n,
                     kw_error *err)
{
    char path[4096];
    int rc = path_of(s, id, true, path, sizeof path, err);
    if (rc < 0 || (rc = range_check(s, path, off, n, err)) < 0)
        return rc;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return kw_error_set(err, KW_EIO, "kv block store: cannot open %s: %s", path,
                            strerror(errno));
    const char *p = buf;
    for (int64_t done = 0; done < n;) {
        ssize_t w = pwrite(fd, p + done, (size_t)(n - done), (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            close(fd);
            return kw_error_set(err, KW_EIO, "kv block store: writing %s at offset %" PRId64
                                ": %s", path, off + done, strerror(e));
        }
        done += w;
    }
    close(fd);
    return 0;
}

int kw_kvstore_commit(kw_kvstore *s, kw_blockid id, kw_error *err)
{
    char act[4096], dat[4096];
    int rc = path_of(s, id, true, act, sizeof act, err);
    if (rc < 0 || (rc = path_of(s, id, false, dat, sizeof dat, err)) < 0)
        return rc;
    if (rename(act, dat) < 0)
        return kw_error_set(err, KW_EIO, "kv block store: cannot rename %s to %s: %s", act,
                            dat, strerror(errno));
    return 0;
}

int kw_kvstore_read(const kw_kvstore *s, kw_blockid id, int64_t off, void *buf, int64_t n,
                    kw_error *err)
{
    char path[4096];
    int rc = path_of(s, id, false, path, sizeof path, err);
    if (rc < 0 || (rc = range_check(s, path, off, n, err)) < 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return kw_error_set(err, e == ENOENT ? KW_ENOTFOUND : KW_EIO,
                            "kv block store: cannot open %s: %s", path, strerror(e));
    }
    char *p = buf;
    for (int64_t done = 0; done < n;) {
        ssize_t r = pread(fd, p + done, (size_t)(n - done), (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            close(fd);
            if (r == 0)
                return kw_error_set(err, KW_EIO, "kv block store: %s ends at offset %" PRId64
                                    ", want %" PRId64 " bytes from offset %" PRId64
                                    " (block files have %" PRId64 ")", path, off + done, n,
                                    off, s->block_bytes);
            return kw_error_set(err, KW_EIO, "kv block store: reading %s at offset %" PRId64
                                ": %s", path, off + done, strerror(e));
        }
        done += r;
    }
    close(fd);
    return 0;
}

int kw_kvstore_remove(kw_kvstore *s, kw_blockid id, bool active)
{
    char path[4096];
    if (kw_kvstore_path(s, id, active, path, sizeof path) < 0)
        return KW_ELIMIT;
    if (unlink(path) < 0 && errno != ENOENT)
        return KW_EIO;
    return 0;
}
