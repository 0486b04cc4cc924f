/* kvweave — the operator ABI.
 *
 * An operator is a named, versioned piece of a pipeline ("family.variant"). It declares
 * typed ports and a typed parameter schema in static tables and implements up to five
 * callbacks. The engine allocates its state (state_size bytes, zeroed), checks every
 * parameter against the schema before init, and calls run once per sample (`each`
 * outputs) or once per run (`once` outputs). Worked example — a map operator that
 * upper-cases a field of each sample (operators/template/template.c is the full file):
 *
 *   static const kw_port ins[]  = {{ "in",  KW_T_SAMPLE, KW_EACH }};
 *   static const kw_port outs[] = {{ "out", KW_T_SAMPLE, KW_EACH }};
 *   static const kw_param_spec params[] = {
 *       { "field", KW_PARAM_STRING, "input", 0, 0, NULL, "field to upper-case" },
 *       { "times", KW_PARAM_INT, "1", 1, 16, NULL, "how often to repeat it" },
 *   };
 *   static int run(kw_opctx *c, void *st, kw_task *t) {
 *       json_t *rec = json_deep_copy(kw_value_jsonobj(kw_task_in(t, 0)));
 *       const char *f = kw_param_str(c, "field");
 *       ... modify rec[f] ...
 *       return kw_task_out(t, 0, kw_value_json(KW_T_SAMPLE, rec));
 *   }
 *   const kw_op kw_op_template_upper = {
 *       .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "template.upper", .version = 1,
 *       .doc = "upper-cases a sample field", .lanes = KW_LANE_CPU,
 *       .inputs = ins, .n_inputs = 1, .outputs = outs, .n_outputs = 1,
 *       .params = params, .n_params = sizeof params / sizeof *params, .run = run,
 *   };
 *
 * A plug-in is a shared object exporting `kw_plugin_ops`, a NULL-terminated array of
 * `const kw_op *`, and `kw_plugin_abi` (= KW_OP_ABI). The engine refuses a plug-in or an
 * operator whose abi differs from its own, or whose size is smaller than the first
 * kw_op of this abi (KW_OP_MIN_SIZE). Fields are only ever added at the end of kw_op:
 * one past an operator's size (built with an older op.h) reads as 0 to the engine.
 *
 * An operator whose output is a kvmethod declares the roles of the hook it makes in
 * kv_roles (KW_ROLE_* of kvroles.h; e.g. `.kv_roles = KW_ROLE_EVICT`), the same for every
 * param, so that a decode stage fed two EVICT methods is refused when the pipeline is
 * built. Without it (0) such a stack is refused only when the decode stage first runs.
 *
 * Kinds of operators, by their ports:
 *   source  (flag KW_OP_SOURCE): no `each` inputs; run is called repeatedly, each call
 *           emits one sample on output 0 or returns KW_END. Data sets are sources.
 *   map     `each` in, `each` out: run once per sample, possibly concurrently on several
 *           threads for different samples (unless KW_OP_SERIAL).
 *   reduce  `each` in, `once` out: run once per sample (accumulate into state, set no
 *           output), then finish once, which sets the `once` outputs. Everything upstream
 *           of a reduce is the calibration phase.
 *   config  no `each` inputs, `once` outputs: run once (e.g. a configured KV method).
 * `once` inputs are available in every task of the consumer.
 *
 * Asynchronous completion: run may return KW_PENDING after handing the task to other
 * machinery (the device engine); that machinery later calls kw_task_complete. The task
 * holds no lane meanwhile.
 *
 * Errors: return < 0 and describe it with kw_task_fail (or the kw_error of init/plan).
 * A failing run fails its sample only; a failing init/plan/finish fails the run.
 */
#ifndef KVWEAVE_OP_H
#define KVWEAVE_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvroles.h"
#include "status.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KW_OP_ABI 1

typedef enum kw_card { KW_EACH = 0, KW_ONCE = 1 } kw_card;

enum { /* kw_port.flags */
    KW_PORT_OPTIONAL = 1u << 0, /* an input that may be left unwired */
    KW_PORT_MULTI = 1u << 1,    /* an input that takes any number of values (in order) */
};

typedef struct kw_port {
    const char *name;
    const char *type;  /* a KW_T_* name or a plug-in's type name */
    kw_card card;
    unsigned flags;
    const char *doc;
} kw_port;

typedef enum kw_param_kind {
    KW_PARAM_INT,
    KW_PARAM_FLOAT,
    KW_PARAM_BOOL,
    KW_PARAM_STRING,
    KW_PARAM_ENUM,    /* one of `choices`, "a|b|c" */
    KW_PARAM_INTLIST, /* a YAML sequence of ints, or "0,1,2" */
} kw_param_kind;

