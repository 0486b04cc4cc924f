/* score.ruler — RULER's string_match_all / string_match_part of a generation against the
 * sample's "outputs". Emits {"score/<task>": s, "score": s} with s in [0, 1]; the run
 * records the mean per key (x100 in reports, as RULER prints it). */
#include <stdlib.h>
#include <string.h>

#include "../dataset/ruler_gen.h"
#include "kvweave/op.h"

static const kw_port ins[] = {
    {"generation", KW_T_GENERATION, KW_EACH, 0, "the model's output (\"text\")"},
    {"sample", KW_T_SAMPLE, KW_EACH, KW_PORT_OPTIONAL,
     "the record with \"outputs\"; default: the generation's \"sample\""},
};
static const kw_port outs[] = {{"metrics", KW_T_METRICS, KW_EACH, 0, "score/<task>, score"}};
static const kw_param_spec params[] = {
    {"metric", KW_PARAM_ENUM, "all", 0, 0, "all|part",
     "all: fraction of references found (string_match_all); part: 1 if any is "
     "(string_match_part, RULER's QA tasks)"},
};

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    json_t *gen = kw_value_jsonobj(kw_task_in(t, 0));
    json_t *smp = kw_task_in_n(t, 1) > 0 ? kw_value_jsonobj(kw_task_in(t, 1))
                                          : json_object_get(gen, "sample");
    const char *text = json_string_value(json_object_get(gen, "text"));
    json_t *refs = json_object_get(smp, "outputs");
    if (!text || !json_is_array(refs))
        return kw_task_fail(t, KW_EINVAL,
                            "score.ruler: sample %lld needs a generation \"text\" and a sample "
                            "\"outputs\" list",
                            (long long)kw_task_sample(t));
    size_t n = json_array_size(refs);
    const char **r = malloc(sizeof(char *) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        r[i] = json_string_value(json_array_get(refs, i));
        if (!r[i]) {
            free(r);
            return kw_task_fail(t, KW_ETYPE, "score.ruler: sample %lld: outputs[%zu] is not a string",
                                (long long)kw_task_sample(t), i);
        }
    }
    double s = !strcmp(kw_param_str(c, "metric"), "part") ? kw_ruler_match_part(text, r, (int)n)
                                                         : kw_ruler_match_all(text, r, (int)n);
    free(r);
    const char *task = json_string_value(json_object_get(smp, "task"));
    char key[128];
    snprintf(key, sizeof key, "score/%s", task ? task : "ruler");
    json_t *m = json_object();
    json_object_set_new(m, key, json_real(s));
    json_object_set_new(m, "score", json_real(s));
    return kw_task_out(t, 0, kw_value_json(KW_T_METRICS, m));
}

const kw_op kw_op_score_ruler = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "score.ruler",
    .version = 1,
    .doc = "RULER score of a generation: string_match_all (default) or string_match_part, "
           "case-insensitive containment of the sample's outputs",
    .lanes = KW_LANE_CPU,
    .inputs = ins,
    .n_inputs = 2,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof *params,
    .run = run,
};
