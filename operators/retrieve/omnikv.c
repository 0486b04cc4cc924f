/* retrieve.omnikv — token selection by observation layers (OmniKV; METHODS.md), a SELECT
 * hook.
 *
 * At each decode step, every observation layer (`layers`, e.g. "0,1,2,8,18") attends to
 * every token; after its attention, each token's score is its probability under the
 * step's query, the largest over the query heads, max-pooled over `kernel` neighbours;
 * the `keep_tokens` best-scored tokens (or with `ratio` > 0, round(ratio x the prompt
 * tokens), fixed when the sequence opens) between the first `sink` and the last `recent`
 * (ties: the earlier token), with the sink and the recent tokens, are the set that the
 * following layers read, up to the next observation layer. Layers before the first
 * observation layer and prefill read everything; when the tokens between the sink and
 * the recent ones are no more than keep_tokens, every layer reads everything.
 *
 * The probabilities come from the engine (KW_NEED_DECODE_PROBS: decode steps only). An
 * observation layer must read the dense view (the hook is not placed after another
 * SELECT hook) and the later layers must store the same tokens (no EVICT hook below);
 * otherwise the sequence fails. The view of a sparse layer has one row per KV head, the
 * same tokens for each (the score is taken over all heads).
 *
 * OmniKV keeps every token in the pool: it lowers the tokens attended per step, not the
 * KV memory (the original offloads the KV of the sparse layers; this one does not). */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/op.h"
#include "kvweave/util.h"
#include "omnikv.h"
#include "shared.h"

typedef struct oparams {
    kw_omnikv_opts o;
    int32_t *layers; /* (n_layers) increasing */
    int n_layers;
} oparams;

typedef struct ostate {
    const oparams *p;
    kw_model_config cfg;
    bool *obs; /* (n_layer) observation layers */
} ostate;

typedef struct oseq {
    int keep;    /* keep_tokens, or ratio x the prompt */
    int n_sel;   /* tokens chosen at the last observation layer; -1: none, read all */
    int n_at;    /* tokens stored when they were chosen */
    int32_t *sel; /* (n_sel) stored indices, increasing */
    float *score, *pooled;
    int64_t cap_sel, cap_score, cap_pooled;
} oseq;

static int grow_seq(oseq *q, int n)
{
    int rc = kw_grow((void **)&q->sel, &q->cap_sel, n, sizeof(int32_t));
    if (rc == 0)
        rc = kw_grow((void **)&q->score, &q->cap_score, n, sizeof(float));
    if (rc == 0)
        rc = kw_grow((void **)&q->pooled, &q->cap_pooled, n, sizeof(float));
    return rc;
}

/* The set of the observation layer l from the step's probabilities (H, len). */
static int choose(const ostate *st, oseq *q, kw_seq *s, int l, const float *probs, int len)
{
    const kw_omnikv_opts *o = &st->p->o;
    int H = st->cfg.n_head, n = kw_kvseq_len(s->kv, l, 0);
    for (int h = 0; h < st->cfg.n_head_kv; h++)
        if (kw_kvseq_len(s->kv, l, h) != n)
            return KW_EINVAL;
    if (len != n)
        return KW_EINVAL; /* not the dense view */
    int a = o->sink < n ? o->sink : n, e = n - o->recent > a ? n - o->recent : a;
    q->n_at = n;
    if (e - a <= q->keep) {
        q->n_sel = -1;
        return 0;
    }
    int rc = grow_seq(q, n);
    if (rc < 0)
        return rc;
    for (int j = 0; j < n; j++) {
        float m = probs[j];
        for (int h = 1; h < H; h++)
            m = probs[(int64_t)h * len + j] > m ? probs[(int64_t)h * len + j] : m;
        q->score[j] = m;
    }
    if ((rc = kw_k_pool1d(KW_BK_CPU, NULL, q->score, 1, n, o->kernel, KW_POOLING_MAX,
                          q->pooled)) < 0)
        return rc;
    int32_t *mid = q->sel + a; /* the chosen ones go between the sink and the recent */
    if ((rc = kw_k_topk(KW_BK_CPU, NULL, q->pooled + a, 1, e - a, q->keep, mid)) < 0)
        return rc;
    for (int j = 0; j < a; j++)
        q->sel[j] = j;
    for (int j = 0; j < q->keep; j++)
        mid[j] += a;
    for (int j = e; j < n; j++)
        q->sel[a + q->keep + (j - e)] = j;
    q->n_sel = a + q->keep + (n - e);
    return 0;
}

