/* The CPU device engine: a persistent thread that admits sequences against the KV pool
 * (each hook's reserve), builds steps of prefill chunks and decode tokens of all running
 * sequences (continuous batching), runs the forward pass, samples, and retires finished
 * sequences through their completion callbacks. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_internal.h"
#include "forward.h"
#include "kvweave/util.h"
#include "sampler.h"

kw_engine_opts kw_engine_defaults(void)
{
    kw_engine_opts o = {.page_tokens = 16, .pool_mb = 1024, .n_tmp_pages = 16384,
                        .max_batch = 16, .chunk = 512, .obs_window = 32};
    return o;
}

const kw_model *kw_engine_model(const kw_engine *e) { return e ? e->m : NULL; }

void kw__engine_own_model(kw_engine *e, kw_model *m, kw_model *(*free_model)(kw_model *))
{
    e->owned = m;
    e->free_model = free_model;
}

kw_gen_result *kw_gen_result_free(kw_gen_result *r)
{
    if (r) {
        free(r->tokens);
        free(r->logprobs);
        free(r->topk_ids);
        free(r->topk_lp);
        free(r->ref_kl);
        free(r->ref_top1);
        free(r->ref_top5);
        free(r->ref_logprobs);
        free(r);
    }
    return NULL;
}

static void *engine_main(void *arg);

static int check_opts(const kw_model *m, kw_engine_opts *o, kw_error *err)
{
    kw_engine_opts d = kw_engine_defaults();
    if (o->page_tokens <= 0)
        o->page_tokens = d.page_tokens;
    if (o->max_batch <= 0)
        o->max_batch = d.max_batch;
    if (o->chunk <= 0)
        o->chunk = d.chunk;
    if (o->obs_window <= 0)
        o->obs_window = d.obs_window;
    if (o->n_tmp_pages <= 0)
        o->n_tmp_pages = d.n_tmp_pages;
    if (o->pool_mb <= 0)
        o->pool_mb = d.pool_mb;
    if (o->max_batch > KW_FWD_MAX_SEQ)
        return kw_error_set(err, KW_ERANGE, "engine: max_batch %d, at most %d", o->max_batch,
                            KW_FWD_MAX_SEQ);
    if (o->page_tokens > 4096)
        return kw_error_set(err, KW_ERANGE, "engine: page_tokens %d, at most 4096",
                            o->page_tokens);
    if (o->cuda && o->pre_rope)
        return kw_error_set(err, KW_ENOSYS, "engine: the CUDA device stores KV after RoPE "
                            "(as bf16 or int8 pages; pre-RoPE pools are CPU-only)");
    if (o->cuda && kw_kvdtype_kchan(o->kv_dtype))
        return kw_error_set(err, KW_ENOSYS, "engine: KV pages with K quantized per channel "
                            "(run.kv_pages: int8_kchan, int4_kchan) run on the CPU engine only; "
                            "on the GPU use run.kv_pages: int8");
    if (o->kv_residual < 0 || (o->kv_residual > 0 && !kw_kvdtype_kchan(o->kv_dtype)))
        return kw_error_set(err, KW_EINVAL, "engine: kv_residual %d: the f32 residual of K is "
                            "a setting of the per-channel-K pages (run.kv_pages: int8_kchan, "
                            "int4_kchan), not of these", o->kv_residual);
    if (o->cuda && o->kv_dtype == KW_KV_I8 && o->page_tokens % 2)
        return kw_error_set(err, KW_EINVAL, "engine: int8 KV pages on the CUDA device need an "
                            "even page size (page_tokens %d)", o->page_tokens);
    if (o->n_pages <= 0) {
        /* bytes per element: f32 on the CPU, bf16 on the GPU, int8 on both; per-channel K
         * pages as the host pool lays them out; and the positions */
        int64_t eb = o->kv_dtype == KW_KV_I8 ? 1 : o->cuda ? 2 : 4;
        int64_t pb = kw_kvdtype_kchan(o->kv_dtype)
                         ? kw_kvpool_page_bytes(o->kv_dtype, o->page_tokens, m->cfg.head_dim)
                               + 4LL * o->page_tokens
                         : 2LL * o->page_tokens * m->cfg.head_dim * eb + 12LL * o->page_tokens;
        o->n_pages = o->pool_mb * 1024 * 1024 / pb;
    }
    return 0;
}

