/* Fuzz target: pipeline parser + graph build (+ --set, sweep cells, describe) against the
 * fake operators of tests/pipelines/testops.c. A libFuzzer target with -Dfuzz=true;
 * else replay.c's main() replays the corpus. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../pipelines/testops.c"
#include "graph.h"
#include "kvweave/util.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void build_cell(const kw_pdesc *d, const kw_registry *r, int i)
{
    kw_error err = {0};
    kw_pdesc *cell = NULL;
    kw_graph *g = NULL;
    (void)kw_pdesc_cell_label(d, i);
    if (kw_pdesc_sweep_cell(d, i, &cell, &err) == 0 && kw_graph_build(cell, r, &g, &err) == 0) {
        free(kw_graph_describe(g));
        for (int s = 0; s < g->n_stages; s++)
            free(kw_gstage_params_text(&g->stages[s]));
    }
    kw_graph_free(g);
    kw_pdesc_free(cell);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kw_registry *reg;
    kw_error err = {0};
    if (!reg && kw_registry_new(kw_plugin_ops, &reg, &err) < 0)
        abort();
    kw_pdesc *d = NULL;
    if (kw_pipeline_parse("fuzz.yaml", (const char *)data, size, &d, &err) < 0) {
        if (!err.msg[0] || err.code >= 0)
            abort(); /* every failure explains itself */
        return 0;
    }
    /* the last line, when it reads `#set k=v`, is applied like --set */
    const char *set = size > 6 ? memmem(data, size, "#set ", 5) : NULL;
    if (set) {
        char kv[256];
        size_t n = size - (size_t)(set - (const char *)data) - 5;
        snprintf(kv, sizeof kv, "%.*s", (int)(n < 255 ? n : 255), set + 5);
        char *eq = strchr(kv, '='), *nl = strchr(kv, '\n');
        if (nl)
            *nl = '\0';
        if (eq && (!nl || eq < nl)) {
            *eq = '\0';
            (void)kw_pdesc_set(d, kv, eq + 1, &err);
        }
    }
    int cells = kw_pdesc_sweep_cells(d);
    for (int i = 0; i < cells && i < 3; i++)
        build_cell(d, reg, i);
    if (cells > 3)
        build_cell(d, reg, cells - 1);
    kw_pdesc_free(d);
    return 0;
}
