/* A small pool of worker threads (taskpool.h). */
#include "taskpool.h"

#include "kvweave/status.h"
#include "kvweave/util.h"

static void *worker(void *arg)
{
    kw_tpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->work, &p->mu);
        if (!p->head)
            break;
        kw_ttask *t = p->head;
        p->head = t->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        int rc = t->fn(t);
        pthread_mutex_lock(&p->mu);
        t->rc = rc;
        t->done = true;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int kw_tpool_start(kw_tpool *p, int n)
{
    *p = (kw_tpool){0};
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < n && i < KW_TPOOL_MAX; i++) {
        if (pthread_create(&p->th[i], NULL, worker, p) != 0)
            return KW_EINTERNAL;
        p->n++;
    }
    return 0;
}

void kw_tpool_stop(kw_tpool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    p->n = 0;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
}

void kw_tpool_submit(kw_tpool *p, kw_ttask *t)
{
    t->queued = true;
    t->done = false;
    t->next = NULL;
    if (p->n == 0) {
        t->rc = t->fn(t);
        t->done = true;
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = t;
    else
        p->head = t;
    p->tail = t;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

int kw_tpool_wait(kw_tpool *p, kw_ttask *t, double *waited)
{
    if (!t->queued)
        return 0;
    if (p->n > 0) {
        pthread_mutex_lock(&p->mu);
        if (!t->done) {
            double t0 = kw_now();
            while (!t->done)
                pthread_cond_wait(&p->done, &p->mu);
            if (waited)
                *waited += kw_now() - t0;
        }
        pthread_mutex_unlock(&p->mu);
    }
    t->queued = false;
    return t->rc;
}
