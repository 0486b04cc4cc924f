/* The run executor (run.h): phases, streaming samples through the per-sample stages
 * on the lanes, once tasks, and the order of a run's work. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "run_internal.h"

/* ------------------------------------------------------------- executor ---- */

/* A task with its inputs gathered; NULL when out of memory. */
static kw_task *task_new(kw_exec *x, int si, ksample *s)
{
    const kw_gstage *gs = &x->g->stages[si];
    kw_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->x = x;
    t->si = si;
    t->s = s;
    t->idx = s ? s->idx : -1;
    int np = gs->op->n_inputs;
    t->in = calloc((size_t)gs->n_in + 1, sizeof *t->in);
    t->port_first = calloc((size_t)np + 1, sizeof(int));
    t->port_n = calloc((size_t)np + 1, sizeof(int));
    if (!t->in || !t->port_first || !t->port_n) {
        free(t->in), free(t->port_first), free(t->port_n), free(t);
        return NULL;
    }
    int k = 0;
    for (int p = 0; p < np; p++) {
        t->port_first[p] = k;
        for (int i = 0; i < gs->n_in; i++) {
            const kw_gin *w = &gs->in[i];
            if (w->port != p)
                continue;
            kw_value *v = s && per_sample_src(x, w->from) ? *sval(x, s, w->from, w->from_port)
                                                          : *oval(x, w->from, w->from_port);
            if (v)
                t->in[k++] = v;
        }
        t->port_n[p] = k - t->port_first[p];
    }
    t->t_ready = kw_now();
    return t;
}

static void task_free(kw_task *t)
{
    if (!t)
        return;
    for (int i = 0; i < MAX_OUT; i++)
        kw_value_unref(t->out[i]);
    free(t->in), free(t->port_first), free(t->port_n), free(t);
}

void kwr_set_fatal(kw_exec *x, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&x->mu);
    if (!x->fatal) {
        va_list ap;
        va_start(ap, fmt);
        kw_error_vset(&x->fatal_err, code, NULL, 0, 0, fmt, ap);
        va_end(ap);
        x->fatal = code;
    }
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}


static void sample_free(kw_exec *x, ksample *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < (size_t)x->g->n_stages * MAX_OUT; i++)
        kw_value_unref(s->vals[i]);
    free(s->vals);
    free(s->waiting);
    free(s);
}

static void finish_sample(kw_exec *x, ksample *s)
{
    if (x->phase == KW_PHASE_MAIN)
        kwr_record_sample(x, s);
    pthread_mutex_lock(&x->mu);
    if (x->phase == KW_PHASE_CALIB) {
        x->calib_done++;
    } else if (s->failed) {
        x->failed++;
        if (x->fail_lines++ < MAX_FAIL_LINES) {
            if (x->progress_line_open)
                fputc('\n', stderr), x->progress_line_open = false;
            fprintf(stderr, "kvweave: sample %" PRId64 " failed: %s\n", s->idx, s->err);
        }
    } else {
        x->ok++;
    }
    x->inflight--;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    sample_free(x, s);
}

static void dispatch(kw_exec *x, int si, ksample *s);

/* Stage si of sample s is over (ran, failed or skipped): wake its consumers. */
typedef struct finish_job {
    kw_exec *x;
    ksample *s;
} finish_job;

static void run_finish_job(void *p)
{
    finish_job *j = p;
    finish_sample(j->x, j->s);
    free(j);
}

static void stage_over(kw_exec *x, int si, ksample *s)
{
    int rd[KW_PIPELINE_MAX_STAGES]; /* consumers made ready here (a stage has fewer) */
    int nr = 0;
    bool last;
    pthread_mutex_lock(&x->mu);
    for (int k = 0; k < x->n_cons[si]; k++) {
        int c = x->cons[si][k];
        if (--s->waiting[c] == 0)
            rd[nr++] = c;
    }
    last = si != x->g->source && --s->remaining == 0;
    if (si == x->g->source && x->n_ps == 0)
        last = true;
    pthread_mutex_unlock(&x->mu);
    for (int k = 0; k < nr; k++)
        dispatch(x, rd[k], s);
    if (!last)
        return;
    /* Recording (SQLite) goes to the io lane: the last task of a sample is often a
     * decode completing on the device engine's thread, which must not wait on it. */
    finish_job *j = malloc(sizeof *j);
    if (j)
        *j = (finish_job){x, s};
    if (!j || kw_lanes_post(x->lanes, KW_LI_IO, run_finish_job, j) < 0) {
        free(j);
        finish_sample(x, s);
    }
}

