/* A plug-in of fake operators ("test.*") with the port shapes of a real pipeline, for the
 * registry, graph and `kvweave validate` tests. Built in variants (meson -D flags) that
 * break one rule each: TESTOPS_PLUGIN_ABI, TESTOPS_OP_ABI, TESTOPS_OP_SIZE, TESTOPS_DUP.
 *
 *   dataset: test.source -> test.tok -> test.probe -> test.budget (reduce) -> test.evict
 *            test.tok + test.evict -> test.gen -> test.score;  test.perbudget maps each;
 *   test.map: sample -> sample;  test.select (SELECT) and test.kvany (no roles declared):
 *   kvmethods with no inputs, for the stack rule (test.evict is an EVICT one) */
#include "kvweave/op.h"

#ifndef TESTOPS_PLUGIN_ABI
#define TESTOPS_PLUGIN_ABI KW_OP_ABI
#endif
#if defined(TESTOPS_OP_ABI) || defined(TESTOPS_OP_SIZE)
#define TESTOPS_BROKEN 1 /* adds test.broken, built with these */
#endif
#ifndef TESTOPS_OP_ABI
#define TESTOPS_OP_ABI KW_OP_ABI
#endif
#ifndef TESTOPS_OP_SIZE
#define TESTOPS_OP_SIZE sizeof(kw_op)
#endif

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)c, (void)st, (void)t;
    return KW_OK;
}

#define OPR(var, nm, fl, ins, outs, prm, roles)                                             \
    static const kw_op var = {                                                              \
        .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = nm, .version = 1, .doc = nm,       \
        .lanes = KW_LANE_CPU, .flags = fl, .inputs = ins,                                   \
        .n_inputs = (int)(sizeof ins / sizeof(kw_port)) - 1, .outputs = outs,               \
        .n_outputs = (int)(sizeof outs / sizeof(kw_port)) - 1, .params = prm,               \
        .n_params = (int)(sizeof prm / sizeof(kw_param_spec)) - 1, .run = run,              \
        .kv_roles = roles,                                                                  \
    }
#define OP(var, nm, fl, ins, outs, prm) OPR(var, nm, fl, ins, outs, prm, 0)

/* Each table ends with an unused entry so that empty tables are valid C. */
static const kw_port none_in[] = {{0}};
static const kw_param_spec none_p[] = {{0}};

static const kw_port source_out[] = {{"out", KW_T_SAMPLE, KW_EACH, 0, NULL}, {0}};
static const kw_param_spec source_p[] = {
    {"path", KW_PARAM_STRING, "data.jsonl", 0, 0, NULL, "records"},
    {"n", KW_PARAM_INT, "10", 1, 1000000, NULL, "how many"},
    {0},
};
OP(op_source, "test.source", KW_OP_SOURCE, none_in, source_out, source_p);

static const kw_port tok_in[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, NULL}, {0}};
static const kw_port tok_out[] = {{"out", KW_T_TOKENS, KW_EACH, 0, NULL}, {0}};
static const kw_param_spec tok_p[] = {
    {"template", KW_PARAM_ENUM, "chatml", 0, 0, "chatml|llama3|mistral", "chat template"},
    {"add_bos", KW_PARAM_BOOL, "true", 0, 0, NULL, "prepend BOS"},
    {"system", KW_PARAM_STRING, "", 0, 0, NULL, "system prompt"},
    {0},
};
OP(op_tok, "test.tok", 0, tok_in, tok_out, tok_p);

static const kw_port map_out[] = {{"out", KW_T_SAMPLE, KW_EACH, 0, NULL}, {0}};
OP(op_map, "test.map", 0, tok_in, map_out, none_p);

static const kw_port probe_in[] = {{"in", KW_T_TOKENS, KW_EACH, 0, NULL}, {0}};
static const kw_port probe_out[] = {{"stats", KW_T_STATS, KW_EACH, 0, NULL}, {0}};
static const kw_param_spec probe_p[] = {
    {"ratio", KW_PARAM_FLOAT, "0.1", 0, 1, NULL, "window"},
    {0},
};
OP(op_probe, "test.probe", 0, probe_in, probe_out, probe_p);

