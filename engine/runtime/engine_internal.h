/* Engine internals shared by batch.c (admission, steps, retirement), prefix.c (shared
 * prefix prefills) and engine_open.c. */
#ifndef KW_RUNTIME_ENGINE_INTERNAL_H
#define KW_RUNTIME_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "forward.h"
#include "kvweave/engine.h"

typedef struct kw_eseq {
    kw_seq s;
    kw_gen_req req;
    kw_hookstack hs;
    int32_t *toks;       /* prompt, then generated / forced tokens */
    int n_toks, max_gen;
    int n_open; /* hooks whose seq_open succeeded */
    int64_t claim;
    kw_gen_result *res;
    double t_submit, t_admit, t_first, t_last;
    double *gaps;        /* (max_gen) time between consecutive tokens (NULL until the second) */
    int n_gaps;
    int64_t mem_samples, pages_sum, kv_sum;
    double att_sum;
    int64_t att_steps;
    struct kw_eseq *next;
    struct kw_eseq *ref;   /* the full-attention reference branch (req.reference) */
    struct kw_eseq *owner; /* in a reference branch: the sequence it belongs to */
    int share_n;           /* share_prefill: prefix tokens to take (0: own prefill) */
    uint64_t share_hash;   /* of those tokens */
    struct kw_prefix *lead; /* in a prefix leader: the prefix it computes */
} kw_eseq;

/* A shared prefix prefill: computed once by a leader sequence without hooks, then
 * kept for the sequences with the same prefix tokens (ARCHITECTURE.md s5, fork). */
typedef struct kw_prefix {
    uint64_t hash;
    int n;
    int32_t *toks;
    kw_kvseq *kv;        /* ready: the prefix's KV of every layer */
    kw_eseq *leader;     /* while it is being computed */
    int64_t claim;       /* pages the engine counts as claimed for it */
    uint64_t used;       /* last use (engine step) */
    struct kw_prefix *next;
} kw_prefix;

#define KW_PREFIX_KEEP 4 /* ready prefixes kept at most */

struct kw_engine {
    const kw_model *m;
    kw_model *owned;
    kw_model *(*free_model)(kw_model *);
    kw_engine_opts o;
    kw_fwd *f;
    kw_kvpool *pool;
    pthread_t th;
    bool th_started, closing;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_idle;
    kw_eseq *q_head, *q_tail;
    int busy; /* queued + running */
    kw_eseq *run[KW_FWD_MAX_SEQ];
    int n_run;
    int64_t claimed, step;
    float *logits;
    int *sidx;
    float *sp;
    int64_t tmp_peak;
    kw_engine_stats st;
    uint64_t next_id;
    kw_prefix *prefixes; /* engine thread only */
};

/* prefix.c */
void kw__share_plan(kw_engine *e, kw_eseq *q);
bool kw__prefix_drop_lru(kw_engine *e, const kw_prefix *keep);
void kw__leader_finish(kw_engine *e, kw_eseq *q, int rc);
kw_prefix *kw__prefix_find(kw_engine *e, const kw_eseq *q);
kw_prefix *kw__prefix_start(kw_engine *e, kw_eseq *q, int slots);
int kw__take_prefix(kw_engine *e, kw_eseq *q, kw_prefix *p);

/* Makes the engine own m: freed with free_model at close. */
void kw__engine_own_model(kw_engine *e, kw_model *m, kw_model *(*free_model)(kw_model *));

#endif