int kw_engine_open_model(const kw_model *m, const kw_engine_opts *opts, kw_engine **out,
                         kw_error *err)
{
    *out = NULL;
    kw_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kw_error_set(err, KW_ENOMEM, "engine: out of memory");
    e->m = m;
    e->o = opts ? *opts : kw_engine_defaults();
    int rc = check_opts(m, &e->o, err);
    kw_kvpool_opts po = {.page_tokens = e->o.page_tokens, .n_pages = e->o.n_pages,
                         .n_tmp_pages = e->o.n_tmp_pages, .dtype = e->o.kv_dtype,
                         .pre_rope = e->o.pre_rope, .device_pages = e->o.cuda,
                         .residual = e->o.kv_residual};
    if (rc == 0)
        rc = kw_kvpool_new(&m->cfg, &po, &e->pool, err);
    if (rc == 0 && e->o.cuda)
        rc = kw__fwd_new_cuda(m, 2 * e->o.chunk + e->o.max_batch, e->o.max_batch, e->pool,
                              e->o.cuda_device, &e->f, err);
    else if (rc == 0) /* a step holds up to two chunks: OWN reference branches prefill too */
        rc = kw__fwd_new(m, 2 * e->o.chunk + e->o.max_batch, &e->f, err);
    int V = m->cfg.n_vocab;
    if (rc == 0) {
        e->logits = malloc((size_t)e->o.max_batch * V * sizeof(float));
        e->sidx = malloc((size_t)V * sizeof(int));
        e->sp = malloc((size_t)V * sizeof(float));
        if (!e->logits || !e->sidx || !e->sp)
            rc = kw_error_set(err, KW_ENOMEM, "engine: out of memory");
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv_work, NULL);
    pthread_cond_init(&e->cv_idle, NULL);
    if (rc == 0) {
        if (pthread_create(&e->th, NULL, engine_main, e) != 0)
            rc = kw_error_set(err, KW_EINTERNAL, "engine: cannot start its thread");
        else
            e->th_started = true;
    }
    if (rc < 0) {
        kw_engine_close(e);
        return rc;
    }
    *out = e;
    return 0;
}

kw_engine *kw_engine_close(kw_engine *e)
{
    if (!e)
        return NULL;
    if (e->th_started) {
        pthread_mutex_lock(&e->mu);
        e->closing = true;
        pthread_cond_broadcast(&e->cv_work);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->th, NULL);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv_work);
    pthread_cond_destroy(&e->cv_idle);
    while (e->prefixes) {
        kw_prefix *p = e->prefixes;
        e->prefixes = p->next;
        kw_kvseq_free(p->kv);
        free(p->toks);
        free(p);
    }
    kw__fwd_free(e->f);
    kw_kvpool_free(e->pool);
    free(e->logits);
    free(e->sidx);
    free(e->sp);
    if (e->owned && e->free_model)
        e->free_model(e->owned);
    free(e);
    return NULL;
}

