/* See mapfile.h. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapfile.h"

int kw__mapfile_open(const char *path, void **map, size_t *size, kw_error *err)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kw_error_at(err, errno == ENOENT ? KW_ENOTFOUND : KW_EIO, path, 0, 0,
                           "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kw_error_at(err, KW_EINVAL, path, 0, 0, "not a regular file");
    }
    size_t n = (size_t)st.st_size;
    if (n > 0) {
        void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kw_error_at(err, KW_EIO, path, 0, 0, "cannot map %zu bytes: %s", n,
                               strerror(e));
        }
        *map = m;
    }
    close(fd);
    *size = n;
    return KW_OK;
}

void kw__mapfile_close(void *map, size_t size)
{
    if (map)
        munmap(map, size);
}
