/* What the result commands share (cmd_results.c: runs, show, query, export, db;
 * cmd_compare.c: compare): their options, opening the store, naming runs, one-value
 * queries. Only the CLI prints: the functions that return an exit code have printed why. */
#ifndef KW_CLI_RESULTS_H
#define KW_CLI_RESULTS_H

#include <stdbool.h>

#include "results.h"

/* The most runs one command takes. */
#define KW_CLI_MAX_RUNS 64

typedef struct kw_ropts {
    const char *db, *format, *pipeline, *output, *reference, *metrics;
    long limit;
    int npos;
    char **pos; /* the positional arguments (the array owned: free(); the strings argv's) */
    bool help, yaml, branches;
} kw_ropts;

/* --name value | --name=value for the names in allowed ("db,format,..."); -o for
 * --output; everything else not starting with '-' is positional. 0, or 2 after printing
 * the usage error; free(o->pos) in both cases. */
int kw__ropts_parse(const char *cmd, int argc, char **argv, const char *allowed,
                    kw_ropts *o);
/* Opens the store of --db (kw_cli_db_path); 0, or the exit code after printing why. */
int kw__ropts_open_db(const kw_ropts *o, bool readonly, kw_db **db);
/* A run as the user named it (kw_db_resolve_run); 0, or the exit code after printing. */
int kw__resolve_run(kw_db *db, const char *ref, char uuid[37]);
/* The first column of the first row: malloc'd, NULL when there is none or it is NULL. */
char *kw__scalar(kw_db *db, const char *sql, const char *const *args, int nargs);
/* "?1, ?2, ..., ?n" for an IN list (a static buffer; n <= KW_CLI_MAX_RUNS). */
const char *kw__in_list(int n);
/* A kw_db_row_fn that appends each row's first column to a kw_table (ud). */
int kw__on_first_column(void *ud, int ncol, const char *const *names,
                        const char *const *vals, const int *types);

#endif
