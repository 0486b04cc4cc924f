/* retrieve.kvstar — KVStar's multi-step sparse retrieval with offloading (METHODS.md), an
 * EVICT + STORE hook (CPU and CUDA engines).
 *
 * Blocks. A prompt of n tokens has n / block whole blocks; the first init_window and the
 * last local_window of them, the prompt's partial last block and every generated token
 * stay in the pool; the blocks between them are the middle ones, of which k =
 * ceil(n_middle x sparse_ratio) are in the pool at any time.
 *
 * At the end of prefill, layer by layer:
 *  - every whole block is written to the block store (store/kvstore.h: one file per block
 *    named by its hash, [L0 K][L0 V][L1 K]..., each layer's slab (block, n_kv, head_dim)
 *    f32). A block's hash chains SHA-256 over the previous block's hash and its layer-0
 *    K rows (which depend on the tokens and their positions only), rooted in the model's
 *    shapes: equal prefixes name equal files, so sequences of one prompt (sweep cells,
 *    repeats) write a block once and share it, and a `persist`ed store is reused by
 *    later runs of the same model;
 *  - the block representation: per KV head, the round(head_dim x dim_prune_ratio)
 *    channels of largest mean |K| over the middle blocks' tokens (K after RoPE), and each
 *    group of inner_token_merge consecutive tokens averaged over those channels, in fp16
 *    (host memory, counted in meta_bytes);
 *  - the first vote, with the prompt's last retrieval_stride queries (kw_k_kvstar_vote:
 *    no 1/sqrt(d), a softmax over all sub-vectors per query and head, a block's score is
 *    the mass of its sub-vectors summed over queries and heads; top k, ties to the
 *    earlier block), and the middle blocks it did not pick leave the pool
 *    (kw_kvseq_keep): their pages are freed.
 *
 * Decoding, stride s: the query of every decode step is kept. At step j*s (j >= 1) the
 * vote over steps (j-1)*s+1 .. j*s starts on a retrieval thread; at step (j+1)*s its
 * result is taken, and the blocks it picked that are not in the pool start loading from
 * the store (pread, on a thread); before attention of step (j+1)*s+1 the loads are waited
 * for, the middle blocks no longer picked leave the pool and the loaded ones are
 * appended (with their positions). So a selection acts about two strides after its
 * queries, and retrieval and reads run behind decoding. Blocks that stay picked are not
 * read again (incremental transfer): load_bytes counts what was read, load_bytes_full
 * what reading each selection whole would have read. The mode is deterministic: the step
 * waits for late host work, so results do not depend on CPU speed.
 *
 * Decisions where the publication is silent: the channel importance is taken over the
 * middle blocks' tokens (those the representation covers); a prompt with no middle block,
 * or with k >= its middle blocks, is left whole (nothing to offload); generated tokens
 * are never offloaded; the pool's rows go to the store as f32 (an int8 pool's rows are
 * dequantized, and quantized again, to the same values, when they come back).
 *
 * Device pools (the CUDA engine): the same steps, the pool's rows read and written through
 * its device callbacks (kvpool.h: one copy per table read, so the prompt's end reads
 * KSTAR_GROUP blocks of a KV head at a time; the loaded blocks go back to the device's
 * pages, as bf16 or int8). Pools that store K before RoPE are refused. The dense view
 * over what the pool holds is what attention reads; a SELECT hook stacked after KVStar
 * chooses among it. Block files are removed when the last sequence using them closes,
 * unless `persist`; the default store is a new directory under $TMPDIR, removed at the
 * end of the run. $KVWEAVE_KVSTAR_TIMES: the phases' seconds on stderr at the end.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "keys.h"
#include "kvstar.h"
#include "kvstore.h"
#include "kvweave/op.h"
#include "kvweave/tensor.h"
#include "kvweave/util.h"
#include "shared.h"
#include "taskpool.h"

typedef struct kparams {
    kw_kvstar_opts o;
    char *store; /* o.store points here */
} kparams;

/* ---- state ---- */

typedef struct kblk { /* a block file some open sequence uses */
    kw_blockid id;
    int refs;
    bool ours; /* this run created it */
} kblk;

typedef struct kstate {
    const kparams *p;
    kw_model_config cfg;
    kw_kvstore *store;
    bool tmp_root;       /* the store's root is ours to remove */
    int64_t slab;        /* bytes of one layer of one block: K then V */
    int dk, per_block;   /* kept channels; sub-vectors per block */
    char root_hex[65];   /* the hash chain's root */
    kblk *blk;
    int n_blk, cap_blk;
    kw_tpool pool;
    bool pool_on;
    /* seconds spent per phase, summed over sequences and layers: printed to stderr when
     * the state is freed if $KVWEAVE_KVSTAR_TIMES is set (where a slow run spends its
     * time) */
    double t_gather, t_register, t_write, t_repr, t_vote, t_wait, t_drop, t_append, t_read;
} kstate;

