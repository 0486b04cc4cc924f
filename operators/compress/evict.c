/* The eviction hook (evict.h): per-sequence capacities, observation-window scores
 * (SnapKV, PyramidKV), accumulated attention (H2O), sink + recent (StreamingLLM), and
 * the compaction through kw_kvseq_keep that frees the pages. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"

typedef struct evstate {
    const kw__evict_params *p;
    const kw_budget *bud; /* nullable */
    int L, Hk, H;
} evstate;

typedef struct evseq {
    int n_prompt;
    int32_t *cap;   /* (L, Hk) capacity after the method's minimum */
    float **acc;    /* H2O: (L * Hk) accumulated attention per stored token */
    int *acc_cap;
    float *score;   /* SnapKV/PyramidKV: (Hk, n) scores of the current layer, (H, n) per
                       query head */
    int score_layer;
    float *hsum;    /* (H, len) window sums per query head */
    int64_t hsum_n;
    float *pooled;
    int32_t *idx, *keep, *map;
    int scratch_n;  /* tokens the idx/keep/map/pooled scratch holds */
    /* per query head selection: for (layer, query head) the prompt positions it picked
       before the window (qn -1: every token, nothing was evicted), and per (layer, KV
       head) the window's first position, from which every token is read */
    int32_t **qpos;
    int *qn;
    int32_t *from;
} evseq;

/* ---- capacities ---- */

int kw__pyramid_keep(int capacity, int window, double beta, int n_layer, int n_prompt,
                     int layer)
{
    int B = capacity - window > 0 ? capacity - window : 0;
    int mn = (int)(B / beta), mx = 2 * B - mn;
    if (mx >= n_prompt - window) {
        mx = n_prompt - window > 0 ? n_prompt - window : 0;
        mn = 2 * B - mx;
    }
    int steps = n_layer > 1 ? (mx - mn) / (n_layer - 1) : 0;
    int keep = mx - layer * steps;
    return (keep > 0 ? keep : 0) + window;
}

int kw__evict_capacity(const kw__evict_params *p, const kw_budget *b, int n_layer,
                       int n_prompt, int layer, int kvh)
{
    if (b)
        return kw_budget_at(b, layer, kvh);
    int cap = p->capacity;
    if (p->ratio > 0) {
        double c = round(p->ratio * n_prompt);
        cap = c < 1 ? 1 : c > INT32_MAX ? INT32_MAX : (int)c;
    }
    if (p->kind == KW_EVICT_PYRAMID && n_prompt > cap)
        cap = kw__pyramid_keep(cap, p->window, p->beta, n_layer, n_prompt, layer);
    return cap;
}

static int seq_cap(const evstate *s, int n_prompt, int l, int h)
{
    int c = kw__evict_capacity(s->p, s->bud, s->L, n_prompt, l, h);
    if ((s->p->kind == KW_EVICT_SNAPKV || s->p->kind == KW_EVICT_PYRAMID) && c < s->p->window)
        c = s->p->window; /* the window is always kept */
    return c < 1 ? 1 : c;
}

/* ---- state ---- */

static int state_new(const void *params, const kw_model_config *cfg, void **out, kw_error *err)
{
    const kw__evict_params *p = params;
    evstate *s = calloc(1, sizeof *s);
    if (!s)
        return kw_error_set(err, KW_ENOMEM, "compress: out of memory");
    s->p = p;
    s->bud = p->budget ? kw_value_data(p->budget) : NULL;
    s->L = cfg->n_layer;
    s->Hk = cfg->n_head_kv;
    s->H = cfg->n_head;
    if (s->bud) {
        int rc = kw_budget_check(s->bud, s->L, s->Hk, err);
        if (rc < 0) {
            free(s);
            return kw_error_prefix(err, "compress: ");
        }
    }
    *out = s;
    return 0;
}

static void state_free(void *st) { free(st); }

static void params_free(void *pp)
{
    kw__evict_params *p = pp;
    if (p)
        kw_value_unref(p->budget);
    free(p);
}

