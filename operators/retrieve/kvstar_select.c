/* retrieve.kvstar_select — KVStar's block selection without its block store, a SELECT
 * hook by position (METHODS.md's "KVStar selection over a DeltaKV-compressed store").
 *
 * The blocks are retrieve.kvstar's (kw__kvstar_blocks): of a prompt's whole blocks of
 * `block` tokens, the first init_window and the last local_window, the partial last
 * block and every generated token are always read; of the middle blocks, k =
 * ceil(n_middle x sparse_ratio) are, those the vote picks.
 *
 * After the attention of the prompt's last chunk, layer by layer: the middle blocks'
 * keys as attention read them (keys.h: the pool's and the temporary pool's, which a
 * MATERIALIZE hook such as DeltaKV rebuilt from what it holds outside the pool) make the
 * block representation per KV head (kw__kvstar_represent: the channels of largest mean
 * |K|, inner_token_merge tokens averaged, fp16, counted in meta_bytes), and the prompt's
 * last retrieval_stride queries vote (kw_k_kvstar_vote; top k, ties to the earlier
 * block). In decoding the query of each step is kept, and after step j x stride the
 * queries of steps (j-1) x stride + 1 .. j x stride vote again; the pick holds from the
 * next step on. (retrieve.kvstar's pick acts about two strides after its queries,
 * because it reads blocks back from disk behind decoding; here nothing is read back.)
 *
 * Each decode step every KV head's row names the positions read: those the pool holds are
 * read from it, the others go to the row's wants (kvpool.h), which DeltaKV, after it in
 * the stack, rebuilds. Alone, over a pool that holds everything, it lowers the tokens
 * attended and saves no memory; over DeltaKV, DeltaKV's memory saving stays and only the
 * picked blocks' tokens are rebuilt. Prefill is dense; a prompt with no middle block, or
 * with k >= its middle blocks, is left whole. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "keys.h"
#include "kvstar.h"
#include "kvweave/op.h"
#include "kvweave/util.h"
#include "shared.h"

typedef struct sparams {
    kw_rparams r; /* the name (no per-layer budget) */
    kw_kvstar_opts o;
} sparams;

#define SP(st) (&((const sparams *)(st)->p)->o)

typedef struct slayer {
    int32_t *chan;  /* (n_kv, dk) */
    uint16_t *sub;  /* (n_kv, n_mid * per_block, dk) fp16 */
    uint8_t *pick;  /* (n_mid) 1: read */
    float *qbuf;    /* (stride, n_head, head_dim) */
    int nq_pre;     /* prompt queries in qbuf */
    bool ready;     /* the representation is made */
} slayer;

typedef struct sseq {
    bool active;
    int n_full, n_mid, k, first_mid;
    slayer *ly;
    kw_keys_read kr;
    float *score;
    int32_t *sel;
    int32_t *ppos; /* a table's positions */
    int64_t ppos_cap;
} sseq;

static int dk_of(const kw_rstate *st)
{
    return (int)lround(st->cfg.head_dim * SP(st)->dim_prune_ratio);
}

/* The vote of nq queries q over layer l's middle blocks into ly->pick (top k by score,
 * ties to the earlier block). */
static int vote(const kw_rstate *st, sseq *ss, slayer *ly, const float *q, int nq)
{
    const kw_model_config *cf = &st->cfg;
    int dk = dk_of(st), pb = SP(st)->block / SP(st)->inner_token_merge;
    int rc = kw_k_kvstar_vote(q, nq, cf->n_head, cf->n_head_kv, cf->head_dim, ly->chan, dk,
                              ly->sub, ss->n_mid * pb, pb, ss->score);
    if (rc < 0)
        return rc;
    if ((rc = kw_k_topk(KW_BK_CPU, NULL, ss->score, 1, ss->n_mid, ss->k, ss->sel)) < 0)
        return rc;
    memset(ly->pick, 0, (size_t)ss->n_mid);
    for (int i = 0; i < ss->k; i++)
        ly->pick[ss->sel[i]] = 1;
    return 0;
}

/* At the prompt's end: layer l's representation from the keys attention read, then the
 * first vote with the prompt's last queries. */
