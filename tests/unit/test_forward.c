/* The forward pass against a plain full-sequence reference on a tiny random model:
 * Llama (interleaved RoPE, tied head) and Qwen2 (half-split RoPE, QKV bias, separate
 * head), chunked prefill of several sizes then decode, several sequences in one step,
 * and pre-RoPE storage with RoPE at read. Bound: relative L2 of each position's logits
 * < 1e-4 (f32 against double). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <stdio.h>
#include <unistd.h>

#include "runtime/forward.h"
#include "runtime_support.h"
#include "tiny_model.h"

#define BOUND 1e-4

typedef struct rig {
    kw_model *m;
    kw_fwd *f;
    kw_kvpool *pool;
} rig;

static kw_kvdtype g_dtype = KW_KV_F32;

static void rig_open(rig *r, int qwen, kw_rope_layout lay, bool pre_rope, int page)
{
    kw_model_config c = rt_tiny_config(qwen, lay);
    r->m = rt_tiny_model(&c, 42 + qwen);
    kw_error err = {0};
    assert_int_equal(kw__fwd_new(r->m, 256, &r->f, &err), 0);
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = page;
    o.n_pages = 4096;
    o.pre_rope = pre_rope;
    o.dtype = g_dtype;
    assert_int_equal(kw_kvpool_new(&r->m->cfg, &o, &r->pool, &err), 0);
}

static void rig_close(rig *r)
{
    kw__fwd_free(r->f);
    kw_kvpool_free(r->pool);
    rt_tiny_free(r->m);
}

static void run_batch(rig *r, int n_seq, int32_t **ids, const int *n, const int *chunk,
                      float **out)
{
    kw_seq seq[8];
    kw_seq *sp[8];
    memset(seq, 0, sizeof seq);
    for (int i = 0; i < n_seq; i++) {
        seq[i].kv = kw_kvseq_new(r->pool);
        sp[i] = &seq[i];
    }
    rt_drive(r->f, r->pool, n_seq, sp, NULL, ids, n, n, NULL, chunk, out);
    for (int i = 0; i < n_seq; i++)
        kw_kvseq_free(seq[i].kv);
}

static double g_bound = BOUND;
static double g_worst; /* the largest error check_against_ref saw */

static void check_against_ref(rig *r, int32_t *ids, int n, const float *got)
{
    int V = r->m->cfg.n_vocab;
    float *ref = malloc(sizeof(float) * n * V);
    rt_ref_forward(r->m, ids, n, ref, NULL, NULL, 0);
    for (int t = 0; t < n; t++) {
        double e = rt_rel_l2(got + (int64_t)t * V, ref + (int64_t)t * V, V);
        g_worst = e > g_worst ? e : g_worst;
        if (e > g_bound)
            fail_msg("position %d: relative L2 %g", t, e);
        if (getenv("KW_TEST_VERBOSE"))
            fprintf(stderr, "position %d: relative L2 %g\n", t, e);
    }
    free(ref);
}

static int32_t *rand_ids(int n, int V, uint64_t *s)
{
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(rt_rand_u64(s) % (uint64_t)V);
    return ids;
}

/* 75 random tokens (seed) prefilled in chunks of 1, 16, 23 and 75, then (n_prompt > 0)
 * prefilled up to n_prompt and decoded, each run's logits against the reference over
 * `ref`'s weights */
static void chunks_against_ref(rig *r, kw_model *ref, uint64_t seed, int n_prompt)
{
    int n = 75, V = r->m->cfg.n_vocab;
    int32_t *ids = rand_ids(n, V, &seed);
    float *out = malloc(sizeof(float) * n * V);
    int chunks[] = {1, 16, 23, 75};
    kw_model *m = r->m;
    for (int c = 0; c < 4 + (n_prompt > 0); c++) {
        memset(out, 0, sizeof(float) * n * V);
        if (c < 4) {
            run_batch(r, 1, &ids, &n, &chunks[c], &out);
        } else {
            kw_seq seq = {.kv = kw_kvseq_new(r->pool)};
            kw_seq *sp = &seq;
            rt_drive(r->f, r->pool, 1, &sp, NULL, &ids, &n, &n_prompt, NULL, &chunks[2], &out);
            kw_kvseq_free(seq.kv);
        }
        r->m = ref;
        check_against_ref(r, ids, n, out);
        r->m = m;
    }
    free(ids), free(out);
}

static void one_config(int qwen, kw_rope_layout lay, bool pre_rope)
{
    rig r;
    rig_open(&r, qwen, lay, pre_rope, 16);
    chunks_against_ref(&r, r.m, 7, 0);
    rig_close(&r);
}

static void test_forward_llama_interleaved_matches_reference(void **st)
{
    one_config(0, KW_ROPE_INTERLEAVED, false);
}

