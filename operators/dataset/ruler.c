/* dataset.ruler — RULER-style synthetic tasks generated in C (ruler_gen.h), sized to a
 * target length in the model's own tokens. A source: one sample per run() call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "kvweave/util.h"
#include "ruler_gen.h"

static const kw_port outs[] = {{"samples", KW_T_SAMPLE, KW_EACH, 0,
                                "records: id, task, input, answer_prefix, outputs, length, "
                                "max_new"}};
static const kw_param_spec params[] = {
    {"task", KW_PARAM_STRING, "niah_single_1", 0, 0, NULL,
     "a task (niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, "
     "cwe, fwe), a comma-separated list, or \"all\""},
    {"length", KW_PARAM_INT, "4096", 128, 1 << 24, NULL,
     "target length in model tokens: prompt + generated tokens"},
    {"n", KW_PARAM_INT, "50", 1, 1000000, NULL, "samples per task"},
    {"seed", KW_PARAM_INT, "42", 0, 0, NULL, "generation seed (samples depend on it only)"},
    {"max_new", KW_PARAM_INT, "0", 0, 1 << 20, NULL,
     "tokens to generate; 0 = the task's (niah 128, vt 30, cwe 120, fwe 50)"},
    {"data", KW_PARAM_STRING, "", 0, 0, NULL,
     "folder with PaulGrahamEssays.json and the word lists; \"\" = $KVWEAVE_DATA/ruler"},
};

typedef struct state {
    kw_ruler_res *res;
    char **tasks;
    int n_tasks;
    int cur;          /* task index */
    int64_t next;     /* sample index within the task */
    kw_ruler_gen gen;
    const kw_tokenizer *tok;
    int32_t *buf;
    int cap;
} state;

static int count_tokens(void *ud, const char *text)
{
    state *st = ud;
    int need = (int)strlen(text) + 16;
    if (need > st->cap) {
        free(st->buf);
        st->buf = malloc(sizeof(int32_t) * (size_t)need);
        st->cap = st->buf ? need : 0;
        if (!st->buf)
            return KW_ENOMEM;
    }
    return kw_tokenize(st->tok, text, 0, st->buf, st->cap);
}

static int parse_tasks(state *st, const char *spec, kw_error *err)
{
    if (!strcmp(spec, "all")) {
        for (int i = 0; kw_ruler_tasks[i]; i++) {
            st->tasks = realloc(st->tasks, sizeof(char *) * (st->n_tasks + 1));
            st->tasks[st->n_tasks++] = strdup(kw_ruler_tasks[i]);
        }
        return KW_OK;
    }
    char *copy = strdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (!kw_ruler_task_known(t)) {
            int rc = kw_error_set(err, KW_ENOTFOUND,
                                  "dataset.ruler: unknown task '%s' (known: niah_single_1..3, "
                                  "niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, "
                                  "cwe, fwe, all)",
                                  t);
            free(copy);
            return rc;
        }
        st->tasks = realloc(st->tasks, sizeof(char *) * (st->n_tasks + 1));
        st->tasks[st->n_tasks++] = strdup(t);
    }
    free(copy);
    if (!st->n_tasks)
        return kw_error_set(err, KW_EINVAL, "dataset.ruler: no task given");
    return KW_OK;
}

static int init(kw_opctx *c, void *vst, kw_error *err)
{
    state *st = vst;
    int rc = parse_tasks(st, kw_param_str(c, "task"), err);
    if (rc < 0)
        return rc;
    const char *data = kw_param_str(c, "data");
    char dir[4096];
    if (data && *data)
        snprintf(dir, sizeof dir, "%s", data);
    else
        snprintf(dir, sizeof dir, "%s/ruler", kw_data_dir());
    if ((rc = kw_ruler_res_load(dir, &st->res, err)) < 0)
        return rc;
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)kw_param_int(c, "length"));
    kw_ctx_record(c, "dataset.ruler.length", v);
    kw_ctx_record(c, "data_dir", dir); /* the folder only: its files are fixed names */
    return KW_OK;
}

/* Sizes the current task's haystack (binary search with the model's tokenizer). */
static int start_task(kw_opctx *c, state *st, kw_error *err)
{
    if (!st->tok) {
        kw_engine *e = kw_ctx_engine(c);
        const kw_model *m = e ? kw_engine_model(e) : NULL;
        if (!m || !m->tok)
            return kw_error_set(err, KW_ENOTFOUND,
                                "dataset.ruler: needs the model's tokenizer to size prompts, "
                                "and the pipeline's model could not be opened");
        st->tok = m->tok;
    }
    st->gen = (kw_ruler_gen){.res = st->res,
                             .task = st->tasks[st->cur],
                             .length = (int)kw_param_int(c, "length"),
                             .max_new = (int)kw_param_int(c, "max_new"),
                             .seed = (uint64_t)kw_param_int(c, "seed"),
                             .count = count_tokens,
                             .ud = st};
    return kw_ruler_fit(&st->gen, err);
}

static int run(kw_opctx *c, void *vst, kw_task *t)
{
    state *st = vst;
    if (st->cur >= st->n_tasks)
        return KW_END;
    kw_error err = {0};
    if (st->next == 0 && st->gen.units == 0) {
        int rc = start_task(c, st, &err);
        if (rc < 0)
            return kw_task_fail(t, rc, "%s", err.msg);
    }
    json_t *rec = NULL;
    int rc = kw_ruler_make(&st->gen, st->next, &rec, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    json_object_set_new(rec, "chat", json_true());
    if (++st->next >= kw_param_int(c, "n")) {
        st->cur++;
        st->next = 0;
        st->gen.units = 0;
    }
    return kw_task_out(t, 0, kw_value_json(KW_T_SAMPLE, rec));
}

static void fini(kw_opctx *c, void *vst)
{
    (void)c;
    state *st = vst;
    kw_ruler_res_free(st->res);
    for (int i = 0; i < st->n_tasks; i++)
        free(st->tasks[i]);
    free(st->tasks);
    free(st->buf);
}

const kw_op kw_op_dataset_ruler = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "dataset.ruler",
    .version = 1,
    .doc = "RULER-style synthetic long-context tasks (niah, vt, cwe, fwe), generated "
           "deterministically from a seed and sized to a target length in the model's "
           "tokens (binary search on the haystack); the prompt is input + answer_prefix",
    .lanes = KW_LANE_CPU,
    .flags = KW_OP_SOURCE | KW_OP_SERIAL | KW_OP_NEEDS_MODEL,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .state_size = sizeof(state),
    .init = init,
    .run = run,
    .fini = fini,
};