typedef struct kseq kseq;

typedef struct kretr { /* a vote */
    kw_ttask t;
    const kstate *st;
    const int32_t *chan;
    const uint16_t *sub;
    int n_mid, k, nq;
    float *q;     /* (stride, n_head, head_dim) a copy of the queries */
    float *score; /* (n_mid) */
    int32_t *sel; /* (k) middle blocks picked, increasing */
} kretr;

typedef struct kload { /* block reads for one layer */
    kw_ttask t;
    const kstate *st;
    const kseq *ks;
    int layer, n;
    int32_t *blk; /* (n) middle blocks to read */
    float *buf;   /* (n, slab floats) */
    double secs;  /* the reads' time */
    kw_error err;
} kload;

typedef struct klayer {
    int32_t *chan;  /* (n_kv, dk) */
    uint16_t *sub;  /* (n_kv, n_mid * per_block, dk) fp16 */
    uint8_t *res;   /* (n_mid) 1: in the pool (or loading, to be appended) */
    uint8_t *drop;  /* (n_mid) 1: leaves the pool at the next apply */
    float *qbuf;    /* (stride, n_head, head_dim) */
    int nq_pre;     /* prompt queries in qbuf */
    kretr r;
    kload ld;
} klayer;

struct kseq {
    bool active;
    int n_full, n_mid, k, first_mid;
    kw_blockid *ids; /* (n_full) */
    uint8_t *writes; /* (n_full) this sequence writes the block's file */
    int n_ids;       /* blocks registered (references taken) */
    klayer *ly;      /* (n_layer) */
    /* scratch of the prompt's end, held from its first layer to its last: */
    float *rows;     /* (rows_n = max(block, middle tokens), head_dim) */
    float *slabbuf;  /* (group) slabs */
    int rows_n, group; /* group: blocks read together (rows holds them) */
    int32_t *keep;
    int64_t keep_cap;
};

#define KP(st) (&(st)->p->o)

void kw__kvstar_blocks(const kw_kvstar_opts *o, int n_prompt, int *n_full, int *n_mid, int *k)
{
    *n_full = n_prompt / o->block;
    int m = *n_full - o->init_window - o->local_window;
    *n_mid = m > 0 ? m : 0;
    *k = (int)ceil(*n_mid * o->sparse_ratio - 1e-9);
}

/* ---- representation ---- */

void kw__kvstar_represent(const float *k, int n_tok, int head_dim, int dk, int merge,
                          int32_t *chan, uint16_t *sub)
{
    double imp[head_dim];
    for (int c = 0; c < head_dim; c++)
        imp[c] = 0;
    for (int t = 0; t < n_tok; t++)
        for (int c = 0; c < head_dim; c++)
            imp[c] += fabsf(k[(int64_t)t * head_dim + c]);
    /* the dk largest (ties to the lower channel), listed in increasing order */
    int n = 0;
    for (int c = 0; c < head_dim; c++) {
        int before = 0;
        for (int e = 0; e < head_dim; e++)
            before += imp[e] > imp[c] || (imp[e] == imp[c] && e < c);
        if (before < dk)
            chan[n++] = c;
    }
    for (int s = 0; s < n_tok / merge; s++)
        for (int c = 0; c < dk; c++) {
            float a = 0;
            for (int t = 0; t < merge; t++)
                a += k[((int64_t)s * merge + t) * head_dim + chan[c]];
            sub[(int64_t)s * dk + c] = kw_f32_to_f16(a / (float)merge);
        }
}

/* ---- block registry ---- */

static kblk *blk_find(kstate *st, kw_blockid id)
{
    for (int i = 0; i < st->n_blk; i++)
        if (st->blk[i].id.hi == id.hi && st->blk[i].id.lo == id.lo)
            return &st->blk[i];
    return NULL;
}

static void blk_release(kstate *st, kw_blockid id)
{
    kblk *b = blk_find(st, id);
    if (!b || --b->refs > 0)
        return;
    if (b->ours && !KP(st)->persist) {
        kw_kvstore_remove(st->store, id, false);
        kw_kvstore_remove(st->store, id, true); /* a writer that failed midway */
        char dir[4096];
        if (kw_kvstore_path(st->store, id, false, dir, sizeof dir) == 0) {
            *strrchr(dir, '/') = 0;
            rmdir(dir); /* only when empty */
        }
    }
    *b = st->blk[--st->n_blk];
}

/* ---- tasks ---- */

