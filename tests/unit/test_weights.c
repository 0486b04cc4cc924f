/* Model registry and loaders (weights.c, model_gguf.c, model_hf.c): the tiny synthetic
 * model written as GGUF and as a Hugging Face directory loads both ways with identical
 * dequantized tensors (modulo the documented Q/K row permutation); registered names,
 * sha256 sidecars, broken models; and the real default model when it is installed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kvweave/model.h"
#include "kvweave/util.h"
#include "tiny_model.h"

static char tmp[64];

static int setup(void **st)
{
    (void)st;
    snprintf(tmp, sizeof tmp, "/tmp/kw_weights_XXXXXX");
    return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static kw_model *open_ok(const char *spec)
{
    kw_model *m = NULL;
    kw_error err = {0};
    int rc = kw_model_open(spec, &m, &err);
    if (rc < 0)
        fail_msg("kw_model_open(%s): %s", spec, err.msg);
    return m;
}

/* Opens spec expecting an input error (exit code 2) whose message has needle. */
static void open_fails(const char *spec, const char *needle)
{
    kw_model *m = NULL;
    kw_error err = {0};
    int rc = kw_model_open(spec, &m, &err);
    assert_null(m);
    if (rc >= 0 || kw_exit_code(rc) != 2 || !strstr(err.msg, needle))
        fail_msg("rc %d, message \"%s\" lacks \"%s\"", rc, err.msg, needle);
}

static float *deq(const kw_model *m, const char *name, int64_t *n)
{
    const kw_tensor *t = kw_model_tensor(m, name);
    if (!t)
        fail_msg("no tensor '%s'", name);
    float *x;
    kw_error err = {0};
    assert_int_equal(kw_tensor_to_f32(t, &x, &err), 0);
    *n = kw_tensor_nelems(t);
    return x;
}

/* Compares every tensor of the two models: the GGUF's attn_q/attn_k rows are permuted
 * for llama. tol(x) is the allowed |gguf - hf| for a block of the HF values. */
static void compare_models(const kw_tiny_spec *s, const kw_model *g, const kw_model *h)
{
    assert_int_equal(g->n_tensors, h->n_tensors + (s->rope_llama3 ? 1 : 0));
    int hd = kw_tiny_head_dim(s);
    for (int i = 0; i < h->n_tensors; i++) {
        const kw_tensor *ht = &h->tensors[i];
        const kw_tensor *gt = kw_model_tensor(g, ht->name);
        assert_non_null(gt);
        assert_int_equal(gt->ndim, ht->ndim);
        for (int d = 0; d < ht->ndim; d++)
            assert_int_equal(gt->shape[d], ht->shape[d]);
        int64_t n, n2;
        float *gx = deq(g, ht->name, &n), *hx = deq(h, ht->name, &n2);
        assert_int_equal(n, n2);
        int perm = !s->qwen2 && (strstr(ht->name, "attn_q.weight") || strstr(ht->name, "attn_k.weight"));
        int64_t cols = ht->ndim == 2 ? ht->shape[1] : n;
        for (int64_t r = 0; r < n / cols; r++) {
            int64_t hr = perm ? kw_tiny_unpermute_row(r, hd) : r;
            for (int64_t c = 0; c < cols; c += 32) {
                /* Q8_0 error: half a step of d = amax / 127, plus f16 rounding of d */
                float amax = 0, bound = 0;
                int64_t w = cols - c < 32 ? cols - c : 32;
                for (int64_t k = 0; k < w; k++)
                    amax = fmaxf(amax, fabsf(hx[hr * cols + c + k]));
                if (ht->ndim == 2 && s->gguf_dtype == KW_DT_Q8_0)
                    bound = amax / 127.0f * 0.5f * 1.01f + amax * 1e-3f;
                for (int64_t k = 0; k < w; k++) {
                    float a = gx[r * cols + c + k], b = hx[hr * cols + c + k];
                    float tol = bound;
                    if (ht->ndim == 2 && s->gguf_dtype == KW_DT_F16)
                        tol = fmaxf(fabsf(b) * 0x1p-11f, 0x1p-25f); /* half an ulp */
                    if (!(fabsf(a - b) <= tol))
                        fail_msg("%s[%lld, %lld]: gguf %.9g, hf %.9g (bound %g)", ht->name,
                                 (long long)r, (long long)(c + k), a, b, tol);
                }
            }
        }
        free(gx);
        free(hx);
    }
}

