/* kw_eval_cli — a small driver for the comparison scripts in this folder: reads JSONL cases
 * on stdin, writes one result line per case on stdout.
 *
 *   kw_eval_cli jieba    {"text": s}                          -> ["tok", ...]
 *   kw_eval_cli metric   {"metric": m, "pred": p, "answer": a, "all_classes": [...]}
 *                                                              -> %.17g score
 *   kw_eval_cli task     {"task": t, "preds": [...], "answers": [[...], ...],
 *                         "all_classes": [...]}                -> %.17g task score
 *   kw_eval_cli fuzz     {"a": s, "b": s}                      -> fuzz.ratio
 * A case that fails prints "ERROR <message>". Exit 2 on unusable input. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jansson.h"
#include "score/jieba.h"
#include "score/longbench_metrics.h"

static const char **str_array(json_t *a, int *n)
{
    *n = json_is_array(a) ? (int)json_array_size(a) : 0;
    const char **v = calloc((size_t)*n + 1, sizeof *v);
    for (int i = 0; v && i < *n; i++) {
        v[i] = json_string_value(json_array_get(a, (size_t)i));
        if (!v[i])
            v[i] = "";
    }
    return v;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int do_jieba(const kw_jieba *jb, json_t *c, kw_error *err)
{
    const char *t = jstr(c, "text");
    kw_jieba_spans sp = {0};
    if (kw_jieba_cut(jb, t, strlen(t), &sp, err) < 0)
        return -1;
    json_t *a = json_array();
    for (size_t i = 0; i < sp.n; i++)
        json_array_append_new(a, json_stringn(t + sp.v[i].off, sp.v[i].len));
    char *s = json_dumps(a, JSON_COMPACT | JSON_ENSURE_ASCII);
    puts(s);
    free(s);
    json_decref(a);
    kw_jieba_spans_clear(&sp);
    return 0;
}

static int do_metric(const kw_jieba *jb, json_t *c, kw_error *err)
{
    kw_lb_metric m;
    if (kw_lb_metric_by_name(jstr(c, "metric"), &m) < 0)
        return kw_error_set(err, KW_ENOTFOUND, "unknown metric '%s'", jstr(c, "metric"));
    int nc;
    const char **cls = str_array(json_object_get(c, "all_classes"), &nc);
    double s;
    bool have = json_is_array(json_object_get(c, "all_classes"));
    int rc = kw_lb_metric_score(m, jb, jstr(c, "pred"), jstr(c, "answer"), have ? cls : NULL,
                                nc, &s, err);
    free(cls);
    if (rc < 0)
        return rc;
    printf("%.17g\n", s);
    return 0;
}

static int do_task(const kw_jieba *jb, json_t *c, kw_error *err)
{
    json_t *preds = json_object_get(c, "preds"), *answers = json_object_get(c, "answers");
    size_t n = json_array_size(preds);
    double *sc = calloc(n + 1, sizeof *sc);
    int nc, rc = 0;
    const char **cls = str_array(json_object_get(c, "all_classes"), &nc);
    for (size_t i = 0; i < n && rc >= 0; i++) {
        int na;
        const char **ans = str_array(json_array_get(answers, i), &na);
        bool have = json_is_array(json_object_get(c, "all_classes"));
        rc = kw_lb_sample_score(jstr(c, "task"), jb,
                                json_string_value(json_array_get(preds, i)), ans, na,
                                have ? cls : NULL, nc, &sc[i], err);
        free(ans);
    }
    if (rc >= 0)
        printf("%.17g\n", kw_lb_task_score(sc, n));
    free(sc);
    free(cls);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kw_eval_cli jieba|metric|task|fuzz < cases.jsonl\n");
        return 2;
    }
    const char *mode = argv[1];
    kw_error err = {0};
    kw_jieba *jb = NULL;
    if (strcmp(mode, "fuzz") && kw_jieba_open(NULL, &jb, &err) < 0) {
        fprintf(stderr, "kw_eval_cli: %s\n", err.msg);
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        json_error_t je;
        json_t *c = json_loadb(line, (size_t)len, 0, &je);
        if (!json_is_object(c)) {
            fprintf(stderr, "kw_eval_cli: stdin:%d: %s\n", lineno, je.text);
            return 2;
        }
        memset(&err, 0, sizeof err);
        int rc;
        if (!strcmp(mode, "jieba"))
            rc = do_jieba(jb, c, &err);
        else if (!strcmp(mode, "metric"))
            rc = do_metric(jb, c, &err);
        else if (!strcmp(mode, "task"))
            rc = do_task(jb, c, &err);
        else {
            rc = kw_fuzz_ratio(jstr(c, "a"), jstr(c, "b"), &err);
            if (rc >= 0)
                printf("%d\n", rc);
        }
        if (rc < 0)
            printf("ERROR %s\n", err.msg);
        json_decref(c);
    }
    free(line);
    kw_jieba_free(jb);
    return 0;
}
