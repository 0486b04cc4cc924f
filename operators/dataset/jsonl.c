/* dataset.jsonl and dataset.longbench — sources that stream records from a JSONL file.
 *
 * init scans the file once (streaming): counts the good records, stops at the first bad
 * line when on_bad_record is fail (the run fails with the file, line and byte offset),
 * hashes it, and records the data set's identity (dataset.path, dataset.sha256,
 * dataset.records, dataset.skipped) for the run's provenance. It then picks the records
 * to emit (offset, seeded sample, limit) and run streams them one per call.
 *
 * dataset.longbench adds to each record: "prompt" (the task's template filled in, middle-
 * truncated to max_length tokens of the model's tokenizer when max_length > 0), "max_new"
 * (dataset2maxlen.json), "chat" (false for the tasks LongBench prompts without a chat
 * template, unless set) — and both operators add "index" (the record's position among
 * the file's good records) and "id" (the record's "_id" or "id", else the index). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset/jsonl_reader.h"
#include "dataset/longbench_data.h"
#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "kvweave/util.h"
#include "score/longbench_metrics.h"

typedef struct ds_state {
    kw_jsonl *r;
    int64_t *idx, n_idx, pos, next_rec;
    bool longbench;
    char *task;
    kw_lb_tables tb;
    bool chat;
    int max_length;
    const kw_tokenizer *tok;
} ds_state;

static const kw_port outs[] = {{"out", KW_T_SAMPLE, KW_EACH, 0, "records"}};

#define COMMON_PARAMS                                                                       \
    {"path", KW_PARAM_STRING, NULL, 0, 0, NULL, "the JSONL file"},                           \
    {"limit", KW_PARAM_INT, "0", 0, 1e12, NULL, "emit at most this many records (0: all)"},  \
    {"offset", KW_PARAM_INT, "0", 0, 1e12, NULL, "skip this many records first"},            \
    {"sample", KW_PARAM_INT, "0", 0, 1e12, NULL,                                             \
     "a random subset of this size, seeded by the run's seed, in file order (0: all)"},      \
    {"on_bad_record", KW_PARAM_ENUM, "fail", 0, 0, "fail|skip",                              \
     "a malformed line fails the run, or is skipped and counted"}

static const kw_param_spec jsonl_params[] = {COMMON_PARAMS};
static const kw_param_spec lb_params[] = {
    COMMON_PARAMS,
    {"task", KW_PARAM_STRING, "", 0, 0, NULL, "LongBench task (default: the file's name)"},
    {"prompts", KW_PARAM_STRING, "", 0, 0, NULL,
     "dataset2prompt.json (default: next to the file, else $KVWEAVE_DATA/longbench)"},
    {"maxlen", KW_PARAM_STRING, "", 0, 0, NULL,
     "dataset2maxlen.json (default: next to the file, else $KVWEAVE_DATA/longbench)"},
    {"max_length", KW_PARAM_INT, "0", 0, 1e8, NULL,
     "keep the first and last max_length/2 prompt tokens of longer prompts (0: no limit)"},
    {"chat", KW_PARAM_ENUM, "auto", 0, 0, "auto|true|false",
     "use the chat template (auto: not for trec, triviaqa, samsum, lsht, lcc, repobench-p)"},
};

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The param if set, else NAME next to the data file, else $KVWEAVE_DATA/longbench/NAME. */
static void table_path(kw_opctx *c, const char *param, const char *name, const char *data,
                       char *out, size_t cap)
{
    const char *v = kw_param_is_set(c, param) ? kw_param_str(c, param) : NULL;
    if (v && *v) {
        snprintf(out, cap, "%s", v);
        return;
    }
    const char *slash = strrchr(data, '/');
    int dl = slash ? (int)(slash - data) : 1;
    snprintf(out, cap, "%.*s/%s", dl, slash ? data : ".", name);
    if (!file_exists(out))
        snprintf(out, cap, "%s/longbench/%s", kw_data_dir(), name);
}

