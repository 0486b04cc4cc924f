/* The hub cache on disk, in huggingface_hub's layout (see hub.h): names, refs,
 * snapshot symlinks, blob locks, blob verification and provenance read back. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub_internal.h"
#include "kvweave/util.h"

static bool name_char(char c) { return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.'; }

static bool valid_part(const char *s, size_t len)
{
    if (len == 0 || len > 96 || s[0] == '-' || s[0] == '.' || s[len - 1] == '-' ||
        s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!name_char(s[i]))
            return false;
        if (i && ((s[i] == '-' && s[i - 1] == '-') || (s[i] == '.' && s[i - 1] == '.')))
            return false;
    }
    return true;
}

bool kw__hub_valid_repo_id(const char *id)
{
    const char *slash = strchr(id, '/');
    if (!slash || strchr(slash + 1, '/'))
        return false;
    return valid_part(id, (size_t)(slash - id)) && valid_part(slash + 1, strlen(slash + 1));
}

/* A path inside a repo: relative, no empty, "." or ".." component, no backslash or
 * control characters: it becomes a path under snapshots/<commit>/. */
bool kw__hub_valid_path(const char *path)
{
    if (!*path || *path == '/' || strlen(path) > 1024)
        return false;
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '\\' || *p == 0x7f)
            return false;
    const char *s = path;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && !strncmp(s, "..", 2)))
            return false;
        s += len + (e ? 1 : 0);
        if (e && !*s)
            return false;
    }
    return true;
}

bool kw__hub_valid_revision(const char *rev)
{
    return *rev && strlen(rev) < 200 && kw__hub_valid_path(rev);
}

bool kw__hub_is_commit(const char *rev)
{
    if (strlen(rev) != 40)
        return false;
    for (int i = 0; i < 40; i++)
        if (!isxdigit((unsigned char)rev[i]) || isupper((unsigned char)rev[i]))
            return false;
    return true;
}

int kw__hub_repo_init(kw__hub_repo *r, const char *repo_id, kw_hub_repo_type type,
                      kw_error *err)
{
    memset(r, 0, sizeof *r);
    if (!kw__hub_valid_repo_id(repo_id))
        return kw_error_set(err, KW_EINVAL,
                            "'%s' is not a repo id: expected ORG/NAME of letters, digits, "
                            "'-', '_' and '.' (at most 96 each)", repo_id);
    int rc = kw_hub_cache_dir(r->cache, sizeof r->cache, err);
    if (rc < 0)
        return rc;
    snprintf(r->repo_id, sizeof r->repo_id, "%s", repo_id);
    r->type = type;
    char name[300];
    size_t o = (size_t)snprintf(name, sizeof name, "%s--",
                                type == KW_HUB_DATASET ? "datasets" : "models");
    for (const char *c = repo_id; *c && o + 3 < sizeof name; c++) {
        if (*c == '/') {
            name[o++] = '-';
            name[o++] = '-';
        } else {
            name[o++] = *c;
        }
    }
    name[o] = '\0';
    snprintf(r->folder, sizeof r->folder, "%s/%s", r->cache, name);
    snprintf(r->lockdir, sizeof r->lockdir, "%s/.locks/%s", r->cache, name);
    return KW_OK;
}

int kw__hub_mkdirs(const char *dir, kw_error *err)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return kw_error_set(err, KW_EIO, "cannot create directory '%s': %s", buf,
                                    strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return KW_OK;
}

int kw__hub_ref_read(const kw__hub_repo *r, const char *rev, char commit[64])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/refs/%s", r->folder, rev);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(commit, 1, 63, f);
    fclose(f);
    commit[n] = '\0';
    while (n && isspace((unsigned char)commit[n - 1]))
        commit[--n] = '\0';
    return kw__hub_is_commit(commit) ? 1 : 0;
}

/* Writes path atomically: a unique temporary name in the same directory, then rename. */
static int write_atomic(const char *path, const char *text, kw_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%ld.%d.tmp", path, (long)getpid(), rand() & 0xffff);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return kw_error_set(err, KW_EIO, "cannot write '%s': %s", tmp, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kw_error_set(err, KW_EIO, "%scannot write '%s': %s",
                            e == ENOSPC ? "disk full: " : "", path, strerror(e));
    }
    return KW_OK;
}

int kw__hub_ref_write(const kw__hub_repo *r, const char *rev, const char *commit,
                      kw_error *err)
{
    if (!strcmp(rev, commit))
        return KW_OK;
    char cur[64];
    if (kw__hub_ref_read(r, rev, cur) == 1 && !strcmp(cur, commit))
        return KW_OK;
    char path[4096], dir[4096];
    snprintf(path, sizeof path, "%s/refs/%s", r->folder, rev);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    int rc = kw__hub_mkdirs(dir, err);
    return rc < 0 ? rc : write_atomic(path, commit, err);
}

