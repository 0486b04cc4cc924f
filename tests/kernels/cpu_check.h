/* Helpers shared by the CPU kernel tests (cmocka): a seeded generator (splitmix64; the
 * including file defines CPU_CHECK_SEED first to pick its stream), random shapes and
 * data, and relative L2 error. */
#ifndef KW_TESTS_CPU_CHECK_H
#define KW_TESTS_CPU_CHECK_H

#include <math.h>
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

/* n values uniform in (-scale, scale): a malloc'd array (one value when n is 0) */
static inline float *randv(int64_t n, float scale)
{
    const int64_t m = n > 0 ? n : 1;
    float *v = malloc(sizeof(float) * (size_t)m);
    if (!v)
        abort();
    for (int64_t i = 0; i < m; i++)
        v[i] = (float)((uni() * 2 - 1) * scale);
    return v;
}

/* n values in (0, scale] (one value when n is 0) */
static inline float *randpos(int64_t n, float scale)
{
    const int64_t m = n > 0 ? n : 1;
    float *v = malloc(sizeof(float) * (size_t)m);
    if (!v)
        abort();
    for (int64_t i = 0; i < m; i++)
        v[i] = (float)((1.0 - uni()) * scale);
    return v;
}

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
