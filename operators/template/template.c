/* template.upper — the copy-me operator: upper-cases one string field of each sample.
 * Copy this folder, rename the operator, change the tables and run().
 *
 * Built into kvweave it is "template.upper". Built as a plug-in (a shared object; see
 * tests/pipelines/meson.build) with -DKW_TEMPLATE_PLUGIN it exports the two symbols the
 * engine looks for and is named "plugin.upper", so both can be loaded at once:
 *
 *   cc -shared -fPIC -DKW_TEMPLATE_PLUGIN -I engine/include template.c -o libupper.so
 *   pipeline:  plugins: [./libupper.so]   stages: [{ id: up, op: plugin.upper }] */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/op.h"

static const kw_port ins[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, "records"}};
static const kw_port outs[] = {{"out", KW_T_SAMPLE, KW_EACH, 0, "records with the field upper-cased"}};
static const kw_param_spec params[] = {
    {"field", KW_PARAM_STRING, "input", 0, 0, NULL, "the string field to upper-case"},
    {"times", KW_PARAM_INT, "1", 1, 16, NULL, "how many copies of the field to join"},
};

/* A plug-in's global names must differ from kvweave's own: the executable exports its
 * symbols, and a plug-in's reference to a name kvweave also has would bind to kvweave's. */
#ifdef KW_TEMPLATE_PLUGIN
#define KW_TEMPLATE_NAME "plugin.upper"
#define kw_op_template_upper kw_op_plugin_upper
#else
#define KW_TEMPLATE_NAME "template.upper"
#endif

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    json_t *rec = json_deep_copy(kw_value_jsonobj(kw_task_in(t, 0)));
    const char *f = kw_param_str(c, "field");
    const char *s = json_string_value(json_object_get(rec, f));
    if (!rec || !s) {
        json_decref(rec);
        return kw_task_fail(t, KW_EINVAL, "sample %lld has no string field '%s'",
                            (long long)kw_task_sample(t), f);
    }
    int64_t times = kw_param_int(c, "times");
    size_t n = strlen(s);
    char *u = malloc(n * (size_t)times + 1);
    if (!u) {
        json_decref(rec);
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    }
    for (int64_t k = 0; k < times; k++)
        for (size_t i = 0; i < n; i++)
            u[(size_t)k * n + i] = (char)toupper((unsigned char)s[i]);
    u[n * (size_t)times] = '\0';
    json_object_set_new(rec, f, json_string(u));
    free(u);
    return kw_task_out(t, 0, kw_value_json(KW_T_SAMPLE, rec));
}

const kw_op kw_op_template_upper = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = KW_TEMPLATE_NAME,
    .version = 1,
    .doc = "upper-cases a string field of each sample (the copy-me example)",
    .lanes = KW_LANE_CPU,
    .inputs = ins,
    .n_inputs = 1,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof *params,
    .run = run,
};

#ifdef KW_TEMPLATE_PLUGIN
const uint32_t kw_plugin_abi = KW_OP_ABI;
const kw_op *const kw_plugin_ops[] = {&kw_op_template_upper, NULL};
#endif
