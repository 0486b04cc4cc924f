/* Internals shared by hub.c (resolution), hub_cache.c (the on-disk cache) and
 * hub_http.c (libcurl). Not part of the store's API. */
#ifndef KW_STORE_HUB_INTERNAL_H
#define KW_STORE_HUB_INTERNAL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "hub.h"

#define KW__HUB_MAX_REDIRECTS 10

/* One final HTTP response (after the redirects kvweave followed). */
typedef struct kw__hub_resp {
    long status;
    char *location;       /* absolute redirect target of a 3xx (malloc'd), else NULL */
    char *url;            /* the URL that answered (malloc'd) */
    char commit[64];      /* X-Repo-Commit */
    char etag[256];       /* ETag, normalised */
    char linked_etag[256];/* X-Linked-Etag, normalised */
    int64_t linked_size;  /* X-Linked-Size, -1 when absent */
    int64_t content_length;
    char error_code[64];  /* X-Error-Code */
    char error_msg[512];  /* X-Error-Message */
    char content_type[128];
    int64_t range_start;  /* Content-Range of a 206, -1 when absent */
    char link_next[2048]; /* Link: <...>; rel="next" */
    char *body;           /* memory sink, or the start of an error body (malloc'd) */
    size_t body_n;
    bool restarted;       /* a ranged GET got the whole body (200): the file restarts */
    bool interrupted;     /* the connection ended before the body did */
    int write_errno;      /* a write to the file failed with this errno */
    int64_t written;      /* body bytes written to the file by this request */
    int curl_code;
} kw__hub_resp;

typedef struct kw__hub_req {
    const char *method;       /* "HEAD" | "GET" */
    const char *url;
    const char *endpoint;     /* the token goes only to this URL's origin */
    const char *token;        /* nullable */
    bool stop_cross_origin;   /* HEAD: a redirect to another origin ends the request */
    int fd;                   /* GET body: the file (O_APPEND); -1: memory */
    const char *fd_path;      /* for messages */
    int64_t offset;           /* > 0: "Range: bytes=offset-" with If-Range */
    const char *if_range;     /* the etag for If-Range */
    size_t body_cap;          /* memory sink limit */
    long connect_timeout_s, stall_timeout_s, total_timeout_s;
    kw_hub_progress_fn progress;
    void *progress_user;
    kw_hub_progress *pinfo;   /* path, total, file_index filled by the caller */
} kw__hub_req;

/* Performs req, following redirects (at most KW__HUB_MAX_REDIRECTS). Returns 0 when a
 * response arrived (any status: the caller judges it), < 0 on a transport failure
 * (resp->interrupted / write_errno / curl_code say which). */
int kw__hub_http(CURL *curl, const kw__hub_req *req, kw__hub_resp *resp, kw_error *err);
void kw__hub_resp_clear(kw__hub_resp *r);
/* Takes one raw header line (a status line starts a new response). */
void kw__hub_header_line(kw__hub_resp *r, const char *buf, size_t n);

/* A tree API page: the paths of its "file" entries matching include (nullable). */
typedef struct kw__hub_list {
    char **v;
    size_t n, total; /* total: files seen, matching or not */
} kw__hub_list;
int kw__hub_tree_parse(const char *buf, size_t n, const char *url,
                       const char *const *include, kw__hub_list *l, kw_error *err);
void kw__hub_list_free(kw__hub_list *l);
bool kw__hub_included(const char *path, const char *const *include);
/* "scheme://host:port" of url, lowercased; false when url does not parse. */
bool kw__hub_origin(const char *url, char *buf, size_t n);
/* url without its query (signed CDN URLs carry credentials there), for messages. */
void kw__hub_url_clean(const char *url, char *out, size_t n);
int kw__hub_curl_init(CURL **out, kw_error *err);

/* Strips a W/ prefix and quotes from an ETag header value into out. */
void kw__hub_normalize_etag(const char *in, char *out, size_t n);
/* Percent-encodes s into out; keep_slash leaves '/' as is. false when out is too small. */
bool kw__hub_quote(const char *s, bool keep_slash, char *out, size_t n);

/* Cache (hub_cache.c) */
typedef struct kw__hub_repo {
    char cache[2048];        /* cache root */
    char folder[2304];       /* <cache>/models--ORG--NAME */
    char lockdir[2400];      /* <cache>/.locks/models--ORG--NAME */
    char repo_id[128];
    kw_hub_repo_type type;
} kw__hub_repo;

int kw__hub_repo_init(kw__hub_repo *r, const char *repo_id, kw_hub_repo_type type,
                      kw_error *err);
bool kw__hub_valid_repo_id(const char *id);
bool kw__hub_valid_path(const char *path);
bool kw__hub_valid_revision(const char *rev);
bool kw__hub_is_commit(const char *rev);
int kw__hub_mkdirs(const char *dir, kw_error *err);
/* refs/<revision> -> commit (1 found, 0 missing). */
int kw__hub_ref_read(const kw__hub_repo *r, const char *rev, char commit[64]);
int kw__hub_ref_write(const kw__hub_repo *r, const char *rev, const char *commit,
                      kw_error *err);
/* The relative symlink target from snapshots/<commit>/<path> to blobs/<etag>. */
void kw__hub_link_target(const char *path, const char *etag, char *out, size_t n);
int kw__hub_link(const kw__hub_repo *r, const char *commit, const char *path,
                 const char *etag, kw_error *err);
/* Takes <lockdir>/<etag>.lock with flock; returns the fd (>= 0) or an error. */
int kw__hub_lock(const kw__hub_repo *r, const char *etag, long timeout_s, kw_error *err);
void kw__hub_unlock(int fd);
/* Checks a finished download against its etag and its file type; KW_EFORMAT when the
 * content is wrong (the caller deletes it). */
int kw__hub_verify(const char *file, const char *repo_path, const char *etag,
                   const char *content_type, kw_error *err);
/* Fills prov's files from snapshots/<commit> (path nullable: every file). */
int kw__hub_prov_fill(const kw__hub_repo *r, const char *commit, const char *path,
                      kw_hub_prov *prov, kw_error *err);

#endif