static int o_after_attn(void *stp, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    const ostate *st = stp;
    if (!st->obs[c->layer])
        return 0;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->prefill[i])
            continue;
        if (!a->step_probs || !a->step_probs[i])
            return KW_EINTERNAL;
        int rc = choose(st, b->seqs[i]->hook_seq[c->hook_index], b->seqs[i], c->layer,
                        a->step_probs[i], a->step_len[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int o_select(void *stp, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    (void)q;
    const ostate *st = stp;
    int l = c->layer, Hk = st->cfg.n_head_kv;
    if (st->obs[l] || l < st->p->layers[0])
        return 0;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->prefill[i])
            continue;
        kw_seq *s = b->seqs[i];
        oseq *os = s->hook_seq[c->hook_index];
        if (os->n_sel < 0)
            continue;
        int rc = kw_view_reset(out[i], Hk, false);
        for (int h = 0; rc == 0 && h < Hk; h++) {
            if (kw_kvseq_len(s->kv, l, h) != os->n_at)
                return KW_EINVAL; /* this layer stores other tokens */
            rc = kw_view_begin_row(out[i], h);
            for (int j = 0; rc == 0 && j < os->n_sel; j++)
                rc = kw_view_add_token(out[i], s->kv, l, h, os->sel[j]);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int o_seq_open(void *stp, kw_seq *s, int idx)
{
    const kw_omnikv_opts *o = &((const ostate *)stp)->p->o;
    oseq *q = calloc(1, sizeof *q);
    if (!q)
        return KW_ENOMEM;
    q->keep = kw__ratio_budget(o->ratio, o->keep_tokens, s->n_prompt);
    q->n_sel = -1;
    s->hook_seq[idx] = q;
    return 0;
}

static void o_seq_close(void *stp, kw_seq *s, int idx)
{
    (void)stp;
    oseq *q = s->hook_seq[idx];
    if (q)
        free(q->sel), free(q->score), free(q->pooled);
    free(q);
    s->hook_seq[idx] = NULL;
}

const kw_kvhook kw__omnikv_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_DECODE_PROBS, .name = "retrieve.omnikv", .seq_open = o_seq_open,
    .select = o_select, .after_attn = o_after_attn, .seq_close = o_seq_close,
    .tail_only = true, /* acts in decoding only */
};

static void params_free(void *pp)
{
    oparams *p = pp;
    if (p)
        free(p->layers);
    free(p);
}

static int state_new(const void *pp, const kw_model_config *cfg, void **out, kw_error *err)
{
    const oparams *p = pp;
    if (p->layers[p->n_layers - 1] >= cfg->n_layer)
        return kw_error_set(err, KW_EINVAL, "retrieve.omnikv: observation layer %d, the "
                            "model has %d layers (0 .. %d)", p->layers[p->n_layers - 1],
                            cfg->n_layer, cfg->n_layer - 1);
    ostate *st = calloc(1, sizeof *st);
    if (st)
        st->obs = calloc((size_t)cfg->n_layer, sizeof *st->obs);
    if (!st || !st->obs) {
        free(st);
        return kw_error_set(err, KW_ENOMEM, "retrieve.omnikv: out of memory");
    }
    for (int i = 0; i < p->n_layers; i++)
        st->obs[p->layers[i]] = true;
    st->p = p;
    st->cfg = *cfg;
    *out = st;
    return 0;
}

static void state_free(void *pst)
{
    ostate *st = pst;
    if (st)
        free(st->obs);
    free(st);
}

int kw__omnikv_parse_layers(const char *text, int32_t **out, int *n, kw_error *err)
{
    *out = NULL, *n = 0;
    int32_t *v = malloc(sizeof(int32_t) * (strlen(text) / 2 + 1));
    if (!v)
        return kw_error_set(err, KW_ENOMEM, "retrieve.omnikv: out of memory");
    const char *p = text;
    int k = 0;
    for (;;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > 1 << 16 || (k > 0 && x <= v[k - 1])
            || (*end != ',' && *end != '\0')) {
            free(v);
            return kw_error_set(err, KW_EINVAL, "retrieve.omnikv: layers '%s': want increasing "
                                "layer numbers separated by commas (e.g. 0,1,2,8,18); bad at "
                                "character %d", text, (int)(p - text) + 1);
        }
        v[k++] = (int32_t)x;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *out = v, *n = k;
    return 0;
}

int kw__omnikv_method(const kw_omnikv_opts *o, const char *layers, kw_kvmethod **out,
                      kw_error *err)
{
    *out = NULL;
    if (o->keep_tokens < 1 || o->sink < 0 || o->recent < 1 || o->kernel < 1
        || !(o->ratio >= 0 && o->ratio <= 1))
        return kw_error_set(err, KW_EINVAL, "retrieve.omnikv: keep_tokens %d, ratio %g, "
                            "sink %d, recent %d, kernel %d", o->keep_tokens, o->ratio, o->sink,
                            o->recent, o->kernel);
    oparams *p = calloc(1, sizeof *p);
    kw_kvmethod *m = calloc(1, sizeof *m);
    if (!p || !m) {
        free(p), free(m);
        return kw_error_set(err, KW_ENOMEM, "retrieve.omnikv: out of memory");
    }
    int rc = kw__omnikv_parse_layers(layers, &p->layers, &p->n_layers, err);
    if (rc < 0) {
        free(p), free(m);
        return rc;
    }
    p->o = *o;
    *m = (kw_kvmethod){.hook = &kw__omnikv_hook, .params = p, .params_free = params_free,
                       .state_new = state_new, .state_free = state_free};
    *out = m;
    return 0;
}

/* ---- the operator ---- */

static const kw_port outs[] = {
    {"kvmethod", KW_T_KVMETHOD, KW_ONCE, 0, "the OmniKV SELECT hook"},
};
static const kw_param_spec params[] = {
    {"layers", KW_PARAM_STRING, "0,1,2,8,18", 0, 0, NULL,
     "the observation layers (full attention; each chooses the tokens the layers after "
     "it read), increasing, comma-separated"},
    {"keep_tokens", KW_PARAM_INT, "2048", 1, 1 << 24, NULL,
     "tokens chosen between the sink and the recent ones"},
    {"ratio", KW_PARAM_FLOAT, "0", 0, 1, NULL,
     "when set > 0: keep_tokens = round(ratio x prompt tokens) of each sequence (at least "
     "1; the sink and the recent tokens on top; wins over keep_tokens)"},
    {"sink", KW_PARAM_INT, "8", 0, 1 << 20, NULL, "the first tokens: always read"},
    {"recent", KW_PARAM_INT, "128", 1, 1 << 20, NULL,
     "the last tokens (the current one among them): always read"},
    {"kernel", KW_PARAM_INT, "5", 1, 1 << 12, NULL, "max-pooling width of the scores"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw_omnikv_opts o = {.keep_tokens = (int)kw_param_int(c, "keep_tokens"),
                        .sink = (int)kw_param_int(c, "sink"),
                        .recent = (int)kw_param_int(c, "recent"),
                        .kernel = (int)kw_param_int(c, "kernel")};
    if (kw_param_is_set(c, "ratio"))
        o.ratio = kw_param_float(c, "ratio");
    kw_kvmethod *m;
    kw_error err = {0};
    int rc = kw__omnikv_method(&o, kw_param_str(c, "layers"), &m, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    kw_ctx_record(c, "kv_memory", "unchanged: selection reads fewer tokens, the pool keeps all");
    kw_ctx_record(c, "budget_source", o.ratio > 0 ? "ratio" : "param");
    return kw_task_out(t, 0, kw_value_kvmethod(m));
}

const kw_op kw_op_retrieve_omnikv = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "retrieve.omnikv", .version = 1,
    .doc = "OmniKV token selection (SELECT): at each decode step the observation layers "
           "(`layers`) attend to every token and score each by its largest probability "
           "over the query heads, max-pooled over `kernel` tokens; the `keep_tokens` best "
           "between the first `sink` and the last `recent` tokens, with those, are what "
           "the layers after it read, up to the next observation layer. Layers before the "
           "first observation layer and prefill read everything. Saves no KV memory (the "
           "pool keeps every token; nothing is offloaded): it lowers the tokens attended "
           "per step. `ratio` > 0 sets keep_tokens per sequence to round(ratio x its "
           "prompt tokens).",
    .lanes = KW_LANE_CPU, .outputs = outs, .n_outputs = 1, .params = params,
    .n_params = sizeof params / sizeof *params, .run = run, .kv_roles = KW_ROLE_SELECT,
};
