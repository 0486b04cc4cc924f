/* retrieve.quest — query-aware page selection (Quest; METHODS.md), a SELECT hook.
 *
 * Hook state per sequence: for every (layer, KV head) table, the per-channel min and
 * max of K over each page of `page` stored tokens. The bounds are brought up to date
 * from the pool in `select`, before they are used: sealed pages (all `page` tokens
 * stored) are kept and only the pages after them are recomputed, so a decode step
 * recomputes the current page alone. A sealed page remembers the positions of its
 * first and last token; when they no longer match (an EVICT hook below compacted the
 * table) the page and everything after it are rebuilt.
 *
 * At each decode step, in layers >= dense_layers, every query head h scores every
 * page P of its KV head's table with sum_i max(q_i * min_i, q_i * max_i), an upper bound
 * of q.k over the page, and reads the current (last) page plus the k - 1 best other
 * pages (ties: lower page first), k = max(min_pages, budget / page), with budget the
 * per-layer input's entry, else the sequence's own: `budget` tokens, or with `ratio` > 0
 * round(ratio x its prompt tokens), fixed when the sequence opens (its prompt length is
 * known then; generated tokens do not change it). The view has one
 * row per query head and whole pages as spans. With kv_rows (an option beyond the
 * publication, for GQA models) the query heads of a group share one pick, scored by the
 * largest of their bounds, and the view has one row per KV head. When every row would read all its pages
 * the dense view is left as it is. Prefill is dense. Quest chooses among everything the
 * pool holds for the sequence: a view set by an earlier SELECT hook in the stack is
 * replaced, not refined.
 *
 * Quest keeps every token in the pool: it reduces what attention reads (tokens attended
 * per step), not KV memory. Its own metadata (2 * head_dim floats per page, plus two
 * positions) is added to the sequence's meta_bytes. K is taken as attention reads it
 * (after RoPE); with a pre-RoPE pool the rows are rotated from their stored positions
 * with the model's plain RoPE frequencies.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/op.h"
#include "kvweave/util.h"
#include "keys.h"
#include "quest.h"
#include "shared.h"

typedef struct qparams {
    kw_rparams r; /* the name and the per-layer budget (or none) */
    kw_quest_opts o;
} qparams;

typedef kw_rstate qstate; /* p: the qparams */
#define QP(st) ((const qparams *)(st)->p)

typedef struct qtable {
    int n_pages, n_sealed, cap;
    int n_counted; /* pages whose metadata is in the sequence's meta_bytes */
    float *mn, *mx;       /* (cap, head_dim) */
    int32_t *pos0, *pos1; /* (cap) first and last stored position of each page */
} qtable;

typedef struct qseq {
    int budget; /* tokens per query head and layer without a per-layer budget */
    qtable *t;  /* (n_layer, n_kv) */
    float *rows;
    int32_t *rpos;
    int rows_cap;
    float *scores;
    int64_t scores_cap;
    int32_t *sel;
    int sel_cap;
} qseq;

/* Capacity grows by 32 pages at a time (a page fills every `page` decode steps). */
static int grow_table(qtable *t, int need, int hd)
{
    if (need <= t->cap)
        return 0;
    int c = need + 32;
    float *mn = realloc(t->mn, sizeof(float) * (size_t)c * hd);
    if (mn)
        t->mn = mn;
    float *mx = realloc(t->mx, sizeof(float) * (size_t)c * hd);
    if (mx)
        t->mx = mx;
    int32_t *p0 = realloc(t->pos0, sizeof(int32_t) * (size_t)c);
    if (p0)
        t->pos0 = p0;
    int32_t *p1 = realloc(t->pos1, sizeof(int32_t) * (size_t)c);
    if (p1)
        t->pos1 = p1;
    if (!mn || !mx || !p0 || !p1)
        return KW_ENOMEM;
    t->cap = c;
    return 0;
}

