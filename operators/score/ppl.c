/* score.ppl — perplexity of a teacher-forced generation (decode.teacher_forced or
 * decode.fidelity): per sample, the mean negative log-likelihood of its forced tokens
 * and exp of it.
 *
 *   {"nll": mean(-logprobs), "ppl": exp(nll), "tokens": T}
 *   + {"nll_full", "ppl_full"} from decode.fidelity's full-attention branch
 *
 * The run records the mean of each key over samples, so the run's "ppl" is the mean of
 * per-sample perplexities; the corpus perplexity over equally long windows (what
 * EVAL.md reports) is exp(run mean of "nll"). */
#include <math.h>
#include <stdio.h>

#include "kvweave/op.h"

static const kw_port ins[] = {{"generation", KW_T_GENERATION, KW_EACH, 0,
                               "a teacher-forced generation: \"logprobs\" per position"}};
static const kw_port outs[] = {{"metrics", KW_T_METRICS, KW_EACH, 0,
                                "nll, ppl, tokens (+ nll_full, ppl_full)"}};

/* Mean of -x over a JSON array of numbers; < 0 on a bad array. */
static int mean_nll(json_t *a, double *out, size_t *n)
{
    *n = json_array_size(a);
    if (!json_is_array(a) || *n == 0)
        return -1;
    double s = 0;
    for (size_t i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return -2;
        s -= json_number_value(v);
    }
    *out = s / (double)*n;
    return 0;
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)c, (void)st;
    json_t *g = kw_value_jsonobj(kw_task_in(t, 0));
    double nll;
    size_t n;
    int rc = mean_nll(json_object_get(g, "logprobs"), &nll, &n);
    if (rc == -1)
        return kw_task_fail(t, KW_EINVAL, "score.ppl: sample %lld: the generation has no "
                            "\"logprobs\" (use decode.teacher_forced or decode.fidelity)",
                            (long long)kw_task_sample(t));
    if (rc == -2)
        return kw_task_fail(t, KW_EINVAL, "score.ppl: sample %lld: a log-prob is not a finite "
                            "number", (long long)kw_task_sample(t));
    json_t *m = json_pack("{s:f,s:f,s:I}", "nll", nll, "ppl", exp(nll), "tokens", (json_int_t)n);
    json_t *fid = json_object_get(g, "fidelity");
    double nf;
    size_t k;
    if (fid && mean_nll(json_object_get(fid, "logprobs_full"), &nf, &k) == 0) {
        json_object_set_new(m, "nll_full", json_real(nf));
        json_object_set_new(m, "ppl_full", json_real(exp(nf)));
    }
    return kw_task_out(t, 0, kw_value_json(KW_T_METRICS, m));
}

const kw_op kw_op_score_ppl = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "score.ppl",
    .version = 1,
    .doc = "per-sample mean NLL and perplexity = exp(mean NLL) of a teacher-forced "
           "generation (and of decode.fidelity's full branch); corpus perplexity = exp(run "
           "mean of nll)",
    .lanes = KW_LANE_CPU,
    .inputs = ins,
    .n_inputs = 1,
    .outputs = outs,
    .n_outputs = 1,
    .run = run,
};
