/* score.fidelity — fidelity of a KV method to full attention, per sample, from
 * decode.fidelity's per-position figures (EVAL.md):
 *
 *   {"kl": mean over positions of KL(full || method) in nats,
 *    "top1": fraction of positions where the method's argmax is full's,
 *    "top5": fraction where full's argmax is in the method's top-5,
 *    "positions": T}
 *
 * The run records the mean of each over samples (equal T: the mean over all positions).
 * Position 0 (the prompt's last logits) is included: it is full attention for both
 * unless a method acts during prefill, so eviction methods show KL 0 there. */
#include <math.h>

#include "kvweave/op.h"

static const kw_port ins[] = {{"generation", KW_T_GENERATION, KW_EACH, 0,
                               "decode.fidelity's generation (\"fidelity\")"}};
static const kw_port outs[] = {{"metrics", KW_T_METRICS, KW_EACH, 0,
                                "kl, top1, top5, positions"}};

static int mean_of(json_t *a, size_t n, double *out)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return -1;
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return -1;
        s += json_number_value(v);
    }
    *out = s / (double)n;
    return 0;
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)c, (void)st;
    json_t *g = kw_value_jsonobj(kw_task_in(t, 0));
    json_t *f = json_object_get(g, "fidelity");
    if (!json_is_object(f))
        return kw_task_fail(t, KW_EINVAL, "score.fidelity: sample %lld: the generation has no "
                            "\"fidelity\" object (decode it with decode.fidelity)",
                            (long long)kw_task_sample(t));
    size_t n = json_array_size(json_object_get(f, "kl"));
    double kl, t1, t5;
    if (n == 0 || mean_of(json_object_get(f, "kl"), n, &kl) < 0 ||
        mean_of(json_object_get(f, "top1"), n, &t1) < 0 ||
        mean_of(json_object_get(f, "top5"), n, &t5) < 0)
        return kw_task_fail(t, KW_EINVAL, "score.fidelity: sample %lld: \"fidelity\" needs "
                            "arrays kl, top1, top5 of equal, non-zero length with finite "
                            "numbers", (long long)kw_task_sample(t));
    json_t *m = json_pack("{s:f,s:f,s:f,s:I}", "kl", kl, "top1", t1, "top5", t5, "positions",
                          (json_int_t)n);
    return kw_task_out(t, 0, kw_value_json(KW_T_METRICS, m));
}

const kw_op kw_op_score_fidelity = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "score.fidelity",
    .version = 1,
    .doc = "fidelity to full attention from decode.fidelity: mean KL(full || method), top-1 "
           "agreement and top-5 containment of full's argmax, per sample",
    .lanes = KW_LANE_CPU,
    .inputs = ins,
    .n_inputs = 1,
    .outputs = outs,
    .n_outputs = 1,
    .run = run,
};
