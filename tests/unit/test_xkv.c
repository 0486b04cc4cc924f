/* XKV's allocation and the layer_budget operators: the heap greedy against a brute-force
 * optimum on small random instances, both stopping rules exactly, the average over
 * calibration samples, the stats payload's canonical bytes, and the operators' budgets
 * (xkv, uniform, pyramid). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvweave/budget.h"
#include "kvweave/stats.h"
#include "kvweave/util.h"
#include "layer_budget/xkv_alloc.h"
#include "op_standin.h"

extern const kw_op kw_op_layer_budget_xkv, kw_op_layer_budget_pyramid;

static uint64_t rs = 0x243f6a8885a308d3ull;
static double uni(void)
{
    return (double)(kw_splitmix64(&rs) >> 11) * 0x1.0p-53;
}

static int desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* A random profile: (L, H, nk) sorted shares, each layer summing to 1. */
static float *rand_profile(int L, int H, int nk)
{
    float *p = malloc(sizeof(float) * (size_t)L * H * nk + 1);
    for (int l = 0; l < L; l++) {
        double tot = 0;
        for (int i = 0; i < H * nk; i++) {
            double u = uni();
            p[(int64_t)l * H * nk + i] = (float)(u * u * u + 1e-3); /* skewed, never 0 */
            tot += p[(int64_t)l * H * nk + i];
        }
        for (int h = 0; h < H; h++) {
            float *r = p + ((int64_t)l * H + h) * nk;
            for (int j = 0; j < nk; j++)
                r[j] = (float)(r[j] / tot);
            qsort(r, (size_t)nk, sizeof(float), desc);
        }
    }
    return p;
}

/* Best value for every total T by enumerating every allocation. */
static void brute(const double *gain, int L, int nk, double *opt)
{
    int n_tot = L * nk, combos = 1;
    for (int l = 0; l < L; l++)
        combos *= nk + 1;
    for (int T = 0; T <= n_tot; T++)
        opt[T] = -1;
    for (int c = 0; c < combos; c++) {
        int x = c, T = 0;
        double v = 0;
        for (int l = 0; l < L; l++, x /= nk + 1)
            for (int p = 0; p < x % (nk + 1); p++, T++)
                v += gain[l * nk + p];
        opt[T] = fmax(opt[T], v);
    }
}

static double value_of(const double *gain, int L, int nk, const int32_t *a)
{
    double v = 0;
    for (int l = 0; l < L; l++)
        for (int p = 0; p < a[l]; p++)
            v += gain[l * nk + p];
    return v;
}

static void test_xkv_greedy_equals_brute_force_optimum(void **s)
{
    (void)s;
    for (int trial = 0; trial < 60; trial++) {
        int L = 2 + trial % 3, H = 1 + trial % 2, nk = 2 + trial % 4;
        kw_stats *st = kw_stats_new(L, H);
        assert_int_equal(kw_stats_add_sample(st, nk, rand_profile(L, H, nk)), 0);
        double *gain = malloc(sizeof(double) * (size_t)L * nk), opt[64];
        kw__xkv_gains(st, 0, gain);
        brute(gain, L, nk, opt);
        const double *gp[8];
        int n[8];
        int32_t a[8];
        for (int l = 0; l < L; l++) {
            gp[l] = gain + l * nk;
            n[l] = nk;
        }
        for (int T = 0; T <= L * nk + 2; T++) {
            int64_t given = kw__xkv_allocate(gp, n, L, KW_XKV_TOTAL_SIZE, T, a, NULL);
            int want = T < L * nk ? T : L * nk; /* stops exactly at T, or when all given */
            assert_int_equal(given, want);
            int sum = 0;
            for (int l = 0; l < L; l++)
                sum += a[l];
            assert_int_equal(sum, want);
            assert_true(fabs(value_of(gain, L, nk, a) - opt[want]) < 1e-12);
        }
        free(gain);
        kw_stats_free(st);
    }
}

/* set_value stops at the first total whose best value reaches value * L: with value
 * halfway between the optima of T0 - 1 and T0 tokens, exactly T0 tokens. */