static int lb_init(kw_opctx *c, ds_state *s, const char *path, kw_error *err)
{
    const char *t = kw_param_is_set(c, "task") ? kw_param_str(c, "task") : "";
    s->task = *t ? strdup(t) : kw_lb_task_from_path(path);
    if (!s->task)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    kw_lb_metric m;
    if (kw_lb_task_metric(s->task, &m) < 0)
        return kw_error_set(err, KW_ENOTFOUND,
                            "unknown LongBench task '%s' (from %s; set the task parameter to "
                            "one of LongBench v1's 21 tasks, e.g. multifieldqa_zh)",
                            s->task, *t ? "the task parameter" : "the file name");
    char pp[1024], mp[1024];
    table_path(c, "prompts", "dataset2prompt.json", path, pp, sizeof pp);
    table_path(c, "maxlen", "dataset2maxlen.json", path, mp, sizeof mp);
    int rc = kw_lb_tables_load(pp, mp, s->task, &s->tb, err);
    if (rc < 0)
        return rc;
    const char *chat = kw_param_str(c, "chat");
    s->chat = !strcmp(chat, "auto") ? !kw_lb_task_no_chat(s->task) : !strcmp(chat, "true");
    s->max_length = (int)kw_param_int(c, "max_length");
    if (s->max_length > 0) {
        struct kw_engine *e = kw_ctx_engine(c);
        const kw_model *md = e ? kw_engine_model(e) : NULL;
        if (!md || !md->tok)
            return kw_error_set(err, KW_EINVAL,
                                "max_length %d needs the model's tokenizer, and no model is "
                                "loaded", s->max_length);
        s->tok = md->tok;
    }
    return 0;
}

static int ds_init_common(kw_opctx *c, ds_state *s, bool longbench, kw_error *err)
{
    const char *path = kw_param_str(c, "path");
    s->longbench = longbench;
    int rc;
    if (longbench && (rc = lb_init(c, s, path, err)) < 0)
        return rc;
    kw_jsonl_opts o = {.skip_bad = !strcmp(kw_param_str(c, "on_bad_record"), "skip"),
                       .check = longbench ? kw_lb_record_check : NULL};
    int64_t n, skipped;
    char sha[65];
    if ((rc = kw_jsonl_count(path, &o, &n, &skipped, err)) < 0 ||
        (rc = kw_sha256_file(path, sha, err)) < 0)
        return rc;
    char num[32];
    kw_ctx_record(c, "dataset.path", path);
    kw_ctx_record(c, "dataset.sha256", sha);
    snprintf(num, sizeof num, "%lld", (long long)n);
    kw_ctx_record(c, "dataset.records", num);
    snprintf(num, sizeof num, "%lld", (long long)skipped);
    kw_ctx_record(c, "dataset.skipped", num);
    if (longbench)
        kw_ctx_record(c, "dataset.task", s->task);
    kw_jsonl_pick p = {.offset = kw_param_int(c, "offset"),
                       .limit = kw_param_int(c, "limit"),
                       .sample = kw_param_int(c, "sample"),
                       .seed = kw_ctx_seed(c)};
    if ((rc = kw_jsonl_select(n, &p, &s->idx, &s->n_idx, err)) < 0)
        return rc;
    return kw_jsonl_open(path, &o, &s->r, err);
}

static int jsonl_init(kw_opctx *c, void *st, kw_error *err)
{
    return ds_init_common(c, st, false, err);
}

static int lb_op_init(kw_opctx *c, void *st, kw_error *err)
{
    return ds_init_common(c, st, true, err);
}

/* LongBench's pred.py: tokenize the prompt (as the model's tokenizer adds BOS); when it
 * has more than max_len tokens, keep detok(first max_len/2) + detok(last max_len/2) with
 * special tokens skipped. *n_tokens: the count before truncation. */
