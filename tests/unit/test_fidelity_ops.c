/* Harness tests of dataset.text, tokenize.ids, score.ppl and score.fidelity (and of the
 * provenance dataset.ruler records) through the stand-in of the engine side of op.h
 * (op_standin.h) and a model that is only a byte-level tokenizer: BOS 256 then one id
 * per byte. They prove the windows the source cuts, and the formulas of the scores on
 * hand-computed values. */
#include <math.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kvweave/util.h"
#include "op_standin.h"

extern const kw_op kw_op_dataset_text, kw_op_tokenize_ids, kw_op_score_ppl,
    kw_op_score_fidelity, kw_op_dataset_ruler;

/* A context of `op` on the byte-level model; records is nullable. */
static kw_opctx ctx(const kw_op *op, json_t *params, json_t *records)
{
    return (kw_opctx){.op = op, .params = params, .records = records,
                      .engine = st_bytes_engine()};
}

/* ---- helpers ---- */

static char tmpdir[64];

static const char *tmpfile_with(const char *name, const char *text)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kw_fidops_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    st_bytes_model()->cfg.add_bos = true;
    st_bytes_model()->cfg.bos_id = 256;
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct window {
    json_t *rec;
    int32_t ids[64];
    int n, max_new;
    json_t *cont;
} window;

typedef struct src_out {
    int init_rc;
    kw_error err;
    window w[16];
    int n;
    json_t *records;
} src_out;

static src_out run_text(json_t *params)
{
    src_out o = {.records = json_object()};
    kw_opctx c = ctx(&kw_op_dataset_text, params, o.records);
    void *st = calloc(1, kw_op_dataset_text.state_size);
    o.init_rc = kw_op_dataset_text.init(&c, st, &o.err);
    while (o.init_rc == 0 && o.n < 16) {
        kw_task t;
        st_task_init(&t, 7);
        int rc = kw_op_dataset_text.run(&c, st, &t);
        if (rc == KW_END) {
            st_task_clear(&t);
            break;
        }
        if (rc < 0)
            fail_msg("dataset.text run failed (%d): %s", rc, t.msg);
        /* through tokenize.ids, as the pipeline does */
        kw_opctx tc = ctx(&kw_op_tokenize_ids, NULL, NULL);
        kw_task tt;
        st_task_init(&tt, 7);
        st_task_set_in(&tt, 0, kw_value_ref(t.out[0]));
        assert_int_equal(kw_op_tokenize_ids.run(&tc, NULL, &tt), 0);
        const kw_tokens *tk = kw_value_data(tt.out[0]);
        window *w = &o.w[o.n++];
        w->rec = json_incref(kw_value_jsonobj(t.out[0]));
        assert_ptr_equal(tk->sample, w->rec);
        assert_true(tk->n <= 64);
        memcpy(w->ids, tk->ids, sizeof(int32_t) * (size_t)tk->n);
        w->n = tk->n;
        w->max_new = tk->max_new;
        w->cont = json_incref(json_object_get(tk->extra, "continuation"));
        st_task_clear(&t);
        st_task_clear(&tt);
        json_decref(tc.records);
    }
    kw_op_dataset_text.fini(&c, st);
    free(st);
    json_decref(params);
    return o;
}

static void src_free(src_out *o)
{
    for (int i = 0; i < o->n; i++) {
        json_decref(o->w[i].rec);
        json_decref(o->w[i].cont);
    }
    json_decref(o->records);
}

static const char *ALPHA = "abcdefghijklmnopqrstuvwxyz";

/* ---- dataset.text ---- */

/* 26 text tokens, P = 5 (BOS + 4), T = 3, n = 3 evenly: offsets 0, 10 (9.5 rounded), 19. */
static void test_text_windows_are_evenly_spaced_with_bos_and_continuation(void **s)
{
    (void)s;
    const char *path = tmpfile_with("a.txt", ALPHA);
    src_out o = run_text(json_pack("{s:s,s:i,s:i,s:i}", "path", path, "n", 3, "prefill", 5,
                                   "steps", 3));
    assert_int_equal(o.init_rc, 0);
    assert_int_equal(o.n, 3);
    const int want_off[3] = {0, 10, 19};
    for (int i = 0; i < 3; i++) {
        window *w = &o.w[i];
        int off = want_off[i];
        assert_int_equal(json_integer_value(json_object_get(w->rec, "offset")), off);
        assert_int_equal(json_integer_value(json_object_get(w->rec, "index")), i);
        assert_int_equal(w->n, 5);
        assert_int_equal(w->ids[0], 256);
        for (int k = 0; k < 4; k++)
            assert_int_equal(w->ids[1 + k], ALPHA[off + k]);
        assert_int_equal(w->max_new, 3);
        assert_int_equal(json_array_size(w->cont), 3);
        for (int k = 0; k < 3; k++)
            assert_int_equal(json_integer_value(json_array_get(w->cont, (size_t)k)),
                             ALPHA[off + 4 + k]);
    }
    assert_string_equal(json_string_value(json_object_get(o.records, "dataset.tokens")), "26");
    char sha[65];
    kw_sha256_file(path, sha, NULL);
    assert_string_equal(json_string_value(json_object_get(o.records, "dataset.sha256")), sha);
    src_free(&o);
}