static void test_forward_qwen2_half_bias_matches_reference(void **st)
{
    one_config(1, KW_ROPE_HALF, false);
}

static void test_forward_pre_rope_storage_equals_post_rope(void **st)
{
    one_config(0, KW_ROPE_INTERLEAVED, true);
    one_config(1, KW_ROPE_HALF, true);
}

static void test_forward_mixed_batch_matches_reference(void **st)
{
    rig r;
    rig_open(&r, 1, KW_ROPE_HALF, false, 5);
    uint64_t s = 99;
    int n[4] = {40, 9, 61, 1}, ch[4] = {7, 1, 32, 1}, V = r.m->cfg.n_vocab;
    int32_t *ids[4];
    float *out[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = rand_ids(n[i], V, &s);
        out[i] = malloc(sizeof(float) * n[i] * V);
    }
    run_batch(&r, 4, ids, n, ch, out);
    for (int i = 0; i < 4; i++) {
        check_against_ref(&r, ids[i], n[i], out[i]);
        free(ids[i]), free(out[i]);
    }
    rig_close(&r);
}

/* A prompt prefilled once, forked, then two different continuations run in the same
 * steps: each matches the reference of its own full sequence, and the fork shares the
 * prompt's full pages. */
static void test_forward_fork_divergent_continuations(void **st)
{
    rig r;
    rig_open(&r, 0, KW_ROPE_INTERLEAVED, false, 8);
    uint64_t s = 5;
    int np = 37, nc = 12, V = r.m->cfg.n_vocab;
    int32_t *a = rand_ids(np + nc, V, &s), *b = malloc(sizeof(int32_t) * (np + nc));
    memcpy(b, a, sizeof(int32_t) * np);
    for (int i = np; i < np + nc; i++)
        b[i] = (a[i] + 1 + i) % V;
    float *oa = malloc(sizeof(float) * (np + nc) * V), *ob = malloc(sizeof(float) * (np + nc) * V);
    kw_seq sa = {.kv = kw_kvseq_new(r.pool)}, sb = {0};
    kw_seq *sp[2] = {&sa, &sb};
    int n1 = np, ch = 16;
    rt_drive(r.f, r.pool, 1, sp, NULL, &a, &n1, &n1, NULL, &ch, &oa);
    int64_t free0 = kw_kvpool_free_pages(r.pool);
    sb.kv = kw_kvseq_fork(sa.kv);
    assert_non_null(sb.kv);
    /* 3 layers x 2 KV heads, one partial page copied each */
    assert_int_equal(free0 - kw_kvpool_free_pages(r.pool), 3 * 2);
    int32_t *ids[2] = {a, b};
    int n[2] = {np + nc, np + nc}, npr[2] = {np, np}, start[2] = {np, np}, c1[2] = {1, 1};
    float *outs[2] = {oa, ob};
    memcpy(ob, oa, sizeof(float) * np * V);
    rt_drive(r.f, r.pool, 2, sp, NULL, ids, n, npr, start, c1, outs);
    check_against_ref(&r, a, np + nc, oa);
    check_against_ref(&r, b, np + nc, ob);
    kw_kvseq_free(sa.kv);
    kw_kvseq_free(sb.kv);
    assert_int_equal(kw_kvpool_free_pages(r.pool), 4096);
    free(a), free(b), free(oa), free(ob);
    rig_close(&r);
}

/* int8 pages: the logits stay within relative L2 2e-2 of the f32 reference (the
 * quantization error of K and V, half a step of absmax / 127 per row) */
static void test_forward_int8_pool_close_to_reference(void **st)
{
    g_dtype = KW_KV_I8;
    g_bound = 2e-2;
    one_config(0, KW_ROPE_INTERLEAVED, false);
    one_config(1, KW_ROPE_HALF, true);
    g_dtype = KW_KV_F32;
    g_bound = BOUND;
}

/* pages with K quantized per channel (KIVI's layout): int8 within 2e-2 as int8 rows are,
 * int4 within 0.15 (half a step is a thirtieth of each channel's range over a page, of
 * each V row's); 75 tokens in pages of 16 (prefill chunks of 1 to 75), so four pages of
 * each table are full (quantized) and the last open (f32), with K before RoPE too */
static void test_forward_k_per_channel_pools_close_to_reference(void **st)
{
    (void)st;
    const struct { kw_kvdtype dt; double bound; const char *name; } cases[] = {
        {KW_KV_I8K, 2e-2, "int8_kchan"}, {KW_KV_I4K, 0.15, "int4_kchan"}};
    for (int i = 0; i < 2; i++) {
        g_dtype = cases[i].dt;
        g_bound = cases[i].bound;
        g_worst = 0;
        one_config(0, KW_ROPE_INTERLEAVED, false);
        one_config(1, KW_ROPE_HALF, true);
        print_message("%s: worst relative L2 of the logits %.3g (bound %g)\n", cases[i].name,
                      g_worst, cases[i].bound);
    }
    g_dtype = KW_KV_F32;
    g_bound = BOUND;
}

