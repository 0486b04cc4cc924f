/* Dequantization throughput on a synthetic model shaped like SmolLM2-135M in Q4_1 (the
 * default model's file: 106.2M Q4_1 + 28.3M Q8_0 elements). Not a test; run by hand:
 *   build/tests/bench/bench_dequant [repeats]
 * Prints the time of a cold pass (fresh output pages) and of warm passes. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvweave/tensor.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *random_blocks(kw_dtype t, int64_t n, uint64_t seed)
{
    size_t be, bb;
    kw_dtype_block(t, &be, &bb);
    int64_t nb = n / (int64_t)be;
    uint8_t *p = malloc((size_t)nb * bb);
    for (int64_t i = 0; i < nb * (int64_t)bb; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(seed >> 56);
    }
    for (int64_t b = 0; b < nb; b++) { /* finite f16 scales: 0x2xxx is ~1e-3 */
        p[b * (int64_t)bb + 1] = 0x20;
        if (t == KW_DT_Q4_1)
            p[b * (int64_t)bb + 3] = 0x20;
    }
    return p;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    const int64_t n4 = 106168320, n8 = 28311552;
    void *q4 = random_blocks(KW_DT_Q4_1, n4, 1), *q8 = random_blocks(KW_DT_Q8_0, n8, 2);
    for (int r = 0; r <= reps; r++) {
        float *out = r == 0 ? malloc((size_t)(n4 + n8) * sizeof(float)) : NULL;
        static float *keep;
        if (out) {
            free(keep);
            keep = out;
        }
        double t0 = now();
        kw_to_f32(KW_DT_Q4_1, q4, keep, n4);
        kw_to_f32(KW_DT_Q8_0, q8, keep + n4, n8);
        double dt = now() - t0;
        printf("%s pass: %lld elements in %.3f s (%.2f G elements/s, %d threads)\n",
               r == 0 ? "cold" : "warm", (long long)(n4 + n8), dt, (double)(n4 + n8) / dt / 1e9,
               omp_get_max_threads());
    }
    return 0;
}
