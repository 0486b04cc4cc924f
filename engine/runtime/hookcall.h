/* Hook dispatch for one forward step (internal to the runtime), shared by the CPU and
 * CUDA forward passes: groups the step's sequences by hook instance and stack index,
 * calls each callback of ARCHITECTURE.md s4 on its group, and turns a hook's error into
 * that sequence's failure (kw_fwd_step.seq_rc). The forward pass computes the tensors
 * (host q/k/v, LSE, observation and step probabilities) and hands them over here. */
#ifndef KW_RUNTIME_HOOKCALL_H
#define KW_RUNTIME_HOOKCALL_H

#include "forward.h"

/* The sequences of the step that share one hook instance at one stack index. */
typedef struct kw_hgroup {
    const kw_kvhook *h;
    void *st;
    int idx, n;
    int si[KW_FWD_MAX_SEQ];
    kw_seq *seqs[KW_FWD_MAX_SEQ];
    int first[KW_FWD_MAX_SEQ], ntok[KW_FWD_MAX_SEQ];
    bool pre[KW_FWD_MAX_SEQ], last[KW_FWD_MAX_SEQ];
    kw_view *views[KW_FWD_MAX_SEQ];
    const float *probs[KW_FWD_MAX_SEQ];
    int obs_n[KW_FWD_MAX_SEQ], obs_len[KW_FWD_MAX_SEQ];
    const float *sprobs[KW_FWD_MAX_SEQ];
    int slen[KW_FWD_MAX_SEQ];
    kw_batch b;
} kw_hgroup;

typedef struct kw_hookcall {
    const kw_model_config *cfg;
    kw_kvpool *pool;
    kw_fwd_step *s;
    kw_view *const *views; /* (n_seq) the views attention reads */
    void *stream;          /* kw_lctx.stream: NULL on the CPU */
    kw_hgroup *g;
    int n_g;
    uint32_t needs;        /* union over the step's stacks */
    bool any[5];           /* some group has that callback (KW_HC_* index) */
    /* filled by the forward pass before KW_HC_AFTER_ATTN; freed by kw__hooks_end */
    float *probs[KW_FWD_MAX_SEQ];
    int obs_n[KW_FWD_MAX_SEQ], obs_len[KW_FWD_MAX_SEQ];
    /* set per layer by kw__hooks_layer: */
    bool want_obs[KW_FWD_MAX_SEQ];  /* a hook needs OBS_PROBS and the prompt ends here */
    float *sprobs[KW_FWD_MAX_SEQ];  /* KW_NEED_STEP_PROBS: (n_head, slen) per sequence */
    int slen[KW_FWD_MAX_SEQ];
    bool want_step[KW_FWD_MAX_SEQ];
} kw_hookcall;

enum { KW_HC_ON_KV, KW_HC_SELECT, KW_HC_MATERIALIZE, KW_HC_AFTER_ATTN, KW_HC_PREFILL_END };

/* Fills c->g from the step's stacks (c->cfg, pool, s, views set by the caller). */
int kw__hooks_begin(kw_hookcall *c);
/* Which sequences want attention probabilities at layer (want_obs, want_step): a hook
 * that needs them and wants them there (kw_kvhook_probs_at). Called before each layer's
 * attention; after_attn gets only what this layer computed. */
void kw__hooks_layer(kw_hookcall *c, int layer);
/* Calls one callback on every group that has it. q: (n_tok, n_head, head_dim) after
 * RoPE (KW_HC_SELECT); k, v: (n_tok, n_kv, head_dim), k before RoPE (KW_HC_ON_KV);
 * stats: KW_HC_AFTER_ATTN (lse and n_head; the rest is taken from c). */
void kw__hooks_call(kw_hookcall *c, int layer, int which, const float *q, const float *k,
                    const float *v, const kw_attn_stats *stats);
/* At the prompt's last chunk, before on_prefill_end: shares the layer's whole prompt KV
 * into each sequence's twin (the fidelity reference). */
void kw__hooks_twins(kw_hookcall *c, int layer);
void kw__hooks_step_end(kw_hookcall *c);
void kw__hooks_end(kw_hookcall *c);

#endif