static int retr_run(kw_ttask *t)
{
    kretr *r = (kretr *)t;
    const kstate *st = r->st;
    const kw_model_config *c = &st->cfg;
    int rc = kw_k_kvstar_vote(r->q, r->nq, c->n_head, c->n_head_kv, c->head_dim, r->chan,
                              st->dk, r->sub, r->n_mid * st->per_block, st->per_block, r->score);
    if (rc == 0)
        rc = kw_k_topk(KW_BK_CPU, NULL, r->score, 1, r->n_mid, r->k, r->sel);
    return rc;
}

static int load_run(kw_ttask *t)
{
    kload *l = (kload *)t;
    const kstate *st = l->st;
    int64_t nf = st->slab / (int64_t)sizeof(float);
    double t0 = kw_now();
    for (int i = 0; i < l->n; i++) {
        kw_blockid id = l->ks->ids[l->ks->first_mid + l->blk[i]];
        int rc = kw_kvstore_read(st->store, id, (int64_t)l->layer * st->slab, l->buf + i * nf,
                                 st->slab, &l->err);
        if (rc < 0)
            return rc;
    }
    l->secs = kw_now() - t0;
    return 0;
}

/* ---- pool access ---- */

/* K (which 0) or V (1) of prompt block b of layer l as (block, n_kv, head_dim) into out. */
/* Blocks read together at the prompt's end: a table read per KV head and K or V covers
 * this many blocks (on a device pool each read is a round trip to the device). */
#define KSTAR_GROUP 16

/* The slabs (K then V, each (block, n_kv, head_dim)) of layer l's blocks b0 .. b0+nb-1
 * into out (nb slabs), each KV head's rows of all nb blocks read at once. */
static int gather_slabs(const kstate *st, kseq *ks, const kw_kvseq *kv, int l, int b0, int nb,
                        float *out)
{
    int B = KP(st)->block, Hk = st->cfg.n_head_kv, hd = st->cfg.head_dim;
    int64_t nf = st->slab / (int64_t)sizeof(float), half = nf / 2;
    for (int which = 0; which < 2; which++)
        for (int h = 0; h < Hk; h++) {
            int rc = kw_kvseq_rows_f32(kv, l, h, b0 * B, nb * B, which, ks->rows);
            if (rc < 0)
                return rc;
            for (int t = 0; t < nb * B; t++)
                memcpy(out + (t / B) * nf + which * half + ((int64_t)(t % B) * Hk + h) * hd,
                       ks->rows + (int64_t)t * hd, sizeof(float) * (size_t)hd);
        }
    return 0;
}

/* Keeps the stored tokens of layer l except those of the middle blocks marked in drop. */
static int drop_blocks(const kstate *st, kseq *ks, kw_kvseq *kv, const kw_kvmem *mem, int l,
                       const uint8_t *drop)
{
    int B = KP(st)->block;
    int64_t lo = (int64_t)ks->first_mid * B, hi = lo + (int64_t)ks->n_mid * B;
    for (int h = 0; h < st->cfg.n_head_kv; h++) {
        int n = kw_kvseq_len(kv, l, h), nk = 0;
        int rc = kw_grow((void **)&ks->keep, &ks->keep_cap, n, sizeof(int32_t));
        if (rc < 0)
            return rc;
        for (int j = 0; j < n; j++) {
            int32_t p = kw__key_pos(kv, mem, l, h, j);
            if (p < lo || p >= hi || !drop[(p - lo) / B])
                ks->keep[nk++] = j;
        }
        if (nk < n && (rc = kw_kvseq_keep(kv, l, h, ks->keep, nk)) < 0)
            return rc;
    }
    return 0;
}

/* ---- the hook ---- */

/* Names block b by the hash chain (hex: the previous block's hash, then b's), from its
 * layer-0 K rows kslab, takes a reference to it and says whether this sequence writes
 * its file; hbuf: scratch of 64 + the K rows' bytes. */
