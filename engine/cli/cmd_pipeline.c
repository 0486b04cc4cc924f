/* placeholder: filled in by its owner */
#include "cli.h"

int kw_cmd_run(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("run", "not built yet"); }
int kw_cmd_ops(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("ops", "not built yet"); }
int kw_cmd_schema(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("schema", "not built yet"); }
