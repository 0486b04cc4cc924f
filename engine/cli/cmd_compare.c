/* kvweave compare: run-level metrics of several runs side by side (store/results.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_results.h"
#include "cmd_results_fmt.h"
#include "results.h"

/* Rows: the keys of `keys_sql` (runs bound as ?1..?n); columns: each run's value from
 * `value_sql` (?1 run, ?2 key), with ratios to the first run when ratios; only_diff:
 * keep rows whose values differ. */
static int pivot(kw_db *db, char (*runs)[37], int n, const char *keys_sql,
                 const char *value_sql, bool ratios, bool only_diff, const char *title,
                 bool color)
{
    const char *args[KW_CLI_MAX_RUNS];
    for (int i = 0; i < n; i++)
        args[i] = runs[i];
    kw_table keys = {0};
    kw_error err = {0};
    if (kw_db_query(db, keys_sql, args, n, kw__on_first_column, &keys, &err) < 0) {
        kw__table_clear(&keys);
        return kw_cli_fail(&err);
    }
    int ncol = 1 + n + (ratios ? n - 1 : 0);
    char heads[2 * KW_CLI_MAX_RUNS][24];
    const char *head[2 * KW_CLI_MAX_RUNS + 1] = {title};
    for (int i = 0, c = 1; i < n; i++) {
        snprintf(heads[c], sizeof heads[c], "[%d] %.8s", i + 1, runs[i]);
        head[c] = heads[c];
        c++;
        if (ratios && i > 0) {
            snprintf(heads[c], sizeof heads[c], "[%d]/[1]", i + 1);
            head[c] = heads[c];
            c++;
        }
    }
    kw_table t;
    kw__table_init(&t, ncol, head, 60);
    char cells[2 * KW_CLI_MAX_RUNS][48];
    for (int k = 0; k < keys.nrows; k++) {
        const char *key = keys.cells[k];
        const char *row[2 * KW_CLI_MAX_RUNS + 1] = {key};
        double ref = 0;
        bool have_ref = false, differ = false;
        char *first = NULL;
        for (int i = 0, c = 1; i < n; i++) {
            const char *a2[] = {runs[i], key};
            char *v = kw__scalar(db, value_sql, a2, 2);
            if (i == 0)
                first = v ? strdup(v) : NULL;
            else if ((!v) != (!first) || (v && strcmp(v, first)))
                differ = true;
            kw__fmt_num(v, cells[c], sizeof cells[c]);
            row[c] = cells[c];
            c++;
            double d = v ? strtod(v, NULL) : 0;
            if (i == 0) {
                ref = d;
                have_ref = v != NULL;
            } else if (ratios) {
                if (v && have_ref && ref != 0)
                    snprintf(cells[c], sizeof cells[c], "%.4g", d / ref);
                else
                    snprintf(cells[c], sizeof cells[c], "-");
                row[c] = cells[c];
                c++;
            }
            free(v);
        }
        free(first);
        if (!only_diff || differ)
            kw__table_add(&t, row);
    }
    if (t.nrows > 0) {
        printf("\n");
        kw__table_print(&t, stdout, color, "");
    } else if (!only_diff) {
        printf("\n(no run-level metrics)\n");
    }
    kw__table_clear(&t);
    kw__table_clear(&keys);
    return 0;
}

int kw_cmd_compare(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("compare", argc, argv, "db", &o);
    if (rc == 0 && (o.help || o.npos < 1 || o.npos > KW_CLI_MAX_RUNS)) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave compare RUN RUN... [--db FILE]\nRun-level metrics side by "
                "side, one row per metric, with each run's ratio to the first; then the "
                "params that differ. At most %d runs.\n", KW_CLI_MAX_RUNS);
        free(o.pos);
        return o.help ? 0 : 2;
    }
    kw_db *db = NULL;
    char runs[KW_CLI_MAX_RUNS][37];
    if (rc == 0)
        rc = kw__ropts_open_db(&o, true, &db);
    for (int i = 0; rc == 0 && i < o.npos; i++)
        rc = kw__resolve_run(db, o.pos[i], runs[i]);
    bool color = kw_cli_color(stdout);
    for (int i = 0; rc == 0 && i < o.npos; i++) {
        const char *a[] = {runs[i]};
        char *desc = kw__scalar(db, "SELECT pipeline || '  ' || status || CASE WHEN cell_label "
                            "<> '' THEN '  ' || cell_label ELSE '' END FROM runs WHERE uuid = "
                            "?1", a, 1);
        printf("[%d] %s  %s\n", i + 1, runs[i], desc ? desc : "");
        free(desc);
    }
    char sql[KW_CLI_MAX_RUNS * 6 + 256];
    if (rc == 0) {
        snprintf(sql, sizeof sql, "SELECT DISTINCT key AS metric FROM metrics WHERE sample IS "
                 "NULL AND run IN (%s) ORDER BY key", kw__in_list(o.npos));
        rc = pivot(db, runs, o.npos, sql,
                   "SELECT value FROM metrics WHERE run = ?1 AND sample IS NULL AND key = ?2 "
                   "ORDER BY step DESC LIMIT 1", true, false, "metric", color);
    }
    if (rc == 0 && o.npos > 1) {
        snprintf(sql, sizeof sql, "SELECT DISTINCT key AS param FROM params WHERE run IN (%s) "
                 "ORDER BY key", kw__in_list(o.npos));
        rc = pivot(db, runs, o.npos, sql, "SELECT value FROM params WHERE run = ?1 AND key = "
                   "?2", false, true, "param", color);
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}