static void task_done(kw_task *t, int rc)
{
    kw_exec *x = t->x;
    kw_opctx *c = &x->ctx[t->si];
    const kw_op *op = c->gs->op;
    double now = kw_now();
    if (rc >= 0 && t->rc < 0)
        rc = t->rc;
    pthread_mutex_lock(&x->mu);
    c->tasks++;
    c->busy += now - t->t_start;
    c->wait += t->t_start - t->t_ready;
    pthread_mutex_unlock(&x->mu);
    if (!t->s) { /* once task: the caller waits for it */
        t->rc = rc;
        pthread_mutex_lock(t->once_mu);
        t->once_done = true;
        pthread_cond_broadcast(t->once_cv);
        pthread_mutex_unlock(t->once_mu);
        return;
    }
    ksample *s = t->s;
    if (rc >= 0 && !c->gs->is_reduce)
        for (int p = 0; p < op->n_outputs && p < MAX_OUT; p++)
            if (op->outputs[p].card == KW_EACH && !t->out[p]) {
                rc = KW_EINTERNAL;
                snprintf(t->msg, sizeof t->msg, "%s set no value on its output '%s'", op->name,
                         op->outputs[p].name);
                break;
            }
    if (rc < 0) {
        pthread_mutex_lock(&x->mu);
        if (!s->failed) {
            s->failed = true;
            s->err_code = rc;
            snprintf(s->err, sizeof s->err, "%s (%s): %s", c->gs->id, op->name,
                     t->msg[0] ? t->msg : kw_strerror(rc));
        }
        pthread_mutex_unlock(&x->mu);
    } else {
        for (int p = 0; p < op->n_outputs && p < MAX_OUT; p++) {
            *sval(x, s, t->si, p) = t->out[p];
            t->out[p] = NULL;
        }
    }
    int si = t->si;
    task_free(t);
    stage_over(x, si, s);
}

void kw_task_complete(kw_task *t, int rc) { task_done(t, rc); }

static void exec_task(void *p)
{
    kw_task *t = p;
    kw_opctx *c = &t->x->ctx[t->si];
    t->t_start = kw_now();
    if (c->serialize)
        pthread_mutex_lock(&c->serial);
    int rc = c->gs->op->run(c, c->state, t);
    if (c->serialize)
        pthread_mutex_unlock(&c->serial);
    if (rc == KW_PENDING)
        return; /* kw_task_complete comes later */
    task_done(t, rc);
}

static void dispatch(kw_exec *x, int si, ksample *s)
{
    bool skip;
    pthread_mutex_lock(&x->mu);
    skip = s->failed;
    pthread_mutex_unlock(&x->mu);
    if (skip) {
        stage_over(x, si, s);
        return;
    }
    kw_task *t = task_new(x, si, s);
    if (!t || kw_lanes_post(x->lanes, x->ctx[si].lane, exec_task, t) < 0) {
        if (t) {
            t->t_start = kw_now();
            task_done(t, kw_task_fail(t, KW_ENOMEM, "out of memory"));
        } else {
            pthread_mutex_lock(&x->mu);
            s->failed = true;
            snprintf(s->err, sizeof s->err, "%s: out of memory", x->g->stages[si].id);
            pthread_mutex_unlock(&x->mu);
            stage_over(x, si, s);
        }
    }
}

/* Runs a once task (config run or reduce finish) on the calling thread and waits for
 * it; its outputs become once values. */