static int index_layer(const kw_rstate *st, kw_lctx *c, kw_seq *s, sseq *ss, const kw_view *w)
{
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, B = SP(st)->block, Hk = cf->n_head_kv, hd = cf->head_dim, dk = dk_of(st);
    int merge = SP(st)->inner_token_merge, nt = ss->n_mid * B, nsub = nt / merge;
    int32_t p0 = ss->first_mid * B;
    slayer *ly = &ss->ly[l];
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    for (int h = 0; h < Hk; h++) {
        int n = kw__keys_read(s->kv, &mem, w, l, h, p0 - 1, st->inv_freq, cf, &ss->kr);
        if (n < 0)
            return n;
        /* the middle blocks' tokens, every one: the first nt read, positions p0 .. */
        bool whole = n >= nt;
        for (int t = 0; whole && t < nt; t++)
            whole = ss->kr.pos[t] == p0 + t;
        if (!whole)
            return kw_seq_fail(s, KW_EINVAL, "retrieve.kvstar_select: layer %d KV head %d: "
                               "attention read %d of the %d middle-block tokens at the "
                               "prompt's end (another method dropped some)", l, h,
                               n < nt ? n : nt, nt);
        kw__kvstar_represent(ss->kr.rows, nt, hd, dk, merge, ly->chan + (int64_t)h * dk,
                             ly->sub + (int64_t)h * nsub * dk);
    }
    s->meta_bytes += (int64_t)Hk * dk * ((int64_t)sizeof(int32_t) + (int64_t)nsub * 2);
    ly->ready = true;
    return vote(st, ss, ly, ly->qbuf, ly->nq_pre);
}

/* The view of a decode step at position cur: per KV head, the init window, the picked
 * middle blocks and everything from the local window on. */
static int build_view(const kw_rstate *st, kw_lctx *c, kw_seq *s, sseq *ss, kw_view *w,
                      int32_t cur)
{
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, B = SP(st)->block, Hk = cf->n_head_kv;
    slayer *ly = &ss->ly[l];
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int rc = kw_view_reset(w, Hk, false);
    w->by_pos = 1 + c->hook_index;
    int32_t mid0 = ss->first_mid * B, mid1 = (ss->first_mid + ss->n_mid) * B;
    for (int h = 0; rc == 0 && h < Hk; h++) {
        int n = kw_kvseq_len(s->kv, l, h), j = 0;
        if ((rc = kw_view_begin_row(w, h)) < 0
            || (rc = kw_grow((void **)&ss->ppos, &ss->ppos_cap, n + 1, sizeof(int32_t))) < 0)
            break;
        int32_t *pos = ss->ppos; /* the table's positions */
        for (int t = 0; t < n; t++)
            pos[t] = kw__key_pos(s->kv, &mem, l, h, t);
        for (int32_t p = 0; rc == 0 && p < mid0; p++)
            rc = kw__view_choose(w, h, s->kv, l, h, pos, n, &j, p);
        for (int m = 0; rc == 0 && m < ss->n_mid; m++)
            for (int32_t p = mid0 + m * B; ly->pick[m] && rc == 0 && p < mid0 + (m + 1) * B; p++)
                rc = kw__view_choose(w, h, s->kv, l, h, pos, n, &j, p);
        for (int32_t p = mid1; rc == 0 && p <= cur; p++)
            rc = kw__view_choose(w, h, s->kv, l, h, pos, n, &j, p);
    }
    return rc;
}