/* CR bytes are dropped by default (CRLF and CR CR LF alike), kept with newlines: keep. */
static void test_text_drops_carriage_returns(void **s)
{
    (void)s;
    const char *path = tmpfile_with("crlf.txt", "ab\r\r\ncd\r\nef");
    src_out o = run_text(json_pack("{s:s,s:i,s:i,s:i}", "path", path, "n", 1, "prefill", 6,
                                   "steps", 3));
    assert_int_equal(o.init_rc, 0);
    const char *want = "ab\ncd\nef";
    for (int k = 0; k < 5; k++)
        assert_int_equal(o.w[0].ids[1 + k], want[k]);
    src_free(&o);
    o = run_text(json_pack("{s:s,s:i,s:i,s:i,s:s}", "path", path, "n", 1, "prefill", 6,
                           "steps", 3, "newlines", "keep"));
    assert_int_equal(o.init_rc, 0);
    assert_int_equal(o.w[0].ids[3], '\r');
    src_free(&o);
}

/* Seeded random offsets: in range, the same for the same seed. */
static void test_text_random_offsets_are_seeded(void **s)
{
    (void)s;
    const char *path = tmpfile_with("a.txt", ALPHA);
    int64_t first[2][8];
    for (int rep = 0; rep < 2; rep++) {
        src_out o = run_text(json_pack("{s:s,s:i,s:i,s:i,s:s,s:i}", "path", path, "n", 8,
                                       "prefill", 5, "steps", 3, "offsets", "random", "seed", 5));
        assert_int_equal(o.n, 8);
        for (int i = 0; i < 8; i++) {
            first[rep][i] = json_integer_value(json_object_get(o.w[i].rec, "offset"));
            assert_true(first[rep][i] >= 0 && first[rep][i] <= 19);
        }
        src_free(&o);
    }
    assert_memory_equal(first[0], first[1], sizeof first[0]);
}

static void test_text_refuses_empty_non_utf8_and_short_text(void **s)
{
    (void)s;
    src_out o = run_text(json_pack("{s:s}", "path", tmpfile_with("e.txt", "")));
    assert_int_equal(o.init_rc, KW_EINVAL);
    assert_non_null(strstr(o.err.msg, "empty"));
    src_free(&o);
    o = run_text(json_pack("{s:s}", "path", tmpfile_with("b.txt", "ab\xff" "cd")));
    assert_int_equal(o.init_rc, KW_EFORMAT);
    assert_non_null(strstr(o.err.msg, "offset 2"));
    src_free(&o);
    o = run_text(json_pack("{s:s,s:i,s:i}", "path", tmpfile_with("a.txt", ALPHA), "prefill",
                           20, "steps", 10));
    assert_int_equal(o.init_rc, KW_ERANGE);
    assert_non_null(strstr(o.err.msg, "26 tokens"));
    src_free(&o);
    o = run_text(json_pack("{s:s}", "path", "/nonexistent/kw/text.txt"));
    assert_true(o.init_rc < 0);
    src_free(&o);
}

/* tokenize.ids refuses records without usable ids, and takes a record without a
 * continuation as a plain prompt. */
static void test_tokenize_ids_checks_the_ids(void **s)
{
    (void)s;
    const char *bad[] = {"{\"ids\": []}", "{\"ids\": [1, \"x\"]}", "{\"ids\": [1, -2]}",
                         "{\"ids\": [1], \"continuation\": [2.5]}", "{}"};
    json_t *params = json_object();
    kw_opctx c = ctx(&kw_op_tokenize_ids, params, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kw_task t;
        st_task_init(&t, 7);
        st_task_set_in(&t, 0, kw_value_json(KW_T_SAMPLE, json_loads(bad[i], 0, NULL)));
        assert_int_equal(kw_op_tokenize_ids.run(&c, NULL, &t), KW_EINVAL);
        assert_non_null(strstr(t.msg, "token ids"));
        assert_null(t.out[0]);
        st_task_clear(&t);
    }
    kw_task t;
    st_task_init(&t, 7);
    st_task_set_in(&t, 0, kw_value_json(KW_T_SAMPLE, json_pack("{s:[i,i],s:i}", "ids", 4, 5,
                                                               "max_new", 9)));
    assert_int_equal(kw_op_tokenize_ids.run(&c, NULL, &t), 0);
    const kw_tokens *tk = kw_value_data(t.out[0]);
    assert_int_equal(tk->n, 2);
    assert_int_equal(tk->ids[1], 5);
    assert_int_equal(tk->max_new, 9);
    assert_null(tk->extra);
    st_task_clear(&t);
    json_decref(params);
    json_decref(c.records);
}

/* ---- scores ---- */