int kwr_run_once(kw_exec *x, int si, bool finish, kw_error *err)
{
    const kw_gstage *gs = &x->g->stages[si];
    kw_opctx *c = &x->ctx[si];
    kw_task *t = task_new(x, si, NULL);
    if (!t)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    t->once_mu = &mu;
    t->once_cv = &cv;
    t->t_start = kw_now();
    int rc = finish ? (gs->op->finish ? gs->op->finish(c, c->state, t) : 0)
                    : gs->op->run(c, c->state, t);
    if (rc == KW_PENDING) {
        pthread_mutex_lock(&mu);
        while (!t->once_done)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        rc = t->rc;
    } else {
        task_done(t, rc);
        rc = t->rc;
    }
    if (rc >= 0) {
        for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++) {
            if (gs->op->outputs[p].card != KW_ONCE)
                continue;
            if (!t->out[p]) {
                rc = kw_error_set(err, KW_EINTERNAL, "stage '%s' (%s) set no value on '%s'",
                                  gs->id, gs->op->name, gs->op->outputs[p].name);
                break;
            }
            kw_value_unref(*oval(x, si, p));
            *oval(x, si, p) = t->out[p];
            t->out[p] = NULL;
        }
    } else {
        kw_error_at(err, rc, x->g->file, gs->line, gs->col, "stage '%s' (%s) failed: %s",
                    gs->id, gs->op->name, t->msg[0] ? t->msg : kw_strerror(rc));
    }
    task_free(t);
    pthread_mutex_destroy(&mu);
    pthread_cond_destroy(&cv);
    return rc;
}

/* ------------------------------------------------------------- phases ---- */

static bool in_phase(const kw_gstage *s, kw_phase ph)
{
    return ph == KW_PHASE_CALIB ? s->phase == KW_PHASE_CALIB
                                : (s->phase == KW_PHASE_MAIN || s->main_too);
}

static void phase_free(kw_exec *x)
{
    if (x->cons)
        for (int i = 0; i < x->g->n_stages; i++)
            free(x->cons[i]);
    free(x->cons), free(x->n_cons), free(x->active), free(x->is_ps), free(x->deps);
    free(x->metric_shared);
    x->cons = NULL, x->n_cons = NULL, x->active = NULL, x->is_ps = NULL, x->deps = NULL;
    x->metric_shared = NULL;
}

static bool scores(const kw_op *op)
{
    for (int p = 0; p < op->n_outputs; p++)
        if (!strcmp(op->outputs[p].type, KW_T_METRICS))
            return true;
    return false;
}

int kwr_phase_setup(kw_exec *x, kw_phase ph, kw_error *err)
{
    const kw_graph *g = x->g;
    int n = g->n_stages;
    phase_free(x);
    x->phase = ph;
    x->active = calloc((size_t)n, sizeof(bool));
    x->is_ps = calloc((size_t)n, sizeof(bool));
    x->deps = calloc((size_t)n, sizeof(int));
    x->cons = calloc((size_t)n, sizeof(int *));
    x->n_cons = calloc((size_t)n, sizeof(int));
    if (!x->active || !x->is_ps || !x->deps || !x->cons || !x->n_cons)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    x->n_ps = 0;
    for (int i = 0; i < n; i++) {
        x->active[i] = in_phase(&g->stages[i], ph);
        x->is_ps[i] = x->active[i] && g->stages[i].runs_each && i != g->source;
        if (x->active[i] && (g->stages[i].op->flags & KW_OP_SOURCE) && i != g->source)
            return kw_error_at(err, KW_EINVAL, g->file, g->stages[i].line, g->stages[i].col,
                               "stage '%s' is a second source; a pipeline has one data set",
                               g->stages[i].id);
        x->n_ps += x->is_ps[i];
    }
    free(x->metric_shared);
    if (!(x->metric_shared = calloc((size_t)n, sizeof(bool))))
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j && x->is_ps[i] && x->is_ps[j] && g->stages[i].op == g->stages[j].op &&
                scores(g->stages[i].op))
                x->metric_shared[i] = true;
    for (int c = 0; c < n; c++) {
        if (!x->is_ps[c])
            continue;
        const kw_gstage *gs = &g->stages[c];
        for (int i = 0; i < gs->n_in; i++) {
            int p = gs->in[i].from;
            if (!per_sample_src(x, p))
                continue;
            bool seen = false;
            for (int k = 0; k < x->n_cons[p]; k++)
                seen |= x->cons[p][k] == c;
            if (seen)
                continue;
            int *nc = realloc(x->cons[p], sizeof(int) * (size_t)(x->n_cons[p] + 1));
            if (!nc)
                return kw_error_set(err, KW_ENOMEM, "out of memory");
            x->cons[p] = nc;
            nc[x->n_cons[p]++] = c;
            x->deps[c]++;
        }
    }
    return 0;
}

