/* `kvweave run`, `kvweave ops [describe NAME]`, `kvweave schema`. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../operators/builtin.h"
#include "cli.h"
#include "graph.h"
#include "kvweave/engine.h"
#include "registry.h"
#include "results.h"
#include "run.h"

/* ------------------------------------------------------- the device engine ---- */

static int env_open(const kw_engine_req *q, void **out, kw_error *err)
{
    kw_engine *e = NULL;
    kw_engine_opts o = kw_engine_defaults();
    if (q->pool_mb > 0)
        o.pool_mb = q->pool_mb;
    if (q->max_batch > 0)
        o.max_batch = q->max_batch;
    if (q->chunk > 0)
        o.chunk = q->chunk;
    if (q->page_tokens > 0)
        o.page_tokens = q->page_tokens;
    o.kv_residual = q->kv_residual;
    o.kv_dtype = (kw_kvdtype)q->kv_dtype;
    int rc = kw_engine_open_opts(q->model, q->device, &o, &e, err);
    *out = e;
    return rc;
}
static void env_close(void *e) { kw_engine_close(e); }
static const char *env_sha(void *e) { return kw_engine_model(e)->sha256; }
static const char *env_path(void *e) { return kw_engine_model(e)->path; }
static double env_busy(void *e)
{
    kw_engine_stats st;
    kw_engine_get_stats(e, &st);
    return st.busy_s;
}
static void env_io(void *e, int64_t *h2d, int64_t *d2h)
{
    kw_engine_stats st;
    kw_engine_get_stats(e, &st);
    *h2d = st.h2d_bytes, *d2h = st.d2h_bytes;
}
static int64_t env_dev(void *e) { return kw_engine_device_used(e); }
static const kw_run_env engine_env = {env_open, env_close, env_sha, env_path, env_busy, env_io,
                                      env_dev};

/* ----------------------------------------------------------------- run ---- */

static volatile sig_atomic_t stop_flag;

/* The first SIGINT or SIGTERM stops the run gracefully: no new samples; those in
 * flight finish and are recorded, and the run ends as KILLED. A second one ends the
 * process at once: the run stays RUNNING, which --resume continues like a KILLED one. */
static void on_signal(int sig)
{
    static const char msg[] = "\nkvweave: stopping: no new samples; those in flight finish "
                              "and are recorded (interrupt again to quit now)\n";
    stop_flag = 1;
    signal(sig, SIG_DFL);
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1); /* async-signal-safe */
    (void)w;
}

static int usage_run(void)
{
    printf("usage: kvweave run P.yaml [options]\n\n"
           "  --set STAGE.PARAM=VALUE  override a parameter (also run.K, calibration.K, model)\n"
           "  --device cpu|cuda[:N]    where the model runs (run.device)\n"
           "  --limit N                at most N samples (run.limit)\n"
           "  --db FILE                results store (else run.db, $KVWEAVE_DB,\n"
           "                           $KVWEAVE_HOME/results.db)\n"
           "  --resume                 continue the newest unfinished run of this pipeline:\n"
           "                           finished samples are skipped\n"
           "  --no-cache               recompute cached calibration outputs\n"
           "  --inflight N             samples in flight at once (default 32)\n"
           "  --threads N              cpu lane threads (default: the cores)\n"
           "  --quiet                  no progress lines\n"
           "\nExit codes: 0 all samples ok, 1 some failed, 2 bad input, 3 internal error,\n"
           "130 interrupted (what finished is recorded; --resume continues). An interrupt\n"
           "lets the samples in flight finish; a second one quits at once.\n");
    return 0;
}

static long num_arg(const char *opt, const char *v, long lo, long hi, int *bad)
{
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || n < lo || n > hi) {
        kw_cli_usage("run", "%s wants a number from %ld to %ld, got '%s'", opt, lo, hi,
                     v ? v : "");
        *bad = 1;
    }
    return n;
}

/* Prints the run's scores: every run-level metric whose key starts with "score". */
static int print_score(void *ud, int ncol, const char *const *names, const char *const *vals,
                       const int *types)
{
    (void)ud, (void)ncol, (void)names, (void)types;
    if (vals)
        printf("  %-28s %s\n", vals[0], vals[1] ? vals[1] : "");
    return 0;
}