static int lb_truncate(const kw_tokenizer *tok, const char *prompt, int max_len, char **out,
                   int *n_tokens, kw_error *err)
{
    int cap = 4096;
    int32_t *ids = NULL;
    int n;
    for (;;) {
        int32_t *v = realloc(ids, (size_t)cap * sizeof *ids);
        if (!v) {
            free(ids);
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        }
        ids = v;
        n = kw_tokenize(tok, prompt, 0, ids, cap);
        if (n < 0) {
            free(ids);
            return kw_error_set(err, n, "cannot tokenize the prompt (%s)", kw_strerror(n));
        }
        if (n <= cap)
            break;
        cap = n;
    }
    if (n_tokens)
        *n_tokens = n;
    if (max_len <= 0 || n <= max_len) {
        free(ids);
        *out = strdup(prompt);
        return *out ? 0 : kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    int half = max_len / 2;
    char *a = kw_detokenize(tok, ids, half, 1);
    char *b = kw_detokenize(tok, ids + n - half, half, 1);
    free(ids);
    char *o = NULL;
    /* A cut inside a character leaves partial UTF-8 at the seams: each invalid byte
     * becomes U+FFFD, as the reference's decode (errors="replace") gives. */
    char *fa = a ? kw_utf8_valid_copy(a) : NULL, *fb = b ? kw_utf8_valid_copy(b) : NULL;
    if (fa && fb && (o = malloc(strlen(fa) + strlen(fb) + 1)))
        strcat(strcpy(o, fa), fb);
    free(a);
    free(b);
    free(fa);
    free(fb);
    if (!o)
        return kw_error_set(err, KW_ENOMEM, "out of memory detokenizing the prompt");
    *out = o;
    return 0;
}

static int add_fields(ds_state *s, json_t *rec, int64_t index, kw_task *t)
{
    json_object_set_new(rec, "index", json_integer(index));
    if (!json_object_get(rec, "id")) {
        json_t *id = json_object_get(rec, "_id");
        char num[32];
        snprintf(num, sizeof num, "%lld", (long long)index);
        json_object_set_new(rec, "id", json_is_string(id) ? json_copy(id) : json_string(num));
    }
    if (!s->longbench)
        return 0;
    kw_error err = {0};
    char *prompt = NULL, *cut = NULL;
    int rc = kw_lb_prompt_fill(s->tb.prompt, rec, &prompt, &err);
    if (rc >= 0 && s->tok) {
        int ntok = 0;
        rc = lb_truncate(s->tok, prompt, s->max_length, &cut, &ntok, &err);
        if (rc >= 0) {
            free(prompt);
            prompt = cut;
            json_object_set_new(rec, "prompt_tokens", json_integer(ntok));
        }
    }
    if (rc < 0) {
        free(prompt);
        return kw_task_fail(t, rc, "record %lld: %s", (long long)index, err.msg);
    }
    json_t *jp = json_string(prompt);
    free(prompt);
    if (!jp)
        return kw_task_fail(t, KW_EFORMAT, "record %lld: the prompt is not valid UTF-8",
                            (long long)index);
    json_object_set_new(rec, "prompt", jp);
    json_object_set_new(rec, "max_new", json_integer(s->tb.max_new));
    json_object_set_new(rec, "chat", json_boolean(s->chat));
    return 0;
}

static int ds_run(kw_opctx *c, void *st, kw_task *t)
{
    (void)c;
    ds_state *s = st;
    while (s->pos < s->n_idx) {
        json_t *rec;
        kw_error err = {0};
        int rc = kw_jsonl_next(s->r, &rec, &err);
        if (rc == KW_END)
            return kw_task_fail(t, KW_EFORMAT, "the data set ended after %lld records; it "
                                "changed since it was scanned", (long long)s->next_rec);
        if (rc < 0)
            return kw_task_fail(t, rc, "%s", err.msg);
        int64_t index = s->next_rec++;
        if (index != s->idx[s->pos]) {
            json_decref(rec);
            continue;
        }
        s->pos++;
        if ((rc = add_fields(s, rec, index, t)) < 0) {
            json_decref(rec);
            return rc;
        }
        return kw_task_out(t, 0, kw_value_json(KW_T_SAMPLE, rec));
    }
    return KW_END;
}

static void ds_fini(kw_opctx *c, void *st)
{
    (void)c;
    ds_state *s = st;
    s->r = kw_jsonl_close(s->r);
    free(s->idx);
    free(s->task);
    kw_lb_tables_clear(&s->tb);
}

const kw_op kw_op_dataset_jsonl = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "dataset.jsonl",
    .version = 1,
    .doc = "streams the records (JSON objects) of a JSONL file",
    .lanes = KW_LANE_IO,
    .flags = KW_OP_SOURCE | KW_OP_SERIAL,
    .outputs = outs,
    .n_outputs = 1,
    .params = jsonl_params,
    .n_params = sizeof jsonl_params / sizeof *jsonl_params,
    .state_size = sizeof(ds_state),
    .init = jsonl_init,
    .run = ds_run,
    .fini = ds_fini,
};

const kw_op kw_op_dataset_longbench = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "dataset.longbench",
    .version = 1,
    .doc = "streams a LongBench v1 task's records with their prompt, max_new and chat flag",
    .lanes = KW_LANE_IO,
    .flags = KW_OP_SOURCE | KW_OP_SERIAL,
    .outputs = outs,
    .n_outputs = 1,
    .params = lb_params,
    .n_params = sizeof lb_params / sizeof *lb_params,
    .state_size = sizeof(ds_state),
    .init = lb_op_init,
    .run = ds_run,
    .fini = ds_fini,
};
