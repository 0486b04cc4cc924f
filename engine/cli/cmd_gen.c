/* placeholder: filled in by its owner */
#include "cli.h"

int kw_cmd_bench(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("bench", "not built yet"); }