static int register_block(kstate *st, kseq *ks, kw_seq *s, int b, const float *kslab,
                          char *hbuf, char hex[65])
{
    const kw_model_config *c = &st->cfg;
    size_t kbytes = (size_t)KP(st)->block * c->n_head_kv * c->head_dim * sizeof(float);
    memcpy(hbuf, hex, 64);
    memcpy(hbuf + 64, kslab, kbytes);
    kw_sha256_hex(hbuf, 64 + kbytes, hex);
    kw_blockid id = kw_blockid_from_hex(hex);
    ks->ids[b] = id;
    kblk *e = blk_find(st, id);
    if (e) { /* another open sequence has it (it writes it, or it was on disk) */
        e->refs++;
        ks->n_ids = b + 1;
        return 0;
    }
    kw_error err = {0};
    int have = kw_kvstore_lookup(st->store, id, &err);
    if (have == 0)
        have = kw_kvstore_create(st->store, id, &err);
    else if (have == 1)
        have = 2;
    if (have < 0)
        return kw_seq_fail(s, have, "retrieve.kvstar: %s", err.msg);
    if (st->n_blk == st->cap_blk) {
        int64_t cap = st->cap_blk;
        int rc = kw_grow((void **)&st->blk, &cap, st->n_blk + 1, sizeof *st->blk);
        if (rc < 0) {
            kw_kvstore_remove(st->store, id, true);
            return rc;
        }
        st->cap_blk = (int)cap;
    }
    st->blk[st->n_blk++] = (kblk){.id = id, .refs = 1, .ours = have == 0};
    ks->writes[b] = have == 0;
    ks->n_ids = b + 1;
    return 0;
}

static int prefill_end_seq(kstate *st, kw_lctx *c, kw_seq *s, kseq *ks)
{
    const kw_model_config *cf = &st->cfg;
    const kw_kvpool_opts *po = kw_kvpool_options(c->pool);
    int l = c->layer, B = KP(st)->block, Hk = cf->n_head_kv, hd = cf->head_dim, rc;
    if (po->pre_rope)
        return kw_seq_fail(s, KW_ENOSYS, "retrieve.kvstar: a pool that stores K before RoPE "
                           "is not supported (its votes use K after RoPE)");
    for (int h = 0; h < Hk; h++)
        if (kw_kvseq_len(s->kv, l, h) != s->n_prompt)
            return kw_seq_fail(s, KW_EINVAL, "retrieve.kvstar: layer %d KV head %d holds %d "
                               "tokens at the prompt's end, want all %d (another method "
                               "dropped some)", l, h, kw_kvseq_len(s->kv, l, h), s->n_prompt);
    /* layer 0 names every whole block (a hash chain over their K rows); then this
     * layer's slab of every block this sequence writes goes to the store, the blocks
     * read KSTAR_GROUP at a time */
    kw_error err = {0};
    int64_t nf = st->slab / (int64_t)sizeof(float);
    char hex[65], *hbuf = NULL;
    if (!ks->rows && !(ks->rows = malloc(sizeof(float) * (size_t)ks->rows_n * hd)))
        return KW_ENOMEM;
    if (!ks->slabbuf && !(ks->slabbuf = malloc((size_t)ks->group * (size_t)st->slab)))
        return KW_ENOMEM;
    if (l == 0) {
        memcpy(hex, st->root_hex, sizeof hex);
        if (!(hbuf = malloc(64 + (size_t)(st->slab / 2))))
            return KW_ENOMEM;
    }
    rc = 0;
    for (int b0 = 0; b0 < ks->n_full && rc == 0; b0 += ks->group) {
        int nb = ks->n_full - b0 < ks->group ? ks->n_full - b0 : ks->group, any = l == 0;
        for (int b = b0; b < b0 + nb; b++)
            any |= ks->writes[b];
        double t0 = kw_now();
        if (!any || (rc = gather_slabs(st, ks, s->kv, l, b0, nb, ks->slabbuf)) < 0)
            continue;
        double t1 = kw_now();
        for (int b = b0; l == 0 && b < b0 + nb && rc == 0; b++)
            rc = register_block(st, ks, s, b, ks->slabbuf + (b - b0) * nf, hbuf, hex);
        double t2 = kw_now();
        st->t_gather += t1 - t0, st->t_register += t2 - t1;
        for (int b = b0; b < b0 + nb && rc == 0; b++) {
            if (!ks->writes[b])
                continue;
            if ((rc = kw_kvstore_write(st->store, ks->ids[b], (int64_t)l * st->slab,
                                       ks->slabbuf + (b - b0) * nf, st->slab, &err)) < 0
                || (l == cf->n_layer - 1
                    && (rc = kw_kvstore_commit(st->store, ks->ids[b], &err)) < 0))
                rc = kw_seq_fail(s, rc, "retrieve.kvstar: %s", err.msg);
            else
                s->store_bytes += st->slab;
        }
        st->t_write += kw_now() - t2;
    }
    free(hbuf);
    if (rc < 0)
        return rc;
    /* the representation of the middle blocks */
    double t0 = kw_now();
    klayer *ly = &ks->ly[l];
    int nt = ks->n_mid * B, nsub = ks->n_mid * st->per_block;
    for (int h = 0; h < Hk; h++) {
        if ((rc = kw_kvseq_rows_f32(s->kv, l, h, ks->first_mid * B, nt, 0, ks->rows)) < 0)
            return rc;
        kw__kvstar_represent(ks->rows, nt, hd, st->dk, KP(st)->inner_token_merge,
                             ly->chan + (int64_t)h * st->dk, ly->sub + (int64_t)h * nsub * st->dk);
    }
    s->meta_bytes += (int64_t)Hk * st->dk * ((int64_t)sizeof(int32_t) + (int64_t)nsub * 2);
    double t1 = kw_now();
    st->t_repr += t1 - t0;
    /* the first vote, with the prompt's last queries; the blocks it did not pick go */
    ly->r.nq = ly->nq_pre;
    memcpy(ly->r.q, ly->qbuf, sizeof(float) * (size_t)ly->nq_pre * cf->n_head * hd);
    kw_tpool_submit(&st->pool, &ly->r.t);
    if ((rc = kw_tpool_wait(&st->pool, &ly->r.t, NULL)) < 0)
        return rc;
    for (int m = 0; m < ks->n_mid; m++)
        ly->res[m] = 0;
    for (int i = 0; i < ks->k; i++)
        ly->res[ly->r.sel[i]] = 1;
    for (int m = 0; m < ks->n_mid; m++)
        ly->drop[m] = !ly->res[m];
    st->t_vote += kw_now() - t1;
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    if (l == cf->n_layer - 1) { /* the prompt's end is over: its scratch goes */
        free(ks->rows), free(ks->slabbuf);
        ks->rows = NULL, ks->slabbuf = NULL;
    }
    return drop_blocks(st, ks, s->kv, &mem, l, ly->drop);
}

