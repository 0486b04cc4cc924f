/* Shared by the decode.* operators: the kvmethod stack of a stage, submission to the
 * device engine, and the "generation" value. */
#ifndef KW_OPS_DECODE_COMMON_H
#define KW_OPS_DECODE_COMMON_H

#include <pthread.h>

#include "kvweave/engine.h"
#include "kvweave/kvhook.h"
#include "kvweave/op.h"

typedef struct kw_decode_state {
    pthread_mutex_t mu;
    bool mu_ok, built;
    int build_rc;
    kw_hookstack hs;
    const kw_kvmethod *methods[KW_MAX_HOOKS];
} kw_decode_state;

/* Parameters that several decode operators take, as kw_param_spec initializers. */
#define KW_DECODE_PARAM_MAX_NEW                                                            \
    {"max_new", KW_PARAM_INT, "64", 0, 1 << 20, NULL,                                      \
     "tokens to generate; when set it wins over the data set's max_new"}
#define KW_DECODE_PARAM_LOGPROBS                                                           \
    {"logprobs", KW_PARAM_BOOL, "false", 0, 0, NULL, "record each token's log-prob"}
#define KW_DECODE_PARAM_IGNORE_EOS                                                         \
    {"ignore_eos", KW_PARAM_BOOL, "false", 0, 0, NULL, "generate max_new tokens always"}
#define KW_DECODE_PARAM_SHARE_PREFILL                                                      \
    {"share_prefill", KW_PARAM_BOOL, "false", 0, 0, NULL,                                  \
     "start from the prefill of the same prompt shared with other stages (branches of a "  \
     "sweep): the engine prefills the prompt less its last tail once, without KV methods, " \
     "and each sequence computes only its tail with its own; methods that act before the " \
     "prompt ends (H2O, StreamingLLM evicting per chunk) prefill on their own. Recorded as " \
     "the generation's prefill_share"}
/* teacher forcing (kw__forced_req) */
#define KW_DECODE_PARAM_PREFILL                                                            \
    {"prefill", KW_PARAM_INT, "0", 0, 1 << 24, NULL,                                       \
     "split the tokens: this many prompt tokens (0: use extra.continuation)"}
#define KW_DECODE_PARAM_STEPS                                                              \
    {"steps", KW_PARAM_INT, "0", 0, 1 << 24, NULL,                                         \
     "positions scored (0: all); when set it wins over the data set's max_new"}

/* Input ports of every decode operator: tokens (each) and kvmethods (once, any number,
 * stacked in order). */
extern const kw_port kw__decode_inputs[2];
extern const kw_port kw__decode_outputs[1];

int kw__decode_init(kw_opctx *c, void *st, kw_error *err);
void kw__decode_fini(kw_opctx *c, void *st);
/* Fills the request's hooks, callback and sample, submits, returns KW_PENDING (or fails
 * the task). */
int kw__decode_submit(kw_opctx *c, kw_decode_state *st, kw_task *t, kw_gen_req *req);
/* The task's tokens input; NULL after failing the task when it is missing or not
 * tokens (return KW_ETYPE then). */
const kw_tokens *kw__decode_tokens(kw_task *t);
/* The generation length of a sequence: the operator's `param` when the pipeline set it,
 * else the data set's (tk->max_new > 0), else the param's default. */
int kw__decode_max_new(const kw_opctx *c, const kw_tokens *tk, const char *param);
/* Teacher forcing from the tokens: with param `prefill` P > 0 the first P ids are the
 * prompt and the next T (kw__decode_max_new of "steps"; 0: all) are forced; with P = 0
 * the prompt is all ids and extra.continuation is forced (capped at T > 0; *cont gets
 * the malloc'd copy to free after submit). Fails the task (returns < 0) on bad input. */
int kw__forced_req(kw_opctx *c, kw_task *t, const kw_tokens *tk, const char *who,
                   kw_gen_req *r, int32_t **cont);
/* The generation value's JSON (new reference). `sample` (nullable) is the tokens' source
 * record; it goes in as "sample" (a new reference) so score operators find it there. */
json_t *kw__generation_json(const kw_model *m, const kw_gen_result *r, json_t *sample);

#endif
