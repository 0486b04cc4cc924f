/* kvweave — the device engine: one per device per run, persistent across samples. It
 * owns the model's weights on the device, the paged KV pool, and the running batch;
 * decode operators submit sequences to it and are completed when they finish.
 * (The full API is in engine/runtime; this is the part the control plane uses.) */
#ifndef KVWEAVE_ENGINE_H
#define KVWEAVE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "kvhook.h"
#include "model.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kw_engine kw_engine;

/* model_spec: a registered name, a GGUF path, an HF directory or a hub name
 * (ORG/NAME[@REV][/file.gguf], resolved through the Hugging Face cache; HF_HUB_OFFLINE=1
 * reads only the cache). device: "cpu" or
 * "cuda[:N]" (KW_ENOSYS in a build without CUDA). */
int kw_engine_open(const char *model_spec, const char *device, kw_engine **out,
                   kw_error *err);
/* Waits for submitted work, frees everything; accepts NULL, returns NULL. */
kw_engine *kw_engine_close(kw_engine *e);
const kw_model *kw_engine_model(const kw_engine *e);

/* ---- options, sequences, results ----
 *
 *   kw_engine_opts o = kw_engine_defaults();
 *   kw_engine_open_model(model, &o, &e, &err);          // model: (transfer none)
 *   kw_gen_req r = {.prompt = ids, .n_prompt = n, .max_new = 32, .done = cb, .user = u};
 *   kw_engine_submit(e, &r, &err);                       // cb(u, result) later, engine thread
 *   kw_engine_wait_idle(e);
 */
typedef struct kw_engine_opts {
    int page_tokens;      /* KV page size P; default 16 */
    int64_t n_pages;      /* KV pool pages; 0: from pool_mb */
    int64_t pool_mb;      /* KV pool size when n_pages is 0; default 1024 */
    int64_t n_tmp_pages;  /* temporary pool pages; default 16384 (host memory, touched
                             only when a STORE hook reconstructs tokens there) */
    bool pre_rope;        /* store K before RoPE */
    kw_kvdtype kv_dtype;  /* KV page type: KW_KV_F32 (default), KW_KV_I8, or K per channel
                             (KW_KV_I8K, KW_KV_I4K; the CPU engine only) */
    int kv_residual;      /* per-channel-K pages: latest tokens whose K stays f32 (see
                             kw_kvpool_opts.residual); default 0 */
    int max_batch;        /* running sequences; default 16 (at most 64) */
    int chunk;            /* prefill tokens per step over all sequences; default 512 */
    int threads;          /* OpenMP threads; 0: the default */
    int obs_window;       /* queries for KW_NEED_OBS_PROBS; default 32 */
    bool cuda;            /* run on CUDA device cuda_device (kw_engine_open: "cuda[:N]"):
                             bf16 weights and KV pages on the device (int8 pages with
                             kv_dtype KW_KV_I8: even page_tokens), pool
                             sized as for bf16 (int8: 1 byte an element); KV hooks run on
                             the host with copies of what they need
                             (forward_cuda_hooks.c) */
    int cuda_device;
} kw_engine_opts;
kw_engine_opts kw_engine_defaults(void);

typedef struct kw_sampling {
    float temperature;    /* <= 0: greedy (argmax, lowest index on ties) */
    float top_p;          /* (0, 1]; 1: no nucleus cut */
    uint64_t seed;        /* with the request's sample index and the step, keys the draw */
} kw_sampling;

/* The outcome of one sequence, handed to the completion callback (transfer full: free
 * with kw_gen_result_free). */
typedef struct kw_gen_result {
    int rc;               /* 0, or the error that ended the sequence */
    char error[256];
    int n_prompt, n_gen;
    int32_t *tokens;      /* (n_gen) generated (or forced) tokens */
    bool stopped_eos;
    double ttft_s;        /* submit to first token */
    double decode_s_per_token;
    double decode_s_p50, decode_s_p90; /* the time between consecutive tokens: median and
                                          90th percentile (nearest rank) */
    double queue_s;       /* submit to admission */
    float *logprobs;      /* (n_gen) log p of each token; teacher forcing or want_logprobs */
    int topk;             /* k of topk_ids / topk_lp (0: none) */
    int32_t *topk_ids;    /* (n_gen, topk) */
    float *topk_lp;       /* (n_gen, topk) */
    /* memory figures (section 5): bytes unless said */
    int64_t kv_payload_peak, kv_payload_mean; /* stored K+V of this sequence */
    int64_t pages_peak, pages_mean;           /* pages this sequence holds */
    int64_t page_bytes;
    int64_t meta_bytes;                       /* hooks' metadata at the end */
    int64_t tmp_bytes_peak;                   /* temporary pool, whole engine */
    double attended_mean;                     /* tokens read per layer and decode step */
    int64_t store_bytes, load_bytes;          /* KV written to and read from a block
                                                 store (an offloading method) */
    int64_t load_bytes_full;                  /* what reloading each selection whole
                                                 would have read */
    double hook_wait_s;                       /* the engine waited for hooks' host work */
    int64_t held_peak_bytes;                  /* KV a STORE hook held outside the pool */
    int64_t rebuilt, rebuilt_full;            /* tokens a MATERIALIZE hook rebuilt, and
                                                 what rebuilding all it held would be */
    /* with kw_gen_req.reference, per position (n_gen), against the full-attention
     * branch (nullable otherwise): */
    float *ref_kl;        /* KL(full || this) in nats, over the whole vocabulary */
    uint8_t *ref_top1;    /* 1: this argmax equals full's (ties: lowest index) */
    uint8_t *ref_top5;    /* 1: full's argmax is among this top-5 */
    float *ref_logprobs;  /* log p_full of the forced token */
    /* kw_gen_req.share_prefill: how the prompt was prefilled (KW_SHARE_*) and how many
     * of its tokens came from a shared prefix instead of being computed */
    int prefill_share;
    int prefill_shared_tokens;
} kw_gen_result;
enum { /* kw_gen_result.prefill_share */
    KW_SHARE_OFF = 0,      /* not asked */
    KW_SHARE_TAKEN = 1,    /* the prefix came from a shared prefill */
    KW_SHARE_OWN_HOOKS = 2, /* asked, but a hook acts before the prompt's end (not
                               kw_kvhook.tail_only): own prefill */
    KW_SHARE_OWN_SHORT = 3, /* asked, but the prompt is too short to share a page */
    KW_SHARE_OWN_FAILED = 4 /* asked, but the shared prefill failed or found no room */
};
/* "taken", "own: ..." (static). */
const char *kw_share_name(int prefill_share);
kw_gen_result *kw_gen_result_free(kw_gen_result *r);