static ksample *sample_new(kw_exec *x, int64_t idx, kw_value *v)
{
    int n = x->g->n_stages;
    ksample *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->vals = calloc((size_t)n * MAX_OUT, sizeof *s->vals);
    s->waiting = calloc((size_t)n, sizeof(int));
    if (!s->vals || !s->waiting) {
        free(s->vals), free(s->waiting), free(s);
        return NULL;
    }
    s->idx = idx;
    memcpy(s->waiting, x->deps, sizeof(int) * (size_t)n);
    s->remaining = x->n_ps;
    *sval(x, s, x->g->source, 0) = v;
    return s;
}

/* With x->mu held: waits for a signal on x->cv or one second, then prints progress (with
 * the lock released). */
static void wait_tick(kw_exec *x)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    pthread_mutex_unlock(&x->mu);
    kwr_progress(x, false);
    pthread_mutex_lock(&x->mu);
}

/* Starts a sample through the phase's per-sample stages (waits for room). */
static int push_sample(kw_exec *x, int64_t idx, kw_value *v)
{
    pthread_mutex_lock(&x->mu);
    while (x->inflight >= x->o->inflight && !x->fatal)
        wait_tick(x);
    x->inflight++;
    pthread_mutex_unlock(&x->mu);
    ksample *s = sample_new(x, idx, v);
    if (!s) {
        kw_value_unref(v);
        kwr_set_fatal(x, KW_ENOMEM, "out of memory");
        pthread_mutex_lock(&x->mu);
        x->inflight--;
        pthread_mutex_unlock(&x->mu);
        return KW_ENOMEM;
    }
    stage_over(x, x->g->source, s);
    return 0;
}

static void drain(kw_exec *x)
{
    pthread_mutex_lock(&x->mu);
    while (x->inflight > 0)
        wait_tick(x);
    pthread_mutex_unlock(&x->mu);
}

static bool stopping(kw_exec *x)
{
    pthread_mutex_lock(&x->mu);
    bool f = x->fatal != 0;
    pthread_mutex_unlock(&x->mu);
    return f || (x->o->stop && *x->o->stop);
}

static int stage_init(kw_exec *x, int si, kw_error *err)
{
    kw_opctx *c = &x->ctx[si];
    const kw_op *op = c->gs->op;
    if (c->inited)
        return 0;
    free(c->state);
    c->state = calloc(1, op->state_size ? op->state_size : 1);
    if (!c->state)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    int rc = op->init ? op->init(c, c->state, err) : 0;
    if (rc >= 0 && op->plan)
        rc = op->plan(c, c->state, err);
    c->inited = true; /* fini accepts a partial init */
    if (rc < 0)
        kw_error_prefix(err, "%s:%d:%d: stage '%s' (%s)", x->g->file, c->gs->line, c->gs->col,
                        c->gs->id, op->name);
    return rc;
}

static void stage_fini(kw_exec *x, int si)
{
    kw_opctx *c = &x->ctx[si];
    if (c->inited && c->gs->op->fini)
        c->gs->op->fini(c, c->state);
    c->inited = false;
    free(c->state);
    c->state = NULL;
}

/* Whether sample idx belongs to the calibration subset (ratio mode). */
static double calib_u(const kw_exec *x, int64_t idx)
{
    uint64_t st = kw_rand_key(x->g->calib.seed, (uint64_t)idx, 0xca11b);
    return kw_rand_uniform(&st);
}

