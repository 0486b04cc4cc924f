/* decode.teacher_forced — scores a given continuation position by position: the prompt
 * is prefilled, then each continuation token is fed in turn (as in decoding, so KV
 * methods act as they would) and its log-prob and the top-k of the full distribution
 * are recorded. The continuation comes from the tokens' extra {"continuation": [ids]},
 * or, with `prefill` P > 0, the tokens are split: P prompt tokens, then `steps` T
 * (0: all the rest). `steps` set in the pipeline wins; else the tokens' max_new (a data set's
 * steps) does; else all. With a continuation, steps > 0 caps it. */
#include <stdlib.h>

#include "decode_common.h"

static const kw_param_spec params[] = {
    {"topk", KW_PARAM_INT, "10", 0, 1000, NULL, "top-k log-probs recorded per position"},
    KW_DECODE_PARAM_PREFILL,
    KW_DECODE_PARAM_STEPS,
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    const kw_tokens *tk = kw__decode_tokens(t);
    if (!tk)
        return KW_ETYPE;
    kw_gen_req r = {.topk = (int)kw_param_int(c, "topk"), .want_logprobs = true};
    int32_t *cont = NULL;
    int rc = kw__forced_req(c, t, tk, "decode.teacher_forced", &r, &cont);
    if (rc < 0)
        return rc;
    rc = kw__decode_submit(c, st, t, &r); /* the engine copies forced tokens */
    free(cont);
    return rc;
}

const kw_op kw_op_decode_teacher_forced = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "decode.teacher_forced", .version = 1,
    .doc = "scores a continuation position by position (log-probs, NLL, top-k)",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL,
    .inputs = kw__decode_inputs, .n_inputs = 2, .outputs = kw__decode_outputs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params,
    .state_size = sizeof(kw_decode_state),
    .init = kw__decode_init, .run = run, .fini = kw__decode_fini,
};