static void test_xkv_set_value_stops_at_the_first_total_that_reaches_it(void **s)
{
    (void)s;
    for (int trial = 0; trial < 60; trial++) {
        int L = 2 + trial % 3, H = 1 + (trial / 3) % 3, nk = 2 + trial % 4;
        kw_stats *st = kw_stats_new(L, H);
        assert_int_equal(kw_stats_add_sample(st, nk, rand_profile(L, H, nk)), 0);
        double *gain = malloc(sizeof(double) * (size_t)L * nk), opt[64], ret[8];
        kw__xkv_gains(st, 0, gain);
        brute(gain, L, nk, opt);
        const double *gp[8];
        int n[8];
        int32_t a[8];
        for (int l = 0; l < L; l++) {
            gp[l] = gain + l * nk;
            n[l] = nk;
        }
        int T0 = 1 + (int)(uni() * L * nk);
        if (T0 > L * nk)
            T0 = L * nk;
        if (opt[T0] - opt[T0 - 1] < 1e-9) { /* a zero gain: no halfway point */
            free(gain);
            kw_stats_free(st);
            continue;
        }
        double v = (opt[T0 - 1] + opt[T0]) / 2 / L;
        int64_t given = kw__xkv_allocate(gp, n, L, KW_XKV_SET_VALUE, v, a, ret);
        assert_int_equal(given, T0);
        double mean = 0;
        for (int l = 0; l < L; l++)
            mean += ret[l] / L;
        assert_true(mean >= v);
        assert_true(fabs(mean * L - opt[T0]) < 1e-12);
        /* a value no allocation reaches gives every token */
        assert_int_equal(kw__xkv_allocate(gp, n, L, KW_XKV_SET_VALUE, 1.5, a, NULL), L * nk);
        assert_int_equal(kw__xkv_allocate(gp, n, L, KW_XKV_SET_VALUE, 0, a, NULL), 0);
        free(gain);
        kw_stats_free(st);
    }
}

/* Layer 0 holds all the score in sample 0, layer 1 in sample 1: each sample's greedy
 * gives its layer everything first, and the mean is split by largest remainders. */
static void test_xkv_solve_averages_samples_and_keeps_the_total(void **s)
{
    (void)s;
    int L = 3, H = 2, nk = 4;
    kw_stats *st = kw_stats_new(L, H);
    for (int smp = 0; smp < 2; smp++) {
        float *p = calloc((size_t)L * H * nk, sizeof(float));
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int j = 0; j < nk; j++)
                    p[((int64_t)l * H + h) * nk + j] =
                        l == smp ? (float)(0.2 - 0.04 * j) : (float)(0.05 - 0.01 * j);
        assert_int_equal(kw_stats_add_sample(st, nk, p), 0);
    }
    int32_t a[3];
    assert_int_equal(kw__xkv_solve(st, KW_XKV_TOTAL_SIZE, 5, a), 0);
    /* sample 0: (4, 1, 0); sample 1: (1, 4, 0); mean (2.5, 2.5, 0) -> 5 in total */
    assert_int_equal(a[0] + a[1] + a[2], 5);
    assert_int_equal(a[2], 0);
    assert_int_equal(a[0], 3); /* the tie of remainders goes to the lower layer */
    kw_stats_free(st);
}

static void test_stats_round_trip_through_canonical_bytes(void **s)
{
    (void)s;
    kw_stats *st = kw_stats_new(3, 2);
    st->window = 8;
    st->kernel = 7;
    kw_stats_add_sample(st, 5, rand_profile(3, 2, 5));
    kw_stats_add_sample(st, 2, rand_profile(3, 2, 2));
    kw_stats_finish(st);
    for (int l = 0; l < 3; l++)
        assert_true(fabs(st->importance[l * 2] + st->importance[l * 2 + 1] - 1) < 1e-6);
    void *buf;
    size_t n;
    assert_int_equal(kw_type_stats.serialize(st, &buf, &n), 0);
    void *back;
    kw_error err = {0};
    assert_int_equal(kw_type_stats.deserialize(buf, n, &back, &err), 0);
    kw_stats *b = back;
    assert_int_equal(b->n_samples, 2);
    assert_int_equal(b->n_keys[1], 2);
    assert_int_equal(b->kernel, 7);
    assert_memory_equal(b->profiles[0], st->profiles[0], sizeof(float) * 30);
    assert_memory_equal(b->importance, st->importance, sizeof(double) * 6);
    assert_int_equal(kw_type_stats.deserialize(buf, n - 3, &back, &err), KW_EFORMAT);
    free(buf);
    kw_stats_free(b);
    kw_stats_free(st);
}

