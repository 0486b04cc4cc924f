/* The run executor: runs a built graph (graph.h) phase by phase on the lanes of sched.h
 * and records everything in the results store. Internal to the engine; the CLI calls it.
 *
 *   kw_run_opts o = kw_run_defaults();
 *   o.env = &my_env;                       // how to open the device engine
 *   kw_run_result res;
 *   int rc = kw_run_graph(g, db, &o, &res, &err);
 *
 * Order of work. The device engine is opened first when the graph names a model (a
 * model that cannot be opened fails the run before anything is recorded), then every
 * stage's init (bad params or files fail the run the same way). Then the run row is
 * created, the calibration phase runs to completion on its seeded subset (its `once`
 * outputs are recorded as artifacts and cached by a key of everything upstream), then
 * the main phase streams the samples: at most `inflight` samples are in flight, each
 * (stage, sample) task runs on its stage's lane as soon as its inputs are there. A task
 * that fails fails its sample only: the sample is recorded FAILED with the error and
 * the run goes on. Each finished sample is recorded at once (its row, its metrics), so
 * an interrupted run keeps everything done so far and `--resume` skips it.
 *
 * Recorded per sample: the sample row (id, input hash, prediction = the first
 * generation's text, answers = the record's "outputs" or "answers"), every number of
 * every `metrics` value (keys as the scorer names them; "<stage>/<key>" when several
 * stages of the same operator score, e.g. one per method branch), and the first generation's figures as
 * gen/<field> and mem/<field>.
 * Per run: the mean of each per-sample metric over finished samples, stage and lane
 * timings, the overlap ratio (sum of lane busy time / wall time), params and provenance.
 */
#ifndef KW_RUN_H
#define KW_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "graph.h"
#include "results.h"

/* How the executor reaches the device engine (the CLI links the runtime; the control
 * plane does not). */
typedef struct kw_run_env {
    int (*engine_open)(const kw_engine_req *req, void **engine, kw_error *err);
    void (*engine_close)(void *engine);
    const char *(*engine_model_sha256)(void *engine); /* nullable */
    const char *(*engine_model_path)(void *engine);   /* nullable */
    double (*engine_busy_s)(void *engine);            /* nullable */
    /* nullable: bytes the engine's steps copied host -> device and device -> host */
    void (*engine_io_bytes)(void *engine, int64_t *h2d, int64_t *d2h);
    /* nullable: device memory in use at the run's end, -1 for none (the CPU) */
    int64_t (*engine_device_used)(void *engine);
} kw_run_env;

typedef struct kw_run_opts {
    const kw_run_env *env;          /* nullable: no model can be opened */
    const char *parent;             /* nullable: the sweep's parent run */
    bool resume;                    /* continue the newest unfinished run of this text */
    bool no_cache;                  /* recompute cached calibration outputs */
    int inflight;                   /* samples in flight; default 32 */
    int cpu_threads, io_threads;    /* 0: the cores, 2 */
    int progress;                   /* 0 none, 1 plain lines, 2 one rewritten line */
    volatile sig_atomic_t *stop;    /* nullable: set (by a signal) to stop early */
    int64_t total_hint;             /* samples expected, for progress (0 unknown) */
} kw_run_opts;
kw_run_opts kw_run_defaults(void);

typedef struct kw_run_result {
    char uuid[37];
    int64_t ok, failed, resumed; /* samples finished, failed, skipped as already done */
    double wall_s;
    bool killed;
} kw_run_result;

/* Returns 0 when the run completed (samples may have failed: res->failed), < 0 when it
 * could not run or stopped (err says why; the run row, when made, is FAILED). */
int kw_run_graph(const kw_graph *g, kw_db *db, const kw_run_opts *o, kw_run_result *res,
                 kw_error *err);

#endif
