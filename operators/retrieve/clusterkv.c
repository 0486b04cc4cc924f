/* retrieve.clusterkv — recall of keys by semantic clusters (ClusterKV; METHODS.md), a
 * SELECT hook.
 *
 * After the attention of a sequence's last prompt chunk, in each layer >= dense_layers
 * and for each KV head whose tokens after the first `sink` outnumber budget - sink (else
 * after the first decode step where they do), the keys of those tokens are clustered by
 * k-means (kw__ckv_kmeans: `clusters` clusters, `iters` rounds, assignment by cosine
 * similarity, centroids the means of the members' raw keys, seeded by the sequence's
 * seed, the layer, the head and the first token's position). The keys are the ones
 * attention read: the pool's, and the temporary pool's tokens of the view (those a
 * MATERIALIZE hook such as DeltaKV rebuilt from what it holds outside the pool). The
 * index is CSR-style and by position: per cluster its members, each a position. At each
 * decode step, every query head scores the clusters by q . centroid, takes whole
 * clusters best first until budget - sink tokens (the last one cut short, its earliest
 * tokens kept), and reads the sink, those tokens and every token not yet clustered (the
 * generated ones, the current token among them). Every `window` generated tokens, those
 * tokens are clustered into `window_clusters` more clusters appended to the index. When
 * no query head of a sequence would leave a token out, the dense view stays. Prefill is
 * dense. The view has one row per query head.
 *
 * The choice is by position (kvpool.h): a chosen token the pool holds is read from it;
 * one it does not hold goes to the row's wants, which a MATERIALIZE hook after it in
 * the stack (DeltaKV) rebuilds for that row alone. A table compacted under the index
 * (an EVICT hook) only leaves positions nobody holds: they are not read.
 *
 * budget is the per-layer input's entry (layer, KV head), else the sequence's own: the
 * `budget` param, or with `ratio` > 0 round(ratio x its prompt tokens), fixed when the
 * sequence opens. K is taken as attention reads it (after RoPE; a pre-RoPE pool's rows
 * are rotated).
 *
 * ClusterKV keeps every token in the pool: it lowers the tokens attended per step, not
 * the KV memory (over DeltaKV, DeltaKV's saving stays and fewer tokens are rebuilt). Its
 * index (centroids, head_dim floats per cluster; a number and a position per clustered
 * token; the sink's positions) is added to the sequence's meta_bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clusterkv.h"
#include "kernels.h"
#include "keys.h"
#include "shared.h"
#include "kvweave/op.h"
#include "kvweave/util.h"

typedef struct cparams {
    kw_rparams r; /* the name and the per-layer budget (or none) */
    kw_clusterkv_opts o;
} cparams;

typedef kw_rstate cstate; /* p: the cparams */
#define CP(st) ((const cparams *)(st)->p)

typedef struct ctable {
    bool begun;        /* the sink is fixed and the first tokens are indexed */
    int n_sink;
    int32_t *sink_pos; /* (n_sink) the sink's positions, increasing */
    int32_t last_pos;  /* the last indexed position: later tokens are not clustered yet */
    int n_cl;          /* clusters */
    float *cent;       /* (n_cl, head_dim) */
    int32_t *start;    /* (n_cl + 1) cluster c: member[start[c] .. start[c + 1]) */
    int32_t *member;   /* indexed tokens' numbers (into ipos), increasing within a cluster */
    int32_t *ipos;     /* (start[n_cl]) positions of the indexed tokens, increasing */
    int64_t cap_sink, cap_cent, cap_start, cap_mem, cap_ipos;
} ctable;

typedef struct cseq {
    int budget; /* without a per-layer budget: the param's, or ratio x the prompt */
    ctable *t;  /* (n_layer, n_kv) */
    kw_keys_read kr; /* keys gathered */
    int32_t *label;
    int64_t label_cap;
    float *scores; /* (g, n_cl) */
    int64_t scores_cap;
    int32_t *order; /* clusters, best first */
    int64_t order_cap;
    uint8_t *pick; /* indexed tokens chosen */
    int64_t pick_cap;
    int32_t *ppos; /* the pool's positions of a table */
    int64_t ppos_cap;
} cseq;