typedef struct pick {
    double u;
    int64_t idx;
    kw_value *v;
} pick;

static int cmp_pick_idx(const void *a, const void *b)
{
    const pick *p = a, *q = b;
    return (p->idx > q->idx) - (p->idx < q->idx);
}

/* Streams the data set through the phase. */
int kwr_stream(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    if (g->source < 0)
        return 0;
    kw_opctx *src = &x->ctx[g->source];
    bool calib = x->phase == KW_PHASE_CALIB;
    int64_t want_n = calib ? g->calib.n : 0;
    pick *picks = NULL, best = {2.0, -1, NULL};
    int n_picks = 0;
    if (want_n > 0 && !(picks = calloc((size_t)want_n, sizeof *picks)))
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    int64_t idx = 0, pushed = 0;
    int rc = 0;
    for (;; idx++) {
        if (g->limit > 0 && idx >= g->limit)
            break;
        if (stopping(x))
            break;
        kw_task *t = task_new(x, g->source, NULL);
        if (!t) {
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
            break;
        }
        t->idx = idx;
        t->t_start = kw_now();
        int r = g->stages[g->source].op->run(src, src->state, t);
        double dt = kw_now() - t->t_start;
        pthread_mutex_lock(&x->mu);
        src->busy += dt;
        src->tasks += r == KW_END ? 0 : 1;
        pthread_mutex_unlock(&x->mu);
        if (r == KW_END) {
            task_free(t);
            break;
        }
        if (r < 0 || t->rc < 0 || !t->out[0]) {
            int code = r < 0 ? r : t->rc < 0 ? t->rc : KW_EINTERNAL;
            rc = kw_error_at(err, code, g->file, g->stages[g->source].line,
                             g->stages[g->source].col, "data set stage '%s' (%s), record %" PRId64
                             ": %s", g->stages[g->source].id, g->stages[g->source].op->name, idx,
                             t->msg[0] ? t->msg : "set no sample");
            task_free(t);
            break;
        }
        kw_value *v = t->out[0];
        t->out[0] = NULL;
        task_free(t);
        if (calib) {
            double u = calib_u(x, idx);
            if (want_n > 0) { /* keep the want_n smallest keys (a seeded subset of n) */
                if (n_picks < want_n) {
                    picks[n_picks++] = (pick){u, idx, v};
                } else {
                    int worst = 0;
                    for (int k = 1; k < n_picks; k++)
                        if (picks[k].u > picks[worst].u)
                            worst = k;
                    if (u < picks[worst].u) {
                        kw_value_unref(picks[worst].v);
                        picks[worst] = (pick){u, idx, v};
                    } else {
                        kw_value_unref(v);
                    }
                }
                continue;
            }
            if (u >= g->calib.sample_ratio) {
                if (pushed == 0 && u < best.u) { /* the fallback when nothing is drawn */
                    kw_value_unref(best.v);
                    best = (pick){u, idx, v};
                } else {
                    kw_value_unref(v);
                }
                continue;
            }
        } else if (x->o->resume && x->begun && kw_db_sample_done(x->db, x->uuid, idx) == 1) {
            kw_value_unref(v);
            pthread_mutex_lock(&x->mu);
            x->resumed++;
            pthread_mutex_unlock(&x->mu);
            continue;
        }
        if ((rc = push_sample(x, idx, v)) < 0)
            break;
        pushed++;
        kwr_progress(x, false);
    }
    if (calib && rc >= 0 && want_n > 0) {
        qsort(picks, (size_t)n_picks, sizeof *picks, cmp_pick_idx);
        for (int k = 0; k < n_picks; k++) {
            kw_value *v = picks[k].v;
            picks[k].v = NULL;
            if (rc >= 0 && !stopping(x))
                rc = push_sample(x, picks[k].idx, v);
            else
                kw_value_unref(v);
        }
    } else if (calib && rc >= 0 && pushed == 0 && best.v) {
        rc = push_sample(x, best.idx, best.v);
        best.v = NULL;
    }
    for (int k = 0; k < n_picks; k++)
        kw_value_unref(picks[k].v);
    free(picks);
    kw_value_unref(best.v);
    drain(x);
    return rc;
}