/* Worst case pages: the whole prompt is stored before it is evicted; afterwards the kept
 * tokens plus what decoding keeps (every generated token for SnapKV/PyramidKV; for
 * StreamingLLM/H2O, which evict as they go, at most the capacity plus the current token). */
static int ev_reserve(void *st, const kw_seqshape *sh, kw_memclaim *out)
{
    const evstate *s = st;
    int P = sh->page_tokens;
    bool grows = s->p->kind == KW_EVICT_SNAPKV || s->p->kind == KW_EVICT_PYRAMID;
    int64_t pages = 0;
    for (int l = 0; l < s->L; l++)
        for (int h = 0; h < s->Hk; h++) {
            int64_t c = seq_cap(s, sh->n_prompt, l, h), n = sh->n_prompt, g = sh->max_new;
            int64_t kept = grows ? (c < n ? c : n) + g        /* SnapKV: all generated stay */
                                 : (c + 1 < n + g ? c + 1 : n + g); /* bounded at c (+1) */
            int64_t peak = kept > n ? kept : n;
            pages += (peak + P - 1) / P;
        }
    out->pages = pages;
    out->tmp_pages = 0;
    out->meta_bytes = s->p->kind == KW_EVICT_H2O
                          ? (int64_t)s->L * s->Hk * ((int64_t)sh->n_prompt + sh->max_new) * 4
                          : 0;
    return 0;
}

static int ev_seq_open(void *st, kw_seq *q, int idx)
{
    const evstate *s = st;
    evseq *e = calloc(1, sizeof *e);
    if (!e)
        return KW_ENOMEM;
    q->hook_seq[idx] = e;
    e->n_prompt = q->n_prompt;
    e->score_layer = -1;
    int LH = s->L * s->Hk;
    e->cap = malloc(sizeof(int32_t) * (size_t)LH);
    if (!e->cap)
        return KW_ENOMEM;
    for (int l = 0; l < s->L; l++)
        for (int h = 0; h < s->Hk; h++)
            e->cap[l * s->Hk + h] = seq_cap(s, q->n_prompt, l, h);
    if (s->p->per_qhead) {
        e->qpos = calloc((size_t)s->L * s->H, sizeof *e->qpos);
        e->qn = malloc(sizeof(int) * (size_t)s->L * s->H);
        e->from = calloc((size_t)LH, sizeof *e->from);
        if (!e->qpos || !e->qn || !e->from)
            return KW_ENOMEM;
        for (int i = 0; i < s->L * s->H; i++)
            e->qn[i] = -1;
    }
    if (s->p->kind == KW_EVICT_H2O) {
        e->acc = calloc((size_t)LH, sizeof *e->acc);
        e->acc_cap = calloc((size_t)LH, sizeof *e->acc_cap);
        if (!e->acc || !e->acc_cap)
            return KW_ENOMEM;
    }
    return 0;
}

static void ev_seq_close(void *st, kw_seq *q, int idx)
{
    const evstate *s = st;
    evseq *e = q->hook_seq[idx];
    if (!e)
        return;
    for (int i = 0; e->acc && i < s->L * s->Hk; i++)
        free(e->acc[i]);
    for (int i = 0; e->qpos && i < s->L * s->H; i++)
        free(e->qpos[i]);
    free(e->qpos), free(e->qn), free(e->from);
    free(e->acc), free(e->acc_cap), free(e->cap), free(e->score), free(e->hsum);
    free(e->pooled), free(e->idx), free(e->keep), free(e->map);
    free(e);
    q->hook_seq[idx] = NULL;
}

