/* score.longbench — scores a generation against its LongBench v1 sample with the task's
 * official metric (longbench_metrics.h), per sample: {"score/<task>": s}, s in [0, 1].
 * The task score of a run is 100 * mean(s) rounded to 2 decimals (kw_lb_task_score).
 *
 * The sample comes either inside the generation ("sample": {...}, as the decode operator
 * attaches it) or on the optional second input. The jieba data is loaded once at init
 * (the Chinese tasks need it; a run of other tasks goes on without it). */
#include <stdlib.h>
#include <string.h>

#include "kvweave/op.h"
#include "score/jieba.h"
#include "score/longbench_metrics.h"

typedef struct lb_state {
    kw_jieba *jb;
    kw_error jb_err; /* why jieba is missing, for the samples that need it */
} lb_state;

static const kw_port ins[] = {
    {"gen", KW_T_GENERATION, KW_EACH, 0, "the generation: \"text\" (and \"sample\")"},
    {"sample", KW_T_SAMPLE, KW_EACH, KW_PORT_OPTIONAL,
     "the sample, when the generation does not carry it"},
};
static const kw_port outs[] = {{"metrics", KW_T_METRICS, KW_EACH, 0, "{\"score/<task>\": s}"}};
static const kw_param_spec params[] = {
    {"task", KW_PARAM_STRING, "", 0, 0, NULL,
     "the LongBench v1 task (default: the sample's \"dataset\" field)"},
};

static bool is_zh(const char *task)
{
    kw_lb_metric m;
    return kw_lb_task_metric(task, &m) == 0 && (m == KW_LB_QA_F1_ZH || m == KW_LB_ROUGE_ZH);
}

static int init(kw_opctx *c, void *st, kw_error *err)
{
    lb_state *s = st;
    const char *task = kw_param_is_set(c, "task") ? kw_param_str(c, "task") : "";
    kw_lb_metric m;
    if (*task && kw_lb_task_metric(task, &m) < 0)
        return kw_error_set(err, KW_ENOTFOUND, "unknown LongBench task '%s'", task);
    int rc = kw_jieba_open(NULL, &s->jb, &s->jb_err);
    if (rc < 0 && *task && is_zh(task)) {
        *err = s->jb_err;
        return kw_error_prefix(err, "task '%s' needs jieba", task);
    }
    return 0;
}

/* The strings of an array (nullable) as a malloc'd vector; -1 when an item is no string. */
static int str_vec(json_t *a, const char ***out, int *n)
{
    *n = json_is_array(a) ? (int)json_array_size(a) : 0;
    *out = calloc((size_t)*n + 1, sizeof **out);
    if (!*out)
        return -2;
    for (int i = 0; i < *n; i++)
        if (!((*out)[i] = json_string_value(json_array_get(a, (size_t)i))))
            return -1;
    return 0;
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    lb_state *s = st;
    json_t *gen = kw_value_jsonobj(kw_task_in(t, 0));
    const char *text = json_string_value(json_object_get(gen, "text"));
    if (!text)
        return kw_task_fail(t, KW_EINVAL, "the generation has no string field 'text'");
    json_t *smp = json_object_get(gen, "sample");
    if (!json_is_object(smp) && kw_task_in(t, 1))
        smp = kw_value_jsonobj(kw_task_in(t, 1));
    if (!json_is_object(smp))
        return kw_task_fail(t, KW_EINVAL, "no sample: neither a \"sample\" object in the "
                            "generation nor a value on the 'sample' input");
    const char *task = kw_param_is_set(c, "task") ? kw_param_str(c, "task") : "";
    if (!*task)
        task = json_string_value(json_object_get(smp, "dataset"));
    kw_lb_metric m;
    if (!task || kw_lb_task_metric(task, &m) < 0)
        return kw_task_fail(t, KW_ENOTFOUND, "unknown LongBench task '%s'",
                            task ? task : "(the sample has no string 'dataset')");
    if (is_zh(task) && !s->jb)
        return kw_task_fail(t, KW_ENOTFOUND, "task '%s' needs jieba: %s", task, s->jb_err.msg);
    const char **ans = NULL, **cls = NULL;
    int na = 0, nc = 0, rc;
    json_t *ja = json_object_get(smp, "answers"), *jc = json_object_get(smp, "all_classes");
    if (!json_is_array(ja) || (rc = str_vec(ja, &ans, &na)) == -1)
        rc = kw_task_fail(t, KW_EINVAL, "the sample's 'answers' must be an array of strings");
    else if ((!json_is_null(jc) && jc && !json_is_array(jc)) ||
             (rc = str_vec(jc, &cls, &nc)) == -1)
        rc = kw_task_fail(t, KW_EINVAL, "the sample's 'all_classes' must be null or an array "
                          "of strings");
    if (rc == -2)
        rc = kw_task_fail(t, KW_ENOMEM, "out of memory");
    double score = 0;
    kw_error err = {0};
    if (rc >= 0 && (rc = kw_lb_sample_score(task, s->jb, text, ans, na,
                                            json_is_array(jc) ? cls : NULL, nc, &score,
                                            &err)) < 0)
        rc = kw_task_fail(t, rc, "%s", err.msg);
    free(ans);
    free(cls);
    if (rc < 0)
        return rc;
    char key[96];
    snprintf(key, sizeof key, "score/%s", task);
    json_t *out = json_object();
    json_object_set_new(out, key, json_real(score));
    return kw_task_out(t, 0, kw_value_json(KW_T_METRICS, out));
}

static void fini(kw_opctx *c, void *st)
{
    (void)c;
    lb_state *s = st;
    s->jb = kw_jieba_free(s->jb);
}

const kw_op kw_op_score_longbench = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "score.longbench",
    .version = 1,
    .doc = "LongBench v1's official metric of the task, per sample",
    .lanes = KW_LANE_CPU,
    .inputs = ins,
    .n_inputs = 2,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof *params,
    .state_size = sizeof(lb_state),
    .init = init,
    .run = run,
    .fini = fini,
};
