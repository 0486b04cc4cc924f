/* tokenize.ids — tokens that a record already holds (dataset.text's windows): the prompt
 * ids from one field, an optional continuation for teacher forcing from another (into
 * extra.continuation), max_new from the record's "max_new". No tokenizer involved; the
 * engine checks the ids against the vocabulary at submit. */
#include <stdlib.h>

#include "kvweave/op.h"

static const kw_port ins[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, "records with token ids"}};
static const kw_port outs[] = {{"out", KW_T_TOKENS, KW_EACH, 0,
                                "prompt ids, extra.continuation, max_new"}};
static const kw_param_spec params[] = {
    {"field", KW_PARAM_STRING, "ids", 0, 0, NULL, "the field holding the prompt ids"},
    {"continuation", KW_PARAM_STRING, "continuation", 0, 0, NULL,
     "the field holding ids to teacher-force (optional in the record)"},
};

/* Checks that a is a non-empty array of ints in [0, 2^31); -1 with *bad the index. */
static int check_ids(json_t *a, size_t *bad)
{
    if (!json_is_array(a) || json_array_size(a) == 0) {
        *bad = 0;
        return -1;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            *bad = i;
            return -1;
        }
    }
    return 0;
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    json_t *rec = kw_value_jsonobj(kw_task_in(t, 0));
    const char *f = kw_param_str(c, "field"), *cf = kw_param_str(c, "continuation");
    json_t *a = json_object_get(rec, f), *cont = json_object_get(rec, cf);
    size_t bad;
    if (check_ids(a, &bad) < 0)
        return kw_task_fail(t, KW_EINVAL, "tokenize.ids: sample %lld: '%s' must be a non-empty "
                            "array of token ids (item %zu is not)",
                            (long long)kw_task_sample(t), f, bad);
    if (cont && check_ids(cont, &bad) < 0)
        return kw_task_fail(t, KW_EINVAL, "tokenize.ids: sample %lld: '%s' must be a non-empty "
                            "array of token ids (item %zu is not)",
                            (long long)kw_task_sample(t), cf, bad);
    kw_tokens *tk = calloc(1, sizeof *tk);
    size_t n = json_array_size(a);
    if (!tk || !(tk->ids = malloc(sizeof(int32_t) * n))) {
        free(tk);
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        tk->ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    tk->n = (int)n;
    json_t *mn = json_object_get(rec, "max_new");
    tk->max_new = json_is_integer(mn) && json_integer_value(mn) > 0 &&
                          json_integer_value(mn) < (1 << 30)
                      ? (int)json_integer_value(mn)
                      : 0;
    if (cont)
        tk->extra = json_pack("{s:O}", "continuation", cont);
    tk->sample = json_incref(rec);
    return kw_task_out(t, 0, kw_value_tokens(tk));
}

const kw_op kw_op_tokenize_ids = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "tokenize.ids",
    .version = 1,
    .doc = "tokens a record already holds (e.g. dataset.text's ids and continuation), for "
           "decode.teacher_forced and decode.fidelity",
    .lanes = KW_LANE_CPU,
    .inputs = ins,
    .n_inputs = 1,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof *params,
    .run = run,
};
