/* mini_prefill.snap — XKV's mini-prefill (METHODS.md, XKV): a reduce of the calibration
 * phase. For each sample it runs the prompt's prefill on the device engine with a probe
 * hook that needs the observation-window probabilities; in every layer the probe scores
 * the keys before the last `window` queries as SnapKV does (probabilities summed over
 * the window's queries, the GQA group's heads averaged, 1-D pooling of `kernel`), sorts
 * each KV head's scores in decreasing order and divides them by the layer's total. At
 * finish the samples' profiles, in sample order, become one "stats" value.
 *
 * The engine has no early exit: the sequence is submitted with no new tokens, so the
 * LM head and sampling are skipped, but the last layer's MLP still runs.
 * The observation probabilities come from the prompt's last prefill chunk: when that
 * chunk is shorter than `window`, its queries are all there is (recorded as
 * short_windows).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "kvweave/stats.h"
#include "probe.h"

typedef struct snap_sample {
    int64_t sample;
    int n_keys;
    float *profile; /* (n_layer, n_kv, n_keys) */
} snap_sample;

typedef struct snap_state {
    pthread_mutex_t mu;
    bool mu_ok;
    int window, kernel;
    kw_pooling pooling;
    kw_hookstack hs;
    int n_layer, n_kv;
    snap_sample *done;
    int n_done, cap_done;
    int64_t short_windows, too_short;
} snap_state;

/* Per sequence: the profile being filled, layer by layer. */
typedef struct snap_seq {
    float *profile;
    int n_keys, layers_done;
    float *scores, *pooled;
} snap_seq;

static int sort_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* One layer of one sequence: probs (obs_n, n_head, len) over the dense view. */
static int score_layer(snap_state *st, snap_seq *ss, const kw_model_config *cf, int layer,
                       const float *probs, int obs_n, int len, int n_stored)
{
    int H = cf->n_head, Hk = cf->n_head_kv, w = obs_n < st->window ? obs_n : st->window;
    int n_key = n_stored - w, rc;
    if (layer == 0 && w < st->window) {
        pthread_mutex_lock(&st->mu);
        st->short_windows++;
        pthread_mutex_unlock(&st->mu);
    }
    if (n_key < 1)
        return 0; /* nothing before the window: the sample has no profile */
    if (!ss->profile) {
        ss->n_keys = n_key;
        ss->profile = malloc(sizeof(float) * (size_t)cf->n_layer * Hk * n_key);
        ss->scores = malloc(sizeof(float) * (size_t)Hk * n_key);
        ss->pooled = malloc(sizeof(float) * (size_t)Hk * n_key);
        if (!ss->profile || !ss->scores || !ss->pooled)
            return KW_ENOMEM;
    }
    if (n_key != ss->n_keys)
        return KW_EINTERNAL; /* the prompt's length cannot change between layers */
    const float *last = probs + (int64_t)(obs_n - w) * H * len;
    if ((rc = kw_k_window_scores(KW_BK_CPU, NULL, last, w, H, len, H / Hk, n_key, ss->scores)) < 0
        || (rc = kw_k_pool1d(KW_BK_CPU, NULL, ss->scores, Hk, n_key, st->kernel, st->pooling,
                             ss->pooled)) < 0)
        return rc;
    double tot = 0;
    for (int64_t i = 0; i < (int64_t)Hk * n_key; i++)
        tot += ss->pooled[i];
    float *out = ss->profile + (int64_t)layer * Hk * n_key;
    for (int64_t i = 0; i < (int64_t)Hk * n_key; i++)
        out[i] = tot > 0 ? (float)(ss->pooled[i] / tot) : 0.f;
    for (int h = 0; h < Hk; h++)
        qsort(out + (int64_t)h * n_key, (size_t)n_key, sizeof(float), sort_desc);
    ss->layers_done++;
    return 0;
}