static void check_same_model(kw_tiny_spec s, const char *tag)
{
    char gpath[128], hdir[128];
    snprintf(gpath, sizeof gpath, "%s/%s.gguf", tmp, tag);
    snprintf(hdir, sizeof hdir, "%s/%s-hf", tmp, tag);
    kw_error err = {0};
    assert_int_equal(kw_tiny_write_gguf(&s, gpath, &err), 0);
    assert_int_equal(kw_tiny_write_hf(&s, hdir, &err), 0);
    kw_model *g = open_ok(gpath), *h = open_ok(hdir);
    const kw_model_config *a = &g->cfg, *b = &h->cfg;
    assert_int_equal(a->arch, s.qwen2 ? KW_ARCH_QWEN2 : KW_ARCH_LLAMA);
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->n_layer, s.n_layer);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_embd, b->n_embd);
    assert_int_equal(a->n_head, b->n_head);
    assert_int_equal(a->n_head_kv, s.n_head_kv);
    assert_int_equal(a->n_head_kv, b->n_head_kv);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->n_ff, b->n_ff);
    assert_int_equal(a->n_vocab, kw_tiny_n_vocab());
    assert_int_equal(a->n_vocab, b->n_vocab);
    assert_int_equal(a->n_ctx_train, b->n_ctx_train);
    assert_true(a->norm_eps == b->norm_eps && a->rope_theta == b->rope_theta);
    assert_int_equal(a->rope_layout, s.qwen2 ? KW_ROPE_HALF : KW_ROPE_INTERLEAVED);
    assert_int_equal(b->rope_layout, KW_ROPE_HALF);
    assert_int_equal(a->tie_embeddings, s.tie_embeddings);
    assert_int_equal(b->tie_embeddings, s.tie_embeddings);
    assert_int_equal(a->qkv_bias, s.qwen2);
    assert_int_equal(b->qkv_bias, s.qwen2);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->add_bos, b->add_bos);
    assert_int_equal(a->n_eos, b->n_eos);
    for (int i = 0; i < a->n_eos; i++)
        assert_int_equal(a->eos_ids[i], b->eos_ids[i]);
    assert_string_equal(g->chat_template, h->chat_template);
    assert_int_equal(strlen(g->sha256), 64);
    assert_int_equal(strlen(h->sha256), 64);
    compare_models(&s, g, h);
    /* both tokenizers (once the tokenizer is built: until then both are NULL) */
    assert_true((g->tok == NULL) == (h->tok == NULL));
    if (g->tok) {
        const char *text = "<|im_start|>user\nHello the world, and 42<|im_end|>\n";
        int32_t ia[128], ib[128];
        int na = kw_tokenize(g->tok, text, 1, ia, 128), nb = kw_tokenize(h->tok, text, 1, ib, 128);
        assert_true(na > 3 && na < 128);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, (size_t)na * sizeof *ia);
        assert_int_equal(ia[0], 1); /* <|im_start|> */
        assert_int_equal(kw_tokenizer_n_vocab(g->tok), kw_tiny_n_vocab());
    }
    kw_model_free(g);
    kw_model_free(h);
}

static void test_tiny_llama_gguf_and_hf_match(void **st)
{
    (void)st;
    check_same_model(kw_tiny_default(11), "llama");
}

static void test_tiny_qwen2_tied_gguf_and_hf_match(void **st)
{
    (void)st;
    kw_tiny_spec s = kw_tiny_default(12);
    s.qwen2 = true;
    s.tie_embeddings = true;
    check_same_model(s, "qwen2");
}

static void test_tiny_f16_and_q8_0_gguf_within_bounds(void **st)
{
    (void)st;
    kw_tiny_spec s = kw_tiny_default(13);
    s.gguf_dtype = KW_DT_F16;
    check_same_model(s, "f16");
    s.gguf_dtype = KW_DT_Q8_0;
    s.n_shards = 3; /* and an index with three shards on the HF side */
    check_same_model(s, "q8");
}

