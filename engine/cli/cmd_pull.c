/* kvweave pull: fetch a model or data set by its hub name into the Hugging Face cache
 * (store/hub.h). Prints the local path on stdout (or the provenance with --json);
 * progress goes to stderr: one rewritten line on a terminal, plain lines otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "hub.h"
#include "kvweave/util.h"

#define MAX_INCLUDE 64

static const char *pull_usage =
    "usage: kvweave pull REPO_ID [FILE] [--revision R] [--include GLOB]...\n"
    "                    [--repo-type model|dataset] [--retries N] [--offline] [--json]\n"
    "  REPO_ID  ORG/NAME, or a full name [hf://][datasets/]ORG/NAME[@REVISION][/PATH]\n"
    "  FILE     one file of the repo (else every file matching --include, or all)\n"
    "Cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.\n"
    "Environment: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE.\n";

typedef struct progress_state {
    bool tty;
    double last;
    bool dirty;
} progress_state;

static void human(double b, char *out, size_t n)
{
    const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) {
        b /= 1000;
        i++;
    }
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void on_progress(const kw_hub_progress *p, void *user)
{
    progress_state *s = user;
    double now = kw_now();
    char done[32], total[32], rate[32], eta[32] = "";
    human((double)p->done, done, sizeof done);
    human(p->total >= 0 ? (double)p->total : 0, total, sizeof total);
    human(p->rate_bps, rate, sizeof rate);
    if (p->total > 0 && p->rate_bps > 0 && !p->finished)
        snprintf(eta, sizeof eta, "  ETA %.0fs", (double)(p->total - p->done) / p->rate_bps);
    char line[1024];
    if (p->finished)
        snprintf(line, sizeof line, "[%d/%d] %s: %s%s", p->file_index, p->file_count, p->path,
                 p->cached ? "in the cache" : done, p->cached ? "" : " done");
    else
        snprintf(line, sizeof line, "[%d/%d] %s: %s / %s  %3.0f%%  %s/s%s", p->file_index,
                 p->file_count, p->path, done, p->total >= 0 ? total : "?",
                 p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 0.0, rate, eta);
    if (s->tty) {
        fprintf(stderr, "\r\033[K%s%s", line, p->finished ? "\n" : "");
        s->dirty = !p->finished;
    } else if (p->finished || now - s->last >= 5.0) {
        fprintf(stderr, "pull: %s\n", line);
        s->last = now;
    }
    fflush(stderr);
}

static int parse_args(int argc, char **argv, const char **repo, const char **file,
                      kw_hub_opts *o, const char **include, bool *json)
{
    int ninc = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(pull_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            *json = true;
        } else if (!strcmp(a, "--offline")) {
            o->offline = 1;
        } else if (!strcmp(a, "--revision") || !strcmp(a, "--include") ||
                   !strcmp(a, "--repo-type") || !strcmp(a, "--retries")) {
            if (!v)
                return kw_cli_usage("pull", "%s needs a value", a);
            i++;
            if (!strcmp(a, "--revision")) {
                o->revision = v;
            } else if (!strcmp(a, "--include")) {
                if (ninc >= MAX_INCLUDE)
                    return kw_cli_usage("pull", "at most %d --include globs", MAX_INCLUDE);
                include[ninc++] = v;
            } else if (!strcmp(a, "--retries")) {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || n < 0 || n > 100)
                    return kw_cli_usage("pull", "--retries wants 0..100, not '%s'", v);
                o->max_retries = (int)n;
            } else if (!strcmp(v, "model") || !strcmp(v, "dataset")) {
                o->repo_type = !strcmp(v, "dataset") ? KW_HUB_DATASET : KW_HUB_MODEL;
            } else {
                return kw_cli_usage("pull", "--repo-type is model or dataset, not '%s'", v);
            }
        } else if (a[0] == '-') {
            return kw_cli_usage("pull", "unknown option '%s'\n%s", a, pull_usage);
        } else if (!*repo) {
            *repo = a;
        } else if (!*file) {
            *file = a;
        } else {
            return kw_cli_usage("pull", "unexpected argument '%s'", a);
        }
    }
    include[ninc] = NULL;
    o->include = ninc ? include : NULL;
    if (!*repo)
        return kw_cli_usage("pull", "no repo given\n%s", pull_usage);
    return -1;
}

static int print_result(const char *path, const kw_hub_prov *prov, bool json)
{
    if (!json) {
        printf("%s\n", path);
        fprintf(stderr, "pull: %s %s@%s, %zu file%s\n", prov->repo_type, prov->repo_id,
                prov->commit, prov->n_files, prov->n_files == 1 ? "" : "s");
        return 0;
    }
    char *s = kw_hub_prov_json(prov);
    if (!s) {
        fprintf(stderr, "kvweave: out of memory\n");
        return 3;
    }
    char digest[65];
    kw_hub_prov_digest(prov, digest);
    /* the provenance object with the local path and the one-line digest added */
    size_t n = strlen(s);
    printf("%.*s,\"digest\":\"%s\",\"local_path\":", (int)(n - 1), s, digest);
    for (const char *c = path; *c; c++) {
        if (c == path)
            putchar('"');
        if (*c == '"' || *c == '\\')
            putchar('\\');
        putchar(*c);
    }
    printf("\"}\n");
    free(s);
    return 0;
}

int kw_cmd_pull(int argc, char **argv)
{
    const char *repo = NULL, *file = NULL, *include[MAX_INCLUDE + 1];
    bool json = false;
    kw_hub_opts o = kw_hub_opts_default();
    int rc = parse_args(argc, argv, &repo, &file, &o, include, &json);
    if (rc >= 0)
        return rc;
    progress_state ps = {.tty = isatty(fileno(stderr)) != 0, .last = kw_now()};
    o.progress = on_progress;
    o.progress_user = &ps;
    kw_error err = {0};
    char *path = NULL;
    kw_hub_prov prov = {0};
    /* a full name (hf://, datasets/, @revision or a path) or a bare ORG/NAME [FILE] */
    bool full = strchr(repo, '@') || !strncmp(repo, "hf://", 5) ||
                strchr(strchr(repo, '/') ? strchr(repo, '/') + 1 : repo, '/');
    char spec[4096];
    if (full || !strncmp(repo, "datasets/", 9) || !strncmp(repo, "models/", 7)) {
        snprintf(spec, sizeof spec, "%s%s%s", repo, file ? "/" : "", file ? file : "");
        rc = kw_hub_resolve_spec(spec, &o, &path, &prov, &err);
    } else {
        rc = kw_hub_resolve(repo, file, &o, &path, &prov, &err);
    }
    if (ps.dirty)
        fputc('\n', stderr);
    if (rc < 0) {
        kw_hub_prov_clear(&prov);
        return kw_cli_fail(&err);
    }
    rc = print_result(path, &prov, json);
    free(path);
    kw_hub_prov_clear(&prov);
    return rc;
}
