/* decode.teacher_forced — scores a given continuation position by position: the prompt
 * is prefilled, then each continuation token is fed in turn (as in decoding, so KV
 * methods act as they would) and its log-prob and the top-k of the full distribution
 * are recorded. The continuation comes from the tokens' extra {"continuation": [ids]},
 * or, with `prefill` P > 0, the tokens are split: P prompt tokens, then `steps` T
 * (0: all the rest). */
#include <stdlib.h>

#include "decode_common.h"

static const kw_param_spec params[] = {
    {"topk", KW_PARAM_INT, "10", 0, 1000, NULL, "top-k log-probs recorded per position"},
    {"prefill", KW_PARAM_INT, "0", 0, 1 << 24, NULL,
     "split the tokens: this many prompt tokens (0: use extra.continuation)"},
    {"steps", KW_PARAM_INT, "0", 0, 1 << 24, NULL, "with prefill: positions scored (0: all)"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    const kw_tokens *tk = kw_value_data(kw_task_in(t, 0));
    int P = (int)kw_param_int(c, "prefill"), T = (int)kw_param_int(c, "steps");
    kw_gen_req r = {.topk = (int)kw_param_int(c, "topk"), .want_logprobs = true};
    int32_t *cont = NULL;
    if (P > 0) {
        if (P >= tk->n)
            return kw_task_fail(t, KW_ERANGE, "decode.teacher_forced: prefill %d leaves no "
                                "token of %d to score", P, tk->n);
        r.prompt = tk->ids;
        r.n_prompt = P;
        r.forced = tk->ids + P;
        r.n_forced = T > 0 && T < tk->n - P ? T : tk->n - P;
    } else {
        json_t *a = tk->extra ? json_object_get(tk->extra, "continuation") : NULL;
        if (!json_is_array(a) || json_array_size(a) == 0)
            return kw_task_fail(t, KW_EINVAL, "decode.teacher_forced: sample %lld has no "
                                "extra.continuation and prefill is 0",
                                (long long)kw_task_sample(t));
        size_t n = json_array_size(a);
        cont = malloc(sizeof(int32_t) * n);
        if (!cont)
            return kw_task_fail(t, KW_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(a, i);
            if (!json_is_integer(v)) {
                free(cont);
                return kw_task_fail(t, KW_ETYPE, "decode.teacher_forced: continuation[%zu] "
                                    "is not an integer", i);
            }
            cont[i] = (int32_t)json_integer_value(v);
        }
        r.prompt = tk->ids;
        r.n_prompt = tk->n;
        r.forced = cont;
        r.n_forced = (int)n;
    }
    int rc = kw__decode_submit(c, st, t, &r); /* the engine copies forced tokens */
    free(cont);
    return rc;
}

const kw_op kw_op_decode_teacher_forced = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "decode.teacher_forced", .version = 1,
    .doc = "scores a continuation position by position (log-probs, NLL, top-k)",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL,
    .inputs = kw__decode_inputs, .n_inputs = 2, .outputs = kw__decode_outputs, .n_outputs = 1,
    .params = params, .n_params = 3, .state_size = sizeof(kw_decode_state),
    .init = kw__decode_init, .run = run, .fini = kw__decode_fini,
};
