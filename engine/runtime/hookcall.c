/* Hook dispatch for one forward step (see hookcall.h). */
#include <stdlib.h>
#include <string.h>

#include "hookcall.h"

void kw__hooks_layer(kw_hookcall *c, int layer)
{
    kw_fwd_step *s = c->s;
    for (int i = 0; i < s->n_seq; i++) {
        const kw_hookstack *hs = s->stacks ? s->stacks[i] : NULL;
        c->want_obs[i] = c->want_step[i] = false;
        for (int idx = 0; hs && idx < hs->n; idx++) {
            const kw_kvhook *h = hs->hooks[idx];
            bool obs = h->needs & KW_NEED_OBS_PROBS && s->last_chunk[i],
                 step = h->needs & KW_NEED_STEP_PROBS
                        || (h->needs & KW_NEED_DECODE_PROBS && !s->prefill[i]);
            if ((obs || step) && !kw_kvhook_probs_at(h, hs->states[idx], layer))
                obs = step = false;
            c->want_obs[i] |= obs;
            c->want_step[i] |= step;
        }
    }
}

int kw__hooks_begin(kw_hookcall *c)
{
    kw_fwd_step *s = c->s;
    c->g = calloc((size_t)s->n_seq * KW_MAX_HOOKS + 1, sizeof *c->g);
    if (!c->g)
        return KW_ENOMEM;
    for (int idx = 0; idx < KW_MAX_HOOKS; idx++)
        for (int i = 0; i < s->n_seq; i++) {
            const kw_hookstack *hs = s->stacks ? s->stacks[i] : NULL;
            if (!hs || idx >= hs->n)
                continue;
            const kw_kvhook *h = hs->hooks[idx];
            c->needs |= h->needs;
            c->any[KW_HC_ON_KV] |= h->on_kv != NULL;
            c->any[KW_HC_SELECT] |= h->select != NULL;
            c->any[KW_HC_MATERIALIZE] |= h->materialize != NULL;
            c->any[KW_HC_AFTER_ATTN] |= h->after_attn != NULL;
            c->any[KW_HC_PREFILL_END] |= h->on_prefill_end != NULL && s->last_chunk[i];
            kw_hgroup *g = NULL;
            for (int k = 0; k < c->n_g && !g; k++)
                if (c->g[k].idx == idx && c->g[k].h == h && c->g[k].st == hs->states[idx])
                    g = &c->g[k];
            if (!g) {
                g = &c->g[c->n_g++];
                g->h = h;
                g->st = hs->states[idx];
                g->idx = idx;
            }
            int j = g->n++;
            g->si[j] = i;
            g->seqs[j] = s->seqs[i];
            g->first[j] = s->tok_first[i];
            g->ntok[j] = s->tok_n[i];
            g->pre[j] = s->prefill[i];
            g->last[j] = s->last_chunk[i];
            g->views[j] = c->views[i];
        }
    for (int k = 0; k < c->n_g; k++) {
        kw_hgroup *g = &c->g[k];
        g->b = (kw_batch){.n_seq = g->n, .seqs = g->seqs, .tok_first = g->first,
                          .tok_n = g->ntok, .pos = s->pos, .prefill = g->pre,
                          .last_chunk = g->last};
    }
    return 0;
}

static void group_fail(kw_hookcall *c, const kw_hgroup *g, int rc)
{
    for (int j = 0; j < g->n; j++)
        if (c->s->seq_rc[g->si[j]] == 0)
            c->s->seq_rc[g->si[j]] = rc;
}

static int prefill_end(kw_hookcall *c, const kw_hgroup *g, kw_lctx *lc)
{
    kw_hgroup sub = *g;
    sub.n = 0;
    for (int j = 0; j < g->n; j++)
        if (g->last[j]) {
            sub.si[sub.n] = g->si[j];
            sub.seqs[sub.n] = g->seqs[j];
            sub.first[sub.n] = g->first[j];
            sub.ntok[sub.n] = g->ntok[j];
            sub.pre[sub.n] = g->pre[j];
            sub.last[sub.n] = true;
            sub.n++;
        }
    if (sub.n == 0)
        return 0;
    sub.b = (kw_batch){.n_seq = sub.n, .seqs = sub.seqs, .tok_first = sub.first,
                       .tok_n = sub.ntok, .pos = c->s->pos, .prefill = sub.pre,
                       .last_chunk = sub.last};
    int rc = g->h->on_prefill_end(g->st, lc, &sub.b);
    if (rc < 0)
        group_fail(c, &sub, rc);
    return 0;
}

