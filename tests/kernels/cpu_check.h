/* Helpers shared by the CPU kernel tests (cmocka): a seeded generator (splitmix64; the
 * including file defines CPU_CHECK_SEED first to pick its stream), random shapes and
 * data, and relative L2 error. */
#ifndef KW_TESTS_CPU_CHECK_H
#define KW_TESTS_CPU_CHECK_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "kvweave/util.h"

#ifndef CPU_CHECK_SEED
#define CPU_CHECK_SEED 0x2545f4914f6cdd1dull
#endif

static uint64_t rng = CPU_CHECK_SEED;

/* uniform in [0, 1) */
static inline double uni(void) { return (double)(kw_splitmix64(&rng) >> 11) * 0x1.0p-53; }

/* uniform in [lo, hi] */
static inline int irand(int lo, int hi) { return lo + (int)(uni() * (hi - lo + 1)); }

/* n random values (one when n is 0) in a malloc'd array: uniform in (-scale, scale), or
 * with positive in (0, scale] */
static inline float *rand_values(int64_t n, float scale, bool positive)
{
    const int64_t m = n > 0 ? n : 1;
    float *v = malloc(sizeof(float) * (size_t)m);
    if (!v)
        abort();
    for (int64_t i = 0; i < m; i++)
        v[i] = (float)((positive ? 1.0 - uni() : uni() * 2 - 1) * scale);
    return v;
}
static inline float *randv(int64_t n, float scale) { return rand_values(n, scale, false); }
static inline float *randpos(int64_t n, float scale) { return rand_values(n, scale, true); }

/* ||a - b|| / ||b|| (or ||a - b|| where b is all zeros), in double */
static inline double rel_l2(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

#endif