static const kw_port budget_in[] = {{"stats", KW_T_STATS, KW_EACH, 0, NULL}, {0}};
static const kw_port budget_out[] = {{"budget", KW_T_BUDGET, KW_ONCE, 0, NULL}, {0}};
static const kw_param_spec budget_p[] = {
    {"total", KW_PARAM_INT, "4000", 1, 1e9, NULL, "total budget"},
    {"layers", KW_PARAM_INTLIST, "", 0, 1000, NULL, "layers"},
    {0},
};
OP(op_budget, "test.budget", 0, budget_in, budget_out, budget_p);

static const kw_port perbudget_out[] = {{"budget", KW_T_BUDGET, KW_EACH, 0, NULL}, {0}};
OP(op_perbudget, "test.perbudget", 0, budget_in, perbudget_out, none_p);

static const kw_port evict_in[] = {{"budget", KW_T_BUDGET, KW_ONCE, 0, NULL}, {0}};
static const kw_port evict_out[] = {{"method", KW_T_KVMETHOD, KW_ONCE, 0, NULL}, {0}};
static const kw_param_spec evict_p[] = {
    {"capacity", KW_PARAM_INT, "128", 1, 1000000, NULL, "tokens kept"},
    {0},
};
OPR(op_evict, "test.evict", 0, evict_in, evict_out, evict_p, KW_ROLE_EVICT);
/* kvmethods for the stack rule: a SELECT one, and one that declares no roles */
OPR(op_select, "test.select", 0, none_in, evict_out, none_p, KW_ROLE_SELECT);
OP(op_kvany, "test.kvany", 0, none_in, evict_out, none_p);

static const kw_port gen_in[] = {
    {"tokens", KW_T_TOKENS, KW_EACH, 0, NULL},
    {"methods", KW_T_KVMETHOD, KW_ONCE, KW_PORT_MULTI | KW_PORT_OPTIONAL, NULL},
    {0},
};
static const kw_port gen_out[] = {{"out", KW_T_GENERATION, KW_EACH, 0, NULL}, {0}};
static const kw_param_spec gen_p[] = {
    {"max_new", KW_PARAM_INT, "32", 1, 4096, NULL, "tokens to generate"},
    {"temperature", KW_PARAM_FLOAT, "0", 0, 10, NULL, "sampling temperature"},
    {"seed_offset", KW_PARAM_INT, NULL, 0, 0, NULL, "required, unbounded"},
    {0},
};
OP(op_gen, "test.gen", KW_OP_NEEDS_MODEL, gen_in, gen_out, gen_p);

static const kw_port score_in[] = {{"gen", KW_T_GENERATION, KW_EACH, 0, NULL}, {0}};
static const kw_port score_out[] = {{"metrics", KW_T_METRICS, KW_EACH, 0, NULL}, {0}};
OP(op_score, "test.score", 0, score_in, score_out, none_p);

#ifdef TESTOPS_BROKEN
static const kw_op op_broken = {
    .size = (uint32_t)(TESTOPS_OP_SIZE), .abi = TESTOPS_OP_ABI, .name = "test.broken",
    .version = 1, .outputs = score_out, .n_outputs = 1, .run = run,
};
#endif

const uint32_t kw_plugin_abi = TESTOPS_PLUGIN_ABI;
const kw_op *const kw_plugin_ops[] = {
    &op_source, &op_tok, &op_map, &op_probe, &op_budget, &op_perbudget, &op_evict, &op_select,
    &op_kvany, &op_gen, &op_score,
#ifdef TESTOPS_BROKEN
    &op_broken,
#endif
#ifdef TESTOPS_DUP
    &op_tok,
#endif
    NULL,
};
