/* The decode operators' common part: per stage, one state per kvmethod input (made on
 * the first task, when the once inputs are there), stacked in input order and checked;
 * each task submits its sequence to the device engine and completes from the engine's
 * callback. */
#include <stdlib.h>
#include <string.h>

#include "decode_common.h"
#include "kvweave/util.h"

const kw_port kw__decode_inputs[2] = {
    {"tokens", KW_T_TOKENS, KW_EACH, 0, "the tokenized prompt"},
    {"methods", KW_T_KVMETHOD, KW_ONCE, KW_PORT_OPTIONAL | KW_PORT_MULTI,
     "KV methods, stacked in the order given"},
};
const kw_port kw__decode_outputs[1] = {
    {"out", KW_T_GENERATION, KW_EACH, 0, "tokens, text, timings, memory figures"},
};

int kw__decode_init(kw_opctx *c, void *state, kw_error *err)
{
    kw_decode_state *st = state;
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return kw_error_set(err, KW_EINTERNAL, "decode: cannot make a mutex");
    st->mu_ok = true;
    return 0;
}

void kw__decode_fini(kw_opctx *c, void *state)
{
    kw_decode_state *st = state;
    for (int i = 0; i < st->hs.n; i++)
        if (st->methods[i] && st->methods[i]->state_free)
            st->methods[i]->state_free(st->hs.states[i]);
    if (st->mu_ok)
        pthread_mutex_destroy(&st->mu);
}

static int build_stack(kw_decode_state *st, kw_task *t, const kw_model_config *cfg,
                       kw_error *err)
{
    int n = kw_task_in_n(t, 1);
    if (n > KW_MAX_HOOKS)
        return kw_error_set(err, KW_ELIMIT, "decode: %d kv methods, at most %d", n, KW_MAX_HOOKS);
    for (int i = 0; i < n; i++) {
        kw_value *v = kw_task_in_at(t, 1, i);
        if (!v || strcmp(kw_value_type(v), KW_T_KVMETHOD) != 0)
            return kw_error_set(err, KW_ETYPE, "decode: input %d is not a kvmethod", i);
        const kw_kvmethod *m = kw_value_data(v);
        void *hs = m->params;
        if (m->state_new) {
            int rc = m->state_new(m->params, cfg, &hs, err);
            if (rc < 0)
                return rc;
        }
        st->methods[i] = m;
        st->hs.hooks[i] = m->hook;
        st->hs.states[i] = hs;
        st->hs.n = i + 1;
    }
    return kw_hookstack_check(&st->hs, err);
}

typedef struct pending {
    kw_task *t;
    const kw_model *m;
    json_t *sample; /* the tokens' source record (own reference; nullable) */
} pending;

static void on_done(void *user, kw_gen_result *r)
{
    pending *p = user;
    int rc = r->rc;
    if (rc < 0) {
        kw_task_fail(p->t, rc, "generation failed: %s", r->error);
    } else {
        json_t *g = kw__generation_json(p->m, r, p->sample);
        rc = g ? kw_task_out(p->t, 0, kw_value_json(KW_T_GENERATION, g)) : KW_ENOMEM;
    }
    kw_task *t = p->t;
    kw_gen_result_free(r);
    json_decref(p->sample); /* before completing: the task's consumers may run at once */
    free(p);
    kw_task_complete(t, rc);
}

int kw__decode_submit(kw_opctx *c, kw_decode_state *st, kw_task *t, kw_gen_req *req)
{
    kw_engine *e = kw_ctx_engine(c);
    if (!e)
        return kw_task_fail(t, KW_ENOTFOUND, "decode: no device engine for this run");
    const kw_model *m = kw_engine_model(e);
    kw_error err = {0};
    pthread_mutex_lock(&st->mu);
    if (!st->built) {
        st->build_rc = build_stack(st, t, &m->cfg, &err);
        st->built = true;
    }
    int brc = st->build_rc;
    pthread_mutex_unlock(&st->mu);
    if (brc < 0)
        return kw_task_fail(t, brc, "%s", err.msg[0] ? err.msg : "the kv method stack is invalid");
    pending *p = malloc(sizeof *p);
    if (!p)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    kw_value *tv = kw_task_in(t, 0);
    const kw_tokens *tk = tv && !strcmp(kw_value_type(tv), KW_T_TOKENS) ? kw_value_data(tv) : NULL;
    *p = (pending){t, m, tk && tk->sample ? json_incref(tk->sample) : NULL};
    req->hooks = st->hs.n ? &st->hs : NULL;
    req->sample = kw_task_sample(t);
    req->done = on_done;
    req->user = p;
    int rc = kw_engine_submit(e, req, &err);
    if (rc < 0) {
        json_decref(p->sample);
        free(p);
        return kw_task_fail(t, rc, "%s", err.msg);
    }
    return KW_PENDING;
}

