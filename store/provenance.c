/* Provenance of a run: host, CPU model, GPU and CUDA version, and run uuids. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "store_internal.h"

static char host[256], cpu[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

/* The first "model name" line of /proc/cpuinfo (x86); else the machine name of uname. */
static void read_cpu(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(cpu, sizeof cpu, "%s", v);
        trim(cpu);
        break;
    }
    if (f)
        fclose(f);
    struct utsname u;
    if (!cpu[0] && uname(&u) == 0)
        snprintf(cpu, sizeof cpu, "%s", u.machine);
}

static void init(void)
{
    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    read_cpu();
}

const char *kw__store_host(void)
{
    pthread_once(&once, init);
    return host[0] ? host : NULL;
}

const char *kw__store_cpu(void)
{
    pthread_once(&once, init);
    return cpu[0] ? cpu : NULL;
}

const char *kw__store_gpu_info(const char **cuda_version)
{
    if (cuda_version)
        *cuda_version = NULL;
    return NULL;
}

static int random_bytes(unsigned char *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, b, n);
    close(fd);
    return r == (ssize_t)n ? 0 : -1;
}

int kw__store_uuid4(char out[37], kw_error *err)
{
    unsigned char b[16];
    if (random_bytes(b, sizeof b) != 0)
        return kw_error_set(err, KW_EIO, "cannot read random bytes for a run id: %s",
                            strerror(errno));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char *x = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = x[b[i] >> 4];
        out[o++] = x[b[i] & 15];
    }
    out[o] = '\0';
    return KW_OK;
}
