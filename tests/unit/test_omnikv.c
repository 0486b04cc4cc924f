/* retrieve.omnikv: the tokens an observation layer chooses against a brute force (largest
 * probability over the heads, max-pooled, the best between the sink and the recent
 * tokens, ties to the earlier; their number given or as a prompt ratio) as the later
 * layers' views; observation layers, the
 * layers before them and prefill left dense; a short context read whole; probabilities
 * that do not match the stored tokens failing the sequence; the layer list's parser. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "retrieve/omnikv.h"
#include "hook_fixture.h"
#include "runtime_support.h"

static void fx_open(hook_fx *fx, const kw_omnikv_opts *o, const char *layers, int n_tok,
                    int n_prompt)
{
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    cfg.n_layer = 5;
    kw_kvmethod *m;
    kw_error err = {0};
    assert_int_equal(kw__omnikv_method(o, layers, &m, &err), 0);
    hfx_open(fx, &cfg, 16, 1024, m, 0, n_prompt);
    fx->rs = 0x0a1u;
    int kd = cfg.n_head_kv * cfg.head_dim;
    float *k = malloc(sizeof(float) * (size_t)n_tok * kd);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok);
    for (int i = 0; i < n_tok * kd; i++)
        k[i] = (float)rt_rand01(&fx->rs);
    for (int t = 0; t < n_tok; t++)
        pos[t] = t;
    for (int l = 0; l < cfg.n_layer; l++)
        assert_int_equal(kw_kvseq_append(fx->seq.kv, l, k, k, pos, n_tok), 0);
    free(k), free(pos);
}

static void test_observation_layers_choose_the_later_layers_tokens(void **state)
{
    (void)state;
    kw_omnikv_opts o = {.keep_tokens = 10, .sink = 2, .recent = 4, .kernel = 3};
    for (int trial = 0; trial < 6; trial++) {
        int n = 60 + trial * 37;
        hook_fx fx;
        kw_omnikv_opts ot = o; /* trials 4, 5: 10 tokens as 0.1 of a prompt of 100 */
        if (trial >= 4)
            ot.keep_tokens = 1, ot.ratio = 0.1;
        fx_open(&fx, &ot, "1,3", n, trial >= 4 ? 100 : 0);
        int H = fx.cfg.n_head;
        float *p = malloc(sizeof(float) * (size_t)H * n);
        for (int i = 0; i < H * n; i++) /* a few peaks over a low floor, in steps of 1/64 */
            p[i] = (float)((int)(rt_rand01(&fx.rs) * (rt_rand01(&fx.rs) < 0.1 ? 64 : 8))) / 64;
        /* brute force */
        double *sc = malloc(sizeof(double) * n), *pl = malloc(sizeof(double) * n);
        for (int j = 0; j < n; j++) {
            sc[j] = p[j];
            for (int h = 1; h < H; h++)
                sc[j] = fmax(sc[j], p[h * n + j]);
        }
        for (int j = 0; j < n; j++) {
            pl[j] = sc[j];
            for (int d = -1; d <= 1; d++)
                if (j + d >= 0 && j + d < n)
                    pl[j] = fmax(pl[j], sc[j + d]);
        }
        char *want = calloc((size_t)n, 1), *got = malloc((size_t)n);
        for (int j = 0; j < n; j++) {
            if (j < o.sink || j >= n - o.recent) {
                want[j] = 1;
                continue;
            }
            int beat = 0;
            for (int x = o.sink; x < n - o.recent; x++)
                beat += pl[x] > pl[j] || (pl[x] == pl[j] && x < j);
            want[j] = beat < o.keep_tokens;
        }
        /* layer 0 (before the first observation layer) and prefill: dense */
        assert_int_equal(hfx_select(&fx, 0, false, NULL), 0);
        assert_int_equal(kw_view_tokens(fx.w), (int64_t)n * fx.cfg.n_head_kv);
        assert_int_equal(hfx_after_attn(&fx, 1, false, p, n), 0);
        assert_int_equal(hfx_select(&fx, 2, true, NULL), 0);
        assert_int_equal(kw_view_tokens(fx.w), (int64_t)n * fx.cfg.n_head_kv);
        for (int l = 2; l <= 4; l += 2) { /* layer 3 observes: layer 4 gets its choice */
            if (l == 4) {
                assert_int_equal(hfx_select(&fx, 3, false, NULL), 0);
                assert_int_equal(kw_view_tokens(fx.w), (int64_t)n * fx.cfg.n_head_kv);
                assert_int_equal(hfx_after_attn(&fx, 3, false, p, n), 0);
            }
            assert_int_equal(hfx_select(&fx, l, false, NULL), 0);
            assert_int_equal(fx.w->n_rows, fx.cfg.n_head_kv);
            for (int r = 0; r < fx.cfg.n_head_kv; r++) {
                hfx_row_marks(&fx, l, r, got, n);
                for (int j = 0; j < n; j++)
                    if (got[j] != want[j])
                        fail_msg("trial %d layer %d row %d token %d: read %d, want %d", trial,
                                 l, r, j, got[j], want[j]);
            }
        }
        /* probabilities over another number of tokens: not the dense view */
        assert_true(hfx_after_attn(&fx, 1, false, p, n - 1) < 0);
        assert_true(hfx_after_attn(&fx, 1, false, NULL, n) < 0);
        free(p), free(sc), free(pl), free(want), free(got);
        hfx_close(&fx);
    }
}

static void test_a_short_context_is_read_whole(void **state)
{
    (void)state;
    kw_omnikv_opts o = {.keep_tokens = 50, .sink = 4, .recent = 8, .kernel = 5};
    hook_fx fx;
    fx_open(&fx, &o, "0", 62, 0); /* 62 - 4 - 8 = 50 tokens between: all kept */
    float *p = calloc((size_t)fx.cfg.n_head * 62, sizeof(float));
    assert_int_equal(hfx_after_attn(&fx, 0, false, p, 62), 0);
    assert_int_equal(hfx_select(&fx, 1, false, NULL), 0);
    assert_false(fx.w->per_qhead);
    assert_int_equal(kw_view_tokens(fx.w), 62 * fx.cfg.n_head_kv);
    free(p);
    hfx_close(&fx);
}

static void test_layer_lists(void **state)
{
    (void)state;
    int32_t *v;
    int n;
    kw_error err = {0};
    assert_int_equal(kw__omnikv_parse_layers("0,1,2,8,18", &v, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(v[4], 18);
    free(v);
    const char *bad[] = {"", "a", "1,", "1,1", "3,2", "-1", "1;2", "1,,2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(kw__omnikv_parse_layers(bad[i], &v, &n, &err), KW_EINVAL);
        assert_null(v);
        assert_non_null(strstr(err.msg, "want increasing layer numbers"));
    }
    /* a layer the model does not have */
    kw_omnikv_opts o = {.keep_tokens = 5, .sink = 1, .recent = 1, .kernel = 1};
    kw_kvmethod *m;
    assert_int_equal(kw__omnikv_method(&o, "1,7", &m, &err), 0);
    kw_model_config c = rt_tiny_config(0, KW_ROPE_HALF);
    void *st;
    assert_int_equal(m->state_new(m->params, &c, &st, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "observation layer 7, the model has 3 layers"));
    m->params_free(m->params);
    free(m);
    o.recent = 0;
    assert_int_equal(kw__omnikv_method(&o, "1", &m, &err), KW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_observation_layers_choose_the_later_layers_tokens),
        cmocka_unit_test(test_a_short_context_is_read_whole),
        cmocka_unit_test(test_layer_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