typedef struct kw_gen_req {
    const int32_t *prompt;   /* (n_prompt) copied at submit */
    int n_prompt;
    int max_new;             /* tokens to generate (ignored with forced) */
    const int32_t *forced;   /* nullable (n_forced): teacher forcing: these tokens are fed
                                instead of sampled ones and each one's log-prob recorded */
    int n_forced;
    int topk;                /* with forced or want_logprobs: top-k log-probs per position */
    bool want_logprobs;
    bool ignore_eos;
    kw_sampling sampling;
    const kw_hookstack *hooks; /* nullable; copied; states stay the caller's */
    int64_t sample;          /* sample index (random keys, hooks); -1 if none */
    void (*done)(void *user, kw_gen_result *r); /* engine thread; (transfer full) r */
    void *user;
    /* With forced: fidelity to full attention (KW_REF_*). A full-attention branch
     * without hooks is teacher-forced beside this sequence over the same tokens, in the
     * same batch; the result gets ref_kl, ref_top1, ref_top5 and ref_logprobs.
     *   KW_REF_SHARED: the prompt is prefilled once, with the hooks; the branch takes its
     *     KV layer by layer on shared pages (kw_kvseq_share_layer) just before
     *     on_prefill_end, and position 0 (the prompt's last logits) is the prefill's for
     *     both. Exact when the hooks change nothing before the prompt ends (eviction at
     *     prefill end, selection in decoding); a sequence whose hooks dropped prompt
     *     tokens earlier (eviction per prefill chunk) fails with a message saying so. A
     *     hook that selects during prefill shapes the reference too, undetected.
     *   KW_REF_OWN: the branch prefills the prompt itself, chunk by chunk beside the
     *     sequence: exact for any hook, at twice the prefill work and pages.
     * The claim grows by the branch's worst case (all prompt + forced tokens); the memory
 * figures of the result are the sequence's own (the branch's pages are not counted),
 * and the branch takes a batch slot of its own (max_batch >= 2). */
    int reference;
    /* Shared prefill (sweep cells, method branches of one prompt): the engine prefills
     * the prompt's prefix once, without hooks, and every sequence asking for it with the
     * same prefix tokens starts from that KV (shared pages, refcounted), then computes
     * only its own tail with its hooks: the last tail = obs_window .. obs_window + P - 1
     * prompt tokens, so observation windows and prefill-end hooks see the whole
     * prompt. The prefix is the prompt less that tail, rounded down to whole pages; it
     * is kept (a few at most, least recently used dropped first, and dropped when
     * admission needs their pages) for later sequences with the same prefix, whatever
     * their order of submission. Exact for hooks that are kw_kvhook.tail_only; a
     * sequence with any other hook prefills on its own (result.prefill_share says
     * why). The results equal those of an own prefill up to float rounding (the
     * prompt is cut into other chunks). */
    bool share_prefill;
} kw_gen_req;
enum { KW_REF_NONE = 0, KW_REF_SHARED = 1, KW_REF_OWN = 2 }; /* kw_gen_req.reference */

/* Opens an engine on a loaded model (transfer none: m outlives the engine). */
int kw_engine_open_model(const kw_model *m, const kw_engine_opts *o, kw_engine **out,
                         kw_error *err);
/* As kw_engine_open with options. */
int kw_engine_open_opts(const char *model_spec, const char *device, const kw_engine_opts *o,
                        kw_engine **out, kw_error *err);
/* Queues a sequence. Errors found at submit (bad ids, a sequence that can never fit the
 * pool, a bad hook stack) return < 0 and the callback is never called. */
int kw_engine_submit(kw_engine *e, const kw_gen_req *r, kw_error *err);
/* Blocks until no sequence is queued or running. */
void kw_engine_wait_idle(kw_engine *e);
/* Engine-wide figures. */
typedef struct kw_engine_stats {
    int64_t steps, prefill_tokens, decode_tokens;
    int64_t prefill_shared_tokens; /* prompt tokens sequences took from a shared prefix */
    int64_t prefix_prefills;       /* shared prefixes computed */
    double busy_s;
    int64_t pages_total, pages_peak;
    int64_t h2d_bytes, d2h_bytes; /* copied host <-> device by steps (0 on the CPU) */
} kw_engine_stats;
void kw_engine_get_stats(kw_engine *e, kw_engine_stats *out);
/* Bytes in use on the engine's GPU as the driver reports them, every process's; -1 on the
 * CPU. The engine frees nothing before it closes, so at a run's end this is its peak
 * (transient library workspaces apart). */
int64_t kw_engine_device_used(kw_engine *e);

#ifdef __cplusplus
}
#endif
#endif
