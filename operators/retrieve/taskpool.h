/* A small pool of worker threads for a hook's host work beside the engine (KVStar's votes
 * and block reads): a task is submitted once and waited for once; with no threads it
 * runs inline at submit.
 *
 *   kw_tpool p; kw_tpool_start(&p, 2);
 *   my_task t = {.t.fn = run_it, ...};       // kw_ttask first, recovered in run_it
 *   kw_tpool_submit(&p, &t.t);
 *   int rc = kw_tpool_wait(&p, &t.t, &waited_s);
 *   kw_tpool_stop(&p);
 */
#ifndef KW_OPS_RETRIEVE_TASKPOOL_H
#define KW_OPS_RETRIEVE_TASKPOOL_H

#include <pthread.h>
#include <stdbool.h>

#define KW_TPOOL_MAX 64

typedef struct kw_ttask kw_ttask;
struct kw_ttask {
    int (*fn)(kw_ttask *t); /* the work; its result is the task's */
    kw_ttask *next;
    int rc;
    bool queued, done;
};

typedef struct kw_tpool {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    kw_ttask *head, *tail;
    bool stop;
    int n;
    pthread_t th[KW_TPOOL_MAX];
} kw_tpool;

/* Starts n (0..KW_TPOOL_MAX) threads; the number started goes to p->n. Returns 0, or
 * KW_EINTERNAL when a thread could not start (those started run; stop them). */
int kw_tpool_start(kw_tpool *p, int n);
/* Lets the threads finish the queued tasks and joins them. */
void kw_tpool_stop(kw_tpool *p);
void kw_tpool_submit(kw_tpool *p, kw_ttask *t);
/* t's result once it has run; 0 for a task not submitted. The time spent waiting is
 * added to *waited (nullable). */
int kw_tpool_wait(kw_tpool *p, kw_ttask *t, double *waited);

#endif
