/* Hub HTTP with libcurl's easy API. Redirects are followed here, not by libcurl, so that
 * the token never leaves the endpoint's origin and a HEAD can stop at the CDN redirect
 * whose headers carry the file's metadata. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hub_internal.h"
#include "kvweave/util.h"
#include "kw_config.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_global_rc;

static void curl_global(void) { curl_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int kw__hub_curl_init(CURL **out, kw_error *err)
{
    pthread_once(&curl_once, curl_global);
    if (curl_global_rc != CURLE_OK)
        return kw_error_set(err, KW_EIO, "libcurl initialisation failed: %s",
                            curl_easy_strerror(curl_global_rc));
    *out = curl_easy_init();
    if (!*out)
        return kw_error_set(err, KW_ENOMEM, "libcurl: cannot create a handle");
    return KW_OK;
}

void kw__hub_normalize_etag(const char *in, char *out, size_t n)
{
    while (*in == ' ')
        in++;
    if (!strncmp(in, "W/", 2))
        in += 2;
    size_t len = strlen(in);
    while (len && (in[len - 1] == ' ' || in[len - 1] == '"'))
        len--;
    while (len && *in == '"') {
        in++;
        len--;
    }
    if (len >= n)
        len = n - 1;
    memcpy(out, in, len);
    out[len] = '\0';
}

bool kw__hub_quote(const char *s, bool keep_slash, char *out, size_t n)
{
    static const char *hex = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool plain = isalnum(*p) || strchr("-._~", *p) || (keep_slash && *p == '/');
        if (o + (plain ? 1 : 3) >= n)
            return false;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return true;
}

bool kw__hub_origin(const char *url, char *buf, size_t n)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK;
    if (ok) {
        snprintf(buf, n, "%s://%s:%s", scheme, host, port);
        for (char *c = buf; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

void kw__hub_url_clean(const char *url, char *out, size_t n)
{
    size_t k = strcspn(url, "?#");
    snprintf(out, n, "%.*s%s", (int)k, url, url[k] ? "?..." : "");
}

static bool same_origin(const char *a, const char *b)
{
    char oa[512], ob[512];
    return kw__hub_origin(a, oa, sizeof oa) && kw__hub_origin(b, ob, sizeof ob) &&
           !strcmp(oa, ob);
}

void kw__hub_resp_clear(kw__hub_resp *r)
{
    free(r->location);
    free(r->url);
    free(r->body);
    memset(r, 0, sizeof *r);
    r->linked_size = r->content_length = r->range_start = -1;
}

/* Per-transfer state seen by the callbacks. */
typedef struct xfer {
    const kw__hub_req *req;
    kw__hub_resp *resp;
    bool first_body;
    bool range_bad;
    bool too_big;
    double t0, last_report;
} xfer;