/* ---- k-means ---- */

static void normalize_rows(const float *x, float *y, int m, int d)
{
    for (int i = 0; i < m; i++) {
        const float *a = x + (int64_t)i * d;
        float *b = y + (int64_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)a[j] * a[j];
        float inv = ss > 0 ? (float)(1 / sqrt(ss)) : 0.f;
        for (int j = 0; j < d; j++)
            b[j] = a[j] * inv;
    }
}

int kw__ckv_kmeans(const float *x, int m, int d, int k, int iters, uint64_t seed,
                   int32_t *label, float *cent)
{
    if (k < 1 || k > m || d < 1 || iters < 1)
        return KW_EINVAL;
    float *xn = malloc(sizeof(float) * (size_t)m * d);
    float *cn = malloc(sizeof(float) * (size_t)k * d);
    float *sim = malloc(sizeof(float) * (size_t)m * k);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)m);
    int32_t *cnt = malloc(sizeof(int32_t) * (size_t)k);
    int rc = xn && cn && sim && idx && cnt ? 0 : KW_ENOMEM;
    if (rc == 0) {
        normalize_rows(x, xn, m, d);
        for (int i = 0; i < m; i++)
            idx[i] = i;
        uint64_t s = seed;
        for (int c = 0; c < k; c++) { /* k distinct rows: a partial Fisher-Yates shuffle */
            int j = c + (int)(kw_splitmix64(&s) % (uint64_t)(m - c)), t = idx[c];
            idx[c] = idx[j], idx[j] = t;
            memcpy(cent + (int64_t)c * d, x + (int64_t)idx[c] * d, sizeof(float) * (size_t)d);
        }
    }
    for (int it = 0; rc == 0 && it < iters; it++) {
        normalize_rows(cent, cn, k, d);
        if ((rc = kw_k_linear(KW_BK_CPU, NULL, xn, cn, NULL, sim, m, k, d)) < 0)
            break;
        for (int i = 0; i < m; i++) {
            const float *r = sim + (int64_t)i * k;
            int best = 0;
            for (int c = 1; c < k; c++)
                best = r[c] > r[best] ? c : best;
            label[i] = best;
        }
        memset(cnt, 0, sizeof(int32_t) * (size_t)k);
        memset(cn, 0, sizeof(float) * (size_t)k * d); /* now the members' sums */
        for (int i = 0; i < m; i++) {
            float *a = cn + (int64_t)label[i] * d;
            const float *b = x + (int64_t)i * d;
            cnt[label[i]]++;
            for (int j = 0; j < d; j++)
                a[j] += b[j];
        }
        for (int c = 0; c < k; c++)
            for (int j = 0; cnt[c] > 0 && j < d; j++)
                cent[(int64_t)c * d + j] = cn[(int64_t)c * d + j] / (float)cnt[c];
    }
    free(xn), free(cn), free(sim), free(idx), free(cnt);
    return rc;
}

/* ---- the index ---- */

static int budget_for(const cparams *p, const cseq *cs, int l, int kvh)
{
    return kw__rbudget_at(&p->r.b, l, kvh, cs->budget);
}

static int indexed(const ctable *t)
{
    return t->n_cl ? t->start[t->n_cl] : 0;
}

/* Clusters the m tokens x (m, head_dim) at positions pos (increasing, after every
 * indexed one) of (l, h) into min(k, m) more clusters of t. */
