/* Pipelines: YAML text -> description (names and raw values with file:line:col) ->
 * typed DAG. Internal to the engine; the run executor (run.c) consumes kw_graph.
 *
 *   kw_pdesc *d; kw_graph *g; kw_error err = {0};
 *   kw_pipeline_load("p.yaml", &d, &err);              // libyaml, limits, no typing
 *   kw_pdesc_set(d, "sel.budget", "512", &err);        // --set overrides
 *   int n = kw_pdesc_sweep_cells(d);                   // 1 without sweep:
 *   kw_pdesc *cell; kw_pdesc_sweep_cell(d, i, &cell, &err);
 *   kw_graph_build(cell, reg, &g, &err);               // resolve, type-check, phases
 *
 * Wiring. `in:` lists stage ids or `stage.port` (an output port by name); stage ids hold
 * only letters, digits, '_' and '-'. Each listed value goes to the first input port of
 * the consumer whose type equals the producer's output type and that is still free (a
 * KW_PORT_MULTI port takes every matching value, in order). Without `.port` the
 * producer's outputs are tried in their order and the first that fits is used. A stage
 * with no `in:` whose first input is of type `sample` is wired to the dataset stage
 * (`dataset:` becomes the first stage, with id "dataset"). An input port without
 * KW_PORT_OPTIONAL that gets no value is an error.
 *
 * Cardinality. A `once` output may feed `each` or `once` ports; an `each` output feeding
 * a `once` port is an error (it has to pass through a reduce: an op with `each` inputs and
 * `once` outputs).
 *
 * KV method stacks. A stage's kvmethod inputs, in the order listed, are the hook stack it
 * runs with (a decode stage). The producers' declared roles (kw_op.kv_roles) must obey
 * the stack rule of kvroles.h (at most one EVICT, at most one STORE); a stage that breaks
 * it is an error at the stage's place naming both methods. Producers that declare no
 * roles are checked when the stack is made at run time.
 *
 * Phases. The calibration phase (KW_PHASE_CALIB) is every reduce stage and everything
 * upstream of one: it runs to completion first, on its own seeded subset of samples. The
 * rest is KW_PHASE_MAIN. A calibration stage that runs per sample and whose values a main
 * stage also consumes (the dataset, a shared tokenizer) has `main_too` set: it runs in
 * both phases (the source is re-read for the main phase).
 *
 * Params are typed by the YAML 1.2 core schema: INT takes plain decimal/0x/0o ints,
 * FLOAT ints and floats (.inf, .nan), BOOL only true/false, STRING any scalar's text as
 * written, ENUM one of its choices, INTLIST a sequence of ints or a "0,1,2" string.
 * Quoted scalars are strings. Errors name file:line:col (or "--set KEY") and the numbers.
 * A plain null (`~`, `null`, nothing) for `with:`, `in:`, `run:`, `model:`, ... means
 * "not given". kw_graph_build refuses a description that still has a sweep: build each
 * cell (kw_pdesc_sweep_cell; a description without sweep has one cell, itself).
 */
#ifndef KW_GRAPH_H
#define KW_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "kvweave/op.h"
#include "registry.h"

typedef struct kw_pdesc kw_pdesc; /* opaque: the parsed YAML description */

/* Limits on outside input. */
#define KW_PIPELINE_MAX_BYTES (4 << 20)
#define KW_PIPELINE_MAX_DEPTH 64
#define KW_PIPELINE_MAX_ALIASES 256
#define KW_PIPELINE_MAX_STAGES 1024
#define KW_PIPELINE_MAX_NODES (1 << 18) /* YAML nodes after alias expansion */
#define KW_PIPELINE_MAX_CELLS 65536     /* sweep grid points */

int kw_pipeline_load(const char *path, kw_pdesc **out, kw_error *err);
/* name is used in messages; text need not be NUL-terminated. */
int kw_pipeline_parse(const char *name, const char *text, size_t n, kw_pdesc **out,
                      kw_error *err);
kw_pdesc *kw_pdesc_free(kw_pdesc *d);
/* `stage.param=value` (value parsed as a YAML scalar or flow sequence), also
 * `run.seed=...`, `run.limit=...`, `model=...`. */
