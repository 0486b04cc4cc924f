/* mini_prefill.snap on the tiny model through the engine: per sample and layer, each KV
 * head's sorted scores equal a plain computation (window sums of the observation
 * probabilities, the GQA group averaged, average pooling with zero padding, divided by
 * the layer total) from the probabilities a capturing hook sees in the same prefill;
 * samples come out in sample order whatever order they finish in; a prompt no longer
 * than the window gives no profile; and the stats drive layer_budget.xkv. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvweave/budget.h"
#include "kvweave/engine.h"
#include "kvweave/stats.h"
#include "op_standin.h"
#include "runtime_support.h"

extern const kw_op kw_op_mini_prefill_snap, kw_op_layer_budget_xkv;

/* ---- a hook that keeps the observation probabilities of every layer ---- */

typedef struct capture {
    int n_layer;
    float *probs[16];
    int obs_n[16], len[16], n_head;
} capture;

static int cap_after_attn(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    capture *cp = st;
    if (!a->probs[0])
        return 0;
    size_t n = (size_t)a->obs_n[0] * a->n_head * a->obs_len[0];
    cp->probs[c->layer] = malloc(sizeof(float) * n);
    memcpy(cp->probs[c->layer], a->probs[0], sizeof(float) * n);
    cp->obs_n[c->layer] = a->obs_n[0];
    cp->len[c->layer] = a->obs_len[0];
    cp->n_head = a->n_head;
    (void)b;
    return 0;
}

static const kw_kvhook cap_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                   .roles = KW_ROLE_SELECT, .needs = KW_NEED_OBS_PROBS,
                                   .name = "test.capture", .after_attn = cap_after_attn};

static void done_cb(void *u, kw_gen_result *r)
{
    (void)u;
    kw_gen_result_free(r);
}

static int desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* The plain profile of one layer: (Hk, n_key) sorted shares, in double. */
static double *plain_profile(const capture *cp, int layer, int Hk, int window, int kernel,
                             int n_tok)
{
    int H = cp->n_head, g = H / Hk, len = cp->len[layer], on = cp->obs_n[layer];
    int w = on < window ? on : window, nk = n_tok - w;
    double *sc = calloc((size_t)Hk * nk, sizeof(double));
    double *out = calloc((size_t)Hk * nk, sizeof(double));
    for (int q = on - w; q < on; q++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < nk; j++)
                sc[(h / g) * nk + j] += cp->probs[layer][((int64_t)q * H + h) * len + j] / g;
    double tot = 0;
    for (int r = 0; r < Hk; r++)
        for (int j = 0; j < nk; j++) {
            double s = 0;
            for (int x = j - kernel / 2; x < j - kernel / 2 + kernel; x++)
                s += x >= 0 && x < nk ? sc[r * nk + x] : 0;
            out[r * nk + j] = s / kernel;
            tot += s / kernel;
        }
    for (int r = 0; r < Hk; r++) {
        for (int j = 0; j < nk; j++)
            out[r * nk + j] /= tot;
        qsort(out + r * nk, (size_t)nk, sizeof(double), desc);
    }
    free(sc);
    return out;
}