static int scratch(evseq *e, int n)
{
    if (n <= e->scratch_n)
        return 0;
    int m = n + n / 2 + 16;
    float *pl = realloc(e->pooled, sizeof(float) * (size_t)m);
    if (pl)
        e->pooled = pl;
    int32_t *ix = realloc(e->idx, sizeof(int32_t) * (size_t)m);
    if (ix)
        e->idx = ix;
    int32_t *kp = realloc(e->keep, sizeof(int32_t) * (size_t)m);
    if (kp)
        e->keep = kp;
    int32_t *mp = realloc(e->map, sizeof(int32_t) * (size_t)m);
    if (mp)
        e->map = mp;
    if (!pl || !ix || !kp || !mp)
        return KW_ENOMEM;
    e->scratch_n = m;
    return 0;
}

/* Stored index in (layer, kvh) of each token of view row r (-1 for tokens outside the
 * table, e.g. in the temporary pool); returns the row's length. */
static int view_row_map(const kw_view *w, int r, const kw_kvseq *kv, int layer, int kvh, int P,
                        int32_t *out)
{
    int np;
    const int32_t *pg = kw_kvseq_pages(kv, layer, kvh, &np);
    int col = 0, guess = 0;
    for (int sp = w->row_ptr[r]; sp < w->row_ptr[r + 1]; sp++) {
        const kw_span *s = &w->spans[sp];
        int tp = -1;
        if (s->pool == KW_POOL_MAIN) {
            if (guess < np && pg[guess] == s->page)
                tp = guess;
            for (int j = 0; tp < 0 && j < np; j++)
                if (pg[j] == s->page)
                    tp = j;
        }
        for (int k = 0; k < s->n; k++)
            out[col++] = tp < 0 ? -1 : tp * P + s->first + k;
        if (tp >= 0)
            guess = s->first + s->n == P ? tp + 1 : tp;
    }
    return col;
}

static int keep_tokens(kw_kvseq *kv, int l, int h, const int32_t *keep, int n)
{
    return kw_kvseq_keep(kv, l, h, keep, n);
}

/* ---- StreamingLLM ---- */

static int streaming_evict(const evstate *s, evseq *e, kw_kvseq *kv, int l)
{
    for (int h = 0; h < s->Hk; h++) {
        int n = kw_kvseq_len(kv, l, h), cap = e->cap[l * s->Hk + h];
        if (n <= cap)
            continue;
        int sink = s->p->sink < cap ? s->p->sink : cap, k = 0, rc;
        if ((rc = scratch(e, cap)) < 0)
            return rc;
        for (int j = 0; j < sink; j++)
            e->keep[k++] = j;
        for (int j = n - (cap - sink); j < n; j++)
            e->keep[k++] = j;
        if ((rc = keep_tokens(kv, l, h, e->keep, k)) < 0)
            return rc;
    }
    return 0;
}

/* ---- H2O ---- */

static int h2o_grow(evseq *e, int t, int n, kw_seq *q)
{
    if (n <= e->acc_cap[t])
        return 0;
    int m = n + n / 4 + 16;
    float *a = realloc(e->acc[t], sizeof(float) * (size_t)m);
    if (!a)
        return KW_ENOMEM;
    memset(a + e->acc_cap[t], 0, sizeof(float) * (size_t)(m - e->acc_cap[t]));
    q->meta_bytes += (int64_t)(m - e->acc_cap[t]) * (int64_t)sizeof(float);
    e->acc[t] = a;
    e->acc_cap[t] = m;
    return 0;
}

/* Adds this step's attention (mean over the group's query heads) to each stored token. */
static int h2o_accumulate(const evstate *s, evseq *e, kw_seq *q, int l, const kw_view *w,
                          const float *sp, int len, int P)
{
    int g = s->H / s->Hk, rc;
    for (int h = 0; h < s->Hk; h++) {
        int t = l * s->Hk + h, n = kw_kvseq_len(q->kv, l, h);
        if ((rc = h2o_grow(e, t, n, q)) < 0)
            return rc;
    }
    if ((rc = scratch(e, len)) < 0)
        return rc;
    for (int qh = 0; qh < s->H; qh++) {
        int kvh = qh / g, r = w->per_qhead ? qh : kvh;
        if (qh % g == 0 || w->per_qhead) {
            int nr = view_row_map(w, r, q->kv, l, kvh, P, e->map);
            for (int j = nr; j < len; j++)
                e->map[j] = -1;
        }
        float *acc = e->acc[l * s->Hk + kvh];
        const float *row = sp + (int64_t)qh * len;
        for (int j = 0; j < len; j++)
            if (e->map[j] >= 0)
                acc[e->map[j]] += row[j] / (float)g;
    }
    return 0;
}