static void test_layer_budget_xkv_op_adds_the_window_and_checks_modes(void **s)
{
    (void)s;
    kw_stats *st = kw_stats_new(4, 3);
    kw_stats_add_sample(st, 50, rand_profile(4, 3, 50));
    kw_stats_add_sample(st, 40, rand_profile(4, 3, 40));
    kw_stats_finish(st);
    kw_opctx c = {.op = &kw_op_layer_budget_xkv,
                  .params = json_pack("{s:i,s:i}", "total_size", 100, "window", 8)};
    kw_error err = {0};
    assert_int_equal(kw_op_layer_budget_xkv.init(&c, NULL, &err), 0);
    kw_task t;
    st_task_init(&t, -1);
    t.in[0][0] = kw_value_stats(st);
    t.n_in[0] = 1;
    assert_int_equal(kw_op_layer_budget_xkv.run(&c, NULL, &t), 0);
    const kw_budget *b = kw_value_data(t.out[0]);
    assert_int_equal(b->n_layer, 4);
    assert_int_equal(b->n_kv_head, 3);
    assert_int_equal(kw_budget_total(b), 3 * (100 + 4 * 8));
    for (int l = 0; l < 4; l++)
        assert_int_equal(kw_budget_at(b, l, 0), kw_budget_at(b, l, 2));
    uint8_t h1[32], h2[32];
    assert_int_equal(kw_value_hash(t.out[0], h1), 0);
    assert_int_equal(kw_op_layer_budget_xkv.run(&c, NULL, &t), 0); /* deterministic */
    assert_int_equal(kw_value_hash(t.out[0], h2), 0);
    assert_memory_equal(h1, h2, 32);
    st_task_clear(&t);
    json_decref(c.params);
    json_decref(c.records);
    c = (kw_opctx){.op = &kw_op_layer_budget_xkv,
                   .params = json_pack("{s:i,s:f}", "total_size", 10, "set_value", 0.5)};
    assert_int_equal(kw_op_layer_budget_xkv.init(&c, NULL, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "exactly one of total_size (or ratio) and set_value "
                                    "(got both)"));
    json_decref(c.params);
    c = (kw_opctx){.op = &kw_op_layer_budget_xkv,
                   .params = json_pack("{s:f,s:f}", "ratio", 0.1, "set_value", 0.5)};
    assert_int_equal(kw_op_layer_budget_xkv.init(&c, NULL, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "(got both)"));
    json_decref(c.params);
    c = (kw_opctx){.op = &kw_op_layer_budget_xkv, .params = NULL};
    assert_int_equal(kw_op_layer_budget_xkv.init(&c, NULL, &err), KW_EINVAL);
}

/* ratio: each calibration sample's total is that of a uniform capacity of ratio x its
 * prompt (scored keys + the stats' window) with the window included; the samples'
 * allocations are averaged, so the budget holds the mean of their totals. */