static void test_mini_prefill_profiles_equal_plain_scores_in_sample_order(void **s)
{
    (void)s;
    kw_model_config cfg = rt_tiny_config(1, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&cfg, 5);
    kw_engine_opts eo = kw_engine_defaults();
    eo.page_tokens = 8;
    eo.n_pages = 4096;
    eo.chunk = 512; /* every prompt in one chunk, batched or alone */
    kw_engine *e;
    kw_error err = {0};
    assert_int_equal(kw_engine_open_model(m, &eo, &e, &err), 0);

    int lens[4] = {50, 90, 70, 6};
    int32_t ids[4][100];
    uint64_t rs = 3;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < lens[i]; j++)
            ids[i][j] = (int32_t)(rt_rand_u64(&rs) % cfg.n_vocab);

    kw_opctx c = {.op = &kw_op_mini_prefill_snap, .engine = e};
    uint8_t state[512] = {0};
    assert_true(kw_op_mini_prefill_snap.state_size <= sizeof state);
    assert_int_equal(kw_op_mini_prefill_snap.init(&c, state, &err), 0);
    kw_task t[4];
    int rc[4];
    for (int i = 3; i >= 0; i--) { /* submitted in reverse: all in flight together */
        st_task_init(&t[i], i);
        kw_tokens *tk = calloc(1, sizeof *tk);
        tk->ids = malloc(sizeof(int32_t) * (size_t)lens[i]);
        memcpy(tk->ids, ids[i], sizeof(int32_t) * (size_t)lens[i]);
        tk->n = lens[i];
        t[i].in[0][0] = kw_value_tokens(tk);
        t[i].n_in[0] = 1;
        rc[i] = kw_op_mini_prefill_snap.run(&c, state, &t[i]);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(st_wait(&t[i], rc[i]), 0);
    kw_engine_wait_idle(e);
    kw_task ft;
    st_task_init(&ft, -1);
    assert_int_equal(kw_op_mini_prefill_snap.finish(&c, state, &ft), 0);
    const kw_stats *st = kw_value_data(ft.out[0]);
    assert_int_equal(st->n_samples, 3); /* the 6-token prompt has no key before the window */
    assert_int_equal(st->window, 8);
    assert_int_equal(st->kernel, 7);
    assert_string_equal(json_string_value(json_object_get(c.records, "prompts_not_longer_than_window")), "1");
    assert_string_equal(json_string_value(json_object_get(c.records, "short_windows")), "1");

    int Hk = cfg.n_head_kv, smp = 0;
    for (int i = 0; i < 3; i++, smp++) {
        capture cp = {.n_layer = cfg.n_layer};
        kw_hookstack hs = {.n = 1, .hooks = {&cap_hook}, .states = {&cp}};
        kw_gen_req r = {.prompt = ids[i], .n_prompt = lens[i], .max_new = 0, .hooks = &hs,
                        .done = done_cb};
        assert_int_equal(kw_engine_submit(e, &r, &err), 0);
        kw_engine_wait_idle(e);
        int w = cp.obs_n[0] < 8 ? cp.obs_n[0] : 8, nk = lens[i] - w;
        assert_int_equal(st->n_keys[smp], nk);
        for (int l = 0; l < cfg.n_layer; l++) {
            double *want = plain_profile(&cp, l, Hk, 8, 7, lens[i]);
            const float *got = st->profiles[smp] + (int64_t)l * Hk * nk;
            double sum = 0;
            for (int j = 0; j < Hk * nk; j++) {
                assert_true(fabs(got[j] - want[j]) < 1e-6);
                sum += got[j];
            }
            assert_true(fabs(sum - 1) < 1e-5);
            free(want);
            free(cp.probs[l]);
        }
    }
    for (int l = 0; l < cfg.n_layer; l++) {
        double row = 0;
        for (int h = 0; h < Hk; h++)
            row += st->importance[l * Hk + h];
        assert_true(fabs(row - 1) < 1e-5);
    }

    /* the stats drive the XKV solver */
    kw_opctx bc = {.op = &kw_op_layer_budget_xkv, .params = json_pack("{s:f}", "set_value", 0.6)};
    assert_int_equal(kw_op_layer_budget_xkv.init(&bc, NULL, &err), 0);
    kw_task bt;
    st_task_init(&bt, -1);
    bt.in[0][0] = kw_value_ref(ft.out[0]);
    bt.n_in[0] = 1;
    assert_int_equal(kw_op_layer_budget_xkv.run(&bc, NULL, &bt), 0);
    const kw_budget *b = kw_value_data(bt.out[0]);
    assert_int_equal(b->n_layer, cfg.n_layer);
    for (int l = 0; l < cfg.n_layer; l++)
        assert_true(kw_budget_at(b, l, 0) >= 8 && kw_budget_at(b, l, 0) <= 8 + 82);
    print_message("xkv set_value 0.6 budgets: %d %d %d (%s)\n", kw_budget_at(b, 0, 0),
                  kw_budget_at(b, 1, 0), kw_budget_at(b, 2, 0),
                  json_string_value(json_object_get(bc.records, "allocation")));
    st_task_clear(&bt);
    json_decref(bc.params);
    json_decref(bc.records);

    st_task_clear(&ft);
    for (int i = 0; i < 4; i++)
        st_task_clear(&t[i]);
    kw_op_mini_prefill_snap.fini(&c, state);
    json_decref(c.records);
    kw_engine_close(e);
    rt_tiny_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mini_prefill_profiles_equal_plain_scores_in_sample_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
