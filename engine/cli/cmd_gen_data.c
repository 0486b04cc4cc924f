/* kvweave gen — synthetic data sets: `gen ruler` writes RULER-style records as JSONL. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "dataset/ruler_gen.h"
#include "kvweave/genmodel.h"
#include "kvweave/model.h"
#include "kvweave/util.h"

typedef struct counter {
    const kw_tokenizer *tok;
    int32_t *buf;
    int cap;
} counter;

static int count_tokens(void *ud, const char *text)
{
    counter *c = ud;
    int need = (int)strlen(text) + 16;
    if (need > c->cap) {
        free(c->buf);
        c->buf = malloc(sizeof(int32_t) * (size_t)need);
        c->cap = c->buf ? need : 0;
    }
    return c->buf ? kw_tokenize(c->tok, text, 0, c->buf, c->cap) : KW_ENOMEM;
}

static void gen_ruler_usage(FILE *f)
{
    fprintf(f, "usage: kvweave gen ruler --task T[,T...]|all --length N [--n N] [--seed S]\n"
               "                         [--max-new N] [--model M] [--data DIR] --out F.jsonl\n"
               "Writes RULER-style records sized to N tokens of the model's tokenizer\n"
               "(default model smollm2-135m-instruct; data $KVWEAVE_DATA/ruler).\n");
}

static int gen_ruler(int argc, char **argv)
{
    const char *tasks = NULL, *model = "smollm2-135m-instruct", *out = NULL, *data = NULL;
    long length = 0, n = 50, seed = 42, max_new = 0;
    static const struct option opts[] = {
        {"task", required_argument, 0, 't'}, {"length", required_argument, 0, 'l'},
        {"n", required_argument, 0, 'n'},    {"seed", required_argument, 0, 's'},
        {"max-new", required_argument, 0, 'm'}, {"model", required_argument, 0, 'M'},
        {"data", required_argument, 0, 'd'}, {"out", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (c) {
        case 't': tasks = optarg; break;
        case 'M': model = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'h': gen_ruler_usage(stdout); return 0;
        case 'l': case 'n': case 's': case 'm': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 0)
                return kw_cli_usage("gen ruler", "--%s wants a non-negative integer, got '%s'",
                                    c == 'l' ? "length" : c == 'n' ? "n" : c == 's' ? "seed" : "max-new",
                                    optarg);
            *(c == 'l' ? &length : c == 'n' ? &n : c == 's' ? &seed : &max_new) = v;
            break;
        }
        default: gen_ruler_usage(stderr); return 2;
        }
    }
    if (!tasks || length <= 0 || !out) {
        gen_ruler_usage(stderr);
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", data ? data : "");
    if (!data)
        snprintf(dir, sizeof dir, "%s/ruler", kw_data_dir());
    kw_error err = {0};
    kw_ruler_res *res = NULL;
    kw_model *m = NULL;
    FILE *f = NULL;
    counter cnt = {0};
    int rc = kw_ruler_res_load(dir, &res, &err);
    if (rc >= 0)
        rc = kw_model_open(model, &m, &err);
    if (rc >= 0 && !m->tok)
        rc = kw_error_set(&err, KW_ENOTFOUND, "model '%s' has no tokenizer", model);
    if (rc >= 0 && !(f = fopen(out, "w")))
        rc = kw_error_set(&err, KW_EIO, "cannot write '%s': %s", out, strerror(errno));
    cnt.tok = m ? m->tok : NULL;
    char *list = strdup(!strcmp(tasks, "all") ? "niah_single_1,niah_single_2,niah_single_3,"
                                                "niah_multikey_1,niah_multikey_2,"
                                                "niah_multikey_3,niah_multivalue,"
                                                "niah_multiquery,vt,cwe,fwe"
                                              : tasks);
    long written = 0;
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); rc >= 0 && t; t = strtok_r(NULL, ",", &save)) {
        kw_ruler_gen g = {.res = res, .task = t, .length = (int)length, .max_new = (int)max_new,
                          .seed = (uint64_t)seed, .count = count_tokens, .ud = &cnt};
        rc = kw_ruler_fit(&g, &err);
        for (long i = 0; rc >= 0 && i < n; i++) {
            json_t *rec;
            if ((rc = kw_ruler_make(&g, i, &rec, &err)) < 0)
                break;
            char *line = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
            fprintf(f, "%s\n", line);
            free(line);
            json_decref(rec);
            written++;
        }
    }
    free(list);
    if (f && fclose(f) != 0 && rc >= 0)
        rc = kw_error_set(&err, KW_EIO, "cannot write '%s': %s", out, strerror(errno));
    free(cnt.buf);
    kw_model_free(m);
    kw_ruler_res_free(res);
    if (rc < 0)
        return kw_cli_fail(&err);
    fprintf(stderr, "kvweave gen ruler: wrote %ld records to %s\n", written, out);
    return 0;
}

static void gen_model_usage(FILE *f)
{
    fprintf(f, "usage: kvweave gen model --arch llama --like NAME [--dtype bf16|f16|f32]\n"
               "                         [--seed S] [--layers N] --out DIR\n"
               "Writes DIR/model.gguf: the exact shapes of a known model (%s)\n"
               "with seeded random weights and a byte-level tokenizer. --layers keeps only\n"
               "the first N layers (same shapes otherwise).\n", kw_genmodel_names());
}

static int gen_model(int argc, char **argv)
{
    const char *arch = "llama", *like = NULL, *dtype = "bf16", *out = NULL;
    long seed = 0, layers = 0;
    static const struct option opts[] = {
        {"arch", required_argument, 0, 'a'},  {"like", required_argument, 0, 'l'},
        {"dtype", required_argument, 0, 'd'}, {"seed", required_argument, 0, 's'},
        {"layers", required_argument, 0, 'n'}, {"out", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (c) {
        case 'a': arch = optarg; break;
        case 'l': like = optarg; break;
        case 'd': dtype = optarg; break;
        case 'o': out = optarg; break;
        case 'h': gen_model_usage(stdout); return 0;
        case 's': case 'n': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 0)
                return kw_cli_usage("gen model", "--%s wants a non-negative integer, got '%s'",
                                    c == 's' ? "seed" : "layers", optarg);
            *(c == 's' ? &seed : &layers) = v;
            break;
        }
        default: gen_model_usage(stderr); return 2;
        }
    }
    if (!like || !out) {
        gen_model_usage(stderr);
        return 2;
    }
    const kw_genmodel_shape *sh = kw_genmodel_find(like);
    if (!sh)
        return kw_cli_usage("gen model", "unknown --like '%s' (known: %s)", like,
                            kw_genmodel_names());
    /* qwen2 is a llama-family architecture with QKV biases */
    if (strcmp(arch, "llama") != 0 && strcmp(arch, sh->arch) != 0)
        return kw_cli_usage("gen model", "--arch '%s' does not match '%s' (%s)", arch, like,
                            sh->arch);
    kw_dtype dt = !strcmp(dtype, "bf16") ? KW_DT_BF16 : !strcmp(dtype, "f16") ? KW_DT_F16
                : !strcmp(dtype, "f32") ? KW_DT_F32 : (kw_dtype)-1;
    if ((int)dt < 0)
        return kw_cli_usage("gen model", "--dtype wants bf16, f16 or f32, got '%s'", dtype);
    kw_error err = {0};
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        kw_error_set(&err, KW_EIO, "cannot create '%s': %s", out, strerror(errno));
        return kw_cli_fail(&err);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.gguf", out);
    kw_genmodel_spec s = {.like = like, .dtype = dt, .seed = (uint64_t)seed,
                          .n_layer = (int)layers};
    int64_t n = kw_genmodel_write(&s, path, &err);
    if (n < 0)
        return kw_cli_fail(&err);
    const int nl = layers ? (int)layers : sh->n_layer;
    fprintf(stderr, "kvweave gen model: wrote %s (%s, %d layer%s, %s, %.1f MB)\n", path, like,
            nl, nl == 1 ? "" : "s", dtype, (double)n / 1e6);
    return 0;
}

int kw_cmd_gen_model(int argc, char **argv)
{
    return gen_model(argc, argv);
}

int kw_cmd_gen(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: kvweave gen ruler|model ... (see `kvweave gen ruler --help`)\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "ruler"))
        return gen_ruler(argc - 1, argv + 1);
    if (!strcmp(argv[1], "model"))
        return gen_model(argc - 1, argv + 1);
    return kw_cli_usage("gen", "unknown generator '%s' (known: ruler, model)", argv[1]);
}