static json_t *score(const kw_op *op, json_t *gen, int *rc, char *msg)
{
    kw_opctx c = ctx(op, NULL, NULL);
    kw_task t;
    st_task_init(&t, 7);
    st_task_set_in(&t, 0, kw_value_json(KW_T_GENERATION, gen));
    *rc = op->run(&c, NULL, &t);
    snprintf(msg, 2048, "%s", t.msg);
    json_t *m = t.out[0] ? json_incref(kw_value_jsonobj(t.out[0])) : NULL;
    st_task_clear(&t);
    json_decref(c.records);
    return m;
}

static double num(json_t *m, const char *k)
{
    json_t *v = json_object_get(m, k);
    if (!json_is_number(v))
        fail_msg("metrics lack '%s'", k);
    return json_number_value(v);
}

/* logprobs -1, -2, -3: NLL 2, perplexity e^2; the full branch's -0.5, -0.5: 0.5, e^0.5. */
static void test_ppl_is_exp_of_mean_nll(void **s)
{
    (void)s;
    int rc;
    char msg[2048];
    json_t *m = score(&kw_op_score_ppl,
                      json_pack("{s:[f,f,f],s:{s:[f,f]}}", "logprobs", -1.0, -2.0, -3.0,
                                "fidelity", "logprobs_full", -0.5, -0.5), &rc, msg);
    assert_int_equal(rc, 0);
    assert_true(fabs(num(m, "nll") - 2.0) < 1e-12);
    assert_true(fabs(num(m, "ppl") - exp(2.0)) < 1e-9);
    assert_int_equal((int)num(m, "tokens"), 3);
    assert_true(fabs(num(m, "nll_full") - 0.5) < 1e-12);
    assert_true(fabs(num(m, "ppl_full") - exp(0.5)) < 1e-9);
    json_decref(m);
    m = score(&kw_op_score_ppl, json_pack("{s:s}", "text", "x"), &rc, msg);
    assert_int_equal(rc, KW_EINVAL);
    assert_null(m);
    assert_non_null(strstr(msg, "logprobs"));
}

/* kl 0.1, 0.3 -> 0.2; top1 1, 0 -> 0.5; top5 1, 1 -> 1. */
static void test_fidelity_averages_positions(void **s)
{
    (void)s;
    int rc;
    char msg[2048];
    json_t *m = score(&kw_op_score_fidelity,
                      json_pack("{s:{s:[f,f],s:[i,i],s:[i,i]}}", "fidelity", "kl", 0.1, 0.3,
                                "top1", 1, 0, "top5", 1, 1), &rc, msg);
    assert_int_equal(rc, 0);
    assert_true(fabs(num(m, "kl") - 0.2) < 1e-12);
    assert_true(fabs(num(m, "top1") - 0.5) < 1e-12);
    assert_true(fabs(num(m, "top5") - 1.0) < 1e-12);
    assert_int_equal((int)num(m, "positions"), 2);
    json_decref(m);
    m = score(&kw_op_score_fidelity, json_pack("{s:[f]}", "logprobs", -1.0), &rc, msg);
    assert_int_equal(rc, KW_EINVAL);
    assert_non_null(strstr(msg, "decode.fidelity"));
    m = score(&kw_op_score_fidelity,
              json_pack("{s:{s:[f,f],s:[i],s:[i,i]}}", "fidelity", "kl", 0.1, 0.3, "top1", 1,
                        "top5", 1, 1), &rc, msg);
    assert_int_equal(rc, KW_EINVAL);
    assert_null(m);
}

/* dataset.ruler records its data folder once ("data_dir"), not each file it reads. */
static void test_ruler_provenance_names_the_data_folder_only(void **s)
{
    (void)s;
    const char *data = getenv("KVWEAVE_DATA");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ruler", data ? data : "");
    if (!data || access(dir, R_OK) != 0) {
        skip();
        return;
    }
    json_t *params = json_pack("{s:s,s:i}", "data", dir, "length", 1024), *rec = json_object();
    kw_opctx c = ctx(&kw_op_dataset_ruler, params, rec);
    void *st = calloc(1, kw_op_dataset_ruler.state_size);
    kw_error err = {0};
    assert_int_equal(kw_op_dataset_ruler.init(&c, st, &err), 0);
    kw_op_dataset_ruler.fini(&c, st);
    free(st);
    assert_string_equal(json_string_value(json_object_get(rec, "data_dir")), dir);
    const char *k;
    json_t *v;
    json_object_foreach(rec, k, v) {
        const char *t = json_string_value(v);
        if (t && (strstr(t, ".json") || strstr(t, ".txt")))
            fail_msg("provenance '%s' names a file: %s", k, t);
    }
    json_decref(params);
    json_decref(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_windows_are_evenly_spaced_with_bos_and_continuation),
        cmocka_unit_test(test_text_drops_carriage_returns),
        cmocka_unit_test(test_text_random_offsets_are_seeded),
        cmocka_unit_test(test_text_refuses_empty_non_utf8_and_short_text),
        cmocka_unit_test(test_tokenize_ids_checks_the_ids),
        cmocka_unit_test(test_ppl_is_exp_of_mean_nll),
        cmocka_unit_test(test_fidelity_averages_positions),
        cmocka_unit_test(test_ruler_provenance_names_the_data_folder_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