/* Keeps the `recent` last tokens and the heaviest of the others, within the capacity. */
static int h2o_evict(const evstate *s, evseq *e, kw_kvseq *kv, int l)
{
    for (int h = 0; h < s->Hk; h++) {
        int t = l * s->Hk + h, n = kw_kvseq_len(kv, l, h), cap = e->cap[t], rc;
        if (n <= cap)
            continue;
        int heavy = (int)(cap * s->p->heavy_share), recent = cap - heavy;
        int cand = n - recent;
        if ((rc = scratch(e, n)) < 0)
            return rc;
        if ((rc = kw_k_topk(KW_BK_CPU, NULL, e->acc[t], 1, cand, heavy, e->keep)) < 0)
            return rc;
        for (int j = cand; j < n; j++)
            e->keep[heavy + j - cand] = j;
        if ((rc = keep_tokens(kv, l, h, e->keep, cap)) < 0)
            return rc;
        float *acc = e->acc[t];
        for (int j = 0; j < cap; j++)
            acc[j] = acc[e->keep[j]];
        memset(acc + cap, 0, sizeof(float) * (size_t)(e->acc_cap[t] - cap));
    }
    return 0;
}

/* ---- SnapKV / PyramidKV ---- */

/* Window scores of every stored prompt token per KV head (mean over the group's query
 * heads of the sum over the last `window` queries), from the observation probabilities. */
static int snap_scores(const evstate *s, evseq *e, kw_seq *q, int l, const kw_view *w,
                       const float *probs, int obs_n, int len, int P)
{
    int H = s->H, g = H / s->Hk, wq = s->p->window < obs_n ? s->p->window : obs_n, rc;
    int n = kw_kvseq_len(q->kv, l, 0);
    for (int h = 1; h < s->Hk; h++)
        n = kw_kvseq_len(q->kv, l, h) > n ? kw_kvseq_len(q->kv, l, h) : n;
    if ((rc = scratch(e, len > n ? len : n)) < 0)
        return rc;
    if ((int64_t)H * len > e->hsum_n) {
        float *hs = realloc(e->hsum, sizeof(float) * (size_t)H * (size_t)(len ? len : 1));
        if (!hs)
            return KW_ENOMEM;
        e->hsum = hs;
        e->hsum_n = (int64_t)H * len;
    }
    int rows = s->p->per_qhead ? H : s->Hk;
    float *sc = realloc(e->score, sizeof(float) * (size_t)rows * (size_t)(n ? n : 1));
    if (!sc)
        return KW_ENOMEM;
    e->score = sc;
    memset(sc, 0, sizeof(float) * (size_t)rows * (size_t)n);
    const float *last = probs + (int64_t)(obs_n - wq) * H * len;
    if ((rc = kw_k_window_scores(KW_BK_CPU, NULL, last, wq, H, len, 1, len, e->hsum)) < 0)
        return rc;
    for (int qh = 0; qh < H; qh++) {
        int kvh = qh / g, r = w->per_qhead ? qh : kvh;
        if (qh % g == 0 || w->per_qhead) {
            int nr = view_row_map(w, r, q->kv, l, kvh, P, e->map);
            for (int j = nr; j < len; j++)
                e->map[j] = -1;
        }
        const float *row = e->hsum + (int64_t)qh * len;
        float *out = s->p->per_qhead ? sc + (int64_t)qh * n : sc + (int64_t)kvh * n;
        float f = s->p->per_qhead ? 1.f : 1.f / (float)g;
        for (int j = 0; j < len; j++)
            if (e->map[j] >= 0 && e->map[j] < n)
                out[e->map[j]] += row[j] * f;
    }
    e->score_layer = l;
    return 0;
}