/* Runs every config stage (no `each` input) of the phase whose once values are not
 * there yet, in topological order. */
int kwr_run_configs(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    for (int k = 0; k < g->n_stages; k++) {
        int si = g->topo[k];
        const kw_gstage *gs = &g->stages[si];
        if (!x->active[si] || gs->runs_each || (gs->op->flags & KW_OP_SOURCE))
            continue;
        bool have = gs->op->n_outputs > 0;
        for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++)
            have &= *oval(x, si, p) != NULL;
        if (have)
            continue;
        /* a cacheable config stage downstream of the calibration (a layer budget
         * solved from its statistics) is taken from the cache and recorded */
        bool cacheable = (gs->op->flags & KW_OP_CACHEABLE) && kwr_upstream_calib(x, si);
        if (cacheable && kwr_cache_load(x, si, "once")) {
            char key[160];
            snprintf(key, sizeof key, "%s.cached", gs->id);
            kw_error e2 = {0};
            kw_db_param(x->db, x->uuid, key, "true", &e2);
            continue;
        }
        int rc = kwr_run_once(x, si, false, err);
        if (rc < 0)
            return rc;
        if (cacheable)
            kwr_cache_store(x, si, "once");
    }
    return 0;
}


/* ----------------------------------------------------------------- run ---- */

kw_run_opts kw_run_defaults(void)
{
    return (kw_run_opts){.inflight = 32, .progress = 1};
}

