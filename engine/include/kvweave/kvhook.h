/* kvweave — the KV method ABI: hooks inside the forward pass (ARCHITECTURE.md s4).
 *
 * A KV method is a configured hook: a vtable (kw_kvhook) plus its params, wrapped in a
 * kvmethod value (kw_kvmethod). A decode stage stacks the kvmethods of its inputs in
 * order and hands the stack to the device engine with each sequence. Per layer, for the
 * sequences of a step that use the hook:
 *
 *   QKV projection -> on_kv (K before RoPE) -> RoPE and append to the pool
 *   -> select (each SELECT hook in stack order refines the view) -> materialize
 *   -> attention over the view -> after_attn (LSE / observation / step probabilities)
 *   -> on_prefill_end (only sequences whose prompt ends in this step) -> MLP
 *   ... step_end once per step.
 *
 * Stack rules (kvroles.h; checked by kw_hookstack_check): at most one EVICT hook and at
 * most one STORE hook; any number of SELECT hooks, applied in order (each sees the
 * previous view). The operator that makes a kvmethod declares its hook's roles
 * (kw_op.kv_roles, op.h), so pipelines that break the rule are refused when they are
 * built; this check stays for methods whose operator declares none. Hooks that do not
 * set a callback leave it NULL.
 *
 * A hook that EVICTs calls kw_kvseq_keep on the sequence's pool tables; one that
 * SELECTs fills the kw_view it is given (kvpool.h). Hooks keep per-sequence state in
 * kw_seq.hook_seq[their index in the stack] (set it in seq_open, free it in seq_close).
 * Callbacks return 0 or a negative kw_status; an error fails that sequence only.
 */
#ifndef KVWEAVE_KVHOOK_H
#define KVWEAVE_KVHOOK_H

#include <stdbool.h>
#include <stdint.h>

#include "kvpool.h"
#include "kvroles.h" /* KW_ROLE_* and the stack rule */
#include "model.h"
#include "status.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KW_KVHOOK_ABI 1
#define KW_MAX_HOOKS 8

enum { /* kw_kvhook.needs */
    KW_NEED_PRE_ROPE_K = 1u << 0, /* on_kv's k before RoPE (always so on the CPU) */
    KW_NEED_HOST_Q = 1u << 1,     /* select's q on the host (always so on the CPU) */
    KW_NEED_OBS_PROBS = 1u << 2,  /* after_attn: probabilities of the last obs_window
                                     queries of each prompt over the view */
    KW_NEED_LSE = 1u << 3,        /* after_attn: log-sum-exp per query and head */
    KW_NEED_STEP_PROBS = 1u << 4, /* after_attn, every step: the attention probability
                                     each view token got from the sequence's queries of
                                     the step, summed over those queries, per query head
                                     (a decode step: its query's probabilities) */
    KW_NEED_DECODE_PROBS = 1u << 5, /* as STEP_PROBS, on decode steps only (no prompt
                                       chunk pays for them) */
};

/* Shape of a sequence, for reserve. */
typedef struct kw_seqshape {
    const kw_model_config *cfg;
    int page_tokens;
    int n_prompt;
    int max_new;
} kw_seqshape;

/* A hook's worst-case claim for one sequence. Admission: the engine admits a sequence
 * when the pool's unclaimed pages cover the largest `pages` among its hooks' reserves
 * (all of its prompt and new tokens when no hook reserves); a sequence that outgrows
 * its claim fails with KW_ELIMIT when the pool runs out. tmp_pages and meta_bytes are
 * recorded, not enforced. */
typedef struct kw_memclaim {
    int64_t pages;     /* main pool pages (the engine takes the max over the stack) */
    int64_t tmp_pages; /* temporary pool pages per step */
    int64_t meta_bytes;
} kw_memclaim;

/* A sequence as hooks see it. */
typedef struct kw_seq {
    uint64_t id;
    int64_t sample;     /* sample index of the task that submitted it; -1 if none */
    uint64_t seed;
    int n_prompt;
    int max_new;
    int n_past;         /* tokens whose KV is in the pool (before this step) */
    kw_kvseq *kv;       /* its KV tables (transfer none) */
    void *hook_seq[KW_MAX_HOOKS]; /* per-hook per-sequence state */
    int64_t meta_bytes; /* hooks add their metadata here for the memory figures */
    /* a STORE hook that moves KV out of the pool and back adds its traffic here: */
    int64_t store_bytes;     /* written to a block store */
    int64_t load_bytes;      /* read back into the pool */
    int64_t load_bytes_full; /* what reading every selection whole would have read */
    double wait_s;           /* time the engine thread waited for the hook's host work */
    int64_t held_peak_bytes; /* the most KV bytes the hook held outside the pool at once
                                (DeltaKV's references and latents) */
    char error[200];         /* a hook may say here why it returned an error (the
                                sequence's recorded error; the first one is kept) */
    /* a MATERIALIZE hook that rebuilds tokens it holds into the temporary pool (DeltaKV)
     * counts them here, summed over layers and steps (a token rebuilt for some KV heads
     * only counts that share): */
    int64_t rebuilt;      /* tokens rebuilt */
    int64_t rebuilt_full; /* what rebuilding every token it held would have been */
} kw_seq;

/* The sequences of a step that a call concerns (those whose stack holds the hook), and
 * their token ranges in the step's activations: sequence i has the step's tokens
 * [tok_first[i], tok_first[i] + tok_n[i]) at positions pos[...]. */
typedef struct kw_batch {
    int n_seq;
    kw_seq **seqs;
    const int *tok_first;  /* (n_seq) */
    const int *tok_n;      /* (n_seq) */
    const int32_t *pos;    /* (n_tok) of the whole step */
    const bool *prefill;   /* (n_seq) the tokens are prompt tokens */
    const bool *last_chunk; /* (n_seq) this step ends the prompt */
} kw_batch;