static int probe_after_attn(void *stp, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    snap_state *st = stp;
    for (int i = 0; i < b->n_seq; i++) {
        if (!a->probs || !a->probs[i])
            continue;
        snap_seq *ss = b->seqs[i]->hook_seq[c->hook_index];
        int n_stored = kw_kvseq_len(b->seqs[i]->kv, c->layer, 0);
        int rc = score_layer(st, ss, c->cfg, c->layer, a->probs[i], a->obs_n[i], a->obs_len[i],
                             n_stored);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int probe_seq_open(void *stp, kw_seq *s, int idx)
{
    (void)stp;
    snap_seq *ss = calloc(1, sizeof *ss);
    if (!ss)
        return KW_ENOMEM;
    s->hook_seq[idx] = ss;
    return 0;
}

/* A complete profile moves to the stage's list; a partial one (a failed sequence) is
 * dropped. */
static void probe_seq_close(void *stp, kw_seq *s, int idx)
{
    snap_state *st = stp;
    snap_seq *ss = s->hook_seq[idx];
    if (!ss)
        return;
    pthread_mutex_lock(&st->mu);
    if (ss->profile && ss->layers_done == st->n_layer) {
        if (st->n_done == st->cap_done) {
            int c = st->cap_done ? 2 * st->cap_done : 16;
            snap_sample *d = realloc(st->done, sizeof *d * (size_t)c);
            if (d) {
                st->done = d;
                st->cap_done = c;
            }
        }
        if (st->n_done < st->cap_done) {
            st->done[st->n_done++] = (snap_sample){s->sample, ss->n_keys, ss->profile};
            ss->profile = NULL;
        }
    } else if (!ss->profile) {
        st->too_short++;
    }
    pthread_mutex_unlock(&st->mu);
    free(ss->profile), free(ss->scores), free(ss->pooled);
    free(ss);
    s->hook_seq[idx] = NULL;
}

/* The probe reads and changes nothing attention sees; it declares SELECT (the role that
 * stacks freely) without a select callback. */
static const kw_kvhook probe_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_OBS_PROBS, .name = "mini_prefill.snap", .seq_open = probe_seq_open,
    .after_attn = probe_after_attn, .seq_close = probe_seq_close,
};

/* ---- the operator ---- */

static const kw_port ins[] = {
    {"tokens", KW_T_TOKENS, KW_EACH, 0, "the tokenized prompt of a calibration sample"},
};
static const kw_port outs[] = {
    {"stats", KW_T_STATS, KW_ONCE, 0,
     "per sample, per layer and KV head sorted SnapKV scores (shares of the layer's total); "
     "importance averaged over the samples"},
};
static const kw_param_spec params[] = {
    {"window", KW_PARAM_INT, "8", 1, 4096, NULL, "observation window: the last queries (XKV: 8)"},
    {"kernel", KW_PARAM_INT, "7", 1, 1023, NULL, "pooling kernel (XKV: 7)"},
    {"pooling", KW_PARAM_ENUM, "avg", 0, 0, "avg|max", "pooling of the scores (XKV: avg)"},
};

static int init(kw_opctx *c, void *state, kw_error *err)
{
    snap_state *st = state;
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return kw_error_set(err, KW_EINTERNAL, "mini_prefill.snap: cannot make a mutex");
    st->mu_ok = true;
    st->window = (int)kw_param_int(c, "window");
    st->kernel = (int)kw_param_int(c, "kernel");
    st->pooling = strcmp(kw_param_str(c, "pooling"), "max") ? KW_POOLING_AVG : KW_POOLING_MAX;
    st->hs = (kw_hookstack){.n = 1, .hooks = {&probe_hook}, .states = {st}};
    return 0;
}

static void fini(kw_opctx *c, void *state)
{
    (void)c;
    snap_state *st = state;
    for (int i = 0; i < st->n_done; i++)
        free(st->done[i].profile);
    free(st->done);
    st->done = NULL;
    st->n_done = 0;
    if (st->mu_ok)
        pthread_mutex_destroy(&st->mu);
    st->mu_ok = false;
}

static int run(kw_opctx *c, void *state, kw_task *t)
{
    snap_state *st = state;
    const kw_model_config *cf;
    int rc = kw__probe_model(c, t, "mini_prefill.snap", &cf);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&st->mu);
    st->n_layer = cf->n_layer;
    st->n_kv = cf->n_head_kv;
    pthread_mutex_unlock(&st->mu);
    return kw__probe_prefill(c, t, &st->hs, "mini_prefill.snap");
}

static int by_sample(const void *a, const void *b)
{
    int64_t x = ((const snap_sample *)a)->sample, y = ((const snap_sample *)b)->sample;
    return (x > y) - (x < y);
}

static int finish(kw_opctx *c, void *state, kw_task *t)
{
    snap_state *st = state;
    pthread_mutex_lock(&st->mu);
    char num[64];
    snprintf(num, sizeof num, "%lld", (long long)st->short_windows);
    kw_ctx_record(c, "short_windows", num);
    snprintf(num, sizeof num, "%lld", (long long)st->too_short);
    kw_ctx_record(c, "prompts_not_longer_than_window", num);
    if (st->n_done == 0) {
        pthread_mutex_unlock(&st->mu);
        return kw_task_fail(t, KW_EINVAL, "mini_prefill.snap: no calibration sample gave "
                            "scores (%lld prompts no longer than the window of %d)",
                            (long long)st->too_short, st->window);
    }
    qsort(st->done, (size_t)st->n_done, sizeof *st->done, by_sample);
    kw_stats *s = kw_stats_new(st->n_layer, st->n_kv);
    int rc = s ? 0 : KW_ENOMEM;
    for (int i = 0; i < st->n_done; i++) {
        if (rc == 0)
            rc = kw_stats_add_sample(s, st->done[i].n_keys, st->done[i].profile);
        else
            free(st->done[i].profile);
        st->done[i].profile = NULL;
    }
    st->n_done = 0;
    pthread_mutex_unlock(&st->mu);
    if (rc < 0) {
        kw_stats_free(s);
        return kw_task_fail(t, rc, "mini_prefill.snap: out of memory");
    }
    s->window = st->window;
    s->kernel = st->kernel;
    kw_stats_finish(s);
    snprintf(num, sizeof num, "%d", s->n_samples);
    kw_ctx_record(c, "samples", num);
    return kw_task_out(t, 0, kw_value_stats(s));
}

const kw_op kw_op_mini_prefill_snap = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "mini_prefill.snap", .version = 1,
    .doc = "XKV mini-prefill (calibration reduce): per sample, a prefill on the device engine "
           "whose probe scores each layer's keys SnapKV-style (window 8, avg pooling 7 by "
           "default, GQA heads averaged per KV head) and keeps each head's sorted scores as "
           "shares of the layer total; emits them as one stats value. No LM head or "
           "sampling runs; the engine has no early exit, so the last layer's MLP does.",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL | KW_OP_CACHEABLE,
    .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .state_size = sizeof(snap_state),
    .init = init, .run = run, .finish = finish, .fini = fini,
};