void kw__hooks_call(kw_hookcall *c, int layer, int which, const float *q, const float *k,
                    const float *v, const kw_attn_stats *stats)
{
    for (int n = 0; n < c->n_g; n++) {
        kw_hgroup *g = &c->g[n];
        kw_lctx lc = {.layer = layer, .hook_index = g->idx, .cfg = c->cfg, .pool = c->pool,
                      .obs_window = c->s->obs_window, .stream = c->stream};
        int rc = 0;
        switch (which) {
        case KW_HC_ON_KV:
            if (g->h->on_kv)
                rc = g->h->on_kv(g->st, &lc, &g->b, k, v);
            break;
        case KW_HC_SELECT:
            if (g->h->select)
                rc = g->h->select(g->st, &lc, &g->b, q, g->views);
            break;
        case KW_HC_MATERIALIZE:
            if (g->h->materialize)
                rc = g->h->materialize(g->st, &lc, &g->b, g->views);
            break;
        case KW_HC_AFTER_ATTN:
            if (g->h->after_attn) {
                for (int j = 0; j < g->n; j++) { /* only what this layer computed */
                    int si = g->si[j];
                    g->probs[j] = c->want_obs[si] ? c->probs[si] : NULL;
                    g->obs_n[j] = c->obs_n[si];
                    g->obs_len[j] = c->obs_len[si];
                    g->sprobs[j] = c->want_step[si] ? c->sprobs[si] : NULL;
                    g->slen[j] = c->slen[si];
                }
                kw_attn_stats a = *stats;
                a.probs = g->probs;
                a.obs_n = g->obs_n;
                a.obs_len = g->obs_len;
                a.views = (const kw_view *const *)g->views;
                a.step_probs = g->sprobs;
                a.step_len = g->slen;
                rc = g->h->after_attn(g->st, &lc, &g->b, &a);
            }
            break;
        case KW_HC_PREFILL_END:
            if (g->h->on_prefill_end)
                rc = prefill_end(c, g, &lc);
            break;
        }
        if (rc < 0)
            group_fail(c, g, rc);
    }
}

void kw__hooks_twins(kw_hookcall *c, int layer)
{
    kw_fwd_step *s = c->s;
    for (int i = 0; s->twins && i < s->n_seq; i++)
        if (s->twins[i] && s->last_chunk[i] && s->seq_rc[i] == 0) {
            int tr = 0;
            for (int h = 0; h < c->cfg->n_head_kv && tr == 0; h++)
                if (kw_kvseq_len(s->seqs[i]->kv, layer, h) != s->seqs[i]->n_prompt)
                    tr = KW_ERANGE; /* not the full prompt any more: no reference */
            if (tr == 0)
                tr = kw_kvseq_share_layer(s->twins[i]->kv, s->seqs[i]->kv, layer);
            if (tr < 0)
                s->seq_rc[i] = s->twin_rc[i] = tr;
        }
}

void kw__hooks_step_end(kw_hookcall *c)
{
    for (int k = 0; k < c->n_g; k++) {
        kw_hgroup *g = &c->g[k];
        kw_sctx sc = {.step = c->s->step, .hook_index = g->idx, .pool = c->pool};
        int hr = g->h->step_end ? g->h->step_end(g->st, &sc, &g->b) : 0;
        if (hr < 0)
            group_fail(c, g, hr);
    }
}

void kw__hooks_end(kw_hookcall *c)
{
    for (int i = 0; i < KW_FWD_MAX_SEQ; i++) {
        free(c->probs[i]);
        free(c->sprobs[i]);
        c->probs[i] = c->sprobs[i] = NULL;
    }
    free(c->g);
    c->g = NULL;
}