static int kv_prefill_end(void *stp, kw_lctx *c, const kw_batch *b)
{
    kstate *st = stp;
    int worst = 0;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *s = b->seqs[i];
        kseq *ks = s->hook_seq[c->hook_index];
        if (!ks->active)
            continue;
        int rc = prefill_end_seq(st, c, s, ks);
        if (rc < 0 && worst == 0)
            worst = rc;
        if (rc < 0)
            kw_seq_fail(s, rc, "retrieve.kvstar: layer %d at the prompt's end: %s", c->layer,
                 kw_strerror(rc));
    }
    return worst;
}

/* The loads of the last vote are in: the middle blocks it dropped leave the pool, the
 * loaded ones are appended, and the view is rebuilt over what the pool holds. */
static int apply(kstate *st, kw_lctx *c, kw_seq *s, kseq *ks, kw_view *out)
{
    klayer *ly = &ks->ly[c->layer];
    if (!kw_view_is_dense(out, s->kv, c->layer))
        return kw_seq_fail(s, KW_ENOSYS, "retrieve.kvstar: a SELECT hook before it in the "
                           "stack chose tokens; put retrieve.kvstar first (SELECT hooks after "
                           "it choose among what it keeps)");
    double t0 = kw_now();
    int rc = kw_tpool_wait(&st->pool, &ly->ld.t, &s->wait_s);
    double t1 = kw_now();
    st->t_wait += t1 - t0, st->t_read += ly->ld.secs;
    if (rc < 0) {
        free(ly->ld.buf);
        ly->ld.buf = NULL;
        return kw_seq_fail(s, rc, "retrieve.kvstar: %s", ly->ld.err.msg[0] ? ly->ld.err.msg
                                                                     : kw_strerror(rc));
    }
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int B = KP(st)->block, l = c->layer;
    if ((rc = drop_blocks(st, ks, s->kv, &mem, l, ly->drop)) < 0)
        return rc;
    double t2 = kw_now();
    st->t_drop += t2 - t1;
    int64_t nf = st->slab / (int64_t)sizeof(float), half = nf / 2;
    int32_t pos[B];
    for (int i = 0; i < ly->ld.n && rc == 0; i++) {
        int64_t p0 = (int64_t)(ks->first_mid + ly->ld.blk[i]) * B;
        for (int t = 0; t < B; t++)
            pos[t] = (int32_t)(p0 + t);
        const float *k = ly->ld.buf + i * nf;
        rc = kw_kvseq_append(s->kv, l, k, k + half, pos, B);
    }
    free(ly->ld.buf);
    ly->ld.buf = NULL;
    st->t_append += kw_now() - t2;
    if (rc < 0)
        return rc;
    for (int m = 0; m < ks->n_mid; m++)
        ly->drop[m] = 0;
    return kw_view_dense(out, s->kv, l, false);
}