typedef struct kw_param_spec {
    const char *name;
    kw_param_kind kind;
    const char *def;     /* default as YAML text; NULL = required */
    double min, max;     /* bounds for INT/FLOAT/INTLIST items; min == max == 0: none */
    const char *choices; /* ENUM: "a|b|c" */
    const char *doc;
} kw_param_spec;

enum { /* kw_op.lanes */
    KW_LANE_CPU = 1u << 0,
    KW_LANE_IO = 1u << 1,
    KW_LANE_GPU = 1u << 2, /* runs on (or submits to) the device engine */
};

enum { /* kw_op.flags */
    KW_OP_SOURCE = 1u << 0,
    KW_OP_SERIAL = 1u << 1,    /* run is never called concurrently */
    KW_OP_CACHEABLE = 1u << 2, /* outputs may be cached by content hash */
    KW_OP_NEEDS_MODEL = 1u << 3,
};

typedef struct kw_opctx kw_opctx; /* per stage: params, model, scheduler, seed */
typedef struct kw_task kw_task;   /* per (stage, sample): inputs, outputs, status */
typedef struct kw_future kw_future;

typedef struct kw_op {
    uint32_t size; /* sizeof(kw_op) of the build that made it */
    uint32_t abi;  /* KW_OP_ABI */
    const char *name;
    int version;
    const char *doc;
    unsigned lanes;
    unsigned flags;
    const kw_port *inputs;
    int n_inputs;
    const kw_port *outputs;
    int n_outputs;
    const kw_param_spec *params;
    int n_params;
    size_t state_size;
    int (*init)(kw_opctx *c, void *state, kw_error *err);   /* nullable */
    int (*plan)(kw_opctx *c, void *state, kw_error *err);   /* nullable; checks, claims */
    int (*run)(kw_opctx *c, void *state, kw_task *t);
    int (*finish)(kw_opctx *c, void *state, kw_task *t);    /* reduce only */
    void (*fini)(kw_opctx *c, void *state);                 /* nullable; accepts partial init */
    /* ---- added within abi 1: past an older operator's size; read with kw_op_kv_roles ---- */
    uint32_t kv_roles; /* kvmethod outputs: their hook's KW_ROLE_*; 0 = not declared */
} kw_op;

/* The size of the first kw_op of KW_OP_ABI: the smallest the engine takes. */
#define KW_OP_MIN_SIZE offsetof(kw_op, kv_roles)

/* op's kv_roles; 0 when op was built before the field (op->size does not reach it). */
uint32_t kw_op_kv_roles(const kw_op *op);

/* ---- parameters (valid from init on; types are checked by the engine) ---- */
int64_t kw_param_int(const kw_opctx *c, const char *name);
double kw_param_float(const kw_opctx *c, const char *name);
bool kw_param_bool(const kw_opctx *c, const char *name);
const char *kw_param_str(const kw_opctx *c, const char *name);  /* STRING and ENUM */
const int64_t *kw_param_ints(const kw_opctx *c, const char *name, int *n);
/* true when the pipeline set it (rather than the default) */
bool kw_param_is_set(const kw_opctx *c, const char *name);

/* ---- stage context ---- */
const char *kw_ctx_stage(const kw_opctx *c);       /* the stage id */
uint64_t kw_ctx_seed(const kw_opctx *c);           /* the run's seed */
struct kw_engine *kw_ctx_engine(kw_opctx *c);      /* device engine; loads the model lazily */
/* Records a key/value for the run's provenance (params table, prefixed by the stage). */
int kw_ctx_record(kw_opctx *c, const char *key, const char *value);

/* ---- tasks ---- */
int64_t kw_task_sample(const kw_task *t);          /* sample index; -1 for once tasks */
kw_value *kw_task_in(const kw_task *t, int port);  /* (transfer none) first value */
int kw_task_in_n(const kw_task *t, int port);      /* values on a MULTI port */
kw_value *kw_task_in_at(const kw_task *t, int port, int i);
int kw_task_out(kw_task *t, int port, kw_value *v); /* (transfer full) */
int kw_task_fail(kw_task *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));        /* returns code */
/* Completes a task whose run returned KW_PENDING; any thread. rc < 0 fails the sample. */
void kw_task_complete(kw_task *t, int rc);
/* Counter-based random key for (seed, sample, step): deterministic, independent of
 * scheduling. */
uint64_t kw_rand_key(uint64_t seed, uint64_t sample, uint64_t step);
/* Splitmix64 stream from a key: a uniform double in [0,1) and the next state. */
double kw_rand_uniform(uint64_t *state);

/* ---- futures: work on a lane from inside an operator or a hook ---- */
kw_future *kw_submit(kw_opctx *c, unsigned lane, int (*fn)(void *arg), void *arg);
int kw_wait(kw_future *f); /* returns fn's result and frees f */

#ifdef __cplusplus
}
#endif
#endif
