/* placeholder: filled in by its owner */
#include "cli.h"

int kw_cmd_pull(int argc, char **argv) { (void)argc; (void)argv; return kw_cli_usage("pull", "not built yet"); }