static void summary(kw_db *db, const kw_run_result *res, const char *label)
{
    printf("run %s%s%s: %" PRId64 " ok, %" PRId64 " failed%s in %.1f s\n", res->uuid,
           label[0] ? " " : "", label, res->ok, res->failed,
           res->resumed ? " (more done before)" : "", res->wall_s);
    const char *args[1] = {res->uuid};
    kw_error err = {0};
    kw_db_query(db,
                "SELECT key, printf('%.4f', value) FROM metrics WHERE run = ?1 AND sample IS "
                "NULL AND (key = 'score' OR key LIKE 'score/%' OR key IN ('ppl', 'nll', 'kl', "
                "'top1', 'top5')) ORDER BY key",
                args, 1, print_score, NULL, &err);
}

int kw_cmd_run(int argc, char **argv)
{
    const char *path = NULL, *db_flag = NULL;
    const char **sets = calloc((size_t)argc + 3, sizeof *sets);
    char devset[256], limset[64];
    int n_sets = 0, bad = 0;
    kw_run_opts o = kw_run_defaults();
    o.env = &engine_env;
    o.stop = &stop_flag;
    o.progress = isatty(2) ? 2 : 1;
    if (!sets)
        return kw_cli_usage("run", "out of memory");
    for (int i = 1; i < argc && !bad; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            free(sets);
            return usage_run();
        } else if (!strcmp(s, "--set")) {
            if (!v || !strchr(v, '='))
                bad = kw_cli_usage("run", "--set wants STAGE.PARAM=VALUE");
            else
                sets[n_sets++] = v, i++;
        } else if (!strcmp(s, "--device") && v) {
            snprintf(devset, sizeof devset, "run.device=%s", v);
            sets[n_sets++] = devset, i++;
        } else if (!strcmp(s, "--limit") && v) {
            num_arg("--limit", v, 0, 1L << 40, &bad);
            snprintf(limset, sizeof limset, "run.limit=%s", v);
            sets[n_sets++] = limset, i++;
        } else if (!strcmp(s, "--db") && v) {
            db_flag = v, i++;
        } else if (!strcmp(s, "--resume")) {
            o.resume = true;
        } else if (!strcmp(s, "--no-cache")) {
            o.no_cache = true;
        } else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) {
            o.progress = 0;
        } else if (!strcmp(s, "--inflight") && v) {
            o.inflight = (int)num_arg("--inflight", v, 1, 4096, &bad), i++;
        } else if (!strcmp(s, "--threads") && v) {
            o.cpu_threads = (int)num_arg("--threads", v, 1, 1024, &bad), i++;
        } else if (s[0] == '-' && s[1]) {
            bad = kw_cli_usage("run", "unknown option '%s' (or it lacks its value)", s);
        } else if (!path) {
            path = s;
        } else {
            bad = kw_cli_usage("run", "one pipeline file at a time ('%s' and '%s')", path, s);
        }
    }
    if (!bad && !path)
        bad = kw_cli_usage("run", "which pipeline? usage: kvweave run P.yaml [options]");
    if (bad) {
        free(sets);
        return 2;
    }

    kw_error err = {0};
    kw_pdesc *d = NULL;
    kw_registry *r = NULL;
    kw_db *db = NULL;
    int rc = kw_pipeline_load(path, &d, &err);
    for (int i = 0; rc >= 0 && i < n_sets; i++) {
        char key[512];
        const char *eq = strchr(sets[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
        rc = kw_pdesc_set(d, key, eq + 1, &err);
    }
    if (rc >= 0)
        rc = kw_registry_new(kw_builtin_ops, &r, &err);
    if (rc >= 0)
        rc = kw_registry_load_env(r, &err);
    if (rc >= 0)
        rc = kw_pdesc_load_plugins(d, r, &err);
    int cells = rc >= 0 ? kw_pdesc_sweep_cells(d) : 0;
    /* Every cell is built (type-checked) before anything runs. */
    kw_graph **gs = rc >= 0 ? calloc((size_t)cells, sizeof *gs) : NULL;
    if (rc >= 0 && !gs)
        rc = kw_error_set(&err, KW_ENOMEM, "out of memory");
    for (int i = 0; rc >= 0 && i < cells; i++) {
        kw_pdesc *cell = NULL;
        rc = kw_pdesc_sweep_cell(d, i, &cell, &err);
        if (rc >= 0)
            rc = kw_graph_build(cell, r, &gs[i], &err);
        if (rc < 0 && cells > 1) {
            char msg[sizeof err.msg];
            snprintf(msg, sizeof msg, "%s", err.msg);
            snprintf(err.msg, sizeof err.msg, "%s (in sweep cell %d: %s)", msg, i,
                     kw_pdesc_cell_label(d, i));
        }
        kw_pdesc_free(cell);
    }
    if (rc >= 0) {
        const char *dbp = db_flag ? db_flag
                                  : gs[0]->db && gs[0]->db[0] ? gs[0]->db : kw_cli_db_path(NULL);
        rc = kw_db_open(dbp, false, &db, &err);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int64_t ok = 0, failed = 0;
    char parent[37] = "";
    if (rc >= 0 && cells > 1) {
        kw_run_info info = {.pipeline = gs[0]->name, .yaml = gs[0]->yaml,
                            .yaml_sha256 = gs[0]->sha256, .cell_label = "sweep",
                            .model_id = gs[0]->model, .device = gs[0]->device,
                            .seed = gs[0]->seed};
        rc = kw_db_run_begin(db, &info, parent, &err);
        if (rc >= 0)
            printf("sweep %s: %d cells\n", parent, cells);
    }
    for (int i = 0; rc >= 0 && i < cells && !stop_flag; i++) {
        kw_run_result res;
        o.parent = parent[0] ? parent : NULL;
        const kw_graph *g = gs[i];
        o.total_hint = 0;
        if (g->source >= 0) { /* "n" of the data set (per task for RULER), else the limit */
            const kw_gstage *src = &g->stages[g->source];
            for (int k = 0; k < src->op->n_params; k++)
                if (!strcmp(src->op->params[k].name, "n") && src->params[k].kind == KW_PARAM_INT)
                    o.total_hint = src->params[k].i;
            if (g->limit > 0 && (o.total_hint == 0 || g->limit < o.total_hint))
                o.total_hint = g->limit;
        }
        if (cells > 1)
            fprintf(stderr, "cell %d/%d: %s\n", i + 1, cells, g->cell_label);
        rc = kw_run_graph(g, db, &o, &res, &err);
        if (res.uuid[0])
            summary(db, &res, g->cell_label);
        ok += res.ok;
        failed += res.failed;
    }
    if (parent[0]) {
        kw_error e2 = {0};
        kw_db_run_end(db, parent, rc < 0 ? "FAILED" : stop_flag ? "KILLED" : "FINISHED", &e2);
    }
    int code = rc < 0 ? kw_cli_fail(&err) : stop_flag ? 130 : failed > 0 ? 1 : 0;
    if (rc >= 0 && stop_flag)
        fprintf(stderr, "kvweave: interrupted; what finished is recorded (--resume continues)\n");
    if (rc >= 0 && failed > 0)
        fprintf(stderr, "kvweave: %" PRId64 " of %" PRId64 " samples failed (see `kvweave "
                "export --format md`)\n", failed, ok + failed);
    for (int i = 0; gs && i < cells; i++)
        kw_graph_free(gs[i]);
    free(gs);
    kw_db_close(db);
    kw_pdesc_free(d);
    kw_registry_free(r);
    free(sets);
    return code;
}

/* ----------------------------------------------------------------- ops ---- */

static const char *kind_name(kw_param_kind k)
{
    static const char *const n[] = {"int", "float", "bool", "string", "enum", "int-list"};
    return (unsigned)k < 6 ? n[k] : "?";
}

static void lanes_text(unsigned lanes, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s", lanes & KW_LANE_CPU ? "cpu " : "", lanes & KW_LANE_IO ? "io " : "",
             lanes & KW_LANE_GPU ? "gpu " : "");
    size_t k = strlen(buf);
    if (k)
        buf[k - 1] = '\0';
}

static void describe(const kw_op *op)
{
    char lanes[32];
    lanes_text(op->lanes, lanes, sizeof lanes);
    char roles[32] = "";
    if (kw_op_kv_roles(op))
        kw_kvroles_text(kw_op_kv_roles(op), roles, sizeof roles);
    printf("%s (version %d)\n  %s\n\n  lanes: %s%s%s%s%s\n", op->name, op->version,
           op->doc ? op->doc : "", lanes, op->flags & KW_OP_SOURCE ? "; a source (data set)" : "",
           op->flags & KW_OP_NEEDS_MODEL ? "; needs the model" : "",
           roles[0] ? "; kv method roles: " : "", roles);
    printf("\n  inputs:\n");
    if (!op->n_inputs)
        printf("    (none)\n");
    for (int i = 0; i < op->n_inputs; i++) {
        const kw_port *p = &op->inputs[i];
        printf("    %-12s %-11s %-5s%s%s  %s\n", p->name, p->type, p->card == KW_ONCE ? "once" : "each",
               p->flags & KW_PORT_OPTIONAL ? " optional" : "", p->flags & KW_PORT_MULTI ? " multi" : "",
               p->doc ? p->doc : "");
    }
    printf("\n  outputs:\n");
    if (!op->n_outputs)
        printf("    (none)\n");
    for (int i = 0; i < op->n_outputs; i++) {
        const kw_port *p = &op->outputs[i];
        printf("    %-12s %-11s %-5s  %s\n", p->name, p->type, p->card == KW_ONCE ? "once" : "each",
               p->doc ? p->doc : "");
    }
    printf("\n  params:\n");
    if (!op->n_params)
        printf("    (none)\n");
    for (int i = 0; i < op->n_params; i++) {
        const kw_param_spec *p = &op->params[i];
        char range[96] = "";
        if (p->min != 0 || p->max != 0)
            snprintf(range, sizeof range, " [%g, %g]", p->min, p->max);
        printf("    %-14s %-8s default %s%s%s%s\n      %s\n", p->name, kind_name(p->kind),
               p->def ? p->def : "(required)", range, p->choices ? " one of " : "",
               p->choices ? p->choices : "", p->doc ? p->doc : "");
    }
}

int kw_cmd_ops(int argc, char **argv)
{
    kw_error err = {0};
    kw_registry *r = NULL;
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: kvweave ops            list operators (built-in and plug-ins)\n"
               "       kvweave ops describe NAME  ports, params, defaults, docs\n");
        return 0;
    }
    int rc = kw_registry_new(kw_builtin_ops, &r, &err);
    if (rc >= 0)
        rc = kw_registry_load_env(r, &err);
    if (rc < 0)
        return kw_cli_fail(&err);
    int code = 0;
    if (argc >= 2 && !strcmp(argv[1], "describe")) {
        if (argc != 3) {
            code = kw_cli_usage("ops", "usage: kvweave ops describe NAME");
        } else {
            const kw_op *op = kw_registry_find(r, argv[2]);
            if (op) {
                describe(op);
            } else {
                const char *near = kw_registry_suggest(r, argv[2]);
                kw_error_set(&err, KW_ENOTFOUND, "no operator '%s'%s%s%s", argv[2],
                             near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
                code = kw_cli_fail(&err);
            }
        }
    } else if (argc > 1) {
        code = kw_cli_usage("ops", "unknown argument '%s' (ops, or ops describe NAME)", argv[1]);
    } else {
        for (int i = 0; i < kw_registry_count(r); i++) {
            const kw_op *op = kw_registry_at(r, i);
            char lanes[32];
            lanes_text(op->lanes, lanes, sizeof lanes);
            printf("%-22s v%-2d %-8s %s\n", op->name, op->version, lanes, op->doc ? op->doc : "");
        }
    }
    kw_registry_free(r);
    return code;
}