/* Keeps the window and the top (capacity - window) pooled scores before it. */
static int snap_evict(const evstate *s, evseq *e, kw_kvseq *kv, int l)
{
    int W = s->p->window;
    for (int h = 0; h < s->Hk; h++) {
        int n = kw_kvseq_len(kv, l, h), cap = e->cap[l * s->Hk + h], rc;
        if (n <= cap)
            continue;
        int before = n - W, k = cap - W, nmax = kw_kvseq_len(kv, l, 0);
        for (int x = 1; x < s->Hk; x++)
            nmax = kw_kvseq_len(kv, l, x) > nmax ? kw_kvseq_len(kv, l, x) : nmax;
        if ((rc = scratch(e, n)) < 0)
            return rc;
        const float *sc = e->score + (int64_t)h * nmax;
        if ((rc = kw_k_pool1d(KW_BK_CPU, NULL, sc, 1, before, s->p->kernel, s->p->pooling,
                              e->pooled)) < 0)
            return rc;
        if ((rc = kw_k_topk(KW_BK_CPU, NULL, e->pooled, 1, before, k, e->keep)) < 0)
            return rc;
        for (int j = before; j < n; j++)
            e->keep[k + j - before] = j;
        if ((rc = keep_tokens(kv, l, h, e->keep, cap)) < 0)
            return rc;
    }
    return 0;
}

/* Per query head: each query head of KV head h keeps the top (capacity - window) of its
 * own pooled scores; the pool keeps their union and the window, and each query head's
 * picks are kept as positions for its view (ev_select). */
static int snap_evict_qh(const evstate *s, evseq *e, kw_kvseq *kv, int l)
{
    int W = s->p->window, g = s->H / s->Hk, nmax = 0;
    for (int x = 0; x < s->Hk; x++)
        nmax = kw_kvseq_len(kv, l, x) > nmax ? kw_kvseq_len(kv, l, x) : nmax;
    for (int h = 0; h < s->Hk; h++) {
        int n = kw_kvseq_len(kv, l, h), cap = e->cap[l * s->Hk + h], rc;
        if (n <= cap)
            continue; /* every query head reads everything (qn stays -1) */
        int before = n - W, k = cap - W, nk = 0;
        if ((rc = scratch(e, n)) < 0)
            return rc;
        for (int j = 0; j < n; j++)
            e->map[j] = -1;
        for (int r = 0; r < g; r++) { /* picks as stored indices, then as positions */
            int qh = h * g + r;
            const float *sc = e->score + (int64_t)qh * nmax;
            if ((rc = kw_k_pool1d(KW_BK_CPU, NULL, sc, 1, before, s->p->kernel, s->p->pooling,
                                  e->pooled)) < 0
                || (rc = kw_k_topk(KW_BK_CPU, NULL, e->pooled, 1, before, k, e->idx)) < 0)
                return rc;
            int32_t *qp = realloc(e->qpos[l * s->H + qh], sizeof(int32_t) * (size_t)(k ? k : 1));
            if (!qp)
                return KW_ENOMEM;
            e->qpos[l * s->H + qh] = qp;
            for (int i = 0; i < k; i++)
                e->map[e->idx[i]] = r;
            int m = 0;
            for (int j = 0; j < before && rc == 0; j++) /* increasing positions */
                if (e->map[j] == r)
                    rc = kw_kvseq_token_f32(kv, l, h, j, NULL, NULL, &qp[m++]);
            if (rc < 0)
                return rc;
            e->qn[l * s->H + qh] = m;
        }
        for (int j = 0; j < n; j++)
            if (j >= before || e->map[j] >= 0) /* the window, or some query head's pick */
                e->keep[nk++] = j;
        if ((rc = kw_kvseq_token_f32(kv, l, h, before, NULL, NULL, &e->from[l * s->Hk + h])) < 0
            || (rc = keep_tokens(kv, l, h, e->keep, nk)) < 0)
            return rc;
    }
    return 0;
}

