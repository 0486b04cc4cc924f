/* Small shared helpers (util.h). */
#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvweave/util.h"

const char *kw_home(void)
{
    static char buf[4096];
    const char *e = getenv("KVWEAVE_HOME");
    if (e && *e)
        snprintf(buf, sizeof buf, "%s", e);
    else
        snprintf(buf, sizeof buf, "%s/.cache/kvweave", getenv("HOME") ? getenv("HOME") : ".");
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    return buf;
}

const char *kw_data_dir(void)
{
    const char *e = getenv("KVWEAVE_DATA");
    return e && *e ? e : "../shared/data";
}

static void to_hex(const unsigned char *d, char hex[65])
{
    static const char *x = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = x[d[i] >> 4];
        hex[2 * i + 1] = x[d[i] & 15];
    }
    hex[64] = '\0';
}

void kw_sha256_hex(const void *buf, size_t n, char hex[65])
{
    unsigned char d[32];
    unsigned len = 32;
    EVP_Digest(buf, n, d, &len, EVP_sha256(), NULL);
    to_hex(d, hex);
}

int kw_sha256_file(const char *path, char hex[65], kw_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kw_error_set(err, KW_ENOTFOUND, "cannot open '%s': %s", path, strerror(errno));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    static _Thread_local unsigned char buf[1 << 16];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0)
        EVP_DigestUpdate(md, buf, r);
    int bad = ferror(f);
    fclose(f);
    unsigned char d[32];
    unsigned len = 32;
    EVP_DigestFinal_ex(md, d, &len);
    EVP_MD_CTX_free(md);
    if (bad)
        return kw_error_set(err, KW_EIO, "cannot read '%s'", path);
    to_hex(d, hex);
    return KW_OK;
}

int kw_grow(void **p, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    int64_t c = *cap * 2 > need ? *cap * 2 : need;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q)
        return KW_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

double kw_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double kw_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int kw_read_file(const char *path, char **out, size_t *n, kw_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kw_error_set(err, KW_ENOTFOUND, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len - 1 == 0) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!b)
        return kw_error_set(err, KW_ENOMEM, "out of memory reading '%s'", path);
    if (bad) {
        free(b);
        return kw_error_set(err, KW_EIO, "cannot read '%s'", path);
    }
    b[len] = '\0';
    *out = b;
    if (n)
        *n = len;
    return KW_OK;
}

/* A copy of s with each invalid UTF-8 piece replaced by U+FFFD (EF BF BD): a lead byte
 * with the continuation bytes that follow it but too few of them (a character cut at a
 * seam) is one piece, as Python's decoder with errors="replace" counts it; any other
 * invalid byte is a piece of its own. */
char *kw_utf8_valid_copy(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1), *w = o;
    if (!o)
        return NULL;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        int len = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
                : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = len > 0 && p + len <= end;
        for (int k = 1; ok && k < len; k++)
            ok = (p[k] & 0xc0) == 0x80;
        if (ok && len > 1) { /* no overlong forms, surrogates or code points > U+10FFFF */
            uint32_t cp = p[0] & (0x7f >> len);
            for (int k = 1; k < len; k++)
                cp = cp << 6 | (p[k] & 0x3f);
            static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= min[len] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
        }
        if (ok) {
            memcpy(w, p, (size_t)len);
            w += len;
            p += len;
        } else {
            int skip = 1;
            while (len > 1 && skip < len && p + skip < end && (p[skip] & 0xc0) == 0x80)
                skip++;
            if (skip == len) /* a complete but invalid sequence: one piece per byte */
                skip = 1;
            memcpy(w, "\xef\xbf\xbd", 3);
            w += 3;
            p += skip;
        }
    }
    *w = '\0';
    return o;
}

void kw_quiet_threads(char **argv)
{
    bool omp = getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"),
         blas = getenv("OPENBLAS_THREAD_TIMEOUT");
    if (omp && blas)
        return;
    if (!omp) {
        setenv("OMP_WAIT_POLICY", "active", 1);
        setenv("GOMP_SPINCOUNT", "3000", 1);
    }
    if (!blas)
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: go on with the runtimes' defaults */
}