/* -------------------------------------------------------------- schema ---- */

static json_t *param_schema(const kw_param_spec *p)
{
    json_t *s = json_object();
    switch (p->kind) {
    case KW_PARAM_INT:
        json_object_set_new(s, "type", json_string("integer"));
        break;
    case KW_PARAM_FLOAT:
        json_object_set_new(s, "type", json_string("number"));
        break;
    case KW_PARAM_BOOL:
        json_object_set_new(s, "type", json_string("boolean"));
        break;
    case KW_PARAM_STRING:
        json_object_set_new(s, "type", json_string("string"));
        break;
    case KW_PARAM_ENUM: {
        json_t *e = json_array();
        char buf[512];
        snprintf(buf, sizeof buf, "%s", p->choices ? p->choices : "");
        for (char *save = NULL, *t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save))
            json_array_append_new(e, json_string(t));
        json_object_set_new(s, "enum", e);
        break;
    }
    case KW_PARAM_INTLIST:
        json_object_set_new(s, "oneOf",
                            json_pack("[{s:s,s:{s:s}},{s:s,s:s}]", "type", "array", "items",
                                      "type", "integer", "type", "string", "pattern",
                                      "^-?[0-9]+(,-?[0-9]+)*$"));
        break;
    }
    if ((p->min != 0 || p->max != 0) && (p->kind == KW_PARAM_INT || p->kind == KW_PARAM_FLOAT)) {
        json_object_set_new(s, "minimum", json_real(p->min));
        json_object_set_new(s, "maximum", json_real(p->max));
    }
    if (p->def)
        json_object_set_new(s, "x-default", json_string(p->def));
    if (p->doc)
        json_object_set_new(s, "description", json_string(p->doc));
    return s;
}

