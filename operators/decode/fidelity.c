/* decode.fidelity — teacher forcing with a full-attention reference beside the method:
 * the prompt is prefilled once with the stage's KV methods; before their on_prefill_end
 * acts, a branch without methods takes the prompt's KV layer by layer on shared pages
 * (the engine's kw_gen_req.reference); both are fed the same continuation in the same
 * batch. Per position the generation gets, besides decode.teacher_forced's log-probs and
 * top-k, "fidelity": {"kl": KL(full || method) over the whole vocabulary, "top1": the
 * method's argmax is full's, "top5": full's argmax is in the method's top-5,
 * "logprobs_full": log p_full of the forced token}. score.fidelity and score.ppl read it.
 *
 * reference_prefill: shared (default) prefills once and shares the pages, as above;
 * position 0 (the prompt's last logits) is then the prefill's for both. It is exact for
 * methods that act at prefill end or in decoding (SnapKV, PyramidKV, H2O, Quest); a
 * method that drops prompt tokens earlier (StreamingLLM evicting per prefill chunk) fails
 * the sample with a message saying so, and one that selects during prefill would shape
 * the reference too. own: the full branch prefills the prompt itself beside the method's
 * prefill (twice the prefill work and pages): exact for any method. With no KV method
 * wired the two branches are the same model on the same KV: KL 0, top-1 1. */
#include <stdlib.h>
#include <string.h>

#include "decode_common.h"

static const kw_param_spec params[] = {
    {"topk", KW_PARAM_INT, "5", 0, 1000, NULL,
     "top-k log-probs of the method recorded per position"},
    KW_DECODE_PARAM_PREFILL,
    KW_DECODE_PARAM_STEPS,
    {"reference_prefill", KW_PARAM_ENUM, "shared", 0, 0, "shared|own",
     "shared: the full branch takes the method's prefill KV before the method evicts (one "
     "prefill; exact for eviction at prefill end and decode-time methods); own: it "
     "prefills itself (exact for any method, twice the prefill)"},
    KW_DECODE_PARAM_SHARE_PREFILL,
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    const kw_tokens *tk = kw__decode_tokens(t);
    if (!tk)
        return KW_ETYPE;
    kw_gen_req r = {.topk = (int)kw_param_int(c, "topk"), .want_logprobs = true,
                    .reference = !strcmp(kw_param_str(c, "reference_prefill"), "own")
                                     ? KW_REF_OWN : KW_REF_SHARED,
                    .share_prefill = kw_param_bool(c, "share_prefill")};
    int32_t *cont = NULL;
    int rc = kw__forced_req(c, t, tk, "decode.fidelity", &r, &cont);
    if (rc < 0)
        return rc;
    rc = kw__decode_submit(c, st, t, &r); /* the engine copies forced tokens */
    free(cont);
    return rc;
}

const kw_op kw_op_decode_fidelity = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "decode.fidelity", .version = 1,
    .doc = "teacher forcing with the KV methods and, on the same prefill (shared pages), a "
           "full-attention branch in the same batch: per-position KL(full || method), top-1 "
           "agreement, top-5 containment and the full branch's log-probs",
    .lanes = KW_LANE_GPU, .flags = KW_OP_NEEDS_MODEL,
    .inputs = kw__decode_inputs, .n_inputs = 2, .outputs = kw__decode_outputs, .n_outputs = 1,
    .params = params, .n_params = sizeof params / sizeof *params,
    .state_size = sizeof(kw_decode_state),
    .init = kw__decode_init, .run = run, .fini = kw__decode_fini,
};