static void test_llama3_rope_scaling_both_ways(void **st)
{
    (void)st;
    kw_tiny_spec s = kw_tiny_default(18);
    s.rope_llama3 = true;
    check_same_model(s, "llama3");
    char gpath[128], hdir[128];
    snprintf(gpath, sizeof gpath, "%s/llama3.gguf", tmp);
    snprintf(hdir, sizeof hdir, "%s/llama3-hf", tmp);
    kw_model *g = open_ok(gpath), *h = open_ok(hdir);
    assert_int_equal(g->cfg.rope_scaling, KW_ROPE_SCALE_LLAMA3);
    assert_true(g->cfg.rope_factor == 8.0f);
    const kw_tensor *f = kw_model_tensor(g, "rope_freqs.weight");
    assert_non_null(f);
    assert_int_equal(f->shape[0], kw_tiny_head_dim(&s) / 2);
    float want[128];
    kw_tiny_rope_freqs(&s, want);
    assert_memory_equal(f->data, want, f->nbytes);
    assert_true(want[0] == 1.0f && want[7] == 8.0f && want[1] > 1.0f && want[1] < 8.0f);
    assert_int_equal(h->cfg.rope_scaling, KW_ROPE_SCALE_LLAMA3);
    assert_true(h->cfg.rope_factor == 8.0f && h->cfg.rope_low_freq_factor == 1.0f &&
                h->cfg.rope_high_freq_factor == 4.0f);
    assert_int_equal(h->cfg.rope_orig_ctx, 64);
    kw_model_free(g);
    kw_model_free(h);
}

static void test_sharded_hf_equals_single_file(void **st)
{
    (void)st;
    kw_tiny_spec s = kw_tiny_default(14);
    char one[128], three[128];
    snprintf(one, sizeof one, "%s/one", tmp);
    snprintf(three, sizeof three, "%s/three", tmp);
    kw_error err = {0};
    assert_int_equal(kw_tiny_write_hf(&s, one, &err), 0);
    s.n_shards = 3;
    assert_int_equal(kw_tiny_write_hf(&s, three, &err), 0);
    kw_model *a = open_ok(one), *b = open_ok(three), *b2 = open_ok(three);
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (int i = 0; i < a->n_tensors; i++) {
        const kw_tensor *t = kw_model_tensor(b, a->tensors[i].name);
        assert_non_null(t);
        assert_int_equal(t->nbytes, a->tensors[i].nbytes);
        assert_memory_equal(t->data, a->tensors[i].data, t->nbytes);
    }
    assert_string_equal(b->sha256, b2->sha256);
    assert_string_not_equal(a->sha256, b->sha256);
    char path[256], hex[65];
    snprintf(path, sizeof path, "%s/model.safetensors", one);
    assert_int_equal(kw_sha256_file(path, hex, &err), 0);
    assert_string_equal(a->sha256, hex);
    kw_model_free(a);
    kw_model_free(b);
    kw_model_free(b2);
}