static json_t *op_schema(const kw_op *op)
{
    json_t *props = json_object(), *req = json_array();
    for (int i = 0; i < op->n_params; i++) {
        json_object_set_new(props, op->params[i].name, param_schema(&op->params[i]));
        if (!op->params[i].def)
            json_array_append_new(req, json_string(op->params[i].name));
    }
    json_t *with = json_pack("{s:s,s:o,s:b}", "type", "object", "properties", props,
                             "additionalProperties", 0);
    if (json_array_size(req))
        json_object_set(with, "required", req);
    json_decref(req);
    return json_pack("{s:{s:{s:{s:s}}},s:{s:{s:o}}}", "if", "properties", "op", "const", op->name,
                     "then", "properties", "with", with);
}

int kw_cmd_schema(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: kvweave schema [--out FILE]   the pipeline JSON Schema (stdout)\n");
            return 0;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            return kw_cli_usage("schema", "unknown argument '%s'", argv[i]);
        }
    }
    kw_error err = {0};
    kw_registry *r = NULL;
    if (kw_registry_new(kw_builtin_ops, &r, &err) < 0)
        return kw_cli_fail(&err);
    json_t *names = json_array(), *rules = json_array();
    for (int i = 0; i < kw_registry_count(r); i++) {
        const kw_op *op = kw_registry_at(r, i);
        json_array_append_new(names, json_string(op->name));
        json_array_append_new(rules, op_schema(op));
    }
    json_t *stage = json_pack(
        "{s:s,s:[s],s:{s:{s:s,s:s},s:{s:o},s:{s:[{s:s},{s:s,s:{s:s}}]},s:{s:s}},s:o}", "type",
        "object", "required", "op", "properties", "id", "type", "string", "pattern",
        "^[A-Za-z0-9_-]+$", "op", "enum", names, "in", "oneOf", "type", "string", "type",
        "array", "items", "type", "string", "with", "type", "object", "allOf", rules);
    json_object_set_new(stage, "additionalProperties", json_false());
    json_t *schema = json_pack(
        "{s:s,s:s,s:s,s:[s],s:{s:{s:s},s:{s:s},s:O,s:{s:s,s:O},s:{s:s,s:{s:s}},"
        "s:{s:s,s:{s:{s:s},s:{s:s,s:i},s:{s:s,s:i},s:{s:s},s:{s:s,s:i},s:{s:s,s:i,s:i},"
        "s:{s:s,s:i},s:{s:s,s:[s,s,s,s]},s:{s:s,s:i,s:i},s:{s:s,s:i}},s:b},"
        "s:{s:s,s:{s:{s:s,s:i,s:i},s:{s:s,s:i},s:{s:s,s:i}},s:b},"
        "s:{s:s,s:{s:s}}},s:b}",
        "$schema", "https://json-schema.org/draft/2020-12/schema", "title", "kvweave pipeline", "type",
        "object", "required", "stages", "properties", "name", "type", "string", "model", "type",
        "string", "dataset", stage, "stages", "type", "array", "items", stage, "sweep", "type",
        "object", "additionalProperties", "type", "array", "run", "type", "object", "properties",
        "device", "type", "string", "limit", "type", "integer", "minimum", 0, "seed", "type",
        "integer", "minimum", 0, "db", "type", "string", "pool_mb", "type", "integer",
        "minimum", 0, "max_batch", "type", "integer", "minimum", 0, "maximum", 64, "chunk",
        "type", "integer", "minimum", 0, "kv_pages", "type", "string", "enum", "float", "int8",
        "int8_kchan", "int4_kchan", "page_tokens", "type", "integer", "minimum", 0, "maximum",
        4096, "kv_residual", "type", "integer", "minimum", 0, "additionalProperties", 0,
        "calibration", "type", "object", "properties", "sample_ratio", "type", "number",
        "minimum", 0, "maximum", 1, "n", "type", "integer", "minimum", 0, "seed", "type",
        "integer", "minimum", 0, "additionalProperties", 0, "plugins", "type", "array", "items",
        "type", "string", "additionalProperties", 0);
    json_decref(stage);
    char *text = schema ? json_dumps(schema, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(schema);
    kw_registry_free(r);
    if (!text) {
        kw_error_set(&err, KW_ENOMEM, "cannot make the schema");
        return kw_cli_fail(&err);
    }
    int code = 0;
    FILE *f = out ? fopen(out, "w") : stdout;
    if (!f) {
        kw_error_set(&err, KW_EIO, "%s: cannot write", out);
        code = kw_cli_fail(&err);
    } else {
        fputs(text, f);
        fputc('\n', f);
        if (out && fclose(f) != 0) {
            kw_error_set(&err, KW_EIO, "%s: write failed", out);
            code = kw_cli_fail(&err);
        }
    }
    free(text);
    return code;
}
