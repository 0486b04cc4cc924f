/* decode.greedy — argmax decoding on the device engine, with any stack of KV methods. */
#include "decode_common.h"

static const kw_param_spec params[] = {
    KW_DECODE_PARAM_MAX_NEW,
    KW_DECODE_PARAM_LOGPROBS,
    {"topk", KW_PARAM_INT, "0", 0, 1000, NULL, "with logprobs: the top-k log-probs too"},
    KW_DECODE_PARAM_IGNORE_EOS,
    KW_DECODE_PARAM_SHARE_PREFILL,
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    const kw_tokens *tk = kw__decode_tokens(t);
    if (!tk)
        return KW_ETYPE;
    kw_gen_req r = {.prompt = tk->ids, .n_prompt = tk->n,
                    .max_new = kw__decode_max_new(c, tk, "max_new"),
                    .want_logprobs = kw_param_bool(c, "logprobs"),
                    .topk = (int)kw_param_int(c, "topk"),
                    .ignore_eos = kw_param_bool(c, "ignore_eos"),
                    .share_prefill = kw_param_bool(c, "share_prefill")};
    return kw__decode_submit(c, st, t, &r);
}

const kw_op kw_op_decode_greedy = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "decode.greedy", .version = 1,
    .doc = "greedy decoding on the device engine with stacked KV methods",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL,
    .inputs = kw__decode_inputs, .n_inputs = 2, .outputs = kw__decode_outputs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params,
    .state_size = sizeof(kw_decode_state),
    .init = kw__decode_init, .run = run, .fini = kw__decode_fini,
};