static void copy_value(char *dst, size_t n, const char *v, size_t len)
{
    if (len >= n)
        len = n - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static void parse_link_next(kw__hub_resp *r, const char *v)
{
    /* Link: <url1>; rel="next", <url2>; rel="last" */
    const char *p = v;
    while ((p = strchr(p, '<'))) {
        const char *e = strchr(p, '>');
        if (!e)
            return;
        const char *comma = strchr(e, ',');
        const char *rel = strstr(e, "rel=\"next\"");
        if (rel && (!comma || rel < comma)) {
            copy_value(r->link_next, sizeof r->link_next, p + 1, (size_t)(e - p - 1));
            return;
        }
        p = e;
    }
}

void kw__hub_header_line(kw__hub_resp *r, const char *buf, size_t n)
{
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* a new response (after a 1xx): forget the previous headers */
        char *keep_url = r->url;
        r->url = NULL;
        kw__hub_resp_clear(r);
        r->url = keep_url;
        const char *sp = memchr(buf, ' ', n);
        char code[8] = "";
        if (sp && (size_t)(sp + 1 - buf) < n)
            copy_value(code, sizeof code, sp + 1, n - (size_t)(sp + 1 - buf));
        r->status = strtol(code, NULL, 10);
        return;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon)
        return;
    size_t klen = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vlen = n - klen - 1;
    while (vlen && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    char val[2048];
    copy_value(val, sizeof val, v, vlen);
#define KEY(s) (klen == strlen(s) && !strncasecmp(buf, s, klen))
    if (KEY("X-Repo-Commit"))
        copy_value(r->commit, sizeof r->commit, val, strlen(val));
    else if (KEY("ETag"))
        kw__hub_normalize_etag(val, r->etag, sizeof r->etag);
    else if (KEY("X-Linked-Etag"))
        kw__hub_normalize_etag(val, r->linked_etag, sizeof r->linked_etag);
    else if (KEY("X-Linked-Size"))
        r->linked_size = strtoll(val, NULL, 10);
    else if (KEY("Content-Length"))
        r->content_length = strtoll(val, NULL, 10);
    else if (KEY("X-Error-Code"))
        copy_value(r->error_code, sizeof r->error_code, val, strlen(val));
    else if (KEY("X-Error-Message"))
        copy_value(r->error_msg, sizeof r->error_msg, val, strlen(val));
    else if (KEY("Content-Type"))
        copy_value(r->content_type, sizeof r->content_type, val, strlen(val));
    else if (KEY("Content-Range") && !strncasecmp(val, "bytes ", 6))
        r->range_start = strtoll(val + 6, NULL, 10);
    else if (KEY("Link"))
        parse_link_next(r, val);
#undef KEY
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *user)
{
    xfer *x = user;
    kw__hub_header_line(x->resp, buf, size * nitems);
    return size * nitems;
}

static bool body_is_file(const xfer *x)
{
    return x->req->fd >= 0 && (x->resp->status == 200 || x->resp->status == 206);
}

static bool append_body(kw__hub_resp *r, const char *buf, size_t n)
{
    char *b = realloc(r->body, r->body_n + n + 1);
    if (!b)
        return false;
    memcpy(b + r->body_n, buf, n);
    r->body = b;
    r->body_n += n;
    b[r->body_n] = '\0';
    return true;
}

static size_t on_body(char *buf, size_t size, size_t nitems, void *user)
{
    xfer *x = user;
    kw__hub_resp *r = x->resp;
    size_t n = size * nitems;
    if (!body_is_file(x)) {
        if (x->req->fd < 0 && r->status / 100 == 2) { /* an API answer */
            if (r->body_n + n > x->req->body_cap) {
                x->too_big = true;
                return 0;
            }
            return append_body(r, buf, n) ? n : 0;
        }
        /* an error page or a redirect's body: keep its start for the message */
        size_t room = r->body_n < 4096 ? 4096 - r->body_n : 0;
        size_t k = n < room ? n : room;
        return !k || append_body(r, buf, k) ? n : 0;
    }
    if (x->first_body) {
        x->first_body = false;
        if (r->status == 206 && r->range_start != x->req->offset) {
            x->range_bad = true;
            return 0;
        }
        if (r->status == 200 && x->req->offset > 0) {
            /* the validator did not match (or no range support): start over */
            if (ftruncate(x->req->fd, 0) != 0) {
                r->write_errno = errno;
                return 0;
            }
            r->restarted = true;
        }
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(x->req->fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            r->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    r->written += (int64_t)n;
    return n;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    xfer *x = user;
    const kw__hub_req *q = x->req;
    if (!q->progress || !q->pinfo || !body_is_file(x))
        return 0;
    double now = kw_now();
    if (now - x->last_report < 0.1)
        return 0;
    x->last_report = now;
    kw_hub_progress p = *q->pinfo;
    int64_t base = x->resp->status == 206 ? q->offset : 0;
    p.done = base + (int64_t)dlnow;
    if (p.total < 0 && dltotal > 0)
        p.total = base + (int64_t)dltotal;
    p.elapsed_s = now - x->t0;
    p.rate_bps = p.elapsed_s > 0 ? (double)dlnow / p.elapsed_s : 0;
    p.finished = false;
    q->progress(&p, q->progress_user);
    return 0;
}

static struct curl_slist *build_headers(const kw__hub_req *req, bool send_token)
{
    struct curl_slist *h = NULL, *t;
    char line[4096];
    h = curl_slist_append(NULL, "Accept-Encoding: identity");
    snprintf(line, sizeof line, "User-Agent: kvweave/%s; libcurl/%s", KW_VERSION,
             curl_version_info(CURLVERSION_NOW)->version);
    if (h && (t = curl_slist_append(h, line)))
        h = t;
    if (h && send_token && req->token && *req->token) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", req->token);
        if ((t = curl_slist_append(h, line)))
            h = t;
    }
    if (h && req->offset > 0 && !strcmp(req->method, "GET")) {
        snprintf(line, sizeof line, "Range: bytes=%lld-", (long long)req->offset);
        if ((t = curl_slist_append(h, line)))
            h = t;
        if (req->if_range && *req->if_range) {
            snprintf(line, sizeof line, "If-Range: \"%s\"", req->if_range);
            if ((t = curl_slist_append(h, line)))
                h = t;
        }
    }
    return h;
}

static int perform_once(CURL *c, const kw__hub_req *req, const char *url, kw__hub_resp *resp,
                        kw_error *err)
{
    bool head = !strcmp(req->method, "HEAD");
    struct curl_slist *hdrs = build_headers(req, same_origin(url, req->endpoint));
    if (!hdrs)
        return kw_error_set(err, KW_ENOMEM, "out of memory building request headers");
    xfer x = {.req = req, .resp = resp, .first_body = true, .t0 = kw_now()};
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, req->connect_timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, req->stall_timeout_s);
    if (req->total_timeout_s > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT, req->total_timeout_s);
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    free(resp->url);
    resp->url = strdup(url);
    resp->curl_code = (int)cc;
    if (cc == CURLE_OK) {
        char *loc = NULL;
        if (resp->status / 100 == 3 && curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &loc) ==
                                               CURLE_OK && loc)
            resp->location = strdup(loc);
        return KW_OK;
    }
    char shown[1024];
    kw__hub_url_clean(url, shown, sizeof shown);
    if (x.range_bad)
        return kw_error_set(err, KW_EIO,
                            "%s answered 206 from byte %lld but kvweave asked from byte %lld",
                            shown, (long long)resp->range_start, (long long)req->offset);
    if (x.too_big)
        return kw_error_set(err, KW_ELIMIT, "the response of %s passes %zu bytes", shown,
                            req->body_cap);
    if (resp->write_errno) {
        int e = resp->write_errno;
        return kw_error_set(err, KW_EIO, "%swriting '%s' after %lld bytes: %s",
                            e == ENOSPC || e == EDQUOT ? "disk full: " : "",
                            req->fd_path ? req->fd_path : "(memory)",
                            (long long)(req->offset + resp->written), strerror(e));
    }
    resp->interrupted = cc == CURLE_PARTIAL_FILE || cc == CURLE_RECV_ERROR ||
                        cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_GOT_NOTHING ||
                        cc == CURLE_HTTP2 || cc == CURLE_HTTP2_STREAM;
    return kw_error_set(err, KW_EIO, "%s %s: %s", req->method, shown, curl_easy_strerror(cc));
}

int kw__hub_http(CURL *c, const kw__hub_req *req, kw__hub_resp *resp, kw_error *err)
{
    kw__hub_resp_clear(resp);
    char *url = strdup(req->url);
    if (!url)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int hop = 0;; hop++) {
        int rc = perform_once(c, req, url, resp, err);
        if (rc < 0 || resp->status / 100 != 3 || !resp->location) {
            free(url);
            return rc;
        }
        if (req->stop_cross_origin && !same_origin(resp->location, req->endpoint)) {
            free(url);
            return KW_OK;
        }
        if (hop >= KW__HUB_MAX_REDIRECTS) {
            kw_error_set(err, KW_ELIMIT, "more than %d redirects starting at %s (last to %s)",
                         KW__HUB_MAX_REDIRECTS, req->url, resp->location);
            free(url);
            return err ? err->code : KW_ELIMIT;
        }
        free(url);
        url = resp->location;
        resp->location = NULL;
        /* a redirected ranged GET must not find a previous hop's state */
        char *keep = resp->url;
        resp->url = NULL;
        kw__hub_resp_clear(resp);
        resp->url = keep;
    }
}
