/* `kvweave validate P.yaml [--set k=v]...` and `kvweave plan P.yaml [--set k=v]...
 * [--cell N]`: parse, build every sweep cell against the registry of built-ins and
 * plug-ins ($KVWEAVE_PLUGIN_PATH, then the pipeline's `plugins:`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "graph.h"
#include "registry.h"

#include "../../operators/builtin.h"
#define KW_CLI_BUILTINS kw_builtin_ops

typedef struct vargs {
    const char *path;
    const char **sets; /* "k=v" */
    int n_sets;
    int cell;          /* -1: all cells (validate) or the first (plan) */
} vargs;

static int parse_args(const char *cmd, int argc, char **argv, vargs *a)
{
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    a->cell = -1;
    if (!a->sets)
        return kw_cli_usage(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            printf("usage: kvweave %s P.yaml [--set stage.param=value]...%s\n", cmd,
                   strcmp(cmd, "plan") ? "" : " [--cell N]");
            return 0;
        }
        if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) {
            const char *kv = s[5] == '=' ? s + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv || !strchr(kv, '='))
                return kw_cli_usage(cmd, "--set wants KEY=VALUE");
            a->sets[a->n_sets++] = kv;
        } else if (!strcmp(cmd, "plan") && !strcmp(s, "--cell") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0)
                return kw_cli_usage(cmd, "--cell wants a cell number, got '%s'", argv[i]);
            a->cell = (int)v;
        } else if (s[0] == '-' && s[1]) {
            return kw_cli_usage(cmd, "unknown option '%s'", s);
        } else if (!a->path) {
            a->path = s;
        } else {
            return kw_cli_usage(cmd, "one pipeline file at a time ('%s' and '%s')", a->path, s);
        }
    }
    if (!a->path)
        return kw_cli_usage(cmd, "which pipeline? usage: kvweave %s P.yaml [--set k=v]...", cmd);
    return -1;
}

/* Parses the pipeline, applies --set, sets up the registry. */
static int prepare(const vargs *a, kw_pdesc **d, kw_registry **r, kw_error *err)
{
    int rc = kw_pipeline_load(a->path, d, err);
    for (int i = 0; rc >= 0 && i < a->n_sets; i++) {
        char key[512];
        const char *eq = strchr(a->sets[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - a->sets[i]), a->sets[i]);
        rc = kw_pdesc_set(*d, key, eq + 1, err);
    }
    if (rc >= 0)
        rc = kw_registry_new(KW_CLI_BUILTINS, r, err);
    if (rc >= 0)
        rc = kw_registry_load_env(*r, err);
    if (rc >= 0)
        rc = kw_pdesc_load_plugins(*d, *r, err);
    return rc;
}

static int build_cell(const kw_pdesc *d, const kw_registry *r, int i, kw_graph **g,
                      kw_error *err)
{
    kw_pdesc *cell = NULL;
    int rc = kw_pdesc_sweep_cell(d, i, &cell, err);
    if (rc >= 0)
        rc = kw_graph_build(cell, r, g, err);
    if (rc < 0 && kw_pdesc_sweep_cells(d) > 1) { /* keep file:line:col first for editors */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        snprintf(err->msg, sizeof err->msg, "%s (in sweep cell %d: %s)", msg, i,
                 kw_pdesc_cell_label(d, i));
    }
    kw_pdesc_free(cell);
    return rc;
}

static int run_cmd(const char *cmd, int argc, char **argv)
{
    vargs a = {0};
    int code = parse_args(cmd, argc, argv, &a);
    if (code >= 0) {
        free(a.sets);
        return code;
    }
    kw_error err = {0};
    kw_pdesc *d = NULL;
    kw_registry *r = NULL;
    kw_graph *g = NULL;
    int rc = prepare(&a, &d, &r, &err), cells = d ? kw_pdesc_sweep_cells(d) : 0, n = 0;
    bool plan = !strcmp(cmd, "plan");
    if (rc >= 0 && plan && a.cell >= cells)
        rc = kw_error_set(&err, KW_ERANGE, "--cell %d: the sweep has %d cells", a.cell, cells);
    for (int i = 0; rc >= 0 && i < cells; i++) {
        if (plan && i != (a.cell < 0 ? 0 : a.cell))
            continue;
        if ((rc = build_cell(d, r, i, &g, &err)) < 0)
            break;
        n = g->n_stages;
        if (plan) {
            char *text = kw_graph_describe(g);
            if (!text)
                rc = kw_error_set(&err, KW_ENOMEM, "out of memory");
            else if (cells > 1)
                printf("sweep: %d cells; this is cell %d\n", cells, i);
            if (text)
                fputs(text, stdout);
            free(text);
        }
        g = kw_graph_free(g);
    }
    if (rc >= 0 && !plan)
        printf("ok: %s (%d stages, %d cells)\n", kw_pdesc_name(d), n, cells);
    code = rc < 0 ? kw_cli_fail(&err) : 0;
    kw_pdesc_free(d);
    kw_registry_free(r);
    free(a.sets);
    return code;
}

int kw_cmd_validate(int argc, char **argv) { return run_cmd("validate", argc, argv); }
int kw_cmd_plan(int argc, char **argv) { return run_cmd("plan", argc, argv); }
