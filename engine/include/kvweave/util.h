/* kvweave — small shared helpers: paths, hashing, time, a seeded generator. */
#ifndef KVWEAVE_UTIL_H
#define KVWEAVE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* $KVWEAVE_HOME, else ~/.cache/kvweave (static string, no trailing slash). */
const char *kw_home(void);
/* $KVWEAVE_DATA, else "../shared/data" relative to the working directory. */
const char *kw_data_dir(void);

/* sha256 as 64 lowercase hex digits + NUL. */
void kw_sha256_hex(const void *buf, size_t n, char hex[65]);
int kw_sha256_file(const char *path, char hex[65], kw_error *err);

/* Monotonic clock in seconds; wall clock in seconds since the epoch. */
double kw_now(void);
/* Makes *p (*cap elements of elem bytes) hold at least need: at least doubles; KW_ENOMEM
 * leaves it as it was. */
int kw_grow(void **p, int64_t *cap, int64_t need, size_t elem);
double kw_wall_time(void);

/* A malloc'd copy of s that is valid UTF-8: each invalid piece becomes U+FFFD, a
 * character cut short (a lead byte with too few continuation bytes) being one piece, as
 * Python's decode(errors="replace") counts them. Text detokenized from a slice of
 * tokens can end or start inside a character. NULL when out of memory. */
char *kw_utf8_valid_copy(const char *s);

/* For a program's first line: OpenBLAS runs its own threads beside OpenMP's, and threads
 * of either that spin long while the other works take its cores (2 cores: decode 3-4x
 * slower with OpenMP threads spinning libgomp's default 300000 rounds; prefill 15-20%
 * slower with OpenBLAS threads spinning, as they do for 2^28 cycles after each call). A
 * short OpenMP spin still pays: a decode step runs hundreds of small parallel loops, and
 * a thread that sleeps between them is woken by the kernel each time (SmolLM2 Q4_1,
 * `bench cpu`, batch 1: 13 ms a step against 23 asleep). libgomp spins GOMP_SPINCOUNT
 * rounds, but only 100 once more of its threads exist than CPUs (a second team: the
 * model's load runs parallel loops on another thread than the engine's), unless the
 * policy is active, which makes that 1000. Both runtimes read their settings when they
 * load, so where the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT this sets them
 * to active and 3000, where OPENBLAS_THREAD_TIMEOUT is unset to 4 (the shortest spin),
 * and executes the program again; it returns at once when they are set, or if the exec
 * fails. */
void kw_quiet_threads(char **argv);

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
int kw_read_file(const char *path, char **out, size_t *n, kw_error *err);

/* splitmix64: advances *state and returns its next 64 random bits. The seeded streams of
 * data sets, sampling, synthetic weights and tests are made with it. */
static inline uint64_t kw_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#ifdef __cplusplus
}
#endif
#endif
