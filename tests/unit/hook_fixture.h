/* A KV hook on one sequence of a small pool, for the hooks' tests (test_quest.c,
 * test_clusterkv.c, test_omnikv.c, test_kvstar.c, test_deltakv.c): open it with a
 * kvmethod, call the hook's select and after_attn for one token of the sequence, read a
 * view row back as stored indices. Include after cmocka.h. */
#ifndef KW_TEST_HOOK_FIXTURE_H
#define KW_TEST_HOOK_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/kvhook.h"
#include "mirror_device.h"

typedef struct hook_fx {
    kw_model_config cfg;
    kw_kvpool *pool;
    kw_seq seq;
    kw_kvmethod *m; /* owned */
    void *st;
    kw_view *w;
    uint64_t rs; /* the test's random stream */
    mirror *dev; /* a device_pages pool's stand-in device (NULL: an arena pool) */
} hook_fx;

/* A pool of n_pages pages of page_tokens for cfg, one sequence (seed, n_prompt) opened
 * by m's hook as hook 0; device: the pool keeps its payloads behind a device
 * (device_pages, the CUDA engine's kind of pool) and a host mirror stands in for it
 * (mirror_device.h), so a hook's run over it must match its run over an arena pool. */
static inline void hfx_open_on(hook_fx *fx, const kw_model_config *cfg, int page_tokens,
                               int n_pages, kw_kvmethod *m, uint64_t seed, int n_prompt,
                               bool device)
{
    memset(fx, 0, sizeof *fx);
    fx->cfg = *cfg;
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.page_tokens = page_tokens;
    po.n_pages = n_pages;
    po.device_pages = device;
    kw_error err = {0};
    assert_int_equal(kw_kvpool_new(&fx->cfg, &po, &fx->pool, &err), 0);
    if (device) {
        fx->dev = mir_new(n_pages, page_tokens, cfg->head_dim);
        assert_non_null(fx->dev);
        mir_attach(fx->pool, fx->dev);
    }
    fx->seq.kv = kw_kvseq_new(fx->pool);
    fx->seq.seed = seed;
    fx->seq.n_prompt = n_prompt;
    fx->m = m;
    assert_int_equal(m->state_new(m->params, &fx->cfg, &fx->st, &err), 0);
    assert_int_equal(m->hook->seq_open(fx->st, &fx->seq, 0), 0);
    fx->w = kw_view_new();
}

static inline void hfx_open(hook_fx *fx, const kw_model_config *cfg, int page_tokens,
                            int n_pages, kw_kvmethod *m, uint64_t seed, int n_prompt)
{
    hfx_open_on(fx, cfg, page_tokens, n_pages, m, seed, n_prompt, false);
}

static inline void hfx_close(hook_fx *fx)
{
    fx->m->hook->seq_close(fx->st, &fx->seq, 0);
    fx->m->state_free(fx->st);
    fx->m->params_free(fx->m->params);
    free(fx->m);
    kw_view_free(fx->w);
    kw_kvseq_free(fx->seq.kv);
    kw_kvpool_free(fx->pool);
    mir_free(fx->dev);
}

/* A batch of the sequence's last stored token (a decode step, or a prompt token). */
typedef struct hfx_batch {
    kw_seq *seqs[1];
    int first, n;
    int32_t pos;
    bool prefill, last;
    kw_batch b;
    kw_lctx lc;
} hfx_batch;

static inline void hfx_batch_init(hook_fx *fx, hfx_batch *hb, int layer, bool prefill)
{
    memset(hb, 0, sizeof *hb);
    hb->seqs[0] = &fx->seq;
    hb->n = 1;
    hb->prefill = prefill;
    hb->b = (kw_batch){.n_seq = 1, .seqs = hb->seqs, .tok_first = &hb->first,
                       .tok_n = &hb->n, .pos = &hb->pos, .prefill = &hb->prefill,
                       .last_chunk = &hb->last};
    hb->lc = (kw_lctx){.layer = layer, .hook_index = 0, .cfg = &fx->cfg, .pool = fx->pool};
    int n = kw_kvseq_len(fx->seq.kv, layer, 0); /* the token's position: the last stored */
    if (n > 0)
        assert_int_equal(kw_kvseq_token_f32(fx->seq.kv, layer, 0, n - 1, NULL, NULL, &hb->pos),
                         0);
}

/* The hook's select on the dense view of layer, with queries q (n_head, head_dim). */
static inline int hfx_select(hook_fx *fx, int layer, bool prefill, const float *q)
{
    hfx_batch hb;
    hfx_batch_init(fx, &hb, layer, prefill);
    assert_int_equal(kw_view_dense(fx->w, fx->seq.kv, layer, false), 0);
    kw_view *out[1] = {fx->w};
    return fx->m->hook->select(fx->st, &hb.lc, &hb.b, q, out);
}

/* The hook's after_attn with the step's probabilities (n_head, len) (nullable) over the
 * dense view of layer. */
static inline int hfx_after_attn(hook_fx *fx, int layer, bool prefill, const float *probs,
                                 int len)
{
    hfx_batch hb;
    hfx_batch_init(fx, &hb, layer, prefill);
    const float *sp[1] = {probs};
    kw_view *dense = kw_view_new();
    assert_non_null(dense);
    assert_int_equal(kw_view_dense(dense, fx->seq.kv, layer, false), 0);
    const kw_view *vw[1] = {dense};
    kw_attn_stats a = {.n_head = fx->cfg.n_head, .step_probs = probs ? sp : NULL,
                       .step_len = &len, .views = vw};
    int rc = fx->m->hook->after_attn(fx->st, &hb.lc, &hb.b, &a);
    kw_view_free(dense);
    return rc;
}

/* Marks (got[j] = 1) the stored indices row r of the view reads, each at most once;
 * returns how many. */
static inline int hfx_row_marks(const hook_fx *fx, int layer, int r, char *got, int n)
{
    int g = fx->cfg.n_head / fx->cfg.n_head_kv, kvh = fx->w->per_qhead ? r / g : r, npg;
    const int32_t *pages = kw_kvseq_pages(fx->seq.kv, layer, kvh, &npg);
    int P = kw_kvpool_options(fx->pool)->page_tokens, total = 0;
    memset(got, 0, (size_t)n);
    for (int s = fx->w->row_ptr[r]; s < fx->w->row_ptr[r + 1]; s++) {
        const kw_span *sp = &fx->w->spans[s];
        int pi = -1;
        for (int j = 0; j < npg; j++)
            pi = pages[j] == sp->page ? j : pi;
        assert_true(pi >= 0);
        for (int x = sp->first; x < sp->first + sp->n; x++) {
            int j = pi * P + x;
            assert_true(j < n);
            assert_int_equal(got[j], 0);
            got[j] = 1, total++;
        }
    }
    return total;
}

#endif