/* Layer context. */
typedef struct kw_lctx {
    int layer;
    int hook_index;                /* this hook's index in the sequences' stack */
    const kw_model_config *cfg;
    kw_kvpool *pool;
    int obs_window;                /* for KW_NEED_OBS_PROBS */
    void *stream;                  /* NULL on the CPU */
} kw_lctx;

/* Step context. */
typedef struct kw_sctx {
    int64_t step;
    int hook_index;
    kw_kvpool *pool;
} kw_sctx;

/* Attention statistics for after_attn. lse: (n_tok, n_head) of the whole step, in the
 * step's token order (NULL unless some hook needs LSE). probs[i] for sequence i of the
 * batch: (obs_n[i], n_head, obs_len[i]) the probabilities of its last obs_n[i] <=
 * obs_window prompt queries over the tokens of the query head's view row, in view order
 * (obs_len[i] is the longest row; shorter rows are padded with zeros). probs[i] is NULL
 * unless some hook needs OBS_PROBS and this step ends the prompt. views[i] is the view
 * attention read.
 *
 * step_probs[i] (KW_NEED_STEP_PROBS, every step, prefill chunks and decode tokens;
 * KW_NEED_DECODE_PROBS, decode steps only: NULL for a sequence in a prompt chunk):
 * (n_head, step_len[i]) for query head h and the j-th token of h's view row (view
 * order), the sum over the sequence's queries of this step of their probability on that
 * token (masked tokens count 0). A decode step has one query: these are its
 * probabilities. Summed over steps they are the attention mass each token received
 * from every query so far (H2O's accumulated score). NULL unless some hook of the
 * sequence needs it. */
typedef struct kw_attn_stats {
    const float *lse;
    int n_head;
    const float *const *probs;
    const int *obs_n;
    const int *obs_len;
    const kw_view *const *views;
    const float *const *step_probs; /* (n_seq) entries (n_head, step_len[i]); nullable */
    const int *step_len;
} kw_attn_stats;

typedef struct kw_kvhook {
    uint32_t size, abi, roles, needs;
    const char *name;
    int (*reserve)(void *st, const kw_seqshape *s, kw_memclaim *out);
    int (*seq_open)(void *st, kw_seq *s, int hook_index);
    /* k, v: (n_tok of the step, n_kv, head_dim); k before RoPE. */
    int (*on_kv)(void *st, kw_lctx *c, const kw_batch *b, const float *k, const float *v);
    int (*on_prefill_end)(void *st, kw_lctx *c, const kw_batch *b);
    /* q: (n_tok, n_head, head_dim) after RoPE; out[i]: the view of sequence i, filled
     * with the dense view (or the previous SELECT hook's choice); rewrite it. */
    int (*select)(void *st, kw_lctx *c, const kw_batch *b, const float *q, kw_view **out);
    int (*materialize)(void *st, kw_lctx *c, const kw_batch *b, kw_view **v);
    int (*after_attn)(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a);
    int (*step_end)(void *st, kw_sctx *c, const kw_batch *b);
    void (*seq_close)(void *st, kw_seq *s, int hook_index);
    /* true: before the prompt's last chunk the hook neither changes the sequence's KV
     * or views nor needs a call (it observes the last chunk at most, acts at prompt end
     * or in decoding: SnapKV, PyramidKV, Quest). A sequence whose hooks all say so may
     * start from a shared prefix prefill (kw_gen_req.share_prefill); one with any other
     * hook prefills on its own. Hooks built with an older header (a smaller size) count
     * as false. */
    bool tail_only;
    /* Optional: false at a layer where the hook needs no attention probabilities
     * (OBS_PROBS, STEP_PROBS, DECODE_PROBS); the engine computes them at a layer only
     * where some hook of the sequence wants them there (OmniKV: its observation layers).
     * NULL, or a hook built with an older header: every layer. */
    bool (*probs_at)(void *st, int layer);
} kw_kvhook;

/* h's tail_only, false when h's size does not reach the field. */
bool kw_kvhook_tail_only(const kw_kvhook *h);
/* Whether h (state st) wants its probabilities at layer: its probs_at, true without one. */
bool kw_kvhook_probs_at(const kw_kvhook *h, void *st, int layer);

/* A configured KV method: the payload of a "kvmethod" value. The engine makes one
 * state per run with state_new and frees it with state_free. */
typedef struct kw_kvmethod {
    const kw_kvhook *hook;
    void *params;                                   /* owned */
    void (*params_free)(void *params);              /* nullable */
    int (*state_new)(const void *params, const kw_model_config *cfg, void **st,
                     kw_error *err);                /* nullable: st = params */
    void (*state_free)(void *st);                   /* nullable */
} kw_kvmethod;
extern const kw_type kw_type_kvmethod;
/* (transfer full) of m. */
kw_value *kw_value_kvmethod(kw_kvmethod *m);

/* A hook stack with states, as a sequence carries it. */
typedef struct kw_hookstack {
    int n;
    const kw_kvhook *hooks[KW_MAX_HOOKS];
    void *states[KW_MAX_HOOKS];
} kw_hookstack;

/* Records why a hook fails sequence s (s->error, the sample's recorded error; the first
 * reason is kept) and returns rc, for `return kw_seq_fail(s, rc, "...", ...)`. */
int kw_seq_fail(kw_seq *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Checks sizes, abi and role rules; KW_EINVAL with the reason. */
int kw_hookstack_check(const kw_hookstack *hs, kw_error *err);
/* Union of the needs of the stack. */
uint32_t kw_hookstack_needs(const kw_hookstack *hs);

#ifdef __cplusplus
}
#endif
#endif
