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
 * observation layer must read every token, the same in every KV head's row (the hook is
 * not placed after another SELECT hook, and no EVICT hook keeps other tokens per head);
 * otherwise the sequence fails. Tokens are ranked by position, and the choice is kept as
 * positions: the view of a sparse layer has one row per KV head with the stored tokens
 * at chosen positions, and names the chosen positions the pool does not hold in its want
 * list (kvpool.h), which DeltaKV, placed after OmniKV in the stack, rebuilds: only the
 * chosen tokens (METHODS.md's OmniKV + DeltaKV composition). The observation layers read
 * all that DeltaKV holds, rebuilt.
 *
 * OmniKV alone keeps every token in the pool: it lowers the tokens attended per step, not
 * the KV memory (the original offloads the KV of the sparse layers; this one does not;
 * stacked before DeltaKV, the memory is DeltaKV's). */
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
    int keep;     /* keep_tokens, or ratio x the prompt */
    int n_sel;    /* tokens chosen at the last observation layer; -1: none, read all */
    int32_t *sel; /* (n_sel) their positions, increasing */
    uint8_t *mark; /* (cap_mark) 1 at the chosen positions */
    struct opos { int32_t pos, at; } *ord; /* an observation view's tokens by position */
    float *score, *pooled;
    int32_t *top;
    int64_t cap_sel, cap_score, cap_pooled, cap_ord, cap_top, cap_mark;
} oseq;

static int grow_seq(oseq *q, int n)
{
    int rc = kw_grow((void **)&q->sel, &q->cap_sel, n, sizeof(int32_t));
    if (rc == 0)
        rc = kw_grow((void **)&q->score, &q->cap_score, n, sizeof(float));
    if (rc == 0)
        rc = kw_grow((void **)&q->pooled, &q->cap_pooled, n, sizeof(float));
    if (rc == 0)
        rc = kw_grow((void **)&q->ord, &q->cap_ord, n, sizeof *q->ord);
    if (rc == 0)
        rc = kw_grow((void **)&q->top, &q->cap_top, n, sizeof(int32_t));
    return rc;
}

static int by_pos(const void *x, const void *y)
{
    const struct opos *a = x, *b = y;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

static int cmp_i32(const void *x, const void *y)
{
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* The set of the observation layer from the step's probabilities (H, len) over view w,
 * which read every token (the pool's, and any a MATERIALIZE hook rebuilt): its tokens
 * taken in position order, the sink and the recent ones by rank in that order, the
 * chosen ones kept as positions (the layers after it may store the same tokens in other
 * places, or not at all: DeltaKV). */
static int choose(const ostate *st, oseq *q, const kw_kvpool *pool, const kw_view *w,
                  const float *probs, int len)
{
    const kw_omnikv_opts *o = &st->p->o;
    int H = st->cfg.n_head, Hk = st->cfg.n_head_kv;
    if (!w || w->per_qhead || w->n_rows != Hk)
        return KW_EINVAL;
    for (int h = 0; h < Hk; h++)
        if (kw_view_row_tokens(w, h) != len)
            return KW_EINVAL; /* not every token in every row: not a dense view */
    int n = len, rc = grow_seq(q, n);
    if (rc < 0)
        return rc;
    kw_kvmem mem = kw_kvpool_mem(pool);
    int k = 0;
    for (int j = w->row_ptr[0]; j < w->row_ptr[1]; j++) {
        const kw_span *sp = &w->spans[j];
        for (int x = 0; x < sp->n; x++, k++)
            q->ord[k] = (struct opos){mem.pos[sp->pool][(int64_t)sp->page * mem.page_tokens
                                                       + sp->first + x], k};
    }
    for (int h = 1; h < Hk; h++) { /* every row the same tokens in the same order */
        int r = 0;
        for (int j = w->row_ptr[h]; j < w->row_ptr[h + 1]; j++) {
            const kw_span *sp = &w->spans[j];
            const int32_t *pp = mem.pos[sp->pool] + (int64_t)sp->page * mem.page_tokens + sp->first;
            for (int x = 0; x < sp->n; x++, r++)
                if (pp[x] != q->ord[r].pos)
                    return KW_EINVAL;
        }
    }
    bool sorted = true; /* a dense view of the pool is, in position order */
    for (int r = 1; r < n && sorted; r++)
        sorted = q->ord[r].pos > q->ord[r - 1].pos;
    if (!sorted)
        qsort(q->ord, (size_t)n, sizeof *q->ord, by_pos);
    int a = o->sink < n ? o->sink : n, e = n - o->recent > a ? n - o->recent : a;
    if (e - a <= q->keep) {
        q->n_sel = -1;
        return 0;
    }
    for (int r = 0; r < n; r++) { /* row r of a query head reads its KV head's row */
        int j = q->ord[r].at;
        float m = probs[j];
        for (int h = 1; h < H; h++)
            m = probs[(int64_t)h * len + j] > m ? probs[(int64_t)h * len + j] : m;
        q->score[r] = m;
    }
    if ((rc = kw_k_pool1d(KW_BK_CPU, NULL, q->score, 1, n, o->kernel, KW_POOLING_MAX,
                          q->pooled)) < 0 ||
        (rc = kw_k_topk(KW_BK_CPU, NULL, q->pooled + a, 1, e - a, q->keep, q->top)) < 0)
        return rc;
    int m = 0;
    for (int r = 0; r < a; r++)
        q->sel[m++] = q->ord[r].pos;
    for (int i = 0; i < q->keep; i++)
        q->sel[m++] = q->ord[a + q->top[i]].pos;
    for (int r = e; r < n; r++)
        q->sel[m++] = q->ord[r].pos;
    qsort(q->sel, (size_t)m, sizeof *q->sel, cmp_i32);
    q->n_sel = m;
    int32_t top = q->sel[m - 1];
    if ((rc = kw_grow((void **)&q->mark, &q->cap_mark, (int64_t)top + 1, 1)) < 0)
        return rc;
    memset(q->mark, 0, (size_t)q->cap_mark);
    for (int i = 0; i < m; i++)
        q->mark[q->sel[i]] = 1;
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
        if (!a->step_probs || !a->step_probs[i] || !a->views || !a->views[i])
            return KW_EINTERNAL;
        int rc = choose(st, b->seqs[i]->hook_seq[c->hook_index], c->pool, a->views[i],
                        a->step_probs[i], a->step_len[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The view of a layer after an observation layer: per KV head, the stored tokens at
 * chosen positions (in stored order), and the chosen positions the pool does not hold
 * as the view's want list (kvpool.h: a MATERIALIZE hook that holds them rebuilds them). */
static int sparse_view(const ostate *st, oseq *os, kw_seq *s, const kw_lctx *c, kw_view *w)
{
    const kw_kvpool *pool = c->pool;
    int l = c->layer;
    int Hk = st->cfg.n_head_kv, P = kw_kvpool_options(pool)->page_tokens, found0 = 0;
    kw_kvmem mem = kw_kvpool_mem(pool);
    int rc = kw_view_reset(w, Hk, false);
    w->by_pos = 1 + c->hook_index;
    for (int h = 0; rc == 0 && h < Hk; h++) {
        int npg, n = kw_kvseq_len(s->kv, l, h), found = 0;
        const int32_t *pages = kw_kvseq_pages(s->kv, l, h, &npg);
        rc = kw_view_begin_row(w, h);
        /* where the table holds position j at index j (every token in the pool, in order:
         * OmniKV alone), the chosen positions are the indices: O(chosen), not O(stored) */
        bool ident = true;
        for (int i = 0; i < os->n_sel && ident; i++) {
            int32_t p = os->sel[i];
            ident = p < n && mem.pos[KW_POOL_MAIN][(int64_t)pages[p / P] * P + p % P] == p;
        }
        for (int i = 0; ident && rc == 0 && i < os->n_sel; i++)
            rc = kw_view_add_token(w, s->kv, l, h, os->sel[i]);
        if (ident) {
            found = os->n_sel;
            for (int i = 0; h == 0 && i < os->n_sel; i++)
                os->mark[os->sel[i]] = 2;
        }
        for (int j = 0; !ident && rc == 0 && j < n; j++) {
            int32_t p = mem.pos[KW_POOL_MAIN][(int64_t)pages[j / P] * P + j % P];
            if (p >= 0 && p < os->cap_mark && os->mark[p]) {
                rc = kw_view_add_token(w, s->kv, l, h, j);
                found++;
                if (h == 0)
                    os->mark[p] = 2; /* in the pool */
            }
        }
        if (h == 0)
            found0 = found;
        else if (rc == 0 && found != found0)
            rc = KW_EINVAL; /* the KV heads of this layer store other tokens */
    }
    for (int i = 0; i < os->n_sel; i++) {
        int32_t p = os->sel[i];
        if (rc == 0 && os->mark[p] == 1)
            rc = kw_view_want(w, p);
        os->mark[p] = 1;
    }
    return rc;
}

static int o_select(void *stp, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    (void)q;
    const ostate *st = stp;
    int l = c->layer;
    if (st->obs[l] || l < st->p->layers[0])
        return 0;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->prefill[i])
            continue;
        kw_seq *s = b->seqs[i];
        oseq *os = s->hook_seq[c->hook_index];
        if (os->n_sel < 0)
            continue;
        int rc = sparse_view(st, os, s, c, out[i]);
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
        free(q->sel), free(q->score), free(q->pooled), free(q->ord), free(q->top),
            free(q->mark);
    free(q);
    s->hook_seq[idx] = NULL;
}

static bool o_probs_at(void *stp, int layer)
{
    return ((const ostate *)stp)->obs[layer];
}

const kw_kvhook kw__omnikv_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_DECODE_PROBS, .name = "retrieve.omnikv", .seq_open = o_seq_open,
    .select = o_select, .after_attn = o_after_attn, .seq_close = o_seq_close,
    .tail_only = true, /* acts in decoding only */
    .probs_at = o_probs_at, /* its observation layers only */
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