/* logits of all positions of ids through the forward pass on model m */
static float *forward_all(kw_model *m, int32_t *ids, int n)
{
    rig r = {.m = m};
    kw_error err = {0};
    assert_int_equal(kw__fwd_new(m, 256, &r.f, &err), 0);
    kw_kvpool_opts o = kw_kvpool_defaults();
    assert_int_equal(kw_kvpool_new(&m->cfg, &o, &r.pool, &err), 0);
    float *out = malloc(sizeof(float) * n * m->cfg.n_vocab);
    int ch = 16;
    run_batch(&r, 1, &ids, &n, &ch, &out);
    kw__fwd_free(r.f);
    kw_kvpool_free(r.pool);
    return out;
}

/* The tiny model written as GGUF (Q/K permuted for interleaved RoPE) and as a Hugging
 * Face directory (half-split RoPE) loads to the same logits, and both match the plain
 * reference where it applies (no llama3 scaling in the reference). */
static void test_forward_gguf_and_hf_load_to_identical_logits(void **st)
{
    for (int variant = 0; variant < 3; variant++) {
        kw_tiny_spec sp = kw_tiny_default(100 + variant);
        sp.qwen2 = variant == 1;
        sp.rope_llama3 = variant == 2;
        sp.tie_embeddings = variant != 1;
        const char *tmp = getenv("TMPDIR");
        char dir[512], gg[600], hf[600];
        snprintf(dir, sizeof dir, "%s/kw_fwd_tinyXXXXXX", tmp && *tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(dir));
        snprintf(gg, sizeof gg, "%s/tiny.gguf", dir);
        snprintf(hf, sizeof hf, "%s/hf", dir);
        kw_error err = {0};
        assert_int_equal(kw_tiny_write_gguf(&sp, gg, &err), 0);
        assert_int_equal(kw_tiny_write_hf(&sp, hf, &err), 0);
        kw_model *a, *b;
        if (kw_model_open(gg, &a, &err) < 0 || kw_model_open(hf, &b, &err) < 0)
            fail_msg("%s", err.msg);
        assert_int_not_equal(a->cfg.rope_layout, b->cfg.rope_layout * (variant != 1));
        int n = 40, V = a->cfg.n_vocab;
        uint64_t s = 8;
        int32_t *ids = rand_ids(n, V, &s);
        float *la = forward_all(a, ids, n), *lb = forward_all(b, ids, n);
        for (int t = 0; t < n; t++) {
            double e = rt_rel_l2(la + (int64_t)t * V, lb + (int64_t)t * V, V);
            if (e > 1e-5)
                fail_msg("variant %d position %d: GGUF vs HF relative L2 %g", variant, t, e);
        }
        if (!sp.rope_llama3) {
            rig r = {.m = a};
            check_against_ref(&r, ids, n, la);
            r.m = b;
            check_against_ref(&r, ids, n, lb);
        }
        free(ids), free(la), free(lb);
        kw_model_free(a);
        kw_model_free(b);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
    }
}

/* Random blocks of type dt in place of t's f32 data: random codes, and scales (f16
 * fields) that keep the weights within about 0.1 */
static void random_blocks(kw_tensor *t, kw_dtype dt, uint64_t *rs)
{
    size_t be, bb;
    assert_int_equal(kw_dtype_block(dt, &be, &bb), 0);
    int64_t nb = kw_tensor_nelems(t) / (int64_t)be;
    uint8_t *b = malloc((size_t)nb * bb);
    for (int64_t i = 0; i < nb * (int64_t)bb; i++)
        b[i] = (uint8_t)rt_rand_u64(rs);
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *blk = b + i * (int64_t)bb;
        double u = 0.5 + rt_rand01(rs) / 2, v = rt_rand01(rs) - 0.5;
        uint16_t h[2];
        switch (dt) {
        case KW_DT_Q6_K: h[0] = kw_f32_to_f16((float)(2e-5 * u)); break;
        case KW_DT_Q4_K: case KW_DT_Q5_K:
            h[0] = kw_f32_to_f16((float)(8e-5 * u)), h[1] = kw_f32_to_f16((float)(1e-4 * u));
            break;
        case KW_DT_Q8_0: h[0] = kw_f32_to_f16((float)(8e-4 * u)); break;
        default: /* Q4_0 .. Q5_1: a minimum where the type has one */
            h[0] = kw_f32_to_f16((float)(6e-3 * u)), h[1] = kw_f32_to_f16((float)(0.1 * v));
        }
        memcpy(blk + (dt == KW_DT_Q6_K ? 208 : 0), &h[0], 2);
        if (dt == KW_DT_Q4_1 || dt == KW_DT_Q5_1 || dt == KW_DT_Q4_K || dt == KW_DT_Q5_K)
            memcpy(blk + 2, &h[1], 2);
    }
    free((void *)t->data);
    t->data = b;
    t->dtype = dt;
    t->nbytes = (size_t)nb * bb;
}

