/* decode.sample — temperature / top-p sampling on the device engine; every draw is keyed
 * by (run seed + seed, sample, step) so results do not depend on batching. */
#include "decode_common.h"

static const kw_param_spec params[] = {
    KW_DECODE_PARAM_MAX_NEW,
    {"temperature", KW_PARAM_FLOAT, "0.7", 0, 100, NULL, "softmax temperature (0: greedy)"},
    {"top_p", KW_PARAM_FLOAT, "0.95", 0, 1, NULL, "nucleus mass kept"},
    {"seed", KW_PARAM_INT, "0", 0, 0, NULL, "added to the run's seed"},
    KW_DECODE_PARAM_LOGPROBS,
    KW_DECODE_PARAM_IGNORE_EOS,
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    const kw_tokens *tk = kw__decode_tokens(t);
    if (!tk)
        return KW_ETYPE;
    kw_gen_req r = {.prompt = tk->ids, .n_prompt = tk->n,
                    .max_new = kw__decode_max_new(c, tk, "max_new"),
                    .want_logprobs = kw_param_bool(c, "logprobs"),
                    .ignore_eos = kw_param_bool(c, "ignore_eos"),
                    .sampling = {.temperature = (float)kw_param_float(c, "temperature"),
                                 .top_p = (float)kw_param_float(c, "top_p"),
                                 .seed = kw_ctx_seed(c) + (uint64_t)kw_param_int(c, "seed")}};
    return kw__decode_submit(c, st, t, &r);
}

const kw_op kw_op_decode_sample = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "decode.sample", .version = 1,
    .doc = "seeded temperature / top-p sampling on the device engine with stacked KV methods",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL,
    .inputs = kw__decode_inputs, .n_inputs = 2, .outputs = kw__decode_outputs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params,
    .state_size = sizeof(kw_decode_state),
    .init = kw__decode_init, .run = run, .fini = kw__decode_fini,
};