void kw__hub_link_target(const char *path, const char *etag, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    /* snapshots/<commit>/ is two levels below the repo folder, plus one per directory */
    int up = 2;
    for (const char *p = path; *p; p++)
        up += *p == '/';
    for (int i = 0; i < up && o + 3 < n; i++)
        o += (size_t)snprintf(out + o, n - o, "../");
    snprintf(out + o, n - o, "blobs/%s", etag);
}

int kw__hub_link(const kw__hub_repo *r, const char *commit, const char *path,
                 const char *etag, kw_error *err)
{
    char link[4096], target[2048], dir[4096], cur[2048];
    snprintf(link, sizeof link, "%s/snapshots/%s/%s", r->folder, commit, path);
    kw__hub_link_target(path, etag, target, sizeof target);
    ssize_t k = readlink(link, cur, sizeof cur - 1);
    if (k > 0) {
        cur[k] = '\0';
        if (!strcmp(cur, target))
            return KW_OK;
    }
    snprintf(dir, sizeof dir, "%s", link);
    *strrchr(dir, '/') = '\0';
    int rc = kw__hub_mkdirs(dir, err);
    if (rc < 0)
        return rc;
    /* a new link under a unique name renamed over the old one: readers never miss it */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%ld.%d.tmp", link, (long)getpid(), rand() & 0xffff);
    if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
        int e = errno;
        unlink(tmp);
        return kw_error_set(err, KW_EIO, "cannot link '%s' -> '%s': %s", link, target,
                            strerror(e));
    }
    return KW_OK;
}

int kw__hub_lock(const kw__hub_repo *r, const char *etag, long timeout_s, kw_error *err)
{
    int rc = kw__hub_mkdirs(r->lockdir, err);
    if (rc < 0)
        return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.lock", r->lockdir, etag);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return kw_error_set(err, KW_EIO, "cannot open lock '%s': %s", path, strerror(errno));
    double deadline = kw_now() + (double)timeout_s;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(fd);
            return kw_error_set(err, KW_EIO, "cannot lock '%s': %s", path, strerror(e));
        }
        if (kw_now() > deadline) {
            close(fd);
            return kw_error_set(err, KW_EIO,
                                "another process has held '%s' for more than %ld s", path,
                                timeout_s);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return fd;
}

void kw__hub_unlock(int fd)
{
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

/* git's object id of a file: sha1("blob <size>\0" + content). */
static int git_sha1_file(const char *file, char hex[41], kw_error *err)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        return kw_error_set(err, KW_EIO, "cannot open '%s': %s", file, strerror(errno));
    struct stat st;
    fstat(fileno(f), &st);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha1(), NULL);
    char head[64];
    int hn = snprintf(head, sizeof head, "blob %lld", (long long)st.st_size);
    EVP_DigestUpdate(md, head, (size_t)hn + 1);
    unsigned char buf[1 << 16], d[20];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        EVP_DigestUpdate(md, buf, k);
    bool bad = ferror(f);
    fclose(f);
    unsigned len = 20;
    EVP_DigestFinal_ex(md, d, &len);
    EVP_MD_CTX_free(md);
    if (bad)
        return kw_error_set(err, KW_EIO, "cannot read '%s'", file);
    for (int i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return KW_OK;
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcasecmp(s + a - b, suffix);
}

/* The file's type by its first bytes: an HTML page where a binary belongs, a GGUF or
 * safetensors file that does not start the way the format does. */
static int verify_magic(const char *file, const char *repo_path, const char *ctype,
                        kw_error *err)
{
    unsigned char head[512];
    FILE *f = fopen(file, "rb");
    if (!f)
        return kw_error_set(err, KW_EIO, "cannot open '%s': %s", file, strerror(errno));
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    size_t i = 0;
    while (i < n && isspace(head[i]))
        i++;
    bool html = (ctype && !strncasecmp(ctype, "text/html", 9)) ||
                (n - i >= 5 && (!strncasecmp((char *)head + i, "<!doc", 5) ||
                                !strncasecmp((char *)head + i, "<html", 5)));
    if (html && !ends_with(repo_path, ".html") && !ends_with(repo_path, ".htm"))
        return kw_error_set(err, KW_EFORMAT,
                            "'%s': the server sent an HTML page (Content-Type '%s', starts "
                            "'%.24s') instead of the file; a proxy or login page?",
                            repo_path, ctype ? ctype : "", (char *)head + i);
    if (ends_with(repo_path, ".gguf") && (n < 4 || memcmp(head, "GGUF", 4)))
        return kw_error_set(err, KW_EFORMAT,
                            "'%s' is not a GGUF file: it starts with %02x %02x %02x %02x, "
                            "not 'GGUF'", repo_path, n > 0 ? head[0] : 0, n > 1 ? head[1] : 0,
                            n > 2 ? head[2] : 0, n > 3 ? head[3] : 0);
    if (ends_with(repo_path, ".safetensors") && (n < 9 || head[8] != '{'))
        return kw_error_set(err, KW_EFORMAT,
                            "'%s' is not a safetensors file: no JSON header after the 8-byte "
                            "length", repo_path);
    return KW_OK;
}