/* A model whose matrices (token embedding, tied or separate head included) are random
 * blocks of every type the CPU forward keeps as blocks, one f32 matrix among them, and
 * *ref the same weights dequantized to f32 */
static kw_model *block_model(int qwen, kw_model **ref)
{
    static const kw_dtype types[] = {KW_DT_Q4_K, KW_DT_Q6_K, KW_DT_Q5_K, KW_DT_Q4_0,
                                     KW_DT_Q5_1, KW_DT_Q8_0, KW_DT_Q4_1, KW_DT_Q5_0};
    kw_model_config c = rt_tiny_config(qwen, qwen ? KW_ROPE_HALF : KW_ROPE_INTERLEAVED);
    c.n_embd = 256, c.n_head = 8, c.n_head_kv = 2, c.head_dim = 32, c.n_ff = 512;
    kw_model *q = rt_tiny_model(&c, 5 + qwen);
    *ref = rt_tiny_model(&c, 5 + qwen);
    uint64_t rs = 11;
    int k = 0;
    for (int i = 0; i < q->n_tensors; i++) {
        kw_tensor *t = &q->tensors[i];
        if (t->ndim != 2 || !strcmp(t->name, "blk.1.attn_v.weight"))
            continue; /* norms, biases and one matrix stay f32 */
        random_blocks(t, types[k++ % 8], &rs);
        float *f32;
        kw_error err = {0};
        assert_int_equal(kw_tensor_to_f32(t, &f32, &err), 0);
        free((void *)(*ref)->tensors[i].data);
        (*ref)->tensors[i].data = f32;
    }
    return q;
}

static void rig_open_model(rig *r, kw_model *m)
{
    kw_error err = {0};
    r->m = m;
    assert_int_equal(kw__fwd_new(m, 256, &r->f, &err), 0);
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.n_pages = 4096;
    o.dtype = g_dtype;
    assert_int_equal(kw_kvpool_new(&m->cfg, &o, &r->pool, &err), 0);
}

/* The block model against the reference over its dequantized weights: chunks of 1 and
 * 16 tokens (and decode rows) read the blocks directly, 23 and 75 dequantize tiles for
 * sgemm. Same bound as the f32 model. */
static void test_forward_block_quantized_weights_match_reference(void **st)
{
    (void)st;
    for (int qwen = 0; qwen < 2; qwen++) {
        kw_model *ref, *q = block_model(qwen, &ref);
        rig r;
        rig_open_model(&r, q);
        chunks_against_ref(&r, ref, 3, 45); /* and 30 tokens decoded after 45 */
        rig_close(&r);
        rt_tiny_free(ref);
    }
}

static void test_forward_rejects_bad_steps(void **st)
{
    rig r;
    rig_open(&r, 0, KW_ROPE_INTERLEAVED, false, 16);
    kw_seq seq = {.kv = kw_kvseq_new(r.pool)};
    kw_seq *sp = &seq;
    int first = 0, tn = 2, lt = 5;
    int32_t ids[2] = {3, 1000}, pos[2] = {0, 1};
    bool f = true;
    float lg[97];
    kw_fwd_step s = {.n_seq = 1, .seqs = &sp, .tok_first = &first, .tok_n = &tn, .ids = ids,
                     .pos = pos, .prefill = &f, .last_chunk = &f, .logit_tok = &lt,
                     .n_logits = 1, .logits = lg};
    kw_error err = {0};
    assert_int_equal(kw__fwd_run(r.f, r.pool, &s, &err), KW_EINVAL); /* logit row 5 */
    lt = 1;
    assert_true(kw__fwd_run(r.f, r.pool, &s, &err) < 0); /* id 1000 >= vocab */
    kw_kvseq_free(seq.kv);
    rig_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_llama_interleaved_matches_reference),
        cmocka_unit_test(test_forward_qwen2_half_bias_matches_reference),
        cmocka_unit_test(test_forward_pre_rope_storage_equals_post_rope),
        cmocka_unit_test(test_forward_mixed_batch_matches_reference),
        cmocka_unit_test(test_forward_fork_divergent_continuations),
        cmocka_unit_test(test_forward_int8_pool_close_to_reference),
        cmocka_unit_test(test_forward_k_per_channel_pools_close_to_reference),
        cmocka_unit_test(test_forward_gguf_and_hf_load_to_identical_logits),
        cmocka_unit_test(test_forward_block_quantized_weights_match_reference),
        cmocka_unit_test(test_forward_rejects_bad_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