/* Brings the bounds of table (l, h) up to the tokens stored now. */
static int table_update(const qstate *st, qseq *qs, qtable *t, kw_seq *s,
                        const kw_kvmem *mem, int l, int h)
{
    const kw_kvseq *kv = s->kv;
    int Q = QP(st)->o.page, hd = st->cfg.head_dim;
    int n = kw_kvseq_len(kv, l, h), np = (n + Q - 1) / Q, sealed = n / Q;
    int from = t->n_sealed < sealed ? t->n_sealed : sealed;
    for (int p = 0; p < from; p++)
        if (kw__key_pos(kv, mem, l, h, p * Q) != t->pos0[p]
            || kw__key_pos(kv, mem, l, h, p * Q + Q - 1) != t->pos1[p]) {
            from = p;
            break;
        }
    int rc = grow_table(t, np, hd);
    int nr = n - from * Q;
    int64_t cap = qs->rows_cap;
    if (rc == 0)
        rc = kw_grow((void **)&qs->rows, &cap, nr, sizeof(float) * (size_t)hd);
    cap = qs->rows_cap;
    if (rc == 0)
        rc = kw_grow((void **)&qs->rpos, &cap, nr, sizeof(int32_t));
    if (rc < 0)
        return rc;
    qs->rows_cap = (int)cap;
    if ((rc = kw__keys_as_read(kv, mem, l, h, from * Q, nr, st->inv_freq, st->cfg.rope_layout,
                               hd, qs->rows, qs->rpos)) < 0)
        return rc;
    if (nr > 0
        && (rc = kw_k_page_bounds(KW_BK_CPU, NULL, qs->rows, nr, hd, Q,
                                  t->mn + (int64_t)from * hd, t->mx + (int64_t)from * hd)) < 0)
        return rc;
    for (int p = from; p < np; p++) {
        int a = (p - from) * Q, e = a + Q < nr ? a + Q : nr;
        t->pos0[p] = qs->rpos[a];
        t->pos1[p] = qs->rpos[e - 1];
    }
    t->n_pages = np;
    t->n_sealed = sealed;
    if (np > t->n_counted) { /* min and max per channel, first and last position */
        s->meta_bytes += (int64_t)(np - t->n_counted) * (2 * (int64_t)hd * (int64_t)sizeof(float) + 8);
        t->n_counted = np;
    }
    return 0;
}

/* Stored tokens [a, e) of (l, h) as spans of pool pages. */
static int add_range(kw_view *w, const kw_kvseq *kv, int l, int h, int P, int a, int e)
{
    int npg;
    const int32_t *pages = kw_kvseq_pages(kv, l, h, &npg);
    for (int j = a; j < e;) {
        int slot = j % P, cnt = P - slot < e - j ? P - slot : e - j;
        int rc = kw_view_add(w, KW_POOL_MAIN, pages[j / P], slot, cnt);
        if (rc < 0)
            return rc;
        j += cnt;
    }
    return 0;
}

int kw__quest_seq_budget(const kw_quest_opts *o, int n_prompt)
{
    return kw__ratio_budget(o->ratio, o->budget, n_prompt);
}

static int pages_for(const qparams *p, const qseq *qs, int l, int kvh)
{
    int budget = kw__rbudget_at(&p->r.b, l, kvh, qs->budget);
    int k = budget / p->o.page;
    return k < p->o.min_pages ? p->o.min_pages : k;
}

/* Rows of one KV head: one per query head of its group (or one for the group), each the
 * current page and the best k - 1 others. */
