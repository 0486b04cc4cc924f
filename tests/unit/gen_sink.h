/* Test support: generation results gathered from the engine's done callback. A request
 * whose user pointer is a gen_slot {s, i} lands in s->res[i]; s->n counts the results. */
#ifndef KW_TEST_GEN_SINK_H
#define KW_TEST_GEN_SINK_H

#include <pthread.h>

#include "kvweave/engine.h"

#define GEN_SINK_MAX 16

typedef struct gen_sink {
    pthread_mutex_t mu;
    kw_gen_result *res[GEN_SINK_MAX];
    int n;
} gen_sink;

typedef struct gen_slot {
    gen_sink *s;
    int i;
} gen_slot;

static inline void gen_sink_init(gen_sink *s)
{
    *s = (gen_sink){.n = 0};
    pthread_mutex_init(&s->mu, NULL);
}

/* the kw_gen_req done callback (user: a gen_slot) */
static inline void gen_sink_done(void *u, kw_gen_result *r)
{
    gen_slot *sl = u;
    pthread_mutex_lock(&sl->s->mu);
    sl->s->res[sl->i] = r;
    sl->s->n++;
    pthread_mutex_unlock(&sl->s->mu);
}

/* frees every result and the mutex */
static inline void gen_sink_free(gen_sink *s)
{
    for (int i = 0; i < GEN_SINK_MAX; i++)
        kw_gen_result_free(s->res[i]);
    pthread_mutex_destroy(&s->mu);
}

#endif
