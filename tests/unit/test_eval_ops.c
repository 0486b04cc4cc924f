/* Harness tests of dataset.jsonl, dataset.longbench and score.longbench: the operators'
 * init/run/fini driven through the stand-in of the engine side of op.h (op_standin.h),
 * with a model that is only a byte-level tokenizer for the prompt truncation. They
 * prove the operators' own logic: what they emit, record and refuse. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kvweave/util.h"
#include "op_standin.h"

extern const kw_op kw_op_dataset_jsonl, kw_op_dataset_longbench, kw_op_score_longbench;

/* ---- helpers ---- */

static char tmpdir[64];

static const char *tmpfile_with(const char *name, const char *text)
{
    static char p[4][256];
    static int k;
    char *path = p[k++ % 4];
    snprintf(path, 256, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kw_evalops_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct run_out {
    int init_rc;
    kw_error err;
    json_t *samples; /* array of emitted values */
    int run_rc;
    char msg[2048];
} run_out;

/* Runs a source operator to its end (or first failure). */
static run_out run_source(const kw_op *op, json_t *params, json_t *records, bool model)
{
    run_out o = {0};
    kw_opctx c = {.op = op, .params = params, .records = records,
                  .engine = model ? st_bytes_engine() : NULL};
    void *st = calloc(1, op->state_size);
    o.samples = json_array();
    o.init_rc = op->init(&c, st, &o.err);
    if (o.init_rc == 0) {
        for (bool more = true; more;) {
            kw_task t;
            st_task_init(&t, 0);
            int rc = op->run(&c, st, &t);
            more = rc != KW_END && rc >= 0 && t.out[0];
            if (more) {
                json_array_append(o.samples, kw_value_jsonobj(t.out[0]));
            } else if (rc != KW_END) {
                o.run_rc = rc;
                snprintf(o.msg, sizeof o.msg, "%s", t.msg);
            }
            st_task_clear(&t);
        }
    }
    op->fini(&c, st);
    free(st);
    return o;
}

static const char *REC =
    "{\"input\": \"Q%d\", \"context\": \"CTX%d\", \"answers\": [\"a\"], \"length\": 3, "
    "\"dataset\": \"%s\", \"language\": \"en\", \"all_classes\": null, \"_id\": \"id%d\"}\n";

static char *records_text(const char *task, int n, int bad_line)
{
    char *s = calloc((size_t)n + 1, 400);
    for (int i = 0; i < n; i++) {
        if (i == bad_line)
            strcat(s, "{\"input\": \"Q\", \"context\": 5}\n");
        else
            sprintf(s + strlen(s), REC, i, i, task, i);
    }
    return s;
}

/* ---- tests ---- */

static void test_longbench_source_emits_prompt_max_new_chat_and_records_identity(void **state)
{
    (void)state;
    char *recs = records_text("qasper", 6, -1);
    const char *path = tmpfile_with("qasper.jsonl", recs);
    tmpfile_with("dataset2prompt.json", "{\"qasper\": \"<{context}|{input}>\", \"lcc\": \"{context}\"}");
    tmpfile_with("dataset2maxlen.json", "{\"qasper\": 128, \"lcc\": 64}");
    json_t *params = json_pack("{s:s, s:i, s:i}", "path", path, "offset", 1, "limit", 3);
    json_t *rec = json_object();
    run_out o = run_source(&kw_op_dataset_longbench, params, rec, false);
    assert_int_equal(o.init_rc, 0);
    assert_int_equal(o.run_rc, 0);
    assert_int_equal(json_array_size(o.samples), 3);
    for (int i = 0; i < 3; i++) {
        json_t *s = json_array_get(o.samples, (size_t)i);
        char want[64];
        snprintf(want, sizeof want, "<CTX%d|Q%d>", i + 1, i + 1);
        assert_string_equal(json_string_value(json_object_get(s, "prompt")), want);
        assert_int_equal(json_integer_value(json_object_get(s, "index")), i + 1);
        assert_int_equal(json_integer_value(json_object_get(s, "max_new")), 128);
        assert_true(json_is_true(json_object_get(s, "chat")));
        snprintf(want, sizeof want, "id%d", i + 1);
        assert_string_equal(json_string_value(json_object_get(s, "id")), want);
    }
    char sha[65];
    kw_sha256_file(path, sha, NULL);
    assert_string_equal(json_string_value(json_object_get(rec, "dataset.sha256")), sha);
    assert_string_equal(json_string_value(json_object_get(rec, "dataset.records")), "6");
    assert_string_equal(json_string_value(json_object_get(rec, "dataset.path")), path);
    assert_string_equal(json_string_value(json_object_get(rec, "dataset.task")), "qasper");
    json_decref(o.samples), json_decref(params), json_decref(rec);
    free(recs);
}

static void test_longbench_source_truncates_the_middle_with_the_tokenizer(void **state)
{
    (void)state;
    const char *path = tmpfile_with("lcc.jsonl", "{\"input\": \"\", \"context\": \"abcdefghij\", "
                                    "\"answers\": [\"x\"], \"length\": 1, \"dataset\": \"lcc\", "
                                    "\"language\": \"en\", \"all_classes\": null, \"_id\": \"i\"}\n");
    tmpfile_with("dataset2prompt.json", "{\"lcc\": \"{context}\"}");
    tmpfile_with("dataset2maxlen.json", "{\"lcc\": 64}");
    json_t *params = json_pack("{s:s, s:i}", "path", path, "max_length", 6);
    json_t *rec = json_object();
    run_out o = run_source(&kw_op_dataset_longbench, params, rec, true);
    assert_int_equal(o.init_rc, 0);
    json_t *s = json_array_get(o.samples, 0);
    /* [BOS a b c d e f g h i j]: first 3 = BOS a b, last 3 = h i j */
    assert_string_equal(json_string_value(json_object_get(s, "prompt")), "abhij");
    assert_int_equal(json_integer_value(json_object_get(s, "prompt_tokens")), 11);
    assert_true(json_is_false(json_object_get(s, "chat"))); /* lcc: no chat template */
    json_decref(o.samples);
    /* without a model, max_length is refused at init */
    o = run_source(&kw_op_dataset_longbench, params, rec, false);
    assert_int_equal(o.init_rc, KW_EINVAL);
    assert_non_null(strstr(o.err.msg, "tokenizer"));
    json_decref(o.samples), json_decref(params), json_decref(rec);
}

/* A cut inside a multi-byte character: the partial bytes become U+FFFD as Python's
 * decode(errors="replace") gives them, and the record keeps its prompt. */
static void test_longbench_source_truncation_inside_a_character(void **state)
{
    (void)state;
    /* bytes: a, E4 B8 AD (U+4E2D), E6 96 87 (U+6587), b; with BOS 9 tokens */
    const char *path = tmpfile_with("lcc.jsonl", "{\"input\": \"\", \"context\": \"a\u4e2d\u6587b\", "
                                    "\"answers\": [\"x\"], \"length\": 1, \"dataset\": \"lcc\", "
                                    "\"language\": \"zh\", \"all_classes\": null, \"_id\": \"i\"}\n");
    tmpfile_with("dataset2prompt.json", "{\"lcc\": \"{context}\"}");
    tmpfile_with("dataset2maxlen.json", "{\"lcc\": 64}");
    static const struct {
        int max_length;
        const char *want;
    } cases[] = {
        /* BOS a E4 | 96 87 b: a cut lead byte, then two stray continuation bytes */
        {6, "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "b"},
        /* BOS a E4 B8 | E6 96 87 b: one piece for the cut character */
        {8, "a\xef\xbf\xbd\xe6\x96\x87" "b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *params = json_pack("{s:s, s:i}", "path", path, "max_length", cases[i].max_length);
        json_t *rec = json_object();
        run_out o = run_source(&kw_op_dataset_longbench, params, rec, true);
        assert_int_equal(o.init_rc, 0);
        assert_int_equal(o.run_rc, 0);
        json_t *s = json_array_get(o.samples, 0);
        assert_non_null(json_object_get(s, "prompt"));
        assert_string_equal(json_string_value(json_object_get(s, "prompt")), cases[i].want);
        json_decref(o.samples), json_decref(params), json_decref(rec);
    }
}

static void test_longbench_source_bad_record_fails_or_is_skipped(void **state)
{
    (void)state;
    char *recs = records_text("qasper", 4, 2);
    const char *path = tmpfile_with("qasper.jsonl", recs);
    tmpfile_with("dataset2prompt.json", "{\"qasper\": \"{input}\"}");
    tmpfile_with("dataset2maxlen.json", "{\"qasper\": 128}");
    json_t *params = json_pack("{s:s}", "path", path);
    json_t *rec = json_object();
    run_out o = run_source(&kw_op_dataset_longbench, params, rec, false);
    assert_int_equal(o.init_rc, KW_EPARSE);
    assert_non_null(strstr(o.err.msg, "qasper.jsonl:3"));
    assert_non_null(strstr(o.err.msg, "'context' must be a string"));
    json_decref(o.samples);
    json_object_set_new(params, "on_bad_record", json_string("skip"));
    o = run_source(&kw_op_dataset_longbench, params, rec, false);
    assert_int_equal(o.init_rc, 0);
    assert_int_equal(json_array_size(o.samples), 3);
    assert_string_equal(json_string_value(json_object_get(rec, "dataset.skipped")), "1");
    json_decref(o.samples), json_decref(params), json_decref(rec);
    free(recs);
}

static void test_longbench_source_refuses_unknown_task_and_empty_file(void **state)
{
    (void)state;
    char *recs = records_text("qasper", 1, -1);
    const char *path = tmpfile_with("mytask.jsonl", recs);
    json_t *params = json_pack("{s:s}", "path", path);
    json_t *rec = json_object();
    run_out o = run_source(&kw_op_dataset_longbench, params, rec, false);
    assert_int_equal(o.init_rc, KW_ENOTFOUND);
    assert_non_null(strstr(o.err.msg, "unknown LongBench task 'mytask'"));
    assert_int_equal(kw_exit_code(o.init_rc), 2);
    json_decref(o.samples);
    path = tmpfile_with("empty.jsonl", "");
    json_t *p2 = json_pack("{s:s}", "path", path);
    o = run_source(&kw_op_dataset_jsonl, p2, rec, false);
    assert_int_equal(o.init_rc, KW_EFORMAT);
    assert_non_null(strstr(o.err.msg, "empty.jsonl"));
    json_decref(o.samples), json_decref(params), json_decref(p2), json_decref(rec);
    free(recs);
}

static void test_jsonl_source_samples_a_seeded_subset_in_file_order(void **state)
{
    (void)state;
    char buf[4096] = "";
    for (int i = 0; i < 50; i++)
        sprintf(buf + strlen(buf), "{\"v\": %d}\n", i);
    const char *path = tmpfile_with("plain.jsonl", buf);
    json_t *params = json_pack("{s:s, s:i}", "path", path, "sample", 5);
    json_t *rec = json_object();
    run_out a = run_source(&kw_op_dataset_jsonl, params, rec, false);
    run_out b = run_source(&kw_op_dataset_jsonl, params, rec, false);
    assert_int_equal(json_array_size(a.samples), 5);
    assert_true(json_equal(a.samples, b.samples));
    int64_t last = -1;
    for (size_t i = 0; i < 5; i++) {
        json_t *s = json_array_get(a.samples, i);
        int64_t idx = json_integer_value(json_object_get(s, "index"));
        assert_int_equal(json_integer_value(json_object_get(s, "v")), idx);
        assert_true(idx > last);
        last = idx;
    }
    json_decref(a.samples), json_decref(b.samples), json_decref(params), json_decref(rec);
}

static run_out score(json_t *gen, json_t *sample, json_t *params)
{
    run_out o = {0};
    kw_opctx c = {.op = &kw_op_score_longbench, .params = params, .records = json_object()};
    void *st = calloc(1, kw_op_score_longbench.state_size);
    o.init_rc = kw_op_score_longbench.init(&c, st, &o.err);
    if (o.init_rc == 0) {
        kw_task t;
        st_task_init(&t, 0);
        st_task_set_in(&t, 0, kw_value_json(KW_T_GENERATION, gen));
        st_task_set_in(&t, 1, sample ? kw_value_json(KW_T_SAMPLE, sample) : NULL);
        o.run_rc = kw_op_score_longbench.run(&c, st, &t);
        snprintf(o.msg, sizeof o.msg, "%s", t.msg);
        o.samples = t.out[0] ? json_incref(kw_value_jsonobj(t.out[0])) : NULL;
        st_task_clear(&t);
    } else {
        json_decref(gen), json_decref(sample);
    }
    kw_op_score_longbench.fini(&c, st);
    json_decref(c.records);
    free(st);
    return o;
}

static void test_score_longbench_takes_the_sample_from_either_place(void **state)
{
    (void)state;
    json_t *p = json_object();
    json_t *smp = json_pack("{s:s, s:[s,s], s:n}", "dataset", "qasper", "answers", "dog",
                            "the cat", "all_classes");
    run_out o = score(json_pack("{s:s, s:O}", "text", "A cat.", "sample", smp), NULL, p);
    assert_int_equal(o.run_rc, 0);
    assert_true(json_real_value(json_object_get(o.samples, "score/qasper")) == 1.0);
    json_decref(o.samples);
    o = score(json_pack("{s:s}", "text", "dog and cat"), json_incref(smp), p);
    assert_int_equal(o.run_rc, 0);
    double v = json_real_value(json_object_get(o.samples, "score/qasper"));
    double pr = 1.0 / 3, rc = 1.0; /* [dog, and, cat] vs [dog] (or [cat]): p 1/3, r 1 */
    assert_true(v == (2 * pr * rc) / (pr + rc));
    json_decref(o.samples);
    o = score(json_pack("{s:s}", "text", "x"), NULL, p);
    assert_true(o.run_rc < 0);
    assert_non_null(strstr(o.msg, "no sample"));
    json_t *bad = json_pack("{s:s, s:s}", "dataset", "nope", "answers", "x");
    o = score(json_pack("{s:s, s:o}", "text", "x", "sample", bad), NULL, p);
    assert_int_equal(o.run_rc, KW_ENOTFOUND);
    assert_non_null(strstr(o.msg, "'nope'"));
    json_t *p2 = json_pack("{s:s}", "task", "nope");
    o = score(json_pack("{s:s}", "text", "x"), NULL, p2);
    assert_int_equal(o.init_rc, KW_ENOTFOUND);
    json_t *p3 = json_pack("{s:s}", "task", "qasper");
    json_t *s3 = json_pack("{s:s, s:s}", "dataset", "qasper", "answers", "notalist");
    o = score(json_pack("{s:s, s:o}", "text", "x", "sample", s3), NULL, p3);
    assert_int_equal(o.run_rc, KW_EINVAL);
    assert_non_null(strstr(o.msg, "'answers'"));
    json_decref(smp), json_decref(p), json_decref(p2), json_decref(p3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longbench_source_emits_prompt_max_new_chat_and_records_identity),
        cmocka_unit_test(test_longbench_source_truncates_the_middle_with_the_tokenizer),
        cmocka_unit_test(test_longbench_source_truncation_inside_a_character),
        cmocka_unit_test(test_longbench_source_bad_record_fails_or_is_skipped),
        cmocka_unit_test(test_longbench_source_refuses_unknown_task_and_empty_file),
        cmocka_unit_test(test_jsonl_source_samples_a_seeded_subset_in_file_order),
        cmocka_unit_test(test_score_longbench_takes_the_sample_from_either_place),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