static void test_registered_names_and_sidecars(void **st)
{
    (void)st;
    char home[128], models[160], path[256];
    snprintf(home, sizeof home, "%s/home", tmp);
    snprintf(models, sizeof models, "%s/models", home);
    mkdir(home, 0755);
    mkdir(models, 0755);
    const char *old = getenv("KVWEAVE_HOME");
    char *saved = old ? strdup(old) : NULL;
    setenv("KVWEAVE_HOME", home, 1);
    kw_tiny_spec s = kw_tiny_default(15);
    kw_error err = {0};
    snprintf(path, sizeof path, "%s/tiny-reg.gguf", models);
    assert_int_equal(kw_tiny_write_gguf(&s, path, &err), 0);
    kw_model *m = open_ok("tiny-reg");
    char hex[65];
    assert_int_equal(kw_sha256_file(path, hex, &err), 0);
    assert_string_equal(m->sha256, hex); /* no sidecar: computed */
    assert_string_equal(m->name, "tiny-reg");
    assert_string_equal(m->path, path);
    kw_model_free(m);
    snprintf(path, sizeof path, "%s/tiny-reg.sha256", models);
    FILE *f = fopen(path, "w");
    fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
    fclose(f);
    m = open_ok("tiny-reg");
    assert_string_equal(m->sha256, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    kw_model_free(m);
    snprintf(path, sizeof path, "%s/tiny-dir", models);
    assert_int_equal(kw_tiny_write_hf(&s, path, &err), 0);
    m = open_ok("tiny-dir");
    assert_string_equal(m->path, path);
    kw_model_free(m);
    open_fails("no-such-model", "model 'no-such-model' is not registered");
    open_fails("/nonexistent/x.gguf", "no such file or directory");
    open_fails("missing.gguf", "model 'missing.gguf': no such file or directory");
    if (saved) {
        setenv("KVWEAVE_HOME", saved, 1);
        free(saved);
    } else {
        unsetenv("KVWEAVE_HOME");
    }
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void replace_once(uint8_t *b, size_t n, const void *from, const void *to, size_t len)
{
    uint8_t *p = memmem(b, n, from, len);
    assert_non_null(p);
    memcpy(p, to, len);
}

static void test_broken_models_give_clear_errors(void **st)
{
    (void)st;
    kw_tiny_spec s = kw_tiny_default(16);
    char good[128], bad[128], hf[128], path[256];
    snprintf(good, sizeof good, "%s/good.gguf", tmp);
    snprintf(bad, sizeof bad, "%s/bad.gguf", tmp);
    kw_error err = {0};
    assert_int_equal(kw_tiny_write_gguf(&s, good, &err), 0);
    size_t n;
    uint8_t *b = slurp(good, &n);

    uint8_t *c = malloc(n);
    memcpy(c, b, n);
    replace_once(c, n, "blk.1.ffn_up.weight", "blk.1.ffn_UP.weight", 19);
    spit(bad, c, n);
    open_fails(bad, "missing tensor 'blk.1.ffn_up.weight' (the model has 2 layers)");
    memcpy(c, b, n);
    replace_once(c, n, "\5\0\0\0\0\0\0\0llama", "\5\0\0\0\0\0\0\0gemma", 13);
    spit(bad, c, n);
    open_fails(bad, "unknown architecture 'gemma'");
    memcpy(c, b, n);
    replace_once(c, n, "llama.block_count", "llama.block_cOunt", 17);
    spit(bad, c, n);
    open_fails(bad, "required metadata key 'llama.block_count' is missing");
    spit(bad, b, n / 2);
    open_fails(bad, "bad.gguf: ");
    open_fails(bad, "but the file has");
    spit(bad, "<!DOCTYPE html>\n<html></html>", 29);
    open_fails(bad, "an HTML page saved instead of the file?");
    free(c);
    free(b);

    snprintf(hf, sizeof hf, "%s/hf", tmp);
    assert_int_equal(kw_tiny_write_hf(&s, hf, &err), 0);
    snprintf(path, sizeof path, "%s/config.json", hf);
    b = slurp(path, &n);
    char *cfg = malloc(n + 16);
    memcpy(cfg, b, n);
    cfg[n] = 0;
    char *p = strstr(cfg, "\"intermediate_size\": 128");
    assert_non_null(p);
    memcpy(p, "\"intermediate_size\": 256", 24);
    spit(path, cfg, n);
    open_fails(hf, "tensor 'blk.0.ffn_gate.weight' has shape (128, 64) but the configuration "
                   "needs (256, 64)");
    memcpy(p, "\"intermediate_siz_\": 128", 24);
    spit(path, cfg, n);
    open_fails(hf, "config.json: required field 'intermediate_size' is missing");
    memcpy(p, "\"intermediate_size\": 128", 24);
    p = strstr(cfg, "\"tie_word_embeddings\": false");
    spit(path, cfg, n);
    kw_model_free(open_ok(hf));
    snprintf(path, sizeof path, "%s/model.safetensors", hf);
    free(b);
    b = slurp(path, &n);
    spit(path, b, n - 4);
    open_fails(hf, "model.safetensors: tensor 'lm_head.weight' needs bytes");
    free(b);
    snprintf(path, sizeof path, "%s/config.json", hf);
    unlink(path);
    open_fails(hf, "a directory without config.json is not a Hugging Face model");
    free(cfg);
}

static void test_tied_flag_without_lm_head_is_an_error(void **st)
{
    (void)st;
    kw_tiny_spec s = kw_tiny_default(17);
    s.tie_embeddings = true;
    char hf[128], path[256];
    snprintf(hf, sizeof hf, "%s/tied", tmp);
    kw_error err = {0};
    assert_int_equal(kw_tiny_write_hf(&s, hf, &err), 0);
    snprintf(path, sizeof path, "%s/config.json", hf);
    size_t n;
    uint8_t *b = slurp(path, &n);
    replace_once(b, n, "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": 0   ", 27);
    spit(path, b, n);
    open_fails(hf, "missing tensor 'lm_head.weight'");
    free(b);
}

/* The default model, when setup.sh has installed it. */
static void test_default_model_loads(void **st)
{
    (void)st;
    char path[4200];
    snprintf(path, sizeof path, "%s/models/smollm2-135m-instruct.gguf", kw_home());
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "skipped: %s is absent (setup.sh fetches it)\n", path);
        skip();
    }
    double t0 = kw_now();
    kw_model *m = open_ok("smollm2-135m-instruct");
    double t_open = kw_now() - t0;
    const kw_model_config *c = &m->cfg;
    assert_int_equal(c->arch, KW_ARCH_LLAMA);
    assert_int_equal(c->n_layer, 30);
    assert_int_equal(c->n_embd, 576);
    assert_int_equal(c->n_head, 9);
    assert_int_equal(c->n_head_kv, 3);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->n_ff, 1536);
    assert_int_equal(c->n_vocab, 49152);
    assert_int_equal(c->rope_layout, KW_ROPE_INTERLEAVED);
    assert_true(c->tie_embeddings);
    assert_false(c->qkv_bias);
    assert_true(c->rope_theta > 0 && c->norm_eps > 0 && c->norm_eps < 1e-3);
    assert_true(c->n_eos >= 1);
    assert_non_null(m->chat_template);
    assert_non_null(strstr(m->chat_template, "<|im_start|>"));
    assert_string_equal(m->sha256,
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    const kw_tensor *q = kw_model_tensor(m, "blk.0.attn_q.weight");
    assert_non_null(q);
    assert_int_equal(q->shape[0], 576);
    assert_int_equal(q->shape[1], 576);
    assert_int_equal(kw_model_tensor(m, "blk.29.attn_k.weight")->shape[0], 192);
    assert_null(kw_model_tensor(m, "output.weight"));
    if (m->tok) { /* once the tokenizer is built */
        assert_int_equal(kw_tokenizer_n_vocab(m->tok), 49152);
        int im_end = kw_tokenizer_find(m->tok, "<|im_end|>"), is_eos = 0;
        for (int i = 0; i < c->n_eos; i++)
            is_eos |= c->eos_ids[i] == im_end;
        assert_true(im_end >= 0 && is_eos);
    }
    int64_t total = 0;
    for (int i = 0; i < m->n_tensors; i++)
        total += kw_tensor_nelems(&m->tensors[i]);
    float *buf = malloc((size_t)total * sizeof *buf);
    t0 = kw_now();
    int64_t off = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const kw_tensor *t = &m->tensors[i];
        assert_int_equal(kw_to_f32(t->dtype, t->data, buf + off, kw_tensor_nelems(t)), 0);
        off += kw_tensor_nelems(t);
    }
    double t_deq = kw_now() - t0;
    off = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const kw_tensor *t = &m->tensors[i];
        int64_t n = kw_tensor_nelems(t);
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t k = 0; k < n; k++) {
            float v = buf[off + k];
            if (!isfinite(v))
                fail_msg("%s[%lld] is %g", t->name, (long long)k, v);
            lo = fminf(lo, v);
            hi = fmaxf(hi, v);
        }
        if (!(hi > lo))
            fail_msg("%s: all %lld values equal %g", t->name, (long long)n, lo);
        off += n;
    }
    fprintf(stderr, "default model: %d tensors, %lld parameters; open %.3f s (incl. tokenizer), "
            "dequantize all %.3f s\n", m->n_tensors, (long long)total, t_open, t_deq);
    free(buf);
    kw_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_llama_gguf_and_hf_match),
        cmocka_unit_test(test_tiny_qwen2_tied_gguf_and_hf_match),
        cmocka_unit_test(test_tiny_f16_and_q8_0_gguf_within_bounds),
        cmocka_unit_test(test_llama3_rope_scaling_both_ways),
        cmocka_unit_test(test_sharded_hf_equals_single_file),
        cmocka_unit_test(test_registered_names_and_sidecars),
        cmocka_unit_test(test_broken_models_give_clear_errors),
        cmocka_unit_test(test_tied_flag_without_lm_head_is_an_error),
        cmocka_unit_test(test_default_model_loads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
