/* Hub resolution: one file (HEAD then GET into the blob) or a whole repo (revision and
 * tree APIs, then every matching file), offline lookups, names and provenance. The
 * protocol and the cache layout are described in hub.h. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hub_internal.h"
#include "kvweave/util.h"

typedef struct ctx {
    kw__hub_repo repo;
    kw_hub_opts o;
    char endpoint[1024];
    const char *token;
    char token_buf[1024];
    CURL *curl;
    int file_index, file_count;
} ctx;

kw_hub_opts kw_hub_opts_default(void)
{
    return (kw_hub_opts){.repo_type = KW_HUB_MODEL, .offline = -1, .max_retries = 3,
                         .connect_timeout_s = 15, .stall_timeout_s = 60,
                         .lock_timeout_s = 3600};
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static bool env_true(const char *name)
{
    const char *v = env(name);
    return v && (!strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") ||
                 !strcasecmp(v, "true"));
}

bool kw_hub_offline_env(void) { return env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE"); }

const char *kw_hub_endpoint(char *buf, size_t n)
{
    const char *e = env("HF_ENDPOINT");
    snprintf(buf, n, "%s", e ? e : "https://huggingface.co");
    size_t len = strlen(buf);
    while (len && buf[len - 1] == '/')
        buf[--len] = '\0';
    return buf;
}

int kw_hub_cache_dir(char *buf, size_t n, kw_error *err)
{
    const char *v;
    int k;
    if ((v = env("HF_HUB_CACHE")) || (v = env("HUGGINGFACE_HUB_CACHE")))
        k = snprintf(buf, n, "%s", v);
    else if ((v = env("HF_HOME")))
        k = snprintf(buf, n, "%s/hub", v);
    else if ((v = env("XDG_CACHE_HOME")))
        k = snprintf(buf, n, "%s/huggingface/hub", v);
    else if ((v = env("HOME")))
        k = snprintf(buf, n, "%s/.cache/huggingface/hub", v);
    else
        return kw_error_set(err, KW_ENOTFOUND,
                            "no hub cache: set HF_HUB_CACHE, HF_HOME or HOME");
    if (k < 0 || (size_t)k >= n - 512)
        return kw_error_set(err, KW_ELIMIT, "the hub cache path '%s' is too long", v);
    while (k > 1 && buf[k - 1] == '/')
        buf[--k] = '\0';
    return KW_OK;
}

/* $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the file `hf auth login` writes:
 * $HF_TOKEN_PATH, else $HF_HOME/token, else $XDG_CACHE_HOME/huggingface/token, else
 * ~/.cache/huggingface/token. buf: 0 when none. */
static void find_token(char *buf, size_t n)
{
    const char *v = env("HF_TOKEN") ? env("HF_TOKEN") : env("HUGGING_FACE_HUB_TOKEN");
    buf[0] = '\0';
    if (v) {
        snprintf(buf, n, "%s", v);
        return;
    }
    char path[4096];
    if ((v = env("HF_TOKEN_PATH")))
        snprintf(path, sizeof path, "%s", v);
    else if ((v = env("HF_HOME")))
        snprintf(path, sizeof path, "%s/token", v);
    else if ((v = env("XDG_CACHE_HOME")))
        snprintf(path, sizeof path, "%s/huggingface/token", v);
    else if ((v = env("HOME")))
        snprintf(path, sizeof path, "%s/.cache/huggingface/token", v);
    else
        return;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t k = fread(buf, 1, n - 1, f), o = 0;
    fclose(f);
    for (size_t i = 0; i < k; i++) /* the token without spaces and line ends */
        if (buf[i] != '\r' && buf[i] != '\n' && buf[i] != ' ' && buf[i] != '\t')
            buf[o++] = buf[i];
    buf[o] = '\0';
}

static const char *type_word(const ctx *c) { return c->o.repo_type == KW_HUB_DATASET ? "data set" : "model"; }