int kw_pdesc_set(kw_pdesc *d, const char *key, const char *value, kw_error *err);
int kw_pdesc_sweep_cells(const kw_pdesc *d);
/* A copy of d with the i-th grid point applied and no sweep (transfer full). */
int kw_pdesc_sweep_cell(const kw_pdesc *d, int i, kw_pdesc **out, kw_error *err);
/* "sel.budget=256,evict.capacity=512" for cell i ("" without sweep); static per d. */
const char *kw_pdesc_cell_label(const kw_pdesc *d, int i);
/* Loads the `plugins:` of d into r; relative paths are taken from the pipeline file's
 * directory. A library already loaded (same real path) is skipped. */
int kw_pdesc_load_plugins(const kw_pdesc *d, kw_registry *r, kw_error *err);
const char *kw_pdesc_name(const kw_pdesc *d);

typedef enum kw_phase { KW_PHASE_MAIN = 0, KW_PHASE_CALIB = 1 } kw_phase;

/* A resolved parameter value. */
typedef struct kw_pval {
    kw_param_kind kind;
    bool set;            /* given in the pipeline (or by --set), not the default */
    int64_t i;           /* INT, BOOL (0/1) */
    double f;            /* FLOAT */
    char *s;             /* STRING, ENUM (owned) */
    int64_t *ints;       /* INTLIST (owned) */
    int n_ints;
    int line, col;       /* where it was set (0 for defaults) */
} kw_pval;

/* One wired value into an input port, in the order they were listed. */
typedef struct kw_gin {
    int port;            /* input port index of this stage */
    int from;            /* producing stage index */
    int from_port;       /* its output port */
} kw_gin;

typedef struct kw_gstage {
    char *id;
    const kw_op *op;
    kw_pval *params;     /* (op->n_params) in the op's order */
    kw_gin *in;
    int n_in;
    kw_phase phase;
    bool runs_each;      /* runs once per sample (has an `each` input or is a source) */
    int line, col;
    bool main_too;       /* CALIB stage that also runs in the main phase (see above) */
    bool is_reduce;      /* `each` inputs wired, `once` outputs: run + finish */
} kw_gstage;

/* What the run asks of the device engine (the `run:` section); 0: the engine's default. */
typedef struct kw_engine_req {
    const char *model, *device; /* filled by the executor from the graph */
    int64_t pool_mb;     /* KV pool size in MiB */
    int max_batch;       /* sequences running at once */
    int chunk;           /* prefill tokens per step */
    int page_tokens;     /* tokens a KV page */
    int kv_residual;     /* per-channel-K pages: latest tokens whose K stays f32 */
    int kv_dtype;        /* run.kv_pages as a kw_kvdtype: 0 float (f32 on the CPU, bf16
                            on the GPU), 1 int8, 2 int8_kchan, 3 int4_kchan */
} kw_engine_req;

typedef struct kw_calib {
    double sample_ratio; /* fraction of samples for the calibration phase (default 0.1) */
    int64_t n;           /* or an exact count (0 = use the ratio) */
    uint64_t seed;
} kw_calib;

typedef struct kw_graph {
    char *name;
    char *file;          /* the pipeline's path */
    char *yaml;          /* its full text, as recorded */
    char sha256[65];     /* of yaml */
    char *model;         /* model spec ("" when no stage needs one) */
    char *device;        /* "cpu" | "cuda[:N]" */
    char *db;            /* nullable: run.db */
    int64_t limit;       /* 0 = all samples */
    uint64_t seed;
    kw_engine_req engine; /* run.pool_mb, run.max_batch, run.chunk, run.page_tokens
                             (0: the engine's), run.kv_pages, run.kv_residual */
    kw_calib calib;
    char **plugins;      /* from `plugins:` */
    int n_plugins;
    kw_gstage *stages;
    int n_stages;
    int *topo;           /* stage indices in a topological order */
    int source;          /* the dataset stage (or -1) */
    char *cell_label;    /* sweep cell ("" if none) */
} kw_graph;

int kw_graph_build(const kw_pdesc *d, const kw_registry *r, kw_graph **out, kw_error *err);
kw_graph *kw_graph_free(kw_graph *g);
/* Run settings when absent: device "cpu", limit 0 (all), seed 1, db NULL;
 * calibration: sample_ratio 0.1, n 0, seed = the run's seed. */

/* Canonical text of a stage's params ("k=v;..." in op order) for cache keys. */
char *kw_gstage_params_text(const kw_gstage *s);
/* The DAG as text: stages in topological order, phase, lanes, ports, cardinalities. */
char *kw_graph_describe(const kw_graph *g);

#endif
