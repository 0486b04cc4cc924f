/* The run executor's internals, shared by its files: run.c (phases, samples, tasks),
 * opctx.c (the engine side of op.h), run_once.c (the calibration phase; once values as
 * artifacts and in the cache), run_record.c (what is recorded, progress). Not a public
 * header. */
#ifndef KW_RUN_INTERNAL_H
#define KW_RUN_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "kwsched.h"
#include "run.h"

#define MAX_OUT 16  /* output ports per stage the executor handles */
#define MAX_FAIL_LINES 20

typedef struct kw_exec kw_exec;
typedef struct ksample ksample;

struct kw_opctx {
    kw_exec *x;
    int si;
    const kw_gstage *gs;
    void *state;
    bool inited;
    int lane;
    pthread_mutex_t serial;   /* KW_OP_SERIAL, sources and reduces */
    bool serialize;
    /* figures (x->mu) */
    int64_t tasks;
    double busy, wait;
};

struct kw_task {
    kw_exec *x;
    int si;
    ksample *s;               /* NULL for once tasks */
    int64_t idx;
    kw_value **in;            /* (n_in) in the stage's wiring order */
    int *port_first, *port_n; /* (n_inputs) */
    kw_value *out[MAX_OUT];
    int rc;
    char msg[1024];
    double t_ready, t_start;
    bool once_done;           /* once tasks: completion seen */
    pthread_mutex_t *once_mu;
    pthread_cond_t *once_cv;
};

struct ksample {
    int64_t idx;
    kw_value **vals;          /* (n_stages * MAX_OUT) */
    int *waiting;             /* (n_stages) producers not done yet */
    int remaining;            /* per-sample stages not done yet */
    bool failed;
    int err_code;
    char err[1200];
};

typedef struct agg {
    char *key;
    double sum;
    int64_t n;
} agg;

typedef struct rec {
    char *key, *value;
} rec;

struct kw_exec {
    const kw_graph *g;
    const kw_run_opts *o;
    kw_db *db;
    char uuid[37];
    bool begun;
    kw_lanes *lanes;
    void *engine;
    kw_opctx *ctx;            /* (n_stages) */
    kw_value **once_vals;     /* (n_stages * MAX_OUT) */
    /* the phase being run */
    kw_phase phase;
    bool *active, *is_ps;
    int *deps;
    int **cons, *n_cons;
    int n_ps;
    bool *metric_shared;      /* a metrics stage whose operator scores in another stage too */
    /* progress and results (mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t inflight, emitted, ok, failed, resumed, calib_done;
    int fail_lines;
    agg *aggs;
    int n_aggs, cap_aggs;
    rec *recs;                /* records made before the run row exists */
    int n_recs, cap_recs;
    double t0, last_progress;
    int fatal;
    kw_error fatal_err;
    bool progress_line_open;
};

static inline kw_value **sval(kw_exec *x, ksample *s, int si, int port)
{
    (void)x;
    return &s->vals[(size_t)si * MAX_OUT + (size_t)port];
}

static inline kw_value **oval(kw_exec *x, int si, int port)
{
    return &x->once_vals[(size_t)si * MAX_OUT + (size_t)port];
}

static inline bool per_sample_src(const kw_exec *x, int si)
{
    return si == x->g->source || x->is_ps[si];
}

/* run.c */
int kwr_phase_setup(kw_exec *x, kw_phase ph, kw_error *err);
int kwr_run_configs(kw_exec *x, kw_error *err);
int kwr_stream(kw_exec *x, kw_error *err);
int kwr_run_once(kw_exec *x, int si, bool finish, kw_error *err);
void kwr_set_fatal(kw_exec *x, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* run_record.c */
void kwr_record_sample(kw_exec *x, ksample *s);
void kwr_progress(kw_exec *x, bool final);
int kwr_record_params(kw_exec *x, kw_error *err);
void kwr_record_figures(kw_exec *x, double wall);
int kwr_load_previous(void *ud, int ncol, const char *const *names, const char *const *vals,
                      const int *types);
/* run_once.c */
int kwr_calibrate(kw_exec *x, kw_error *err);
void kwr_stage_key(kw_exec *x, int si, char out[65]);
bool kwr_upstream_calib(const kw_exec *x, int si);
bool kwr_cache_load(kw_exec *x, int si, const char *prefix);
void kwr_cache_store(kw_exec *x, int si, const char *prefix);

#endif