static void test_layer_budget_xkv_ratio_is_a_share_of_each_calibration_prompt(void **s)
{
    (void)s;
    int L = 4, H = 3;
    kw_stats *st = kw_stats_new(L, H);
    st->window = 8;
    kw_stats_add_sample(st, 92, rand_profile(L, H, 92));   /* a prompt of 100 tokens */
    kw_stats_add_sample(st, 192, rand_profile(L, H, 192)); /* 200 tokens */
    kw_stats_add_sample(st, 30, rand_profile(L, H, 30));   /* 38 tokens */
    kw_stats_finish(st);
    assert_int_equal(kw__xkv_prompt(st, 0), 100);
    assert_int_equal(kw__xkv_prompt(st, 1), 200);
    /* round(0.25 x 100) = 25 per layer, less the window 8: 17 x 4 layers */
    assert_int_equal(kw__xkv_ratio_total(st, 0, 0.25, 8), 4 * 17);
    assert_int_equal(kw__xkv_ratio_total(st, 1, 0.25, 8), 4 * 42);
    assert_int_equal(kw__xkv_ratio_total(st, 2, 0.25, 8), 4 * 2); /* 9.5 rounds to 10 */
    assert_int_equal(kw__xkv_ratio_total(st, 0, 0.05, 8), 0);     /* 5 < the window */
    assert_int_equal(kw__xkv_ratio_total(st, 1, 0.3, 0), 4 * 60);

    /* through the operator; a total_size beside it is overruled */
    kw_opctx c = {.op = &kw_op_layer_budget_xkv,
                  .params = json_pack("{s:f,s:i,s:i}", "ratio", 0.25, "total_size", 7,
                                      "window", 8)};
    kw_error err = {0};
    assert_int_equal(kw_op_layer_budget_xkv.init(&c, NULL, &err), 0);
    kw_task t;
    st_task_init(&t, -1);
    t.in[0][0] = kw_value_stats(st);
    t.n_in[0] = 1;
    assert_int_equal(kw_op_layer_budget_xkv.run(&c, NULL, &t), 0);
    const kw_budget *b = kw_value_data(t.out[0]);
    /* totals 68, 168, 8: mean 81.33 -> 81 tokens over the layers, plus 8 per layer, per head */
    assert_int_equal(kw_budget_total(b), H * (81 + L * 8));
    double want[3] = {68, 168, 8};
    int32_t a[4];
    assert_int_equal(kw__xkv_solve_each(st, KW_XKV_TOTAL_SIZE, want, a), 0);
    for (int l = 0; l < L; l++)
        assert_int_equal(kw_budget_at(b, l, 1), a[l] + 8);
    assert_string_equal(json_string_value(json_object_get(c.records, "total_size_mean")),
                        "81.3");
    assert_string_equal(json_string_value(json_object_get(c.records,
                                                          "calibration_prompt_tokens_mean")),
                        "112.7");
    st_task_clear(&t);
    json_decref(c.params);
    json_decref(c.records);
}

static void test_pyramid_schedule_falls_linearly_with_the_uniform_total(void **s)
{
    (void)s;
    int L = 30, cap = 2048, w = 32;
    int64_t tot = 0;
    for (int l = 0; l < L; l++) {
        int k = kw__pyramid_layer(cap, w, 20, 0, L, l);
        if (l)
            assert_true(k <= kw__pyramid_layer(cap, w, 20, 0, L, l - 1));
        tot += k;
    }
    assert_int_equal(kw__pyramid_layer(cap, w, 20, 0, L, 0), 2 * 2016 - 100 + w);
    assert_int_equal(kw__pyramid_layer(cap, w, 20, 0, L, L - 1), 100 + w);
    assert_true(llabs(tot - (int64_t)L * cap) <= L); /* integer division per layer */
    assert_int_equal(kw__pyramid_layer(cap, w, 20, 1000, L, 0), 1000 + w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xkv_greedy_equals_brute_force_optimum),
        cmocka_unit_test(test_xkv_set_value_stops_at_the_first_total_that_reaches_it),
        cmocka_unit_test(test_xkv_solve_averages_samples_and_keeps_the_total),
        cmocka_unit_test(test_stats_round_trip_through_canonical_bytes),
        cmocka_unit_test(test_layer_budget_xkv_op_adds_the_window_and_checks_modes),
        cmocka_unit_test(test_layer_budget_xkv_ratio_is_a_share_of_each_calibration_prompt),
        cmocka_unit_test(test_pyramid_schedule_falls_linearly_with_the_uniform_total),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