static int ks_select(void *stp, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    const kw_rstate *st = stp;
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, S = SP(st)->retrieval_stride, worst = 0;
    size_t qsz = sizeof(float) * (size_t)cf->n_head * cf->head_dim;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *s = b->seqs[i];
        sseq *ss = s->hook_seq[c->hook_index];
        if (!ss->active)
            continue;
        slayer *ly = &ss->ly[l];
        int rc = 0;
        for (int t = b->tok_first[i]; t < b->tok_first[i] + b->tok_n[i] && rc == 0; t++) {
            int32_t p = b->pos[t];
            const float *qt = q + (int64_t)t * cf->n_head * cf->head_dim;
            if (kw__kvstar_prompt_query(ly->qbuf, &ly->nq_pre, s->n_prompt, S, p, qt,
                                        cf->n_head * cf->head_dim))
                continue;
            if (!ly->ready)
                continue; /* indexing failed: the sequence has failed */
            int d = p - s->n_prompt + 1; /* decode step */
            rc = build_view(st, c, s, ss, out[i], p);
            memcpy(ly->qbuf + (size_t)((d - 1) % S) * cf->n_head * cf->head_dim, qt, qsz);
            if (rc == 0 && d % S == 0) /* for the steps after this one */
                rc = vote(st, ss, ly, ly->qbuf, S);
        }
        if (rc < 0) {
            kw_seq_fail(s, rc, "retrieve.kvstar_select: layer %d: %s", l, kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

static int ks_after_attn(void *stp, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    const kw_rstate *st = stp;
    int worst = 0;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *s = b->seqs[i];
        sseq *ss = s->hook_seq[c->hook_index];
        if (!ss->active || !b->last_chunk[i] || ss->ly[c->layer].ready)
            continue;
        int rc = index_layer(st, c, s, ss, a->views ? a->views[i] : NULL);
        if (rc < 0) {
            kw_seq_fail(s, rc, "retrieve.kvstar_select: layer %d at the prompt's end: %s",
                        c->layer, kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

static void seq_free(const kw_rstate *st, sseq *ss)
{
    for (int l = 0; ss->ly && l < st->cfg.n_layer; l++) {
        slayer *ly = &ss->ly[l];
        free(ly->chan), free(ly->sub), free(ly->pick), free(ly->qbuf);
    }
    free(ss->ly), free(ss->score), free(ss->sel), free(ss->ppos);
    kw__keys_read_free(&ss->kr);
    free(ss);
}

static int ks_seq_open(void *stp, kw_seq *s, int idx)
{
    const kw_rstate *st = stp;
    const kw_model_config *cf = &st->cfg;
    const kw_kvstar_opts *o = SP(st);
    sseq *ss = calloc(1, sizeof *ss);
    if (!ss)
        return KW_ENOMEM;
    kw__kvstar_blocks(o, s->n_prompt, &ss->n_full, &ss->n_mid, &ss->k);
    ss->first_mid = o->init_window;
    ss->active = ss->n_mid > 0 && ss->k < ss->n_mid;
    int dk = dk_of(st), nsub = ss->n_mid * (o->block / o->inner_token_merge);
    if (dk < 1) {
        free(ss);
        return kw_seq_fail(s, KW_EINVAL, "retrieve.kvstar_select: dim_prune_ratio %g keeps "
                           "%d of head_dim %d channels; want at least 1", o->dim_prune_ratio,
                           dk, cf->head_dim);
    }
    bool ok = true;
    if (ss->active) {
        ok = (ss->ly = calloc((size_t)cf->n_layer, sizeof *ss->ly))
             && (ss->score = malloc(sizeof(float) * (size_t)ss->n_mid))
             && (ss->sel = malloc(sizeof(int32_t) * (size_t)ss->n_mid));
        for (int l = 0; ok && l < cf->n_layer; l++) {
            slayer *ly = &ss->ly[l];
            ok = (ly->chan = malloc(sizeof(int32_t) * (size_t)cf->n_head_kv * dk))
                 && (ly->sub = malloc(sizeof(uint16_t) * (size_t)cf->n_head_kv * nsub * dk))
                 && (ly->pick = calloc((size_t)ss->n_mid, 1))
                 && (ly->qbuf = malloc(sizeof(float) * (size_t)o->retrieval_stride
                                       * cf->n_head * cf->head_dim));
        }
    }
    if (!ok) {
        seq_free(st, ss);
        return KW_ENOMEM;
    }
    s->hook_seq[idx] = ss;
    return 0;
}

static void ks_seq_close(void *stp, kw_seq *s, int idx)
{
    if (s->hook_seq[idx])
        seq_free(stp, s->hook_seq[idx]);
    s->hook_seq[idx] = NULL;
}

const kw_kvhook kw__kvstar_select_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_SELECT,
    .needs = KW_NEED_HOST_Q, .name = "retrieve.kvstar_select", .seq_open = ks_seq_open,
    .select = ks_select, .after_attn = ks_after_attn, .seq_close = ks_seq_close,
    .tail_only = false, /* the prompt's last queries may lie in earlier chunks */
};

int kw__kvstar_select_method(const kw_kvstar_opts *o, kw_kvmethod **out, kw_error *err)
{
    *out = NULL;
    const char *bad = kw__kvstar_bad(o);
    if (bad)
        return kw_error_set(err, KW_EINVAL, "retrieve.kvstar_select: %s (block %d, "
                            "inner_token_merge %d, init_window %d, local_window %d, "
                            "sparse_ratio %g, dim_prune_ratio %g, retrieval_stride %d)", bad,
                            o->block, o->inner_token_merge, o->init_window, o->local_window,
                            o->sparse_ratio, o->dim_prune_ratio, o->retrieval_stride);
    sparams *p;
    int rc = kw__rmethod_new(&kw__kvstar_select_hook, "retrieve.kvstar_select", sizeof *p, NULL,
                             out, (void **)&p, err);
    if (rc == 0) {
        p->o = *o;
        p->o.store = NULL; /* no store */
    }
    return rc;
}

/* ---- the operator ---- */

static const kw_port outs[] = {
    {"kvmethod", KW_T_KVMETHOD, KW_ONCE, 0, "KVStar's block selection, a SELECT hook"},
};
static const kw_param_spec params[] = {
    {"block", KW_PARAM_INT, "128", 1, 65535, NULL, "tokens per block (the unit of voting)"},
    {"init_window", KW_PARAM_INT, "1", 0, 1 << 20, NULL, "first blocks always read"},
    {"local_window", KW_PARAM_INT, "2", 0, 1 << 20, NULL,
     "last whole prompt blocks always read (the partial last block and generated tokens "
     "too)"},
    {"sparse_ratio", KW_PARAM_FLOAT, "0.25", 1e-6, 1, NULL,
     "fraction of the middle blocks read: k = ceil(middle blocks x sparse_ratio)"},
    {"dim_prune_ratio", KW_PARAM_FLOAT, "0.25", 1e-6, 1, NULL,
     "channels kept per KV head for the vote: round(head_dim x dim_prune_ratio), those of "
     "largest mean |K|"},
    {"inner_token_merge", KW_PARAM_INT, "2", 1, 65535, NULL,
     "consecutive tokens averaged into one sub-vector (divides block)"},
    {"retrieval_stride", KW_PARAM_INT, "8", 1, 1 << 16, NULL,
     "queries per vote and decode steps between votes; a vote holds from the next step"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw_kvstar_opts o = kw__kvstar_defaults();
    kw__kvstar_params(c, &o);
    kw_kvmethod *m;
    kw_error err = {0};
    int rc = kw__kvstar_select_method(&o, &m, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    kw_ctx_record(c, "kv_memory", "unchanged: selection reads fewer tokens (over "
                  "compress.deltakv, DeltaKV's saving stays and fewer tokens are rebuilt)");
    return kw_task_out(t, 0, kw_value_kvmethod(m));
}

const kw_op kw_op_retrieve_kvstar_select = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "retrieve.kvstar_select", .version = 1,
    .doc = "KVStar's block selection without its block store (SELECT, by position): at the "
           "prompt's end the middle blocks (between the first init_window and the last "
           "local_window whole blocks of `block` tokens) get KVStar's representation from "
           "the keys attention read, and the prompt's last retrieval_stride queries vote "
           "for ceil(sparse_ratio x middle) of them; every retrieval_stride decode steps "
           "the steps' queries vote again, the pick holding from the next step. Each "
           "decode step reads the windows, the picked blocks, the partial block and the "
           "generated tokens. Before compress.deltakv in a decode stage's inputs it is "
           "KVStar's selection over DeltaKV's store: DeltaKV rebuilds only the picked "
           "tokens it holds. Saves no memory by itself.",
    .lanes = KW_LANE_CPU, .outputs = outs, .n_outputs = 1, .params = params,
    .n_params = sizeof params / sizeof *params, .run = run, .kv_roles = KW_ROLE_SELECT,
};