/* Takes the finished vote of layer l and starts reading the blocks it added. */
static int take_vote(kstate *st, kw_seq *s, kseq *ks, int l)
{
    klayer *ly = &ks->ly[l];
    int rc = kw_tpool_wait(&st->pool, &ly->r.t, &s->wait_s);
    if (rc < 0)
        return kw_seq_fail(s, rc, "retrieve.kvstar: the vote of layer %d failed: %s", l,
                    kw_strerror(rc));
    uint8_t *want = ly->drop; /* scratch: 1 for picked blocks */
    for (int m = 0; m < ks->n_mid; m++)
        want[m] = 0;
    for (int i = 0; i < ks->k; i++)
        want[ly->r.sel[i]] = 1;
    int n_add = 0;
    for (int m = 0; m < ks->n_mid; m++)
        n_add += want[m] && !ly->res[m];
    s->load_bytes_full += (int64_t)ks->k * st->slab;
    if (n_add == 0) { /* the same k blocks: none leaves either */
        memset(ly->drop, 0, (size_t)ks->n_mid);
        return 0;
    }
    ly->ld.buf = malloc((size_t)n_add * (size_t)st->slab);
    if (!ly->ld.buf)
        return KW_ENOMEM;
    ly->ld.n = 0;
    for (int m = 0; m < ks->n_mid; m++) {
        uint8_t w = want[m]; /* want is drop's memory */
        if (w && !ly->res[m])
            ly->ld.blk[ly->ld.n++] = m;
        ly->drop[m] = !w && ly->res[m];
        ly->res[m] = w;
    }
    s->load_bytes += (int64_t)n_add * st->slab;
    ly->ld.err.msg[0] = 0;
    kw_tpool_submit(&st->pool, &ly->ld.t);
    return 0;
}

static int kv_select(void *stp, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out)
{
    kstate *st = stp;
    const kw_model_config *cf = &st->cfg;
    int l = c->layer, S = KP(st)->retrieval_stride, worst = 0;
    size_t qsz = sizeof(float) * (size_t)cf->n_head * cf->head_dim;
    for (int i = 0; i < b->n_seq; i++) {
        kw_seq *s = b->seqs[i];
        kseq *ks = s->hook_seq[c->hook_index];
        if (!ks->active)
            continue;
        klayer *ly = &ks->ly[l];
        int rc = 0;
        for (int t = b->tok_first[i]; t < b->tok_first[i] + b->tok_n[i] && rc == 0; t++) {
            int32_t p = b->pos[t];
            const float *qt = q + (int64_t)t * cf->n_head * cf->head_dim;
            if (kw__kvstar_prompt_query(ly->qbuf, &ly->nq_pre, s->n_prompt, S, p, qt,
                                        cf->n_head * cf->head_dim))
                continue; /* the prompt's last S queries, for the first vote */
            int d = p - s->n_prompt + 1; /* decode step */
            /* a vote that changed nothing started no load: there is nothing to apply */
            if (d > 2 * S && (d - 1) % S == 0 && ly->ld.t.queued)
                rc = apply(st, c, s, ks, out[i]);
            memcpy(ly->qbuf + (size_t)((d - 1) % S) * cf->n_head * cf->head_dim, qt, qsz);
            if (rc == 0 && d % S == 0) {
                if (ly->r.t.queued)
                    rc = take_vote(st, s, ks, l);
                if (rc == 0) {
                    ly->r.nq = S;
                    memcpy(ly->r.q, ly->qbuf, qsz * (size_t)S);
                    kw_tpool_submit(&st->pool, &ly->r.t);
                }
            }
        }
        if (rc < 0) {
            kw_seq_fail(s, rc, "retrieve.kvstar: layer %d: %s", l, kw_strerror(rc));
            worst = worst ? worst : rc;
        }
    }
    return worst;
}

static void seq_free(kstate *st, kseq *ks)
{
    for (int l = 0; ks->ly && l < st->cfg.n_layer; l++) {
        klayer *ly = &ks->ly[l];
        kw_tpool_wait(&st->pool, &ly->r.t, NULL);
        kw_tpool_wait(&st->pool, &ly->ld.t, NULL);
        free(ly->chan), free(ly->sub), free(ly->res), free(ly->drop), free(ly->qbuf);
        free(ly->r.q), free(ly->r.score), free(ly->r.sel), free(ly->ld.blk), free(ly->ld.buf);
    }
    for (int b = 0; b < ks->n_ids; b++)
        blk_release(st, ks->ids[b]);
    free(ks->ly), free(ks->ids), free(ks->writes), free(ks->rows), free(ks->slabbuf);
    free(ks->keep);
    free(ks);
}