static int select_group(const qstate *st, qseq *qs, const qtable *t, kw_view *w,
                        const kw_kvseq *kv, int l, int kvh, const float *qg, int P)
{
    int g = st->cfg.n_head / st->cfg.n_head_kv, hd = st->cfg.head_dim, Q = QP(st)->o.page;
    int n = kw_kvseq_len(kv, l, kvh), np = t->n_pages, k = pages_for(QP(st), qs, l, kvh), rc;
    bool shared = QP(st)->o.kv_rows;
    if (np > k) {
        int64_t cap = qs->scores_cap;
        if ((rc = kw_grow((void **)&qs->scores, &cap, (int64_t)g * np, sizeof(float))) < 0)
            return rc;
        qs->scores_cap = cap;
        cap = qs->sel_cap;
        if ((rc = kw_grow((void **)&qs->sel, &cap, k, sizeof(int32_t))) < 0)
            return rc;
        qs->sel_cap = (int)cap;
        if ((rc = kw_k_page_scores(KW_BK_CPU, NULL, qg, g, hd, t->mn, t->mx, np, qs->scores)) < 0)
            return rc;
        if (shared) /* the group's bound: the largest of its heads' bounds */
            for (int r = 1; r < g; r++)
                for (int p = 0; p < np; p++)
                    if (qs->scores[(int64_t)r * np + p] > qs->scores[p])
                        qs->scores[p] = qs->scores[(int64_t)r * np + p];
    }
    for (int r = 0; r < (shared ? 1 : g); r++) {
        if ((rc = kw_view_begin_row(w, shared ? kvh : kvh * g + r)) < 0)
            return rc;
        if (np <= k) {
            if ((rc = add_range(w, kv, l, kvh, P, 0, n)) < 0)
                return rc;
            continue;
        }
        /* the best k - 1 pages before the current one, in increasing order */
        if ((rc = kw_k_topk(KW_BK_CPU, NULL, qs->scores + (int64_t)r * np, 1, np - 1, k - 1,
                            qs->sel)) < 0)
            return rc;
        qs->sel[k - 1] = np - 1;
        for (int j = 0; j < k; j++) {
            int a = qs->sel[j] * Q, e = a + Q < n ? a + Q : n;
            if ((rc = add_range(w, kv, l, kvh, P, a, e)) < 0)
                return rc;
        }
    }
    return 0;
}

static int q_select(void *stp, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    const qstate *st = stp;
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, H = cf->n_head, Hk = cf->n_head_kv, hd = cf->head_dim, g = H / Hk;
    if (l < QP(st)->o.dense_layers)
        return 0;
    const kw_kvpool_opts *po = kw_kvpool_options(c->pool);
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    bool per_q = !QP(st)->o.kv_rows;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->prefill[i])
            continue;
        kw_seq *s = b->seqs[i];
        qseq *qs = s->hook_seq[c->hook_index];
        bool any = false;
        for (int h = 0; h < Hk && !any; h++) {
            int n = kw_kvseq_len(s->kv, l, h);
            any = (n + QP(st)->o.page - 1) / QP(st)->o.page > pages_for(QP(st), qs, l, h);
        }
        if (!any)
            continue;
        int t = b->tok_first[i] + b->tok_n[i] - 1, rc = kw_view_reset(out[i], per_q ? H : Hk, per_q);
        for (int h = 0; rc == 0 && h < Hk; h++) {
            qtable *tb = &qs->t[(int64_t)l * Hk + h];
            rc = table_update(st, qs, tb, s, &mem, l, h);
            if (rc == 0)
                rc = select_group(st, qs, tb, out[i], s->kv, l, h,
                                  q + ((int64_t)t * H + (int64_t)h * g) * hd, po->page_tokens);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int q_seq_open(void *stp, kw_seq *s, int idx)
{
    const qstate *st = stp;
    qseq *qs = calloc(1, sizeof *qs);
    if (qs)
        qs->t = calloc((size_t)st->cfg.n_layer * st->cfg.n_head_kv, sizeof *qs->t);
    if (!qs || !qs->t) {
        free(qs);
        return KW_ENOMEM;
    }
    qs->budget = kw__quest_seq_budget(&QP(st)->o, s->n_prompt);
    s->hook_seq[idx] = qs;
    return 0;
}

static void q_seq_close(void *stp, kw_seq *s, int idx)
{
    const qstate *st = stp;
    qseq *qs = s->hook_seq[idx];
    if (!qs)
        return;
    for (int64_t i = 0; i < (int64_t)st->cfg.n_layer * st->cfg.n_head_kv; i++) {
        free(qs->t[i].mn), free(qs->t[i].mx);
        free(qs->t[i].pos0), free(qs->t[i].pos1);
    }
    free(qs->t);
    free(qs->rows), free(qs->rpos), free(qs->scores), free(qs->sel);
    free(qs);
    s->hook_seq[idx] = NULL;
}

const kw_kvhook kw__quest_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_HOST_Q, .name = "retrieve.quest", .seq_open = q_seq_open,
    .select = q_select, .seq_close = q_seq_close,
    .tail_only = true, /* selects in decoding only; page bounds come from the pool */
};

