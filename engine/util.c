/* Small shared helpers (util.h). */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