static int kv_seq_open(void *stp, kw_seq *s, int idx)
{
    kstate *st = stp;
    const kw_model_config *cf = &st->cfg;
    int L = cf->n_layer, Hk = cf->n_head_kv, hd = cf->head_dim, B = KP(st)->block;
    int S = KP(st)->retrieval_stride;
    kseq *ks = calloc(1, sizeof *ks);
    if (!ks)
        return KW_ENOMEM;
    kw__kvstar_blocks(KP(st), s->n_prompt, &ks->n_full, &ks->n_mid, &ks->k);
    ks->first_mid = KP(st)->init_window;
    ks->active = ks->n_mid > 0 && ks->k < ks->n_mid;
    s->hook_seq[idx] = ks;
    if (!ks->active)
        return 0;
    int nsub = ks->n_mid * st->per_block, rows = ks->n_mid * B > B ? ks->n_mid * B : B;
    ks->group = rows / B < KSTAR_GROUP ? rows / B : KSTAR_GROUP;
    bool ok = (ks->ly = calloc((size_t)L, sizeof *ks->ly))
              && (ks->ids = calloc((size_t)ks->n_full, sizeof *ks->ids))
              && (ks->writes = calloc((size_t)ks->n_full, 1));
    ks->rows_n = rows;
    for (int l = 0; ok && l < L; l++) {
        klayer *ly = &ks->ly[l];
        ly->r = (kretr){.t.fn = retr_run, .st = st, .n_mid = ks->n_mid, .k = ks->k};
        ly->ld = (kload){.t.fn = load_run, .st = st, .ks = ks, .layer = l};
        ok = (ly->chan = malloc(sizeof(int32_t) * (size_t)Hk * st->dk))
             && (ly->sub = malloc(sizeof(uint16_t) * (size_t)Hk * nsub * st->dk))
             && (ly->res = calloc((size_t)ks->n_mid, 1))
             && (ly->drop = calloc((size_t)ks->n_mid, 1))
             && (ly->qbuf = malloc(sizeof(float) * (size_t)S * cf->n_head * hd))
             && (ly->r.q = malloc(sizeof(float) * (size_t)S * cf->n_head * hd))
             && (ly->r.score = malloc(sizeof(float) * (size_t)ks->n_mid))
             && (ly->r.sel = malloc(sizeof(int32_t) * (size_t)(ks->k > 0 ? ks->k : 1)))
             && (ly->ld.blk = malloc(sizeof(int32_t) * (size_t)ks->n_mid));
        ly->r.chan = ly->chan;
        ly->r.sub = ly->sub;
    }
    if (!ok) {
        seq_free(st, ks);
        s->hook_seq[idx] = NULL;
        return KW_ENOMEM;
    }
    return 0;
}

static void kv_seq_close(void *stp, kw_seq *s, int idx)
{
    kseq *ks = s->hook_seq[idx];
    if (ks)
        seq_free(stp, ks);
    s->hook_seq[idx] = NULL;
}

const kw_kvhook kw__kvstar_hook = {
    .size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI, .roles = KW_ROLE_EVICT | KW_ROLE_STORE,
    .needs = KW_NEED_HOST_Q, .name = "retrieve.kvstar", .seq_open = kv_seq_open,
    .select = kv_select, .on_prefill_end = kv_prefill_end, .seq_close = kv_seq_close,
    .tail_only = false, /* keeps the prompt's last queries from every chunk */
};

/* ---- method and state ---- */

static void params_free(void *pp)
{
    kparams *p = pp;
    if (p)
        free(p->store);
    free(p);
}

static void state_free(void *sp)
{
    kstate *st = sp;
    if (!st)
        return;
    if (st->pool_on)
        kw_tpool_stop(&st->pool);
    if (getenv("KVWEAVE_KVSTAR_TIMES"))
        fprintf(stderr, "retrieve.kvstar times (s): prompt end: read %.3f, hash %.3f, write "
                "%.3f, represent %.3f, first vote %.3f; decode: wait %.3f (reads %.3f on "
                "threads), drop %.3f, append %.3f\n", st->t_gather, st->t_register,
                st->t_write, st->t_repr, st->t_vote, st->t_wait, st->t_read, st->t_drop,
                st->t_append);
    if (st->store && st->tmp_root) {
        char *root = strdup(kw_kvstore_root(st->store)), *data = NULL;
        if (root && asprintf(&data, "%s/data", root) >= 0) {
            rmdir(data); /* empty once every sequence closed */
            rmdir(root);
        }
        free(data);
        free(root);
    }
    kw_kvstore_free(st->store);
    free(st->blk);
    free(st);
}