/* {endpoint}/[datasets/]{repo}/resolve/{revision}/{path} */
static int resolve_url(const ctx *c, const char *rev, const char *path, char *out, size_t n,
                       kw_error *err)
{
    char qrev[800], qpath[3200];
    if (!kw__hub_quote(rev, false, qrev, sizeof qrev) ||
        !kw__hub_quote(path, true, qpath, sizeof qpath) ||
        (size_t)snprintf(out, n, "%s/%s%s/resolve/%s/%s", c->endpoint,
                         c->o.repo_type == KW_HUB_DATASET ? "datasets/" : "", c->repo.repo_id,
                         qrev, qpath) >= n)
        return kw_error_set(err, KW_ELIMIT, "the URL for '%s' is too long", path);
    return KW_OK;
}

/* An HTTP status the hub gave, in words that say what to do. */
static int http_error(const ctx *c, const kw__hub_resp *r, const char *rev, const char *path,
                      kw_error *err)
{
    const char *code = r->error_code, *msg = r->error_msg;
    const char *id = c->repo.repo_id;
    char what[1400];
    snprintf(what, sizeof what, "%s%s%s", path ? "file '" : "", path ? path : "",
             path ? "' of " : "");
    char detail[700] = "";
    if (*msg)
        snprintf(detail, sizeof detail, ": %s", msg);
    if (!strcmp(code, "GatedRepo"))
        return kw_error_set(err, KW_EIO,
                            "%s%s '%s' is gated (HTTP %ld GatedRepo%s); accept its terms on the "
                            "hub and set HF_TOKEN to a token of that account", what,
                            type_word(c), id, r->status, detail);
    if (r->status == 401 && strstr(msg, "Invalid credentials"))
        return kw_error_set(err, KW_EIO, "the hub refused HF_TOKEN (HTTP 401%s): check the "
                            "token", detail);
    if (!strcmp(code, "RevisionNotFound"))
        return kw_error_set(err, KW_ENOTFOUND, "revision '%s' not found in %s '%s' (HTTP %ld)",
                            rev, type_word(c), id, r->status);
    if (!strcmp(code, "EntryNotFound") || (r->status == 404 && path && !*code))
        return kw_error_set(err, KW_ENOTFOUND,
                            "file '%s' not found in %s '%s' at revision '%s' (HTTP %ld)",
                            path ? path : "?", type_word(c), id, rev, r->status);
    if (!strcmp(code, "RepoNotFound") || r->status == 401 || r->status == 404)
        return kw_error_set(err, KW_ENOTFOUND,
                            "%s '%s' not found on %s (HTTP %ld%s%s); check the name%s, or set "
                            "HF_TOKEN if it is private", type_word(c), id, c->endpoint,
                            r->status, *code ? " " : "", code,
                            c->o.repo_type == KW_HUB_MODEL ? " and --repo-type" : "");
    if (r->status == 403)
        return kw_error_set(err, KW_EIO, "%s%s '%s': access denied (HTTP 403%s%s%s)", what,
                            type_word(c), id, *code ? " " : "", code, detail);
    char shown[1024];
    kw__hub_url_clean(r->url ? r->url : c->endpoint, shown, sizeof shown);
    return kw_error_set(err, KW_EIO, "%s%s '%s': HTTP %ld from %s%s%s%.200s", what,
                        type_word(c), id, r->status, shown, detail,
                        r->body_n && !*msg ? ": " : "", r->body_n && !*msg ? r->body : "");
}

static kw__hub_req base_req(const ctx *c, const char *method, const char *url)
{
    return (kw__hub_req){.method = method, .url = url, .endpoint = c->endpoint,
                         .token = c->token, .fd = -1,
                         .connect_timeout_s = c->o.connect_timeout_s,
                         .stall_timeout_s = c->o.stall_timeout_s};
}

