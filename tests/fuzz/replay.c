/* The corpus replayer of every fuzz target built without libFuzzer (-Dfuzz=false): main()
 * hands each file named on the command line, and each file of each directory named (in
 * name order, dot files skipped), to the target's LLVMFuzzerTestOneInput, so the committed
 * corpora run as ordinary tests. Each input is an exact-size copy, so that a sanitizer
 * build sees any read past its end. Exits 1 when a path cannot be read or when no input
 * was replayed. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvweave/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    char *buf;
    size_t n;
    kw_error err = {0};
    if (kw_read_file(path, &buf, &n, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", path, n);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

/* Every file of directory dir, in name order; the number replayed, or -1. */
static int replay_dir(const char *dir)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort), files = 0, bad = 0;
    if (n < 0) {
        fprintf(stderr, "cannot read the corpus directory %s\n", dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!bad && ents[i]->d_name[0] != '.') {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
            if (replay_file(path) < 0)
                bad = 1;
            else
                files++;
        }
        free(ents[i]);
    }
    free(ents);
    return bad ? -1 : files;
}

int main(int argc, char **argv)
{
    const char *me = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    int files = 0;
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        if (stat(argv[a], &sb) < 0) {
            fprintf(stderr, "%s: cannot read %s\n", me, argv[a]);
            return 1;
        }
        int n = S_ISDIR(sb.st_mode) ? replay_dir(argv[a]) : replay_file(argv[a]) < 0 ? -1 : 1;
        if (n < 0)
            return 1;
        files += n;
    }
    printf("%s: replayed %d inputs\n", me, files);
    return files > 0 ? 0 : 1;
}