static int state_new(const void *pp, const kw_model_config *cfg, void **out, kw_error *err)
{
    const kparams *p = pp;
    const kw_kvstar_opts *o = &p->o;
    *out = NULL;
    int dk = (int)lround(cfg->head_dim * o->dim_prune_ratio);
    if (dk < 1 || dk > cfg->head_dim)
        return kw_error_set(err, KW_EINVAL, "retrieve.kvstar: dim_prune_ratio %g keeps %d of "
                            "head_dim %d channels; want at least 1", o->dim_prune_ratio, dk,
                            cfg->head_dim);
    kstate *st = calloc(1, sizeof *st);
    if (!st)
        return kw_error_set(err, KW_ENOMEM, "retrieve.kvstar: out of memory");
    st->p = p;
    st->cfg = *cfg;
    st->dk = dk;
    st->per_block = o->block / o->inner_token_merge;
    st->slab = 2 * (int64_t)o->block * cfg->n_head_kv * cfg->head_dim * (int64_t)sizeof(float);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "kvweave retrieve.kvstar block file v1: f32 slabs, layers %d, "
             "kv heads %d, head_dim %d, block %d, hidden %d", cfg->n_layer, cfg->n_head_kv,
             cfg->head_dim, o->block, cfg->n_embd);
    kw_sha256_hex(hdr, strlen(hdr), st->root_hex);
    char *root = NULL;
    int rc = 0;
    if (o->store && *o->store)
        root = strdup(o->store);
    else {
        const char *td = getenv("TMPDIR");
        if (asprintf(&root, "%s/kvweave-kvstar-XXXXXX", td && *td ? td : "/tmp") >= 0
            && !mkdtemp(root)) {
            rc = kw_error_set(err, KW_EIO, "retrieve.kvstar: cannot create a block store "
                              "under %s: %s (set `store`)", td && *td ? td : "/tmp",
                              strerror(errno));
        }
        st->tmp_root = true;
    }
    if (rc == 0 && !root)
        rc = kw_error_set(err, KW_ENOMEM, "retrieve.kvstar: out of memory");
    if (rc == 0)
        rc = kw_kvstore_open(root, cfg->n_layer * st->slab, &st->store, err);
    if (rc < 0 && st->tmp_root && root)
        rmdir(root);
    free(root);
    if (rc == 0) {
        st->pool_on = true;
        if (kw_tpool_start(&st->pool, o->threads) < 0)
            rc = kw_error_set(err, KW_EINTERNAL, "retrieve.kvstar: cannot start %d threads "
                              "(%d started)", o->threads, st->pool.n);
    }
    if (rc < 0) {
        state_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

kw_kvstar_opts kw__kvstar_defaults(void)
{
    return (kw_kvstar_opts){.block = 128, .init_window = 1, .local_window = 2,
                            .sparse_ratio = 0.25, .dim_prune_ratio = 0.25,
                            .inner_token_merge = 2, .retrieval_stride = 8, .threads = 2};
}

const char *kw__kvstar_bad(const kw_kvstar_opts *o)
{
    return o->block < 1 || o->block > 65535 ? "block: want 1..65535"
           : o->inner_token_merge < 1 || o->block % o->inner_token_merge
               ? "inner_token_merge: want a divisor of block"
           : o->init_window < 0 || o->local_window < 0 ? "init_window and local_window: want >= 0"
           : !(o->sparse_ratio > 0 && o->sparse_ratio <= 1) ? "sparse_ratio: want a value in (0, 1]"
           : !(o->dim_prune_ratio > 0 && o->dim_prune_ratio <= 1)
               ? "dim_prune_ratio: want a value in (0, 1]"
           : o->retrieval_stride < 1 ? "retrieval_stride: want >= 1"
                                     : NULL;
}

int kw__kvstar_method(const kw_kvstar_opts *o, kw_kvmethod **out, kw_error *err)
{
    *out = NULL;
    const char *bad = kw__kvstar_bad(o);
    if (!bad && (o->threads < 0 || o->threads > KW_KVSTAR_MAX_THREADS))
        bad = "threads: want 0..64";
    if (bad)
        return kw_error_set(err, KW_EINVAL, "retrieve.kvstar: %s (block %d, inner_token_merge "
                            "%d, init_window %d, local_window %d, sparse_ratio %g, "
                            "dim_prune_ratio %g, retrieval_stride %d, threads %d)", bad,
                            o->block, o->inner_token_merge, o->init_window, o->local_window,
                            o->sparse_ratio, o->dim_prune_ratio, o->retrieval_stride,
                            o->threads);
    kw_kvmethod *m = calloc(1, sizeof *m);
    kparams *p = calloc(1, sizeof *p);
    if (!m || !p || (o->store && !(p->store = strdup(o->store)))) {
        free(m);
        params_free(p);
        return kw_error_set(err, KW_ENOMEM, "retrieve.kvstar: out of memory");
    }
    p->o = *o;
    p->o.store = p->store;
    *m = (kw_kvmethod){.hook = &kw__kvstar_hook, .params = p, .params_free = params_free,
                       .state_new = state_new, .state_free = state_free};
    *out = m;
    return 0;
}
