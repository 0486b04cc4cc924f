/* Shared by the CUDA benchmarks: wall clock, medians, a seeded uniform draw, comma lists,
 * and the device copy bandwidth the floors are taken against. */
#ifndef KW_BENCH_COMMON_H
#define KW_BENCH_COMMON_H

#include <stdint.h>

double kwb_now(void);                            /* monotonic seconds */
double kwb_uni(uint64_t *state);                 /* uniform [0, 1), splitmix64 of state */
double kwb_median(double *v, int n);             /* sorts v */
int kwb_parse_list(const char *s, int *out, int max); /* "1,8" -> {1, 8}; the count */
/* Device-to-device copy of 1 GiB, bytes read + written per second, median of 10 after 2
 * warm-ups (CUDA events); 0 when the buffers cannot be allocated. */
double kwb_copy_bandwidth(void);
/* Median milliseconds of reps calls of fn(arg), each between two CUDA events on the
 * default stream, after warmup calls; fn returns < 0 on failure (the benchmark exits
 * with kw_cuda_last_error). */
double kwb_time_ms(int (*fn)(void *), void *arg, int warmup, int reps);
/* The same with batch calls back to back between the events: milliseconds per call
 * (median over reps batches), as a kernel runs among others in a step, without the
 * host's launch latency of an idle device in each figure. */
double kwb_time_ms_batch(int (*fn)(void *), void *arg, int warmup, int reps, int batch);

/* exits on a failed CUDA runtime call, naming it */
#define KWB_CK(x)                                                                          \
    do {                                                                                   \
        if ((x) != 0) {                                                                    \
            fprintf(stderr, "%s failed at %s:%d\n", #x, __FILE__, __LINE__);               \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#endif