static int index_add(const cstate *st, cseq *cs, ctable *t, kw_seq *s, int l, int h,
                     const float *x, const int32_t *pos, int m, int k)
{
    int hd = st->cfg.head_dim, n_idx = indexed(t);
    k = k < m ? k : m;
    int rc = kw_grow((void **)&cs->label, &cs->label_cap, m, sizeof(int32_t));
    if (rc == 0)
        rc = kw_grow((void **)&t->cent, &t->cap_cent, t->n_cl + k, sizeof(float) * (size_t)hd);
    if (rc == 0)
        rc = kw_grow((void **)&t->start, &t->cap_start, t->n_cl + k + 1, sizeof(int32_t));
    if (rc == 0)
        rc = kw_grow((void **)&t->member, &t->cap_mem, n_idx + m, sizeof(int32_t));
    if (rc == 0)
        rc = kw_grow((void **)&t->ipos, &t->cap_ipos, n_idx + m, sizeof(int32_t));
    /* keyed by the sequence's seed, the table and the first token */
    uint64_t seed = s->seed ^ ((uint64_t)(l * st->cfg.n_head_kv + h) << 32) ^ (uint64_t)pos[0];
    if (rc == 0)
        rc = kw__ckv_kmeans(x, m, hd, k, CP(st)->o.iters, seed, cs->label,
                            t->cent + (int64_t)t->n_cl * hd);
    if (rc < 0)
        return rc;
    memcpy(t->ipos + n_idx, pos, sizeof(int32_t) * (size_t)m);
    /* members by cluster (a counting sort; increasing token order within each) */
    int32_t *start = t->start + t->n_cl;
    start[0] = n_idx;
    memset(start + 1, 0, sizeof(int32_t) * (size_t)k);
    for (int i = 0; i < m; i++)
        start[cs->label[i] + 1]++;
    for (int c = 0; c < k; c++)
        start[c + 1] += start[c];
    for (int i = 0; i < m; i++) /* start[c] moves past c's members, then back */
        t->member[start[cs->label[i]]++] = n_idx + i;
    for (int c = k; c > 0; c--)
        start[c] = start[c - 1];
    start[0] = n_idx;
    t->n_cl += k;
    t->last_pos = pos[m - 1];
    s->meta_bytes += (int64_t)k * (hd * (int64_t)sizeof(float) + 4) + (int64_t)m * 8;
    return 0;
}

/* After a step's attention (the prompt's last chunk, or a decode token): brings t up to
 * the tokens stored now, from the keys attention read (gather). The first index, once
 * the tokens after the first `sink` outnumber want (the budget less the sink; until then
 * every token is read and nothing is clustered); then a window's clusters for every
 * `window` tokens since. */
static int table_sync(const cstate *st, cseq *cs, ctable *t, kw_seq *s, const kw_kvmem *mem,
                      const kw_view *w, int l, int h, int want)
{
    const kw_clusterkv_opts *o = &CP(st)->o;
    int hd = st->cfg.head_dim, rc = 0;
    want = want > 0 ? want : 0; /* a budget under the sink: index once past the sink */
    int32_t after = t->begun ? t->last_pos : INT32_MIN;
    int n = kw__keys_read_count(s->kv, mem, w, l, h, after, st->cfg.n_head_kv); /* at most */
    if (!t->begun ? n - o->sink <= want : n < o->window)
        return 0;
    if ((n = kw__keys_read(s->kv, mem, w, l, h, after, st->inv_freq, &st->cfg, &cs->kr)) < 0)
        return n;
    int a = 0;
    if (!t->begun) {
        if (n - o->sink <= want)
            return 0;
        a = o->sink;
        if ((rc = kw_grow((void **)&t->sink_pos, &t->cap_sink, a + 1, sizeof(int32_t))) < 0)
            return rc;
        memcpy(t->sink_pos, cs->kr.pos, sizeof(int32_t) * (size_t)a);
        t->n_sink = a;
        t->begun = true;
        s->meta_bytes += 4 * (int64_t)a;
        rc = index_add(st, cs, t, s, l, h, cs->kr.rows + (int64_t)a * hd, cs->kr.pos + a, n - a,
                       o->clusters);
        a = n;
    }
    for (; rc == 0 && n - a >= o->window; a += o->window)
        rc = index_add(st, cs, t, s, l, h, cs->kr.rows + (int64_t)a * hd, cs->kr.pos + a, o->window,
                       o->window_clusters);
    return rc;
}

