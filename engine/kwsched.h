/* kwsched.h (not sched.h: that name is the C library's). Lanes: the scheduler's worker pools (ARCHITECTURE.md section 3). Internal to the engine.
 *
 *   kw_lanes *l; kw_lanes_new(4, 2, &l, &err);   // cpu threads, io threads; gpu has one
 *   kw_lanes_post(l, KW_LI_CPU, fn, arg);         // fn(arg) on a cpu thread, FIFO
 *   l = kw_lanes_free(l);                          // runs what is queued, joins
 *
 * A lane is a FIFO queue served by its threads. The gpu lane has one thread: decode
 * operators only hand their sequence to the device engine there (they return
 * KW_PENDING), so it never blocks on the engine. Busy time (inside fn) is counted per
 * lane. Futures (op.h kw_submit/kw_wait) are jobs on a lane; a job submitted from a
 * thread of the same lane runs at once on the caller's thread, so a lane never waits on
 * itself.
 */
#ifndef KW_SCHED_H
#define KW_SCHED_H

#include "kvweave/op.h"

enum { KW_LI_CPU = 0, KW_LI_IO = 1, KW_LI_GPU = 2, KW_N_LANES = 3 };

typedef struct kw_lanes kw_lanes;

int kw_lanes_new(int n_cpu, int n_io, kw_lanes **out, kw_error *err);
/* Returns 0, or KW_ENOMEM (fn is then not called). */
int kw_lanes_post(kw_lanes *l, int lane, void (*fn)(void *arg), void *arg);
/* Drains the queues and joins the threads; accepts NULL; returns NULL. */
kw_lanes *kw_lanes_free(kw_lanes *l);
/* Seconds spent inside jobs on the lane so far. */
double kw_lanes_busy(kw_lanes *l, int lane);
int kw_lanes_threads(kw_lanes *l, int lane);
/* The lane index of an operator's lanes mask: gpu first, then io, else cpu. */
int kw_lane_of(unsigned lanes);
const char *kw_lane_name(int lane);
/* The lane pool behind kw_submit for the current process (set by the run executor). */
void kw__lanes_set_current(kw_lanes *l);

#endif