/* Per query head views of a decode step: query head qh reads the tokens of its KV head
 * whose positions it picked, the window and every later token. */
static int ev_select(void *st, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    (void)q;
    const evstate *s = st;
    int l = c->layer, g = s->H / s->Hk;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *sq = b->seqs[i];
        evseq *e = sq->hook_seq[c->hook_index];
        bool any = false;
        for (int qh = 0; qh < s->H; qh++)
            any = any || e->qn[l * s->H + qh] >= 0;
        if (b->prefill[i] || !any)
            continue;
        if (!kw_view_is_dense(out[i], sq->kv, l))
            return kw_seq_fail(sq, KW_ENOSYS, "%s: per_qhead selection reads the pool's "
                               "tokens itself; put it before the other SELECT hooks",
                               s->p->kind == KW_EVICT_SNAPKV ? "compress.snapkv"
                                                             : "compress.pyramidkv");
        int rc = kw_view_reset(out[i], s->H, true);
        for (int qh = 0; rc == 0 && qh < s->H; qh++) {
            int h = qh / g, n = kw_kvseq_len(sq->kv, l, h), m = e->qn[l * s->H + qh], x = 0;
            const int32_t *qp = e->qpos[l * s->H + qh];
            if ((rc = kw_view_begin_row(out[i], qh)) < 0 || (rc = scratch(e, n)) < 0)
                break;
            for (int j = 0; qh % g == 0 && rc == 0 && j < n; j++) /* the table's positions */
                rc = kw_kvseq_token_f32(sq->kv, l, h, j, NULL, NULL, &e->idx[j]);
            for (int j = 0; rc == 0 && j < n; j++) {
                int32_t p = e->idx[j];
                while (x < m && qp[x] < p)
                    x++;
                if (m < 0 || p >= e->from[l * s->Hk + h] || (x < m && qp[x] == p))
                    rc = kw_view_add_token(out[i], sq->kv, l, h, j);
            }
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- hook callbacks ---- */

static int ev_after_attn(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    const evstate *s = st;
    int P = kw_kvpool_options(c->pool)->page_tokens, rc = 0;
    for (int i = 0; i < b->n_seq && rc == 0; i++) {
        kw_seq *q = b->seqs[i];
        evseq *e = q->hook_seq[c->hook_index];
        switch (s->p->kind) {
        case KW_EVICT_STREAMING: /* the prompt's end: on_prefill_end */
            if (!b->prefill[i] || (s->p->prefill_evict && !b->last_chunk[i]))
                rc = streaming_evict(s, e, q->kv, c->layer);
            break;
        case KW_EVICT_H2O:
            if (!a->step_probs || !a->step_probs[i])
                return KW_EINTERNAL;
            rc = h2o_accumulate(s, e, q, c->layer, a->views[i], a->step_probs[i],
                                a->step_len[i], P);
            if (rc == 0 && !b->prefill[i])
                rc = h2o_evict(s, e, q->kv, c->layer);
            break;
        case KW_EVICT_SNAPKV:
        case KW_EVICT_PYRAMID:
            if (!b->last_chunk[i])
                break;
            if (s->p->window > c->obs_window)
                return KW_EINVAL; /* the engine observes fewer queries than the window */
            if (!a->probs || !a->probs[i])
                return KW_EINTERNAL;
            rc = snap_scores(s, e, q, c->layer, a->views[i], a->probs[i], a->obs_n[i],
                             a->obs_len[i], P);
            break;
        }
    }
    return rc;
}

static int ev_prefill_end(void *st, kw_lctx *c, const kw_batch *b)
{
    const evstate *s = st;
    int rc = 0;
    for (int i = 0; i < b->n_seq && rc == 0; i++) {
        kw_seq *q = b->seqs[i];
        evseq *e = q->hook_seq[c->hook_index];
        if (s->p->kind == KW_EVICT_STREAMING)
            rc = streaming_evict(s, e, q->kv, c->layer);
        else if (s->p->kind == KW_EVICT_H2O)
            rc = h2o_evict(s, e, q->kv, c->layer);
        else if (s->p->kind == KW_EVICT_SNAPKV || s->p->kind == KW_EVICT_PYRAMID)
            rc = e->score_layer != c->layer ? KW_EINTERNAL
                 : s->p->per_qhead           ? snap_evict_qh(s, e, q->kv, c->layer)
                                             : snap_evict(s, e, q->kv, c->layer);
    }
    return rc;
}

static const kw_kvhook hook_streaming = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT, .needs = 0,
    .name = "compress.streaming", .reserve = ev_reserve, .seq_open = ev_seq_open,
    .after_attn = ev_after_attn, .on_prefill_end = ev_prefill_end, .seq_close = ev_seq_close};
/* prefill_evict false: StreamingLLM evicts at the prompt's end only, so it may take a
 * shared prefix prefill */
static const kw_kvhook hook_streaming_end = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT, .needs = 0,
    .name = "compress.streaming", .reserve = ev_reserve, .seq_open = ev_seq_open,
    .after_attn = ev_after_attn, .on_prefill_end = ev_prefill_end, .seq_close = ev_seq_close,
    .tail_only = true};
