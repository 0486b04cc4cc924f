/* kvweave command line: one function per subcommand, each in the cmd_*.c file that owns
 * its subsystem. Each returns the process exit code (0 ok, 1 some samples failed, 2 bad
 * input, 3 internal). Only the CLI prints. */
#ifndef KW_CLI_H
#define KW_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "kvweave/status.h"

/* cmd_pipeline.c */
int kw_cmd_run(int argc, char **argv);
int kw_cmd_validate(int argc, char **argv);
int kw_cmd_plan(int argc, char **argv);
int kw_cmd_ops(int argc, char **argv);
int kw_cmd_schema(int argc, char **argv);
/* cmd_results.c, cmd_compare.c */
int kw_cmd_runs(int argc, char **argv);
int kw_cmd_show(int argc, char **argv);
int kw_cmd_compare(int argc, char **argv);
int kw_cmd_query(int argc, char **argv);
int kw_cmd_export(int argc, char **argv);
int kw_cmd_db(int argc, char **argv);
/* cmd_pull.c */
int kw_cmd_pull(int argc, char **argv);
/* cmd_gen.c */
int kw_cmd_gen(int argc, char **argv);
int kw_cmd_gen_model(int argc, char **argv); /* `gen-model`: `gen model` */
int kw_cmd_bench(int argc, char **argv);

/* main.c: shared helpers */
/* Prints "kvweave: <msg>" to stderr and returns kw_exit_code(err->code). */
int kw_cli_fail(const kw_error *err);
/* Prints "kvweave <cmd>: <fmt>" to stderr; returns 2 (usage errors). */
int kw_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* true when colors may be used on f (a terminal and NO_COLOR unset) */
bool kw_cli_color(FILE *f);
/* The results database path: --db, else $KVWEAVE_DB, else $KVWEAVE_HOME/results.db. */
const char *kw_cli_db_path(const char *flag);

#endif