static json_t *int_array(const int32_t *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *float_array(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

const kw_tokens *kw__decode_tokens(kw_task *t)
{
    kw_value *v = kw_task_in(t, 0);
    if (!v || strcmp(kw_value_type(v), KW_T_TOKENS) != 0) {
        kw_task_fail(t, KW_ETYPE, "decode: input 'tokens' holds %s, not tokens",
                     v ? kw_value_type(v) : "nothing");
        return NULL;
    }
    return kw_value_data(v);
}

int kw__decode_max_new(const kw_opctx *c, const kw_tokens *tk, const char *param)
{
    if (kw_param_is_set(c, param))
        return (int)kw_param_int(c, param);
    if (tk && tk->max_new > 0)
        return tk->max_new;
    return (int)kw_param_int(c, param);
}

int kw__forced_req(kw_opctx *c, kw_task *t, const kw_tokens *tk, const char *who,
                   kw_gen_req *r, int32_t **cont)
{
    int P = (int)kw_param_int(c, "prefill"), T = kw__decode_max_new(c, tk, "steps");
    *cont = NULL;
    if (P > 0) {
        if (P >= tk->n)
            return kw_task_fail(t, KW_ERANGE, "%s: prefill %d leaves no token of %d to score",
                                who, P, tk->n);
        r->prompt = tk->ids;
        r->n_prompt = P;
        r->forced = tk->ids + P;
        r->n_forced = T > 0 && T < tk->n - P ? T : tk->n - P;
        return 0;
    }
    json_t *a = tk->extra ? json_object_get(tk->extra, "continuation") : NULL;
    if (!json_is_array(a) || json_array_size(a) == 0)
        return kw_task_fail(t, KW_EINVAL, "%s: sample %lld has no extra.continuation and "
                            "prefill is 0", who, (long long)kw_task_sample(t));
    size_t n = json_array_size(a);
    if (T > 0 && (size_t)T < n)
        n = (size_t)T;
    int32_t *ids = malloc(sizeof(int32_t) * n);
    if (!ids)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v)) {
            free(ids);
            return kw_task_fail(t, KW_ETYPE, "%s: continuation[%zu] is not an integer", who, i);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    r->prompt = tk->ids;
    r->n_prompt = tk->n;
    r->forced = ids;
    r->n_forced = (int)n;
    *cont = ids;
    return 0;
}

json_t *kw__generation_json(const kw_model *m, const kw_gen_result *r, json_t *sample)
{
    char *raw = m && m->tok ? kw_detokenize(m->tok, r->tokens, r->n_gen, 1) : NULL;
    /* generation can stop inside a character (max_new): the text is repaired to valid
     * UTF-8 (U+FFFD), else JSON could not hold it */
    char *text = raw ? kw_utf8_valid_copy(raw) : NULL;
    json_t *g = json_object();
    json_object_set_new(g, "text", json_string(text ? text : ""));
    free(raw);
    free(text);
    json_object_set_new(g, "tokens", int_array(r->tokens, r->n_gen));
    json_object_set_new(g, "n_prompt", json_integer(r->n_prompt));
    json_object_set_new(g, "n_gen", json_integer(r->n_gen));
    json_object_set_new(g, "stopped_eos", json_boolean(r->stopped_eos));
    json_object_set_new(g, "ttft_s", json_real(r->ttft_s));
    json_object_set_new(g, "decode_s_per_token", json_real(r->decode_s_per_token));
    if (r->n_gen > 1) {
        json_object_set_new(g, "decode_s_p50", json_real(r->decode_s_p50));
        json_object_set_new(g, "decode_s_p90", json_real(r->decode_s_p90));
        if (r->decode_s_per_token > 0)
            json_object_set_new(g, "decode_tok_per_s", json_real(1.0 / r->decode_s_per_token));
    }
    /* the prompt's own prefill: admission to the first token, over the tokens it ran */
    double pre_s = r->ttft_s - r->queue_s;
    int pre_n = r->n_prompt - r->prefill_shared_tokens;
    if (pre_s > 0 && pre_n > 0)
        json_object_set_new(g, "prefill_tok_per_s", json_real(pre_n / pre_s));
    json_object_set_new(g, "queue_s", json_real(r->queue_s));
    /* how the prompt was prefilled: "off" (not asked), "taken" (prefix_tokens came from
       a prefill shared with other sequences of the same prompt), "own: why" */
    json_object_set_new(g, "prefill_shared", json_boolean(r->prefill_share == KW_SHARE_TAKEN));
    json_object_set_new(g, "prefill_share", json_string(kw_share_name(r->prefill_share)));
    json_object_set_new(g, "prefill_shared_tokens", json_integer(r->prefill_shared_tokens));
    json_t *mem = json_object();
    json_object_set_new(mem, "kv_payload_peak_bytes", json_integer(r->kv_payload_peak));
    json_object_set_new(mem, "kv_payload_mean_bytes", json_integer(r->kv_payload_mean));
    json_object_set_new(mem, "pages_peak", json_integer(r->pages_peak));
    json_object_set_new(mem, "pages_mean", json_integer(r->pages_mean));
    json_object_set_new(mem, "alloc_bytes_peak", json_integer(r->pages_peak * r->page_bytes));
    json_object_set_new(mem, "meta_bytes", json_integer(r->meta_bytes));
    json_object_set_new(mem, "tmp_bytes_peak", json_integer(r->tmp_bytes_peak));
    json_object_set_new(mem, "attended_mean", json_real(r->attended_mean));
    if (r->held_peak_bytes) /* KV a STORE hook held outside the pool (compressed) */
        json_object_set_new(mem, "held_peak_bytes", json_integer(r->held_peak_bytes));
    if (r->rebuilt_full) { /* tokens rebuilt from it before attention (DeltaKV) */
        json_object_set_new(mem, "rebuilt_tokens", json_integer(r->rebuilt));
        json_object_set_new(mem, "rebuilt_tokens_full", json_integer(r->rebuilt_full));
    }
    if (r->store_bytes || r->load_bytes) { /* an offloading method's block-store traffic */
        json_object_set_new(mem, "store_bytes", json_integer(r->store_bytes));
        json_object_set_new(mem, "load_bytes", json_integer(r->load_bytes));
        json_object_set_new(mem, "load_bytes_full", json_integer(r->load_bytes_full));
        json_object_set_new(g, "hook_wait_s", json_real(r->hook_wait_s));
    }
    json_object_set_new(g, "memory", mem);
    if (sample)
        json_object_set(g, "sample", sample);
    if (r->ref_kl) {
        json_t *f = json_object(), *t1 = json_array(), *t5 = json_array();
        for (int i = 0; i < r->n_gen; i++) {
            json_array_append_new(t1, json_integer(r->ref_top1[i]));
            json_array_append_new(t5, json_integer(r->ref_top5[i]));
        }
        json_object_set_new(f, "kl", float_array(r->ref_kl, r->n_gen));
        json_object_set_new(f, "top1", t1);
        json_object_set_new(f, "top5", t5);
        json_object_set_new(f, "logprobs_full", float_array(r->ref_logprobs, r->n_gen));
        json_object_set_new(g, "fidelity", f);
    }
    if (r->logprobs) {
        double nll = 0;
        for (int i = 0; i < r->n_gen; i++)
            nll -= r->logprobs[i];
        json_object_set_new(g, "logprobs", float_array(r->logprobs, r->n_gen));
        json_object_set_new(g, "nll_mean", json_real(r->n_gen ? nll / r->n_gen : 0));
    }
    if (r->topk > 0) {
        json_t *ids = json_array(), *lps = json_array();
        for (int i = 0; i < r->n_gen; i++) {
            json_array_append_new(ids, int_array(r->topk_ids + (int64_t)i * r->topk, r->topk));
            json_array_append_new(lps, float_array(r->topk_lp + (int64_t)i * r->topk, r->topk));
        }
        json_object_set_new(g, "topk_ids", ids);
        json_object_set_new(g, "topk_logprobs", lps);
    }
    return g;
}