int kw__hub_verify(const char *file, const char *repo_path, const char *etag,
                   const char *content_type, kw_error *err)
{
    int rc = verify_magic(file, repo_path, content_type, err);
    if (rc < 0)
        return rc;
    char got[65];
    if (is_hex(etag, 64)) {
        rc = kw_sha256_file(file, got, err);
        if (rc < 0)
            return rc;
        if (strcasecmp(got, etag))
            return kw_error_set(err, KW_EFORMAT,
                                "checksum mismatch for '%s': sha256 is %s but the hub's etag "
                                "is %s; the download was deleted", repo_path, got, etag);
    } else if (is_hex(etag, 40)) {
        rc = git_sha1_file(file, got, err);
        if (rc < 0)
            return rc;
        if (strcasecmp(got, etag))
            return kw_error_set(err, KW_EFORMAT,
                                "checksum mismatch for '%s': git blob sha1 is %s but the hub's "
                                "etag is %s; the download was deleted", repo_path, got, etag);
    }
    return KW_OK;
}

/* Provenance read back from the cache: the blob a snapshot link points to is the etag. */
static int prov_add(kw_hub_prov *prov, const char *snap, const char *rel, kw_error *err)
{
    char link[4096], target[4096];
    snprintf(link, sizeof link, "%s/%s", snap, rel);
    ssize_t k = readlink(link, target, sizeof target - 1);
    struct stat st;
    if (stat(link, &st) != 0)
        return kw_error_set(err, KW_ENOTFOUND, "'%s' is missing or a broken link", link);
    const char *etag = "";
    if (k > 0) {
        target[k] = '\0';
        const char *b = strrchr(target, '/');
        etag = b ? b + 1 : target;
    }
    kw_hub_file *f = realloc(prov->files, (prov->n_files + 1) * sizeof *f);
    if (!f)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    prov->files = f;
    f += prov->n_files;
    f->path = strdup(rel);
    f->etag = strdup(etag);
    f->size = (int64_t)st.st_size;
    if (!f->path || !f->etag) {
        free(f->path);
        free(f->etag);
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    prov->n_files++;
    return KW_OK;
}

static int prov_walk(kw_hub_prov *prov, const char *snap, const char *rel, int depth,
                     kw_error *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", snap, *rel ? "/" : "", rel);
    if (depth > 32)
        return kw_error_set(err, KW_ELIMIT, "'%s' is nested more than 32 levels", dir);
    DIR *d = opendir(dir);
    if (!d)
        return kw_error_set(err, KW_ENOTFOUND, "cannot open '%s': %s", dir, strerror(errno));
    int rc = KW_OK;
    struct dirent *e;
    while (rc == KW_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[4096], full[8200];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", snap, sub);
        struct stat st;
        if (lstat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            rc = prov_walk(prov, snap, sub, depth + 1, err);
        else if (!strstr(e->d_name, ".tmp"))
            rc = prov_add(prov, snap, sub, err);
    }
    closedir(d);
    return rc;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const kw_hub_file *)a)->path, ((const kw_hub_file *)b)->path);
}

int kw__hub_prov_fill(const kw__hub_repo *r, const char *commit, const char *path,
                      kw_hub_prov *prov, kw_error *err)
{
    char snap[4096];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", r->folder, commit);
    snprintf(prov->repo_id, sizeof prov->repo_id, "%s", r->repo_id);
    snprintf(prov->repo_type, sizeof prov->repo_type, "%s",
             r->type == KW_HUB_DATASET ? "dataset" : "model");
    snprintf(prov->commit, sizeof prov->commit, "%s", commit);
    int rc = path ? prov_add(prov, snap, path, err) : prov_walk(prov, snap, "", 0, err);
    if (rc == KW_OK && prov->n_files > 1)
        qsort(prov->files, prov->n_files, sizeof *prov->files, cmp_file);
    return rc;
}