static void report(const ctx *c, const char *path, int64_t done, int64_t total, double t,
                   bool cached)
{
    if (!c->o.progress)
        return;
    kw_hub_progress p = {.path = path, .done = done, .total = total, .elapsed_s = t,
                         .rate_bps = t > 0 && !cached ? (double)done / t : 0,
                         .file_index = c->file_index, .file_count = c->file_count,
                         .finished = true, .cached = cached};
    c->o.progress(&p, c->o.progress_user);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Offline lookup of one file (path) or a snapshot (path NULL): 1 found (commit set),
 * 0 missing (why says which cache entry is missing). */
static int cached(const ctx *c, const char *rev, const char *path, char commit[64],
                  char *why, size_t why_n)
{
    if (kw__hub_is_commit(rev)) {
        snprintf(commit, 64, "%s", rev);
    } else if (kw__hub_ref_read(&c->repo, rev, commit) != 1) {
        snprintf(why, why_n, "no %s/refs/%s", c->repo.folder, rev);
        return 0;
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/snapshots/%s%s%s", c->repo.folder, commit, path ? "/" : "",
             path ? path : "");
    struct stat st;
    if (stat(p, &st) != 0 || (path && !S_ISREG(st.st_mode))) {
        snprintf(why, why_n, "no %s", p);
        return 0;
    }
    return 1;
}

static int offline_miss(const ctx *c, const char *rev, const char *path, const char *why,
                        kw_error *err)
{
    return kw_error_set(err, KW_ENOTFOUND,
                        "offline (HF_HUB_OFFLINE): %s%s%s%s '%s' at revision '%s' is not in "
                        "the hub cache (%s); pull it while online first",
                        path ? "file '" : "", path ? path : "", path ? "' of " : "",
                        type_word(c), c->repo.repo_id, rev, why);
}

static int disk_check(const char *dir, const char *path, int64_t need, kw_error *err)
{
    struct statvfs vfs;
    if (need <= 0 || statvfs(dir, &vfs) != 0)
        return KW_OK;
    int64_t avail = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
    if (need > avail)
        return kw_error_set(err, KW_EIO,
                            "disk full: '%s' needs %lld more bytes but '%s' has %lld free",
                            path, (long long)need, dir, (long long)avail);
    return KW_OK;
}

/* One GET attempt into the .incomplete file; 0 done, > 0 retry, < 0 error. */
static int get_attempt(ctx *c, const char *path, const char *etag, const char *url,
                       int64_t size, const char *inc, kw__hub_resp *resp, kw_error *err)
{
    int fd = open(inc, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return kw_error_set(err, KW_EIO, "cannot open '%s': %s", inc, strerror(errno));
    struct stat st;
    int64_t have = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : 0;
    if (size >= 0 && have > size) {
        if (ftruncate(fd, 0) != 0) {
            close(fd);
            return kw_error_set(err, KW_EIO, "cannot truncate '%s': %s", inc, strerror(errno));
        }
        have = 0;
    }
    if (size > 0 && have == size) {
        close(fd);
        return KW_OK; /* complete from an earlier attempt: verify it */
    }
    kw_hub_progress pinfo = {.path = path, .total = size, .file_index = c->file_index,
                             .file_count = c->file_count};
    kw__hub_req q = base_req(c, "GET", url);
    q.fd = fd;
    q.fd_path = inc;
    q.offset = have;
    q.if_range = etag;
    q.progress = c->o.progress;
    q.progress_user = c->o.progress_user;
    q.pinfo = &pinfo;
    int rc = kw__hub_http(c->curl, &q, resp, err);
    close(fd);
    if (rc == 0 && resp->status == 416) {
        if (truncate(inc, 0) != 0)
            return kw_error_set(err, KW_EIO, "cannot truncate '%s': %s", inc, strerror(errno));
        kw_error_set(err, KW_EIO, "'%s': the server refused the range from byte %lld (HTTP "
                     "416); the partial file was reset", path, (long long)have);
        return 1;
    }
    if (rc == 0 && resp->status != 200 && resp->status != 206) {
        char shown[1024];
        kw__hub_url_clean(resp->url ? resp->url : url, shown, sizeof shown);
        return kw_error_set(err, KW_EIO, "downloading '%s': HTTP %ld %s from %s%s%.200s",
                            path, resp->status, resp->error_code, shown,
                            *resp->error_msg ? ": " : "", resp->error_msg);
    }
    if (rc < 0 && resp->interrupted) {
        int64_t now = have + resp->written;
        if (resp->restarted)
            now = resp->written;
        kw_error_prefix(err, "transfer of '%s' interrupted after %lld of %lld bytes (kept in "
                        "'%s'; run again to resume)", path, (long long)now, (long long)size, inc);
        return 1;
    }
    return rc;
}

/* Downloads blobs/<etag> under its lock, resuming a .incomplete one, and verifies it. */
static int download_blob(ctx *c, const char *path, const char *etag, const char *url,
                         int64_t size, kw_error *err)
{
    char dir[4096], blob[4200], inc[4300];
    snprintf(dir, sizeof dir, "%s/blobs", c->repo.folder);
    snprintf(blob, sizeof blob, "%s/%s", dir, etag);
    snprintf(inc, sizeof inc, "%s.incomplete", blob);
    int rc = kw__hub_mkdirs(dir, err);
    if (rc < 0)
        return rc;
    int lock = kw__hub_lock(&c->repo, etag, c->o.lock_timeout_s, err);
    if (lock < 0)
        return lock;
    double t0 = kw_now();
    if (file_exists(blob)) { /* another process finished it while we waited */
        kw__hub_unlock(lock);
        report(c, path, size, size, 0, true);
        return KW_OK;
    }
    struct stat st;
    int64_t have = stat(inc, &st) == 0 ? (int64_t)st.st_size : 0;
    rc = disk_check(dir, path, size - have, err);
    kw__hub_resp resp = {0};
    for (int attempt = 0; rc == KW_OK; attempt++) {
        rc = get_attempt(c, path, etag, url, size, inc, &resp, err);
        if (rc <= 0 || attempt >= c->o.max_retries)
            break;
        rc = KW_OK;
        long ms = 200L * (attempt < 9 ? attempt + 1 : 10); /* a short, growing pause */
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc > 0)
        rc = err ? err->code : KW_EIO;
    if (rc == KW_OK) {
        rc = kw__hub_verify(inc, path, etag, resp.content_type, err);
        if (rc == KW_OK && size >= 0 && stat(inc, &st) == 0 && (int64_t)st.st_size != size)
            rc = kw_error_set(err, KW_EFORMAT, "'%s' has %lld bytes but the hub said %lld; the "
                              "download was deleted", path, (long long)st.st_size,
                              (long long)size);
        if (rc < 0)
            unlink(inc);
        else if (rename(inc, blob) != 0)
            rc = kw_error_set(err, KW_EIO, "cannot rename '%s': %s", inc, strerror(errno));
    }
    kw__hub_resp_clear(&resp);
    kw__hub_unlock(lock);
    if (rc == KW_OK && stat(blob, &st) == 0)
        report(c, path, (int64_t)st.st_size, (int64_t)st.st_size, kw_now() - t0, false);
    return rc;
}

static bool safe_etag(const char *e)
{
    size_t n = strlen(e);
    if (n == 0 || n > 128 || e[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", e[i]))
            return false;
    return true;
}

/* HEAD: the commit, the etag, the size and where the bytes are. */
static int head_file(ctx *c, const char *rev, const char *path, kw__hub_resp *resp,
                     kw_error *err)
{
    char url[4096];
    int rc = resolve_url(c, rev, path, url, sizeof url, err);
    if (rc < 0)
        return rc;
    kw__hub_req q = base_req(c, "HEAD", url);
    q.stop_cross_origin = true;
    q.total_timeout_s = 120;
    rc = kw__hub_http(c->curl, &q, resp, err);
    if (rc < 0)
        return rc;
    if (resp->status / 100 != 2 && resp->status / 100 != 3)
        return http_error(c, resp, rev, path, err);
    if (!kw__hub_is_commit(resp->commit))
        return kw_error_set(err, KW_EIO, "%s answered without an X-Repo-Commit header (got "
                            "'%s'); is HF_ENDPOINT a Hugging Face hub?", url, resp->commit);
    const char *etag = *resp->linked_etag ? resp->linked_etag : resp->etag;
    if (!safe_etag(etag))
        return kw_error_set(err, KW_EIO, "%s answered without a usable ETag (got '%s')", url,
                            etag);
    return KW_OK;
}

static int fetch_file(ctx *c, const char *rev, const char *path, char commit[64],
                      kw_error *err)
{
    char why[4300];
    if ((kw__hub_is_commit(rev) || c->o.prefer_cache) && cached(c, rev, path, commit, why,
                                                                sizeof why)) {
        report(c, path, 0, 0, 0, true);
        return KW_OK;
    }
    kw__hub_resp r = {0};
    kw_error herr = {0};
    int rc = head_file(c, rev, path, &r, &herr);
    bool down = r.curl_code != 0 || r.status >= 500 || r.status == 429;
    if (rc < 0 && down && cached(c, rev, path, commit, why, sizeof why)) {
        kw__hub_resp_clear(&r); /* the hub is unreachable: the cached copy will do */
        report(c, path, 0, 0, 0, true);
        return KW_OK;
    }
    if (rc < 0) {
        kw__hub_resp_clear(&r);
        if (err)
            *err = herr;
        return rc;
    }
    const char *etag = *r.linked_etag ? r.linked_etag : r.etag;
    int64_t size = r.linked_size >= 0 ? r.linked_size
                                      : (r.status == 200 ? r.content_length : -1);
    const char *dl = r.status / 100 == 3 && r.location ? r.location : r.url;
    snprintf(commit, 64, "%s", r.commit);
    char blob[4200];
    snprintf(blob, sizeof blob, "%s/blobs/%s", c->repo.folder, etag);
    if (file_exists(blob))
        report(c, path, size, size, 0, true);
    else
        rc = download_blob(c, path, etag, dl, size, err);
    if (rc == KW_OK)
        rc = kw__hub_link(&c->repo, commit, path, etag, err);
    if (rc == KW_OK)
        rc = kw__hub_ref_write(&c->repo, rev, commit, err);
    kw__hub_resp_clear(&r);
    return rc;
}

/* GET of an API URL into memory (at most 64 MiB): parsed as JSON into out, or as a
 * tree page into l. */
static int api_get(ctx *c, const char *url, json_t **out, char next[2048], kw__hub_list *l,
                   kw_error *err)
{
    kw__hub_req q = base_req(c, "GET", url);
    q.body_cap = 64u << 20;
    q.total_timeout_s = 300;
    kw__hub_resp r = {0};
    int rc = kw__hub_http(c->curl, &q, &r, err);
    if (rc == 0 && r.status != 200)
        rc = http_error(c, &r, c->o.revision ? c->o.revision : "main", NULL, err);
    if (rc == 0 && l) {
        rc = kw__hub_tree_parse(r.body, r.body_n, url, c->o.include, l, err);
    } else if (rc == 0) {
        json_error_t je;
        *out = json_loadb(r.body ? r.body : "", r.body_n, 0, &je);
        if (!*out)
            rc = kw_error_set(err, KW_EPARSE, "%s: line %d column %d: %s", url, je.line,
                              je.column, je.text);
    }
    if (next)
        snprintf(next, 2048, "%s", rc == 0 ? r.link_next : "");
    kw__hub_resp_clear(&r);
    return rc;
}

static const char *api_kind(const ctx *c) { return c->o.repo_type == KW_HUB_DATASET ? "datasets" : "models"; }

static int repo_commit(ctx *c, const char *rev, char commit[64], kw_error *err)
{
    char qrev[800], url[4096];
    kw__hub_quote(rev, false, qrev, sizeof qrev);
    snprintf(url, sizeof url, "%s/api/%s/%s/revision/%s", c->endpoint, api_kind(c),
             c->repo.repo_id, qrev);
    json_t *j = NULL;
    int rc = api_get(c, url, &j, NULL, NULL, err);
    if (rc < 0)
        return rc;
    const char *sha = json_string_value(json_object_get(j, "sha"));
    if (!sha || !kw__hub_is_commit(sha))
        rc = kw_error_set(err, KW_EPARSE, "%s: no 40-hex \"sha\" in the answer", url);
    else
        snprintf(commit, 64, "%s", sha);
    json_decref(j);
    return rc;
}

bool kw__hub_included(const char *path, const char *const *inc)
{
    if (!inc || !*inc)
        return true;
    for (; *inc; inc++) {
        char pat[1100];
        size_t n = strlen(*inc);
        snprintf(pat, sizeof pat, "%s%s", *inc, n && (*inc)[n - 1] == '/' ? "*" : "");
        if (fnmatch(pat, path, 0) == 0)
            return true;
    }
    return false;
}

void kw__hub_list_free(kw__hub_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

static int tree_entries(json_t *arr, const char *url, const char *const *include,
                        kw__hub_list *l, kw_error *err)
{
    if (!json_is_array(arr))
        return kw_error_set(err, KW_EPARSE, "%s: expected a JSON array of entries", url);
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *path = json_string_value(json_object_get(e, "path"));
        if (!type || !path)
            return kw_error_set(err, KW_EPARSE, "%s: entry %zu has no \"type\" or \"path\" "
                                "string", url, i);
        if (strcmp(type, "file"))
            continue;
        if (!kw__hub_valid_path(path))
            return kw_error_set(err, KW_EPARSE, "%s: entry %zu has an unsafe path '%.200s'",
                                url, i, path);
        l->total++;
        if (!kw__hub_included(path, include))
            continue;
        char **v = realloc(l->v, (l->n + 1) * sizeof *v);
        if (!v)
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        l->v = v;
        if (!(v[l->n] = strdup(path)))
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        l->n++;
    }
    return KW_OK;
}

int kw__hub_tree_parse(const char *buf, size_t n, const char *url,
                       const char *const *include, kw__hub_list *l, kw_error *err)
{
    json_error_t je;
    json_t *j = json_loadb(buf ? buf : "", n, 0, &je);
    if (!j)
        return kw_error_set(err, KW_EPARSE, "%s: line %d column %d: %s", url, je.line,
                            je.column, je.text);
    int rc = tree_entries(j, url, include, l, err);
    json_decref(j);
    return rc;
}

/* Every file of the repo at commit, filtered by the include globs. */
static int repo_files(ctx *c, const char *commit, kw__hub_list *l, kw_error *err)
{
    char url[4096], next[2048];
    snprintf(url, sizeof url, "%s/api/%s/%s/tree/%s?recursive=true", c->endpoint,
             api_kind(c), c->repo.repo_id, commit);
    for (int page = 0;; page++) {
        if (page >= 1000)
            return kw_error_set(err, KW_ELIMIT, "the file list of '%s' passes 1000 pages",
                                c->repo.repo_id);
        int rc = api_get(c, url, NULL, next, l, err);
        if (rc < 0 || !*next)
            return rc;
        char o1[512], o2[512];
        if (!kw__hub_origin(next, o1, sizeof o1) || !kw__hub_origin(c->endpoint, o2, sizeof o2)
            || strcmp(o1, o2))
            return kw_error_set(err, KW_EIO, "the file list's next page '%s' is not on %s",
                                next, c->endpoint);
        snprintf(url, sizeof url, "%s", next);
    }
}

static int fetch_repo(ctx *c, const char *rev, char commit[64], kw_error *err)
{
    char why[4300];
    if ((kw__hub_is_commit(rev) || c->o.prefer_cache) && cached(c, rev, NULL, commit, why,
                                                                sizeof why))
        return KW_OK;
    int rc = repo_commit(c, rev, commit, err);
    if (rc < 0)
        return rc;
    kw__hub_list l = {0};
    rc = repo_files(c, commit, &l, err);
    if (rc == KW_OK && l.n == 0)
        rc = kw_error_set(err, KW_ENOTFOUND, "no file of %s '%s' at '%s' matches the include "
                          "globs (%zu files in the repo)", type_word(c), c->repo.repo_id, rev,
                          l.total);
    c->file_count = (int)l.n;
    for (size_t i = 0; rc == KW_OK && i < l.n; i++) {
        char got[64];
        c->file_index = (int)i + 1;
        rc = fetch_file(c, commit, l.v[i], got, err);
    }
    kw__hub_list_free(&l);
    char snap[4096];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", c->repo.folder, commit);
    if (rc == KW_OK)
        rc = kw__hub_mkdirs(snap, err);
    if (rc == KW_OK)
        rc = kw__hub_ref_write(&c->repo, rev, commit, err);
    return rc;
}

static int check_offline_includes(const ctx *c, const kw_hub_prov *p, kw_error *err)
{
    if (!c->o.include || !*c->o.include)
        return KW_OK;
    for (size_t i = 0; i < p->n_files; i++)
        if (kw__hub_included(p->files[i].path, c->o.include))
            return KW_OK;
    return kw_error_set(err, KW_ENOTFOUND, "offline (HF_HUB_OFFLINE): no cached file of '%s' "
                        "matches the include globs", c->repo.repo_id);
}

static int resolve_cached(ctx *c, const char *rev, const char *path, char commit[64],
                          kw_error *err)
{
    char why[4300];
    if (!cached(c, rev, path, commit, why, sizeof why))
        return offline_miss(c, rev, path, why, err);
    return KW_OK;
}

int kw_hub_resolve(const char *repo_id, const char *path, const kw_hub_opts *opts,
                   char **local_path, kw_hub_prov *prov, kw_error *err)
{
    ctx c = {.o = opts ? *opts : kw_hub_opts_default(), .file_index = 1, .file_count = 1};
    const char *rev = c.o.revision && *c.o.revision ? c.o.revision : "main";
    *local_path = NULL;
    if (!kw__hub_valid_revision(rev))
        return kw_error_set(err, KW_EINVAL, "'%s' is not a revision name", rev);
    if (path && !kw__hub_valid_path(path))
        return kw_error_set(err, KW_EINVAL, "'%s' is not a path inside a repo (relative, "
                            "no '..' or empty parts)", path);
    int rc = kw__hub_repo_init(&c.repo, repo_id, c.o.repo_type, err);
    if (rc < 0)
        return rc;
    kw_hub_endpoint(c.endpoint, sizeof c.endpoint);
    find_token(c.token_buf, sizeof c.token_buf);
    c.token = c.token_buf[0] ? c.token_buf : NULL;
    bool offline = c.o.offline < 0 ? kw_hub_offline_env() : c.o.offline > 0;
    char commit[64] = "";
    if (offline) {
        rc = resolve_cached(&c, rev, path, commit, err);
    } else {
        rc = kw__hub_curl_init(&c.curl, err);
        if (rc == KW_OK)
            rc = path ? fetch_file(&c, rev, path, commit, err) : fetch_repo(&c, rev, commit, err);
        curl_easy_cleanup(c.curl);
    }
    kw_hub_prov tmp = {0};
    kw_hub_prov *p = prov ? prov : &tmp;
    if (rc == KW_OK) {
        kw_hub_prov_clear(p);
        snprintf(p->revision, sizeof p->revision, "%s", rev);
        rc = kw__hub_prov_fill(&c.repo, commit, path, p, err);
    }
    if (rc == KW_OK && offline && !path)
        rc = check_offline_includes(&c, p, err);
    if (rc == KW_OK) {
        char buf[8192];
        snprintf(buf, sizeof buf, "%s/snapshots/%s%s%s", c.repo.folder, commit,
                 path ? "/" : "", path ? path : "");
        if (!(*local_path = strdup(buf)))
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    kw_hub_prov_clear(&tmp);
    return rc;
}