void kw_engine_wait_idle(kw_engine *e)
{
    pthread_mutex_lock(&e->mu);
    while (e->busy > 0)
        pthread_cond_wait(&e->cv_idle, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

int64_t kw_engine_device_used(kw_engine *e)
{
    return kw__fwd_device_used(e->f); /* a driver query: nothing of the engine's to lock */
}

void kw_engine_get_stats(kw_engine *e, kw_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->pages_total = kw_kvpool_options(e->pool)->n_pages;
    pthread_mutex_unlock(&e->mu);
}

/* The pages a sequence may hold at most: the largest reserve of its hooks, or all of
 * its tokens when no hook reserves. */
static int seq_claim(kw_engine *e, kw_eseq *q, kw_error *err)
{
    kw_seqshape sh = {.cfg = &e->m->cfg, .page_tokens = e->o.page_tokens,
                      .n_prompt = q->req.n_prompt, .max_new = q->max_gen};
    int64_t claim = -1;
    for (int i = 0; i < q->hs.n; i++) {
        if (!q->hs.hooks[i]->reserve)
            continue;
        kw_memclaim mc = {0};
        int rc = q->hs.hooks[i]->reserve(q->hs.states[i], &sh, &mc);
        if (rc < 0)
            return kw_error_set(err, rc, "kv method '%s': reserve failed",
                                q->hs.hooks[i]->name ? q->hs.hooks[i]->name : "?");
        claim = mc.pages > claim ? mc.pages : claim;
    }
    if (claim < 0)
        claim = kw_kvpool_pages_for(e->pool, (int64_t)q->req.n_prompt + q->max_gen);
    q->claim = claim;
    int64_t total = kw_kvpool_options(e->pool)->n_pages;
    if (claim > total)
        return kw_error_set(err, KW_ELIMIT, "sequence of %d prompt + %d new tokens needs %lld "
                            "KV pages, the pool has %lld (a larger pool: engine option pool_mb, "
                            "run.pool_mb in a pipeline)", q->req.n_prompt, q->max_gen,
                            (long long)claim, (long long)total);
    return 0;
}

int kw_engine_submit(kw_engine *e, const kw_gen_req *r, kw_error *err)
{
    const kw_model_config *c = &e->m->cfg;
    if (r->n_prompt < 1 || !r->prompt || !r->done)
        return kw_error_set(err, KW_EINVAL, "engine: a sequence needs a prompt (got %d tokens) "
                            "and a completion callback", r->n_prompt);
    if (r->hooks) {
        int rc = kw_hookstack_check(r->hooks, err);
        if (rc < 0)
            return rc;
    }
    if (r->reference < KW_REF_NONE || r->reference > KW_REF_OWN)
        return kw_error_set(err, KW_EINVAL, "engine: reference mode %d is none of "
                            "KW_REF_NONE, KW_REF_SHARED, KW_REF_OWN", r->reference);
    if (r->reference && (!r->forced || r->n_forced < 1))
        return kw_error_set(err, KW_EINVAL, "engine: a full-attention reference branch needs "
                            "teacher forcing (forced tokens)");
    if (r->reference && e->o.max_batch < 2)
        return kw_error_set(err, KW_EINVAL, "engine: a full-attention reference branch needs "
                            "max_batch >= 2 (it is %d)", e->o.max_batch);
    int max_gen = r->forced ? r->n_forced : r->max_new;
    if (max_gen < 0 || (c->n_ctx_train > 0 && (int64_t)r->n_prompt + max_gen > c->n_ctx_train))
        return kw_error_set(err, KW_ERANGE, "engine: %d prompt + %d new tokens exceed the "
                            "model's context of %d", r->n_prompt, max_gen, c->n_ctx_train);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= c->n_vocab)
            return kw_error_set(err, KW_ERANGE, "engine: prompt token %d is id %d, the "
                                "vocabulary has %d", i, r->prompt[i], c->n_vocab);
    for (int i = 0; r->forced && i < r->n_forced; i++)
        if (r->forced[i] < 0 || r->forced[i] >= c->n_vocab)
            return kw_error_set(err, KW_ERANGE, "engine: forced token %d is id %d, the "
                                "vocabulary has %d", i, r->forced[i], c->n_vocab);
    kw_eseq *q = calloc(1, sizeof *q);
    if (!q)
        return kw_error_set(err, KW_ENOMEM, "engine: out of memory");
    q->req = *r;
    q->max_gen = max_gen;
    if (r->hooks)
        q->hs = *r->hooks;
    q->req.hooks = NULL;
    q->toks = malloc(sizeof(int32_t) * ((size_t)r->n_prompt + max_gen + 1));
    q->res = calloc(1, sizeof *q->res);
    int k = (r->forced || r->want_logprobs) ? (r->topk > 0 ? r->topk : 0) : 0;
    if (q->res && max_gen > 0) {
        q->res->tokens = malloc(sizeof(int32_t) * max_gen);
        if (r->forced || r->want_logprobs)
            q->res->logprobs = malloc(sizeof(float) * max_gen);
        if (k) {
            q->res->topk_ids = malloc(sizeof(int32_t) * max_gen * k);
            q->res->topk_lp = malloc(sizeof(float) * max_gen * k);
        }
    }
    bool ref_ok = true;
    if (q->res && r->reference) {
        q->res->ref_kl = malloc(sizeof(float) * max_gen);
        q->res->ref_top1 = malloc((size_t)max_gen);
        q->res->ref_top5 = malloc((size_t)max_gen);
        q->res->ref_logprobs = malloc(sizeof(float) * max_gen);
        q->ref = calloc(1, sizeof *q->ref);
        ref_ok = q->ref && q->res->ref_kl && q->res->ref_top1 && q->res->ref_top5 &&
                 q->res->ref_logprobs;
    }
    int rc = !q->toks || !q->res || !ref_ok
                 ? kw_error_set(err, KW_ENOMEM, "engine: out of memory")
                 : seq_claim(e, q, err);
    if (rc == 0 && q->ref) { /* the branch holds the whole prompt and its forced tokens */
        q->claim += kw_kvpool_pages_for(e->pool, (int64_t)r->n_prompt + max_gen);
        if (q->claim > kw_kvpool_options(e->pool)->n_pages)
            rc = kw_error_set(err, KW_ELIMIT, "sequence of %d prompt + %d forced tokens with "
                              "a full-attention reference branch needs %lld KV pages, the "
                              "pool has %lld", r->n_prompt, max_gen, (long long)q->claim,
                              (long long)kw_kvpool_options(e->pool)->n_pages);
    }
    if (rc < 0) {
        free(q->toks);
        kw_gen_result_free(q->res);
        free(q->ref);
        free(q);
        return rc;
    }
    q->req.forced = NULL; /* the caller's array: the engine keeps a copy */
    if (r->forced && r->n_forced > 0) {
        int32_t *fc = malloc(sizeof(int32_t) * (size_t)r->n_forced);
        if (!fc) {
            free(q->toks);
            kw_gen_result_free(q->res);
            free(q->ref);
            free(q);
            return kw_error_set(err, KW_ENOMEM, "engine: out of memory");
        }
        memcpy(fc, r->forced, sizeof(int32_t) * (size_t)r->n_forced);
        q->req.forced = fc;
    }
    q->res->topk = k;
    q->res->n_prompt = r->n_prompt;
    memcpy(q->toks, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    q->n_toks = r->n_prompt;
    q->req.prompt = NULL;
    q->s.n_prompt = r->n_prompt;
    q->s.max_new = max_gen;
    q->s.sample = r->sample;
    q->s.seed = r->sampling.seed;
    q->t_submit = kw_now();
    if (r->share_prefill)
        kw__share_plan(e, q);
    if (q->ref) {
        q->ref->owner = q;
        q->ref->s = q->s;
        q->ref->max_gen = max_gen;
        q->ref->req.n_prompt = r->n_prompt;
    }
    pthread_mutex_lock(&e->mu);
    q->s.id = ++e->next_id;
    if (q->ref)
        q->ref->s.id = ++e->next_id;
    if (e->q_tail)
        e->q_tail->next = q;
    else
        e->q_head = q;
    e->q_tail = q;
    e->busy++;
    pthread_cond_signal(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

/* ---- the engine thread ---- */

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void seq_finish(kw_engine *e, kw_eseq *q, int rc, const char *msg)
{
    if (q->lead) {
        kw__leader_finish(e, q, rc);
        return;
    }
    kw_gen_result *r = q->res;
    if (rc < 0 && r->rc == 0) {
        r->rc = rc;
        snprintf(r->error, sizeof r->error, "%s", msg ? msg : kw_strerror(rc));
    }
    for (int i = 0; i < q->n_open; i++)
        if (q->hs.hooks[i]->seq_close)
            q->hs.hooks[i]->seq_close(q->hs.states[i], &q->s, i);
    kw_kvmem_stats ms;
    kw_kvpool_stats(e->pool, &ms);
    r->page_bytes = ms.page_bytes;
    r->meta_bytes = q->s.meta_bytes;
    r->store_bytes = q->s.store_bytes;
    r->load_bytes = q->s.load_bytes;
    r->load_bytes_full = q->s.load_bytes_full;
    r->hook_wait_s = q->s.wait_s;
    r->held_peak_bytes = q->s.held_peak_bytes;
    r->rebuilt = q->s.rebuilt;
    r->rebuilt_full = q->s.rebuilt_full;
    r->tmp_bytes_peak = e->tmp_peak * ms.page_bytes;
    if (q->mem_samples) {
        r->pages_mean = q->pages_sum / q->mem_samples;
        r->kv_payload_mean = q->kv_sum / q->mem_samples;
    }
    r->attended_mean = q->att_steps ? q->att_sum / (double)q->att_steps : 0;
    if (r->n_gen > 1)
        r->decode_s_per_token = (q->t_last - q->t_first) / (r->n_gen - 1);
    if (q->n_gaps > 0) { /* nearest rank: the ceil(p n)-th smallest */
        qsort(q->gaps, (size_t)q->n_gaps, sizeof *q->gaps, by_double);
        r->decode_s_p50 = q->gaps[(q->n_gaps + 1) / 2 - 1];
        r->decode_s_p90 = q->gaps[(9 * q->n_gaps + 9) / 10 - 1];
    }
    free(q->gaps);
    q->gaps = NULL;
    q->s.kv = kw_kvseq_free(q->s.kv);
    if (q->ref) {
        q->ref->s.kv = kw_kvseq_free(q->ref->s.kv);
        free(q->ref);
        q->ref = NULL;
    }
    e->claimed -= q->claim;
    free((void *)q->req.forced);
    free(q->toks);
    q->res = NULL;
    q->req.done(q->req.user, r);
    free(q);
    pthread_mutex_lock(&e->mu);
    if (--e->busy == 0)
        pthread_cond_broadcast(&e->cv_idle);
    pthread_mutex_unlock(&e->mu);
}

/* Moves queued sequences into the running batch while the pool can hold their claims;
 * first come, first served (a large head waits rather than being overtaken). A head
 * that shares a prefix waits while its leader computes it (the leader is started here
 * when the prefix is neither kept nor being computed). Kept prefixes are dropped, least
 * recently used first, when the head needs their pages. */
static void admit(kw_engine *e)
{
    int64_t total = kw_kvpool_options(e->pool)->n_pages;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        kw_eseq *q = e->q_head;
        int slots = e->n_run; /* a reference branch takes a batch slot of its own */
        for (int i = 0; i < e->n_run; i++)
            slots += e->run[i]->ref != NULL;
        pthread_mutex_unlock(&e->mu);
        if (!q)
            return;
        kw_prefix *px = NULL;
        if (q->share_n > 0) {
            px = kw__prefix_find(e, q);
            if (px && !px->leader && !px->kv) { /* its computation failed */
                q->share_n = 0;
                q->res->prefill_share = KW_SHARE_OWN_FAILED;
                px = NULL;
            } else if (!px) {
                if (kw__prefix_start(e, q, slots))
                    return; /* the head waits for its leader */
                if (e->n_run > 0)
                    return; /* room comes when a running sequence ends */
                q->share_n = 0;
                q->res->prefill_share = KW_SHARE_OWN_FAILED;
            } else if (px->leader) {
                return;
            }
        }
        if (slots + 1 + (q->ref != NULL) > e->o.max_batch)
            return;
        while (e->claimed + q->claim > total && kw__prefix_drop_lru(e, px))
            ;
        if (e->claimed + q->claim > total)
            return;
        pthread_mutex_lock(&e->mu);
        e->q_head = q->next;
        if (!e->q_head)
            e->q_tail = NULL;
        pthread_mutex_unlock(&e->mu);
        q->next = NULL;
        e->claimed += q->claim;
        q->t_admit = kw_now();
        q->res->queue_s = q->t_admit - q->t_submit;
        q->s.kv = kw_kvseq_new(e->pool);
        int rc = q->s.kv ? 0 : KW_ENOMEM;
        if (rc == 0 && q->ref && !(q->ref->s.kv = kw_kvseq_new(e->pool)))
            rc = KW_ENOMEM;
        if (rc == 0 && px)
            rc = kw__take_prefix(e, q, px);
        for (int i = 0; rc == 0 && i < q->hs.n; i++) {
            if (q->hs.hooks[i]->seq_open)
                rc = q->hs.hooks[i]->seq_open(q->hs.states[i], &q->s, i);
            q->n_open += rc == 0;
        }
        if (rc < 0) {
            seq_finish(e, q, rc, "a kv method could not open the sequence");
            continue;
        }
        e->run[e->n_run++] = q;
    }
}

/* Records the token chosen (or forced) from one row of logits. Returns true when the
 * sequence is done. */
static bool take_token(kw_engine *e, kw_eseq *q, const float *lg)
{
    kw_gen_result *r = q->res;
    int V = e->m->cfg.n_vocab, g = r->n_gen, tok;
    if (q->req.forced) {
        tok = q->req.forced[g];
    } else {
        uint64_t key = kw__sample_key(q->req.sampling.seed, q->req.sample, g);
        tok = kw__sample(lg, V, &q->req.sampling, key, e->sidx, e->sp);
    }
    if (r->logprobs)
        r->logprobs[g] = (float)kw__logprob(lg, V, tok, r->topk,
                                            r->topk ? r->topk_ids + (int64_t)g * r->topk : NULL,
                                            r->topk ? r->topk_lp + (int64_t)g * r->topk : NULL);
    r->tokens[g] = tok;
    r->n_gen = g + 1;
    q->toks[q->n_toks++] = tok;
    double t = kw_now();
    if (g == 0) {
        q->t_first = t;
        r->ttft_s = t - q->t_submit;
    } else {
        if (!q->gaps)
            q->gaps = malloc(sizeof(double) * (size_t)q->max_gen);
        if (q->gaps) /* no memory: the percentiles stay 0 */
            q->gaps[q->n_gaps++] = t - q->t_last;
    }
    q->t_last = t;
    if (r->n_gen >= q->max_gen)
        return true;
    if (!q->req.forced && !q->req.ignore_eos)
        for (int i = 0; i < e->m->cfg.n_eos; i++)
            if (tok == e->m->cfg.eos_ids[i]) {
                r->stopped_eos = true;
                return true;
            }
    return false;
}

/* Fidelity of position g: the reference branch's logits against the sequence's. */
static void compare_ref(kw_eseq *q, const float *full, const float *meth, int V)
{
    kw_gen_result *r = q->res;
    int g = r->n_gen;
    kw__fidelity(full, meth, V, &r->ref_kl[g], &r->ref_top1[g], &r->ref_top5[g]);
    r->ref_logprobs[g] = (float)kw__logprob(full, V, q->req.forced[g], 0, NULL, NULL);
}

typedef struct stepbuf {
    kw_seq *seqs[KW_FWD_MAX_SEQ];
    const kw_hookstack *stacks[KW_FWD_MAX_SEQ];
    kw_eseq *q[KW_FWD_MAX_SEQ];
    int first[KW_FWD_MAX_SEQ], n[KW_FWD_MAX_SEQ], logit_tok[KW_FWD_MAX_SEQ], row[KW_FWD_MAX_SEQ];
    bool prefill[KW_FWD_MAX_SEQ], last[KW_FWD_MAX_SEQ];
    kw_seq *twin[KW_FWD_MAX_SEQ]; /* the reference branch to share the prompt KV into */
    int ref_at[KW_FWD_MAX_SEQ];   /* the step entry of this entry's reference branch */
    int32_t *ids, *pos;
} stepbuf;

/* Decode tokens of every running sequence first, then prefill chunks in admission
 * order within the chunk budget. */
static int build_step(kw_engine *e, stepbuf *b, int *n_logits)
{
    int k = 0, nt = 0, nl = 0, budget = e->o.chunk;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < e->n_run; i++) {
            kw_eseq *q = e->run[i];
            int done = q->s.n_past;
            bool pre = done < q->req.n_prompt;
            if (pass == 0 && pre)
                continue;
            if (pass == 1 && (!pre || budget == 0))
                continue;
            int c = pre ? q->req.n_prompt - done : 1;
            if (pre) {
                int rem = c, w = e->o.obs_window;
                c = c > budget ? budget : c;
                /* observation probabilities come from the prompt's last chunk: leave it
                   at least obs_window tokens (when the chunk size allows) */
                if (c < rem && rem - c < w && (kw_hookstack_needs(&q->hs) & KW_NEED_OBS_PROBS)) {
                    if (rem > w)
                        c = rem - w;
                    else if (rem <= e->o.chunk)
                        c = 0; /* all of it in a later step with room for it */
                }
                if (c == 0)
                    continue;
                budget -= c;
            }
            b->q[k] = q;
            b->seqs[k] = &q->s;
            b->stacks[k] = q->hs.n ? &q->hs : NULL;
            b->first[k] = nt;
            b->n[k] = c;
            b->prefill[k] = pre;
            b->last[k] = pre && done + c == q->req.n_prompt;
            b->row[k] = -1;
            b->twin[k] = b->last[k] && q->ref && q->req.reference == KW_REF_SHARED
                             ? &q->ref->s : NULL;
            b->ref_at[k] = -1;
            for (int j = 0; j < c; j++) {
                b->ids[nt + j] = q->toks[done + j];
                b->pos[nt + j] = done + j;
            }
            nt += c;
            if ((!pre || b->last[k]) && q->max_gen > 0) {
                b->row[k] = nl;
                b->logit_tok[nl++] = nt - 1;
            }
            k++;
            if (!q->ref || (pre && q->req.reference != KW_REF_OWN))
                continue;
            /* the reference branch steps beside it: same tokens, same positions (a
               prompt chunk of its own prefill, or the decode token) */
            kw_eseq *r = q->ref;
            b->ref_at[k - 1] = k;
            b->q[k] = r;
            b->seqs[k] = &r->s;
            b->stacks[k] = NULL;
            b->first[k] = nt;
            b->n[k] = c;
            b->prefill[k] = pre;
            b->last[k] = b->last[k - 1];
            b->twin[k] = NULL;
            b->ref_at[k] = -1;
            for (int j = 0; j < c; j++) {
                b->ids[nt + j] = q->toks[done + j];
                b->pos[nt + j] = done + j;
            }
            nt += c;
            b->row[k] = -1;
            if (!pre || b->last[k]) {
                b->row[k] = nl;
                b->logit_tok[nl++] = nt - 1;
            }
            k++;
        }
    *n_logits = nl;
    return k;
}

static void account(kw_engine *e, kw_eseq *q, const kw_fwd_step *st, int j)
{
    int64_t pages = kw_kvseq_pages_held(q->s.kv);
    int64_t payload = kw_kvseq_payload_bytes(q->s.kv); /* K and V (+ scales) */
    q->mem_samples++;
    q->pages_sum += pages;
    q->kv_sum += payload;
    if (pages > q->res->pages_peak)
        q->res->pages_peak = pages;
    if (payload > q->res->kv_payload_peak)
        q->res->kv_payload_peak = payload;
    if (!st->prefill[j]) {
        q->att_sum += (double)st->attended[j] / e->m->cfg.n_layer;
        q->att_steps++;
    }
}

static void run_step(kw_engine *e, stepbuf *b)
{
    int nl, k = build_step(e, b, &nl);
    if (k == 0)
        return;
    kw_fwd_step st = {.n_seq = k, .seqs = b->seqs, .stacks = b->stacks,
                      .tok_first = b->first, .tok_n = b->n, .ids = b->ids, .pos = b->pos,
                      .prefill = b->prefill, .last_chunk = b->last, .logit_tok = b->logit_tok,
                      .n_logits = nl, .logits = e->logits, .step = e->step++,
                      .obs_window = e->o.obs_window, .twins = b->twin};
    kw_error err = {0};
    double t0 = kw_now();
    int rc = kw__fwd_run(e->f, e->pool, &st, &err);
    kw_kvmem_stats ms;
    kw_kvpool_stats(e->pool, &ms);
    int64_t tpk = kw_kvpool_tmp_peak(e->pool);
    e->tmp_peak = tpk > e->tmp_peak ? tpk : e->tmp_peak;
    kw_kvpool_tmp_reset(e->pool);
    bool done[KW_FWD_MAX_SEQ] = {0};
    int V = e->m->cfg.n_vocab;
    for (int j = 0; j < k; j++) {
        kw_eseq *q = b->q[j];
        if (rc < 0 || st.seq_rc[j] < 0)
            continue;
        if (q->owner) { /* a reference branch: read with its sequence */
            q->s.n_past += b->n[j];
            continue;
        }
        q->s.n_past += b->n[j];
        account(e, q, &st, j);
        if (b->row[j] >= 0) {
            const float *lg = e->logits + (int64_t)b->row[j] * V;
            int jr = b->ref_at[j];
            if (q->ref && b->last[j] && q->req.reference == KW_REF_SHARED)
                q->ref->s.n_past = q->req.n_prompt; /* it took the prompt's KV */
            if (q->ref && (jr < 0 || st.seq_rc[jr] >= 0))
                compare_ref(q, jr < 0 ? lg : e->logits + (int64_t)b->row[jr] * V, lg, V);
            done[j] = take_token(e, q, lg);
        } else if (b->last[j] && q->max_gen == 0) {
            done[j] = true;
        }
    }
    int64_t h2d, d2h;
    kw__fwd_io_stats(e->f, &h2d, &d2h);
    pthread_mutex_lock(&e->mu);
    e->st.h2d_bytes = h2d, e->st.d2h_bytes = d2h;
    e->st.steps++;
    e->st.busy_s += kw_now() - t0;
    for (int j = 0; j < k; j++)
        *(b->prefill[j] ? &e->st.prefill_tokens : &e->st.decode_tokens) += b->n[j];
    e->st.pages_peak = ms.pages_used > e->st.pages_peak ? ms.pages_used : e->st.pages_peak;
    pthread_mutex_unlock(&e->mu);
    /* retire: failed and finished sequences leave the batch. Which rows are reference
     * branches is read first: retiring a sequence frees its branch, the row after it. */
    bool branch[KW_FWD_MAX_SEQ];
    for (int j = 0; j < k; j++)
        branch[j] = b->q[j]->owner != NULL;
    for (int j = 0; j < k; j++) {
        int src = rc < 0 ? rc : st.seq_rc[j];
        bool ref_failed = false;
        if (branch[j])
            continue; /* retires with its sequence */
        if (src >= 0 && b->ref_at[j] >= 0 && st.seq_rc[b->ref_at[j]] < 0) {
            src = st.seq_rc[b->ref_at[j]];
            ref_failed = true;
        }
        if (src >= 0 && !done[j])
            continue;
        kw_eseq *q = b->q[j];
        for (int i = 0; i < e->n_run; i++)
            if (e->run[i] == q) {
                memmove(&e->run[i], &e->run[i + 1], sizeof(e->run[0]) * (e->n_run - i - 1));
                e->n_run--;
                break;
            }
        const char *why = rc < 0                ? err.msg
                          : st.twin_rc[j] == KW_ERANGE
                              ? "a kv method dropped prompt tokens before the prompt ended, "
                                "so the full-attention branch cannot share the prefill; give "
                                "it its own (decode.fidelity reference_prefill: own)"
                          : st.twin_rc[j] < 0   ? "no KV pages left for the full-attention "
                                                  "reference branch"
                          : ref_failed          ? "the full-attention reference branch "
                                                  "failed (the KV pool is full?)"
                          : src == KW_ELIMIT    ? "the KV pool is full (the sequence's claim "
                                                  "was too small)"
                          : src < 0             ? (q->s.error[0] ? q->s.error
                                                                 : "a kv method failed")
                                                : NULL;
        seq_finish(e, q, src, why);
    }
}

static void *engine_main(void *arg)
{
    kw_engine *e = arg;
    if (e->o.threads > 0)
        omp_set_num_threads(e->o.threads);
    stepbuf b;
    int max_tok = 2 * e->o.chunk + e->o.max_batch;
    b.ids = malloc(sizeof(int32_t) * max_tok);
    b.pos = malloc(sizeof(int32_t) * max_tok);
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->closing && !e->q_head && e->n_run == 0)
            pthread_cond_wait(&e->cv_work, &e->mu);
        bool stop = e->closing && !e->q_head && e->n_run == 0;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        admit(e);
        if (e->n_run == 0) {
            /* the queue head cannot be admitted with nothing running: it never will */
            pthread_mutex_lock(&e->mu);
            kw_eseq *q = e->q_head;
            if (q) {
                e->q_head = q->next;
                if (!e->q_head)
                    e->q_tail = NULL;
            }
            pthread_mutex_unlock(&e->mu);
            if (q)
                seq_finish(e, q, KW_ELIMIT, "the sequence does not fit the KV pool");
            continue;
        }
        if (!b.ids || !b.pos) {
            while (e->n_run > 0)
                seq_finish(e, e->run[--e->n_run], KW_ENOMEM, NULL);
            continue;
        }
        run_step(e, &b);
    }
    free(b.ids);
    free(b.pos);
    return NULL;
}