static int c_after_attn(void *stp, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    const cstate *st = stp;
    int l = c->layer, Hk = st->cfg.n_head_kv;
    if (l < CP(st)->o.dense_layers)
        return 0;
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int worst = 0;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->prefill[i] && !b->last_chunk[i])
            continue;
        kw_seq *s = b->seqs[i];
        cseq *cs = s->hook_seq[c->hook_index];
        int rc = 0;
        for (int h = 0; rc == 0 && h < Hk; h++)
            rc = table_sync(st, cs, &cs->t[(int64_t)l * Hk + h], s, &mem,
                            a->views ? a->views[i] : NULL, l, h,
                            budget_for(CP(st), cs, l, h) - CP(st)->o.sink);
        if (rc < 0) {
            kw_seq_fail(s, rc, "retrieve.clusterkv: indexing layer %d: %s", l, kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

/* ---- selection ---- */

static int by_score(const void *x, const void *y, void *sc)
{
    const float *s = sc;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return s[a] > s[b] ? -1 : s[a] < s[b] ? 1 : (a > b) - (a < b);
}

/* The rows of KV head h's query heads: the sink, the clusters best first up to
 * budget - sink tokens, and the tokens not indexed, up to position cur; a row of a head
 * that does not select (its index holds no more than that) reads every position. */
static int select_group(const cstate *st, cseq *cs, const ctable *t, kw_view *w,
                        const kw_kvseq *kv, const kw_kvmem *mem, int l, int h, const float *qg,
                        int32_t cur)
{
    const kw_clusterkv_opts *o = &CP(st)->o;
    int g = st->cfg.n_head / st->cfg.n_head_kv, hd = st->cfg.head_dim, rc = 0;
    int n = kw_kvseq_len(kv, l, h), n_idx = indexed(t);
    int want = budget_for(CP(st), cs, l, h) - o->sink;
    want = want > 0 ? want : 0;
    bool sel = n_idx > want;
    int64_t cap = cs->ppos_cap;
    if ((rc = kw_grow((void **)&cs->ppos, &cap, n + 1, sizeof(int32_t))) < 0)
        return rc;
    cs->ppos_cap = cap;
    for (int j = 0; j < n; j++)
        cs->ppos[j] = kw__key_pos(kv, mem, l, h, j);
    if (sel) {
        cap = cs->scores_cap;
        if ((rc = kw_grow((void **)&cs->scores, &cap, (int64_t)g * t->n_cl, sizeof(float))) < 0)
            return rc;
        cs->scores_cap = cap;
        cap = cs->order_cap;
        if ((rc = kw_grow((void **)&cs->order, &cap, t->n_cl, sizeof(int32_t))) < 0)
            return rc;
        cs->order_cap = cap;
        cap = cs->pick_cap;
        if ((rc = kw_grow((void **)&cs->pick, &cap, n_idx, 1)) < 0)
            return rc;
        cs->pick_cap = cap;
        if ((rc = kw_k_linear(KW_BK_CPU, NULL, qg, t->cent, NULL, cs->scores, g, t->n_cl, hd))
            < 0)
            return rc;
    }
    for (int r = 0; rc == 0 && r < g; r++) {
        int row = h * g + r, j = 0;
        if ((rc = kw_view_begin_row(w, row)) < 0)
            return rc;
        if (!sel) { /* every position, up to the current one (positions start at 0) */
            for (int32_t p = 0; rc == 0 && p <= cur; p++)
                rc = kw__view_choose(w, row, kv, l, h, cs->ppos, n, &j, p);
            continue;
        }
        for (int c = 0; c < t->n_cl; c++)
            cs->order[c] = c;
        qsort_r(cs->order, (size_t)t->n_cl, sizeof(int32_t), by_score,
                cs->scores + (int64_t)r * t->n_cl);
        memset(cs->pick, 0, (size_t)n_idx);
        int taken = 0;
        for (int i = 0; i < t->n_cl && taken < want; i++) {
            int c = cs->order[i];
            for (int x = t->start[c]; x < t->start[c + 1] && taken < want; x++, taken++)
                cs->pick[t->member[x]] = 1;
        }
        for (int x = 0; rc == 0 && x < t->n_sink; x++)
            rc = kw__view_choose(w, row, kv, l, h, cs->ppos, n, &j, t->sink_pos[x]);
        for (int x = 0; rc == 0 && x < n_idx; x++)
            if (cs->pick[x])
                rc = kw__view_choose(w, row, kv, l, h, cs->ppos, n, &j, t->ipos[x]);
        for (int32_t p = t->last_pos + 1; rc == 0 && p <= cur; p++)
            rc = kw__view_choose(w, row, kv, l, h, cs->ppos, n, &j, p);
    }
    return rc;
}

static int c_select(void *stp, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    const cstate *st = stp;
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, H = cf->n_head, Hk = cf->n_head_kv, hd = cf->head_dim, g = H / Hk;
    if (l < CP(st)->o.dense_layers)
        return 0;
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    for (int i = 0; i < b->n_seq; i++) {
        if (b->prefill[i])
            continue;
        kw_seq *s = b->seqs[i];
        cseq *cs = s->hook_seq[c->hook_index];
        bool any = false;
        for (int h = 0; h < Hk; h++) {
            int want = budget_for(CP(st), cs, l, h) - CP(st)->o.sink;
            any = any || indexed(&cs->t[(int64_t)l * Hk + h]) > (want > 0 ? want : 0);
        }
        if (!any)
            continue;
        int tq = b->tok_first[i] + b->tok_n[i] - 1, rc = kw_view_reset(out[i], H, true);
        out[i]->by_pos = 1 + c->hook_index;
        for (int h = 0; rc == 0 && h < Hk; h++)
            rc = select_group(st, cs, &cs->t[(int64_t)l * Hk + h], out[i], s->kv, &mem, l, h,
                              q + ((int64_t)tq * H + (int64_t)h * g) * hd, b->pos[tq]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int c_seq_open(void *stp, kw_seq *s, int idx)
{
    const cstate *st = stp;
    cseq *cs = calloc(1, sizeof *cs);
    if (cs)
        cs->t = calloc((size_t)st->cfg.n_layer * st->cfg.n_head_kv, sizeof *cs->t);
    if (!cs || !cs->t) {
        free(cs);
        return KW_ENOMEM;
    }
    cs->budget = kw__ratio_budget(CP(st)->o.ratio, CP(st)->o.budget, s->n_prompt);
    s->hook_seq[idx] = cs;
    return 0;
}

static void c_seq_close(void *stp, kw_seq *s, int idx)
{
    const cstate *st = stp;
    cseq *cs = s->hook_seq[idx];
    if (!cs)
        return;
    for (int64_t i = 0; i < (int64_t)st->cfg.n_layer * st->cfg.n_head_kv; i++) {
        ctable *t = &cs->t[i];
        free(t->sink_pos), free(t->cent), free(t->start), free(t->member), free(t->ipos);
    }
    free(cs->t);
    kw__keys_read_free(&cs->kr);
    free(cs->label), free(cs->scores), free(cs->order), free(cs->pick), free(cs->ppos);
    free(cs);
    s->hook_seq[idx] = NULL;
}

const kw_kvhook kw__clusterkv_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_HOST_Q, .name = "retrieve.clusterkv", .seq_open = c_seq_open,
    .select = c_select, .after_attn = c_after_attn, .seq_close = c_seq_close,
    .tail_only = true, /* indexes after the prompt's last chunk, selects in decoding */
};

int kw__clusterkv_method(const kw_clusterkv_opts *o, const kw_budget *per_layer,
                         kw_kvmethod **out, kw_error *err)
{
    *out = NULL;
    if ((o->budget < 1 && !(o->ratio > 0)) || o->sink < 0 || o->clusters < 1 || o->iters < 1
        || o->window < 1 || o->window_clusters < 1 || o->dense_layers < 0
        || !(o->ratio >= 0 && o->ratio <= 1))
        return kw_error_set(err, KW_EINVAL, "retrieve.clusterkv: budget %d, ratio %g, sink %d, "
                            "clusters %d, iters %d, window %d, window_clusters %d, "
                            "dense_layers %d", o->budget, o->ratio, o->sink, o->clusters,
                            o->iters, o->window, o->window_clusters, o->dense_layers);
    cparams *p;
    int rc = kw__rmethod_new(&kw__clusterkv_hook, "retrieve.clusterkv", sizeof *p, per_layer, out,
                             (void **)&p, err);
    if (rc == 0)
        p->o = *o;
    return rc;
}

/* ---- the operator ---- */

static const kw_port ins[] = {KW_RETRIEVE_BUDGET_PORT};
static const kw_port outs[] = {
    {"kvmethod", KW_T_KVMETHOD, KW_ONCE, 0, "the ClusterKV SELECT hook"},
};
static const kw_param_spec params[] = {
    {"budget", KW_PARAM_INT, "1024", 1, 1 << 24, NULL,
     "tokens read per query head and layer at each decode step: the sink plus the "
     "recalled clustered tokens (tokens not yet clustered are read on top)"},
    KW_RETRIEVE_RATIO_PARAM,
    {"sink", KW_PARAM_INT, "16", 0, 1 << 20, NULL, "the first tokens: always read"},
    {"clusters", KW_PARAM_INT, "400", 1, 1 << 20, NULL,
     "k-means clusters of the prompt's keys per layer and KV head"},
    {"iters", KW_PARAM_INT, "20", 1, 1000, NULL, "k-means iterations"},
    {"window", KW_PARAM_INT, "320", 1, 1 << 20, NULL,
     "generated tokens clustered together once there are this many"},
    {"window_clusters", KW_PARAM_INT, "8", 1, 1 << 20, NULL, "clusters each window adds"},
    {"dense_layers", KW_PARAM_INT, "2", 0, 1 << 16, NULL,
     "the first layers read every token"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw_clusterkv_opts o = {.budget = (int)kw_param_int(c, "budget"),
                           .sink = (int)kw_param_int(c, "sink"),
                           .clusters = (int)kw_param_int(c, "clusters"),
                           .iters = (int)kw_param_int(c, "iters"),
                           .window = (int)kw_param_int(c, "window"),
                           .window_clusters = (int)kw_param_int(c, "window_clusters"),
                           .dense_layers = (int)kw_param_int(c, "dense_layers")};
    const kw_budget *b;
    int rc = kw__retrieve_budget_in(c, t, &b, &o.ratio);
    if (rc < 0)
        return rc;
    kw_kvmethod *m;
    kw_error err = {0};
    if ((rc = kw__clusterkv_method(&o, b, &m, &err)) < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    kw_ctx_record(c, "kv_memory", "unchanged: selection reads fewer tokens, the pool keeps all");
    return kw_task_out(t, 0, kw_value_kvmethod(m));
}

const kw_op kw_op_retrieve_clusterkv = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "retrieve.clusterkv", .version = 1,
    .doc = "ClusterKV recall by semantic clusters (SELECT, by position): after the "
           "prompt's attention the keys attention read after the first `sink` are "
           "clustered per layer and KV head by k-means (cosine assignment, centroids the "
           "members' mean keys, seeded); each decode query head scores the clusters by q . "
           "centroid and reads whole clusters best first up to budget - sink tokens (the "
           "last cut short), the sink, and the tokens not yet clustered; every `window` "
           "generated tokens are clustered into `window_clusters` more. The first "
           "dense_layers layers and prefill read everything. Saves no KV memory (every "
           "token stays in the pool; the index adds a centroid per cluster and a number and "
           "a position per token): it lowers the tokens attended per step; before "
           "compress.deltakv, DeltaKV rebuilds only the chosen tokens it holds. `ratio` > 0 "
           "sets the budget per sequence to round(ratio x its prompt tokens) when it opens; "
           "a budget input sets it per layer and KV head.",
    .lanes = KW_LANE_CPU, .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_SELECT,
};