int kw_run_graph(const kw_graph *g, kw_db *db, const kw_run_opts *o, kw_run_result *res,
                 kw_error *err)
{
    memset(res, 0, sizeof *res);
    kw_exec xs = {.g = g, .o = o, .db = db}, *x = &xs;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    int rc = 0;
    x->ctx = calloc((size_t)g->n_stages, sizeof *x->ctx);
    x->once_vals = calloc((size_t)g->n_stages * MAX_OUT, sizeof *x->once_vals);
    if (!x->ctx || !x->once_vals)
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int si = 0; rc >= 0 && si < g->n_stages; si++) {
        kw_opctx *c = &x->ctx[si];
        c->x = x;
        c->si = si;
        c->gs = &g->stages[si];
        c->lane = kw_lane_of(c->gs->op->lanes);
        c->serialize = (c->gs->op->flags & (KW_OP_SERIAL | KW_OP_SOURCE)) || c->gs->is_reduce;
        pthread_mutex_init(&c->serial, NULL);
        if (c->gs->op->n_outputs > MAX_OUT)
            rc = kw_error_set(err, KW_ELIMIT, "operator %s has %d outputs, at most %d",
                              c->gs->op->name, c->gs->op->n_outputs, MAX_OUT);
    }
    /* 1. the device engine: a model that cannot be opened fails before anything is
     * recorded */
    if (rc >= 0 && g->model && g->model[0]) {
        kw_engine_req q = g->engine;
        q.model = g->model, q.device = g->device;
        if (!o->env || !o->env->engine_open)
            rc = kw_error_set(err, KW_ENOSYS, "this build cannot open models");
        else
            rc = o->env->engine_open(&q, &x->engine, err);
        if (rc < 0)
            kw_error_prefix(err, "model '%s'", g->model);
    }
    /* 2. every stage's init */
    for (int k = 0; rc >= 0 && k < g->n_stages; k++)
        rc = stage_init(x, g->topo[k], err);
    if (rc >= 0)
        rc = kw_lanes_new(o->cpu_threads > 0 ? o->cpu_threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
                          o->io_threads > 0 ? o->io_threads : 2, &x->lanes, err);
    if (rc >= 0)
        kw__lanes_set_current(x->lanes);
    /* 3. the run row */
    if (rc >= 0) {
        int found = 0;
        if (o->resume) {
            found = kw_db_find_resumable(db, g->sha256, g->cell_label, x->uuid, err);
            if (found == 1)
                rc = kw_db_run_reopen(db, x->uuid, err);
            else if (found < 0)
                rc = found;
        }
        if (rc >= 0 && found != 1) {
            const char *msha = x->engine && o->env && o->env->engine_model_sha256
                                   ? o->env->engine_model_sha256(x->engine)
                                   : NULL;
            kw_run_info info = {.parent = o->parent, .pipeline = g->name, .yaml = g->yaml,
                                .yaml_sha256 = g->sha256, .cell_label = g->cell_label,
                                .model_id = g->model && g->model[0] ? g->model : NULL,
                                .model_sha256 = msha, .device = g->device, .seed = g->seed};
            rc = kw_db_run_begin(db, &info, x->uuid, err);
        } else if (rc >= 0) {
            const char *args[1] = {x->uuid};
            kw_db_query(db, "SELECT key, value FROM metrics WHERE run = ?1 AND sample IS NOT "
                        "NULL AND sample IN (SELECT idx FROM samples WHERE run = ?1 AND status "
                        "= 'FINISHED')", args, 1, kwr_load_previous, x, err);
            if (o->progress)
                fprintf(stderr, "resuming run %s\n", x->uuid);
        }
        if (rc >= 0) {
            pthread_mutex_lock(&x->mu);
            x->begun = true;
            pthread_mutex_unlock(&x->mu);
            memcpy(res->uuid, x->uuid, sizeof res->uuid);
            rc = kwr_record_params(x, err);
        }
    }
    x->t0 = kw_now();
    /* 4. calibration, then the main phase */
    if (rc >= 0)
        rc = kwr_calibrate(x, err);
    if (rc >= 0 && g->source >= 0 && x->ctx[g->source].tasks > 0) {
        /* the data set is read again from the start for the main phase */
        stage_fini(x, g->source);
        rc = stage_init(x, g->source, err);
    }
    if (rc >= 0)
        rc = kwr_phase_setup(x, KW_PHASE_MAIN, err);
    if (rc >= 0)
        rc = kwr_run_configs(x, err);
    if (rc >= 0)
        rc = kwr_stream(x, err);
    if (rc >= 0 && x->fatal) {
        rc = x->fatal;
        *err = x->fatal_err;
    }
    double wall = kw_now() - x->t0;
    if (x->begun) /* a run that failed before it began has no progress to report */
        kwr_progress(x, true);
    res->ok = x->ok;
    res->failed = x->failed;
    res->resumed = x->resumed;
    res->wall_s = wall;
    res->killed = o->stop && *o->stop;
    if (x->begun) {
        kwr_record_figures(x, wall);
        kw_error e2 = {0};
        if (rc < 0) {
            char m[2100];
            snprintf(m, sizeof m, "%s", err->msg);
            kw_db_param(db, x->uuid, "error", m, &e2);
        }
        kw_db_run_end(db, x->uuid, rc < 0 ? "FAILED" : res->killed ? "KILLED" : "FINISHED", &e2);
    }
    /* 5. teardown: lanes drained first (nothing runs any more), then the stages */
    x->lanes = kw_lanes_free(x->lanes);
    for (int k = g->n_stages - 1; k >= 0; k--)
        if (x->ctx)
            stage_fini(x, g->topo[k]);
    if (x->engine && o->env && o->env->engine_close)
        o->env->engine_close(x->engine);
    phase_free(x);
    if (x->once_vals)
        for (size_t i = 0; i < (size_t)g->n_stages * MAX_OUT; i++)
            kw_value_unref(x->once_vals[i]);
    free(x->once_vals);
    if (x->ctx)
        for (int si = 0; si < g->n_stages; si++)
            pthread_mutex_destroy(&x->ctx[si].serial);
    free(x->ctx);
    for (int i = 0; i < x->n_aggs; i++)
        free(x->aggs[i].key);
    free(x->aggs);
    for (int i = 0; i < x->n_recs; i++)
        free(x->recs[i].key), free(x->recs[i].value);
    free(x->recs);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    return rc;
}
