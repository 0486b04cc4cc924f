/* Shared prefix prefills (share_prefill): one leader sequence computes a prompt's prefix
 * without hooks; sequences with the same prefix tokens take its pages layer by layer and
 * compute only their own tail. Engine thread only (the stats under e->mu). */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "kvweave/util.h"

const char *kw_share_name(int v)
{
    switch (v) {
    case KW_SHARE_OFF: return "off";
    case KW_SHARE_TAKEN: return "taken";
    case KW_SHARE_OWN_HOOKS: return "own: a kv method acts before the prompt ends";
    case KW_SHARE_OWN_SHORT: return "own: the prompt is shorter than the tail and a page";
    case KW_SHARE_OWN_FAILED: return "own: the shared prefill failed or found no room";
    }
    return "?";
}

static uint64_t toks_hash(const int32_t *t, int n)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        h ^= (uint32_t)t[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* share_prefill: the prefix q may take, or why it prefills on its own. The tail holds
 * at least obs_window tokens so an observation window lies in q's own last chunk. */
void kw__share_plan(kw_engine *e, kw_eseq *q)
{
    for (int i = 0; i < q->hs.n; i++)
        if (!kw_kvhook_tail_only(q->hs.hooks[i])) {
            q->res->prefill_share = KW_SHARE_OWN_HOOKS;
            return;
        }
    int P = e->o.page_tokens, n = (q->req.n_prompt - e->o.obs_window) / P * P;
    if (n < P) {
        q->res->prefill_share = KW_SHARE_OWN_SHORT;
        return;
    }
    q->share_n = n;
    q->share_hash = toks_hash(q->toks, n);
}

static void kw__prefix_unlink(kw_engine *e, kw_prefix *p)
{
    for (kw_prefix **pp = &e->prefixes; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    e->claimed -= p->claim;
    kw_kvseq_free(p->kv);
    free(p->toks);
    free(p);
}

/* Drops the least recently used prefix that is not being computed (nor `keep`);
 * false when there is none. */
bool kw__prefix_drop_lru(kw_engine *e, const kw_prefix *keep)
{
    kw_prefix *v = NULL;
    for (kw_prefix *p = e->prefixes; p; p = p->next)
        if (!p->leader && p != keep && (!v || p->used < v->used))
            v = p;
    if (!v)
        return false;
    kw__prefix_unlink(e, v);
    return true;
}

/* A prefix leader ends: its KV becomes the prefix's (with its claim), or the prefix is
 * marked failed (no kv, no leader) so its followers prefill on their own. */
void kw__leader_finish(kw_engine *e, kw_eseq *q, int rc)
{
    kw_prefix *p = q->lead;
    p->leader = NULL;
    p->used = (uint64_t)e->step;
    if (rc >= 0 && q->s.kv) {
        p->kv = q->s.kv;
        p->claim = q->claim;
    } else {
        kw_kvseq_free(q->s.kv);
        e->claimed -= q->claim;
    }
    int ready = 0;
    for (kw_prefix *x = e->prefixes; x; x = x->next)
        ready += !x->leader;
    while (ready-- > KW_PREFIX_KEEP && kw__prefix_drop_lru(e, p))
        ;
    kw_gen_result_free(q->res);
    free(q->toks);
    free(q->gaps);
    free(q);
}

kw_prefix *kw__prefix_find(kw_engine *e, const kw_eseq *q)
{
    for (kw_prefix *p = e->prefixes; p; p = p->next)
        if (p->hash == q->share_hash && p->n == q->share_n
            && !memcmp(p->toks, q->toks, sizeof(int32_t) * (size_t)p->n))
            return p;
    return NULL;
}

/* Starts computing q's prefix: a leader sequence of the prefix tokens, without hooks,
 * generating nothing, straight into the running batch. NULL when it cannot start now
 * (no batch slot or pages) or on out of memory. */
kw_prefix *kw__prefix_start(kw_engine *e, kw_eseq *q, int slots)
{
    int64_t total = kw_kvpool_options(e->pool)->n_pages;
    int64_t claim = kw_kvpool_pages_for(e->pool, q->share_n);
    if (slots + 1 > e->o.max_batch)
        return NULL;
    while (e->claimed + claim > total && kw__prefix_drop_lru(e, NULL))
        ;
    if (e->claimed + claim > total)
        return NULL;
    kw_prefix *p = calloc(1, sizeof *p);
    kw_eseq *l = calloc(1, sizeof *l);
    if (p)
        p->toks = malloc(sizeof(int32_t) * (size_t)q->share_n);
    if (l) {
        l->toks = malloc(sizeof(int32_t) * ((size_t)q->share_n + 1));
        l->res = calloc(1, sizeof *l->res);
        l->s.kv = kw_kvseq_new(e->pool);
    }
    if (!p || !p->toks || !l || !l->toks || !l->res || !l->s.kv) {
        if (p)
            free(p->toks);
        if (l) {
            free(l->toks);
            kw_gen_result_free(l->res);
            kw_kvseq_free(l->s.kv);
        }
        free(p);
        free(l);
        return NULL;
    }
    memcpy(p->toks, q->toks, sizeof(int32_t) * (size_t)q->share_n);
    memcpy(l->toks, q->toks, sizeof(int32_t) * (size_t)q->share_n);
    p->n = l->n_toks = l->req.n_prompt = l->s.n_prompt = l->res->n_prompt = q->share_n;
    p->hash = q->share_hash;
    p->leader = l;
    l->lead = p;
    l->claim = claim;
    l->s.sample = q->s.sample;
    l->t_submit = l->t_admit = kw_now();
    e->claimed += claim;
    p->next = e->prefixes;
    e->prefixes = p;
    pthread_mutex_lock(&e->mu);
    l->s.id = ++e->next_id;
    e->st.prefix_prefills++;
    pthread_mutex_unlock(&e->mu);
    e->run[e->n_run++] = l;
    return p;
}

/* q (and an own-prefill reference branch) starts from the prefix's KV, shared page by
 * page; q then computes only its tail. */
int kw__take_prefix(kw_engine *e, kw_eseq *q, kw_prefix *p)
{
    bool own_ref = q->ref && q->req.reference == KW_REF_OWN;
    for (int l = 0; l < e->m->cfg.n_layer; l++) {
        int rc = kw_kvseq_share_layer(q->s.kv, p->kv, l);
        if (rc == 0 && own_ref)
            rc = kw_kvseq_share_layer(q->ref->s.kv, p->kv, l);
        if (rc < 0)
            return rc;
    }
    q->s.n_past = p->n;
    if (own_ref)
        q->ref->s.n_past = p->n;
    q->res->prefill_share = KW_SHARE_TAKEN;
    q->res->prefill_shared_tokens = p->n;
    p->used = (uint64_t)e->step;
    pthread_mutex_lock(&e->mu);
    e->st.prefill_shared_tokens += p->n;
    pthread_mutex_unlock(&e->mu);
    return 0;
}
