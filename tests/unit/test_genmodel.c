/* kvweave gen model: a SmolLM2-135M-shaped synthetic GGUF (two of its layers, to keep the
 * test short) loads through kw_model_open with the model's shapes and a working
 * tokenizer, and the CPU engine runs a forward over it with finite log-probs. Writing is
 * deterministic (the same seed gives the same bytes). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kvweave/engine.h"
#include "kvweave/genmodel.h"
#include "kvweave/model.h"

static char path[256], path2[256];

static int setup(void **st)
{
    (void)st;
    snprintf(path, sizeof path, "/tmp/kw_genmodel_%d.gguf", (int)getpid());
    snprintf(path2, sizeof path2, "/tmp/kw_genmodel_%d_b.gguf", (int)getpid());
    kw_genmodel_spec s = {.like = "smollm2-135m", .dtype = KW_DT_BF16, .seed = 7, .n_layer = 2};
    kw_error err = {0};
    int64_t n = kw_genmodel_write(&s, path, &err);
    if (n < 0)
        fprintf(stderr, "%s\n", err.msg);
    return n > 0 ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    unlink(path);
    unlink(path2);
    return 0;
}

static void test_shapes(void **st)
{
    (void)st;
    kw_model *m;
    kw_error err = {0};
    assert_int_equal(kw_model_open(path, &m, &err), 0);
    const kw_model_config *c = &m->cfg;
    assert_int_equal(c->n_layer, 2);
    assert_int_equal(c->n_embd, 576);
    assert_int_equal(c->n_head, 9);
    assert_int_equal(c->n_head_kv, 3);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->n_ff, 1536);
    assert_int_equal(c->n_vocab, 49152);
    assert_true(c->tie_embeddings);
    assert_false(c->qkv_bias);
    assert_float_equal(c->rope_theta, 100000.f, 1e-3);
    const kw_tensor *t = kw_model_tensor(m, "blk.1.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, KW_DT_BF16);
    assert_int_equal(t->shape[0], 576);
    assert_int_equal(t->shape[1], 1536);
    /* byte-level tokenizer: every byte is one token and decodes back */
    int32_t ids[64];
    int n = kw_tokenize(m->tok, "Hello, world!", 0, ids, 64);
    assert_int_equal(n, 13);
    char *back = kw_detokenize(m->tok, ids, n, 1);
    assert_string_equal(back, "Hello, world!");
    free(back);
    kw_model_free(m);
}

static void test_known_shapes(void **st)
{
    (void)st;
    const kw_genmodel_shape *l = kw_genmodel_find("llama-3.1-8b");
    assert_non_null(l);
    assert_int_equal(l->n_layer, 32);
    assert_int_equal(l->n_embd, 4096);
    assert_int_equal(l->n_head_kv, 8);
    assert_int_equal(l->n_ff, 14336);
    assert_int_equal(l->n_vocab, 128256);
    const kw_genmodel_shape *q = kw_genmodel_find("qwen2.5-7b");
    assert_non_null(q);
    assert_true(q->qkv_bias);
    assert_int_equal(q->n_head, 28);
    assert_int_equal(q->n_head_kv, 4);
    assert_int_equal(q->n_ff, 18944);
    assert_null(kw_genmodel_find("gpt-5"));
    kw_genmodel_spec bad = {.like = "gpt-5", .dtype = KW_DT_BF16};
    kw_error err = {0};
    assert_true(kw_genmodel_write(&bad, path2, &err) < 0);
    assert_non_null(strstr(err.msg, "smollm2-135m"));
}

static void test_deterministic(void **st)
{
    (void)st;
    kw_genmodel_spec s = {.like = "smollm2-135m", .dtype = KW_DT_BF16, .seed = 7, .n_layer = 2};
    kw_error err = {0};
    assert_true(kw_genmodel_write(&s, path2, &err) > 0);
    FILE *a = fopen(path, "rb"), *b = fopen(path2, "rb");
    assert_non_null(a);
    assert_non_null(b);
    static unsigned char x[1 << 16], y[1 << 16];
    size_t na, nb;
    do {
        na = fread(x, 1, sizeof x, a);
        nb = fread(y, 1, sizeof y, b);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, na);
    } while (na > 0);
    fclose(a), fclose(b);
}

static kw_gen_result *got;
static void on_done(void *u, kw_gen_result *r) { (void)u, got = r; }

static void test_forward(void **st)
{
    (void)st;
    kw_model *m;
    kw_error err = {0};
    assert_int_equal(kw_model_open(path, &m, &err), 0);
    kw_engine_opts o = kw_engine_defaults();
    o.pool_mb = 16;
    kw_engine *e;
    assert_int_equal(kw_engine_open_model(m, &o, &e, &err), 0);
    int32_t prompt[24];
    for (int i = 0; i < 24; i++)
        prompt[i] = (int32_t)((i * 7919) % m->cfg.n_vocab);
    kw_gen_req r = {.prompt = prompt, .n_prompt = 24, .max_new = 4, .want_logprobs = true,
                    .ignore_eos = true, .sample = 0, .done = on_done};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    assert_non_null(got);
    assert_int_equal(got->rc, 0);
    assert_int_equal(got->n_gen, 4);
    for (int i = 0; i < 4; i++) {
        assert_true(isfinite(got->logprobs[i]));
        assert_true(got->logprobs[i] <= 0.f);
        assert_true(got->tokens[i] >= 0 && got->tokens[i] < m->cfg.n_vocab);
    }
    got = kw_gen_result_free(got);
    kw_engine_close(e);
    kw_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_known_shapes),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_forward),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
