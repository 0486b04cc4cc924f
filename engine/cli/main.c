/* kvweave — command-line entry point: dispatches to the subcommands of cli.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kvweave/util.h"
#include "kw_commit.h"
#include "kw_config.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"run", kw_cmd_run, "run a pipeline and record its results"},
    {"validate", kw_cmd_validate, "parse and type-check a pipeline"},
    {"plan", kw_cmd_plan, "print a pipeline's DAG: phases, lanes, cardinalities"},
    {"ops", kw_cmd_ops, "list operators, or `ops describe NAME`"},
    {"schema", kw_cmd_schema, "write the pipeline JSON Schema from the registry"},
    {"runs", kw_cmd_runs, "list recorded runs"},
    {"show", kw_cmd_show, "show one run: params, scores, stage and lane timings"},
    {"compare", kw_cmd_compare, "put runs' metrics side by side"},
    {"query", kw_cmd_query, "run a read-only SQL query on the results store"},
    {"export", kw_cmd_export, "export per-sample rows as csv, json or md"},
    {"db", kw_cmd_db, "results store maintenance (`db merge DEST SHARD...`)"},
    {"pull", kw_cmd_pull, "download a model or data set by name into the cache"},
    {"gen", kw_cmd_gen, "generate synthetic data sets and models"},
    {"gen-model", kw_cmd_gen_model, "the same as `gen model`"},
    {"bench", kw_cmd_bench, "run benchmarks"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: kvweave <command> [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n`kvweave <command> --help` for a command's options.\n");
}

int kw_cli_fail(const kw_error *err)
{
    fprintf(stderr, "kvweave: %s\n", err->msg[0] ? err->msg : kw_strerror(err->code));
    return kw_exit_code(err->code);
}

int kw_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvweave %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

bool kw_cli_color(FILE *f)
{
    const char *nc = getenv("NO_COLOR");
    return isatty(fileno(f)) && !(nc && *nc);
}

const char *kw_cli_db_path(const char *flag)
{
    static char buf[4096];
    if (flag && *flag)
        return flag;
    const char *e = getenv("KVWEAVE_DB");
    if (e && *e)
        return e;
    snprintf(buf, sizeof buf, "%s/results.db", kw_home());
    return buf;
}

int main(int argc, char **argv)
{
    kw_quiet_threads(argv);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("kvweave %s (%s)\n", KW_VERSION, KW_GIT_COMMIT);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kvweave: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
