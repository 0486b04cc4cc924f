/* Lanes: FIFO queues with worker threads, busy-time accounting, futures. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "kwsched.h"

typedef struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
} job;

typedef struct lane {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    bool stop;
    int n_threads;
    pthread_t *threads;
    double busy;
    int index;
    struct kw_lanes *owner;
} lane;

struct kw_lanes {
    lane lanes[KW_N_LANES];
};

static _Thread_local int my_lane = -1;
static kw_lanes *current_lanes;

static void *worker(void *p)
{
    lane *ln = p;
    my_lane = ln->index;
    pthread_mutex_lock(&ln->mu);
    for (;;) {
        while (!ln->head && !ln->stop)
            pthread_cond_wait(&ln->cv, &ln->mu);
        job *j = ln->head;
        if (!j)
            break; /* stop and drained */
        ln->head = j->next;
        if (!ln->head)
            ln->tail = NULL;
        pthread_mutex_unlock(&ln->mu);
        double t0 = kw_now();
        j->fn(j->arg);
        double dt = kw_now() - t0;
        free(j);
        pthread_mutex_lock(&ln->mu);
        ln->busy += dt;
    }
    pthread_mutex_unlock(&ln->mu);
    return NULL;
}

int kw_lanes_new(int n_cpu, int n_io, kw_lanes **out, kw_error *err)
{
    *out = NULL;
    kw_lanes *l = calloc(1, sizeof *l);
    if (!l)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    int n[KW_N_LANES] = {n_cpu < 1 ? 1 : n_cpu, n_io < 1 ? 1 : n_io, 1};
    for (int i = 0; i < KW_N_LANES; i++) {
        lane *ln = &l->lanes[i];
        pthread_mutex_init(&ln->mu, NULL);
        pthread_cond_init(&ln->cv, NULL);
        ln->index = i;
        ln->owner = l;
        ln->threads = calloc((size_t)n[i], sizeof *ln->threads);
        if (!ln->threads) {
            kw_lanes_free(l);
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        }
        for (int k = 0; k < n[i]; k++) {
            if (pthread_create(&ln->threads[k], NULL, worker, ln) != 0) {
                kw_lanes_free(l);
                return kw_error_set(err, KW_EINTERNAL, "cannot start a %s lane thread",
                                    kw_lane_name(i));
            }
            ln->n_threads++;
        }
    }
    *out = l;
    return 0;
}

int kw_lanes_post(kw_lanes *l, int lane_i, void (*fn)(void *), void *arg)
{
    job *j = malloc(sizeof *j);
    if (!j)
        return KW_ENOMEM;
    *j = (job){fn, arg, NULL};
    lane *ln = &l->lanes[lane_i];
    pthread_mutex_lock(&ln->mu);
    if (ln->tail)
        ln->tail->next = j;
    else
        ln->head = j;
    ln->tail = j;
    pthread_cond_signal(&ln->cv);
    pthread_mutex_unlock(&ln->mu);
    return 0;
}

kw_lanes *kw_lanes_free(kw_lanes *l)
{
    if (!l)
        return NULL;
    for (int i = 0; i < KW_N_LANES; i++) {
        lane *ln = &l->lanes[i];
        pthread_mutex_lock(&ln->mu);
        ln->stop = true;
        pthread_cond_broadcast(&ln->cv);
        pthread_mutex_unlock(&ln->mu);
        for (int k = 0; k < ln->n_threads; k++)
            pthread_join(ln->threads[k], NULL);
        free(ln->threads);
        pthread_mutex_destroy(&ln->mu);
        pthread_cond_destroy(&ln->cv);
    }
    if (current_lanes == l)
        current_lanes = NULL;
    free(l);
    return NULL;
}

double kw_lanes_busy(kw_lanes *l, int lane_i)
{
    lane *ln = &l->lanes[lane_i];
    pthread_mutex_lock(&ln->mu);
    double b = ln->busy;
    pthread_mutex_unlock(&ln->mu);
    return b;
}

int kw_lanes_threads(kw_lanes *l, int lane_i) { return l->lanes[lane_i].n_threads; }

int kw_lane_of(unsigned lanes)
{
    if (lanes & KW_LANE_GPU)
        return KW_LI_GPU;
    if (lanes & KW_LANE_IO)
        return KW_LI_IO;
    return KW_LI_CPU;
}

const char *kw_lane_name(int lane_i)
{
    static const char *const names[] = {"cpu", "io", "gpu"};
    return lane_i >= 0 && lane_i < KW_N_LANES ? names[lane_i] : "?";
}

void kw__lanes_set_current(kw_lanes *l) { current_lanes = l; }

/* ---- futures ---- */

struct kw_future {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int (*fn)(void *);
    void *arg;
    int rc;
    bool done;
};

static void run_future(void *p)
{
    kw_future *f = p;
    int rc = f->fn(f->arg);
    pthread_mutex_lock(&f->mu);
    f->rc = rc;
    f->done = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

kw_future *kw_submit(kw_opctx *c, unsigned lanes, int (*fn)(void *), void *arg)
{
    (void)c;
    kw_future *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->fn = fn;
    f->arg = arg;
    int li = kw_lane_of(lanes);
    if (!current_lanes || li == my_lane || kw_lanes_post(current_lanes, li, run_future, f) < 0)
        run_future(f); /* no pool, our own lane, or no memory for a job: run it here */
    return f;
}

int kw_wait(kw_future *f)
{
    if (!f)
        return KW_ENOMEM;
    pthread_mutex_lock(&f->mu);
    while (!f->done)
        pthread_cond_wait(&f->cv, &f->mu);
    int rc = f->rc;
    pthread_mutex_unlock(&f->mu);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
    return rc;
}