static const kw_kvhook hook_h2o = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT,
    .needs = KW_NEED_STEP_PROBS, .name = "compress.h2o", .reserve = ev_reserve,
    .seq_open = ev_seq_open, .after_attn = ev_after_attn, .on_prefill_end = ev_prefill_end,
    .seq_close = ev_seq_close};
static const kw_kvhook hook_snapkv = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT,
    .needs = KW_NEED_OBS_PROBS, .name = "compress.snapkv", .reserve = ev_reserve,
    .seq_open = ev_seq_open, .after_attn = ev_after_attn, .on_prefill_end = ev_prefill_end,
    .seq_close = ev_seq_close, .tail_only = true};
/* per query head selection: EVICT and SELECT */
static const kw_kvhook hook_snapkv_qh = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT | KW_ROLE_SELECT,
    .needs = KW_NEED_OBS_PROBS, .name = "compress.snapkv", .reserve = ev_reserve,
    .seq_open = ev_seq_open, .select = ev_select, .after_attn = ev_after_attn,
    .on_prefill_end = ev_prefill_end, .seq_close = ev_seq_close, .tail_only = true};
static const kw_kvhook hook_pyramid_qh = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT | KW_ROLE_SELECT,
    .needs = KW_NEED_OBS_PROBS, .name = "compress.pyramidkv", .reserve = ev_reserve,
    .seq_open = ev_seq_open, .select = ev_select, .after_attn = ev_after_attn,
    .on_prefill_end = ev_prefill_end, .seq_close = ev_seq_close, .tail_only = true};
static const kw_kvhook hook_pyramid = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT,
    .needs = KW_NEED_OBS_PROBS, .name = "compress.pyramidkv", .reserve = ev_reserve,
    .seq_open = ev_seq_open, .after_attn = ev_after_attn, .on_prefill_end = ev_prefill_end,
    .seq_close = ev_seq_close, .tail_only = true};

kw_kvmethod *kw__evict_method(kw__evict_params *p)
{
    kw_kvmethod *m = calloc(1, sizeof *m);
    if (!m) {
        params_free(p);
        return NULL;
    }
    m->hook = p->kind == KW_EVICT_STREAMING
                  ? (p->prefill_evict ? &hook_streaming : &hook_streaming_end)
              : p->kind == KW_EVICT_H2O     ? &hook_h2o
              : p->kind == KW_EVICT_SNAPKV  ? (p->per_qhead ? &hook_snapkv_qh : &hook_snapkv)
              : p->per_qhead                ? &hook_pyramid_qh
                                            : &hook_pyramid;
    m->params = p;
    m->params_free = params_free;
    m->state_new = state_new;
    m->state_free = state_free;
    return m;
}