int kw__quest_method(const kw_quest_opts *o, const kw_budget *per_layer, kw_kvmethod **out,
                     kw_error *err)
{
    *out = NULL;
    if (o->page < 1 || o->page > 65535 || (o->budget < 1 && !(o->ratio > 0))
        || o->min_pages < 1 || o->dense_layers < 0 || !(o->ratio >= 0 && o->ratio <= 1))
        return kw_error_set(err, KW_EINVAL, "retrieve.quest: page %d, budget %d, ratio %g, "
                            "min_pages %d, dense_layers %d", o->page, o->budget, o->ratio,
                            o->min_pages, o->dense_layers);
    qparams *p;
    int rc = kw__rmethod_new(&kw__quest_hook, "retrieve.quest", sizeof *p, per_layer, out,
                             (void **)&p, err);
    if (rc == 0)
        p->o = *o;
    return rc;
}

/* ---- the operator ---- */

static const kw_port ins[] = {KW_RETRIEVE_BUDGET_PORT};
static const kw_port outs[] = {
    {"kvmethod", KW_T_KVMETHOD, KW_ONCE, 0, "the Quest SELECT hook"},
};
static const kw_param_spec params[] = {
    {"page", KW_PARAM_INT, "16", 1, 4096, NULL, "tokens per page (min/max metadata unit)"},
    {"budget", KW_PARAM_INT, "1024", 1, 1 << 24, NULL,
     "tokens read per query head and layer at each decode step, as budget / page whole "
     "pages, the current page included"},
    KW_RETRIEVE_RATIO_PARAM,
    {"min_pages", KW_PARAM_INT, "3", 1, 1 << 20, NULL, "at least this many pages"},
    {"dense_layers", KW_PARAM_INT, "2", 0, 1 << 16, NULL,
     "the first layers read every token"},
    {"rows", KW_PARAM_ENUM, "qhead", 0, 0, "qhead|kvhead",
     "qhead: each query head picks its pages (Quest); kvhead: a GQA group shares one pick "
     "by the largest of its heads' bounds, so K and V rows are read once for the group"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw_quest_opts o = {.page = (int)kw_param_int(c, "page"),
                       .budget = (int)kw_param_int(c, "budget"),
                       .min_pages = (int)kw_param_int(c, "min_pages"),
                       .dense_layers = (int)kw_param_int(c, "dense_layers"),
                       .kv_rows = !strcmp(kw_param_str(c, "rows"), "kvhead")};
    const kw_budget *b;
    int rc = kw__retrieve_budget_in(c, t, &b, &o.ratio);
    if (rc < 0)
        return rc;
    kw_kvmethod *m;
    kw_error err = {0};
    if ((rc = kw__quest_method(&o, b, &m, &err)) < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    kw_ctx_record(c, "kv_memory", "unchanged: selection reads fewer tokens, the pool keeps all");
    return kw_task_out(t, 0, kw_value_kvmethod(m));
}

const kw_op kw_op_retrieve_quest = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "retrieve.quest", .version = 1,
    .doc = "Quest query-aware page selection (SELECT): per page and channel min/max of K; "
           "each decode query head reads its top pages by the upper bound "
           "sum_i max(q_i*min_i, q_i*max_i) plus the current page; the first dense_layers "
           "layers and prefill read everything. Saves no KV memory (every token stays in "
           "the pool; the min/max metadata adds about 2/page of the keys): it lowers the "
           "tokens attended per step. `budget` counts tokens read per query head and layer "
           "at each decode step, whole pages, the current page included; generated tokens "
           "count once they are in the pages read. `ratio` > 0 sets it per sequence to "
           "round(ratio x its prompt tokens) when the sequence opens; a budget input sets "
           "it per layer and KV head.",
    .lanes = KW_LANE_CPU, .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_SELECT,
};
