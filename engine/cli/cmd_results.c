/* placeholder: filled in by its owner */
#include "cli.h"

int kw_cmd_runs(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("runs", "not built yet"); }
int kw_cmd_show(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("show", "not built yet"); }
int kw_cmd_compare(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("compare", "not built yet"); }
int kw_cmd_query(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("query", "not built yet"); }
int kw_cmd_export(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("export", "not built yet"); }
int kw_cmd_db(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("db", "not built yet"); }
