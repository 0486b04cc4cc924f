/* tokenize.raw — a sample's prompt tokenized as it is, without a chat template. */
#include "kvweave/op.h"
#include "tokprompt.h"

static const kw_port ins[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, "records"}};
static const kw_port outs[] = {{"out", KW_T_TOKENS, KW_EACH, 0, "prompt token ids"}};
static const kw_param_spec params[] = {
    {"field", KW_PARAM_STRING, "input", 0, 0, NULL, "the sample field holding the prompt"},
    {"template", KW_PARAM_STRING, "", 0, 0, NULL,
     "prompt from several fields, e.g. \"{context}\\n\\n{input}\"; overrides field"},
    {"max_new", KW_PARAM_INT, "0", 0, 1 << 20, NULL,
     "tokens to generate; 0 = the sample's \"max_new\" or the decode operator's"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    return kw__tokprompt_run(c, t, false);
}

const kw_op kw_op_tokenize_raw = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "tokenize.raw",
    .version = 1,
    .doc = "tokenizes a sample's prompt as it is, without a chat template",
    .lanes = KW_LANE_CPU,
    .flags = KW_OP_NEEDS_MODEL,
    .inputs = ins,
    .n_inputs = 1,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof *params,
    .run = run,
};
