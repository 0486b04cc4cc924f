/* Shared prefill (kw_gen_req.share_prefill) on the tiny random model: sequences of one
 * prompt take one prefix prefill and compute only their tails; each one's teacher-forced
 * log-probs equal those of running it alone (own prefill, other chunks: float rounding
 * only, bound 1e-4 nats); the engine counts the prefix once; a hook that acts before the
 * prompt ends gets its own prefill; a later sequence reuses the kept prefix. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gen_sink.h"
#include "kvweave/engine.h"
#include "runtime_support.h"

#define NPR 130 /* prompt */
#define NF 10   /* forced tokens */
#define PAGE 8
/* obs_window 32 (default): prefix = (130 - 32) / 8 * 8 = 96, tail 34 */
#define PREFIX 96

static const kw_kvhook tail_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                    .roles = KW_ROLE_EVICT, .name = "half-at-end",
                                    .on_prefill_end = rt_keep_half_at_prefill_end,
                                    .tail_only = true};
/* the same eviction, not declared tail-only: it must prefill on its own */
static const kw_kvhook early_hook = {.size = sizeof(kw_kvhook), .abi = KW_KVHOOK_ABI,
                                     .roles = KW_ROLE_EVICT, .name = "half-undeclared",
                                     .on_prefill_end = rt_keep_half_at_prefill_end};

static kw_engine *open_engine(const kw_model *m, int chunk)
{
    kw_engine_opts o = kw_engine_defaults();
    o.max_batch = 8;
    o.chunk = chunk;
    o.page_tokens = PAGE;
    o.n_pages = 1 << 14;
    kw_engine *e;
    kw_error err = {0};
    assert_int_equal(kw_engine_open_model(m, &o, &e, &err), 0);
    return e;
}

static void submit(kw_engine *e, gen_slot *sl, const int32_t *ids, const kw_hookstack *hs,
                   bool share)
{
    kw_gen_req r = {.prompt = ids, .n_prompt = NPR, .forced = ids + NPR, .n_forced = NF,
                    .topk = 5, .hooks = hs, .share_prefill = share, .done = gen_sink_done,
                    .user = sl};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
}

static void test_share_prefill_counts_prefix_once_and_matches_alone(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(0, KW_ROPE_HALF);
    kw_model *m = rt_tiny_model(&c, 21);
    int32_t ids[NPR + NF];
    uint64_t seed = 5;
    for (int i = 0; i < NPR + NF; i++)
        ids[i] = (int32_t)(rt_rand_u64(&seed) % c.n_vocab);
    kw_hookstack none = {0}, tail = {.n = 1, .hooks = {&tail_hook}},
                 early = {.n = 1, .hooks = {&early_hook}};
    const kw_hookstack *stacks[3] = {NULL, &tail, &early};
    (void)none;

    /* alone: each in an engine of its own, own prefill in chunks of 16 */
    kw_gen_result *alone[3];
    for (int k = 0; k < 3; k++) {
        gen_sink s;
        gen_sink_init(&s);
        gen_slot sl = {&s, 0};
        kw_engine *e = open_engine(m, 16);
        submit(e, &sl, ids, stacks[k], false);
        kw_engine_wait_idle(e);
        kw_engine_close(e);
        alone[k] = s.res[0];
        assert_non_null(alone[k]);
        assert_int_equal(alone[k]->rc, 0);
        assert_int_equal(alone[k]->prefill_share, KW_SHARE_OFF);
        pthread_mutex_destroy(&s.mu);
    }

    /* together, all asking to share: chunks of 16, so the followers wait for the
       leader over several steps */
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl[4] = {{&s, 0}, {&s, 1}, {&s, 2}, {&s, 3}};
    kw_engine *e = open_engine(m, 16);
    for (int k = 0; k < 3; k++)
        submit(e, &sl[k], ids, stacks[k], true);
    kw_engine_wait_idle(e);
    kw_engine_stats es;
    kw_engine_get_stats(e, &es);
    assert_int_equal(es.prefix_prefills, 1);
    assert_int_equal(es.prefill_shared_tokens, 2 * PREFIX);
    /* the prefix once, two tails, one own prompt (alone: 3 x 130) */
    assert_int_equal(es.prefill_tokens, PREFIX + 2 * (NPR - PREFIX) + NPR);
    assert_int_equal(s.res[0]->prefill_share, KW_SHARE_TAKEN);
    assert_int_equal(s.res[1]->prefill_share, KW_SHARE_TAKEN);
    assert_int_equal(s.res[0]->prefill_shared_tokens, PREFIX);
    assert_int_equal(s.res[2]->prefill_share, KW_SHARE_OWN_HOOKS);
    assert_int_equal(s.res[2]->prefill_shared_tokens, 0);

    /* submitted later, alone: the kept prefix serves it, no second prefix prefill */
    submit(e, &sl[3], ids, NULL, true);
    kw_engine_wait_idle(e);
    kw_engine_get_stats(e, &es);
    assert_int_equal(es.prefix_prefills, 1);
    assert_int_equal(es.prefill_shared_tokens, 3 * PREFIX);
    kw_engine_close(e);

    double worst = 0;
    for (int k = 0; k < 4; k++) {
        kw_gen_result *r = s.res[k], *a = alone[k == 3 ? 0 : k];
        assert_non_null(r);
        assert_int_equal(r->rc, 0);
        assert_int_equal(r->n_gen, NF);
        for (int i = 0; i < NF; i++) {
            double d = fabs((double)r->logprobs[i] - a->logprobs[i]);
            worst = d > worst ? d : worst;
            for (int j = 0; j < 5; j++)
                assert_true(fabs((double)r->topk_lp[i * 5 + j] - a->topk_lp[i * 5 + j]) < 1e-4);
        }
        /* the evicting branch really evicted: fewer pages than full attention */
        if (k == 1)
            assert_true(r->pages_mean < s.res[0]->pages_mean);
    }
    assert_true(worst < 1e-4);
    for (int k = 0; k < 4; k++)
        kw_gen_result_free(s.res[k]);
    for (int k = 0; k < 3; k++)
        kw_gen_result_free(alone[k]);
    pthread_mutex_destroy(&s.mu);
    rt_tiny_free(m);
}

/* A prompt shorter than the tail and a page prefills on its own, saying why. */
static void test_share_prefill_short_prompt_prefills_itself(void **st)
{
    (void)st;
    kw_model_config c = rt_tiny_config(1, KW_ROPE_INTERLEAVED);
    kw_model *m = rt_tiny_model(&c, 22);
    int32_t ids[60];
    for (int i = 0; i < 60; i++)
        ids[i] = (i * 7 + 3) % c.n_vocab;
    gen_sink s;
    gen_sink_init(&s);
    gen_slot sl = {&s, 0};
    kw_engine *e = open_engine(m, 16);
    kw_gen_req r = {.prompt = ids, .n_prompt = 36, .max_new = 4, .ignore_eos = true,
                    .share_prefill = true, .done = gen_sink_done, .user = &sl};
    kw_error err = {0};
    assert_int_equal(kw_engine_submit(e, &r, &err), 0);
    kw_engine_wait_idle(e);
    kw_engine_stats es;
    kw_engine_get_stats(e, &es);
    kw_engine_close(e);
    assert_int_equal(s.res[0]->rc, 0);
    assert_int_equal(s.res[0]->prefill_share, KW_SHARE_OWN_SHORT);
    assert_int_equal(es.prefix_prefills, 0);
    assert_int_equal(es.prefill_tokens, 36);
    kw_gen_result_free(s.res[0]);
    pthread_mutex_destroy(&s.mu);
    rt_tiny_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_prefill_counts_prefix_once_and_matches_alone),
        cmocka_unit_test(test_share_prefill_short_prompt_prefills_itself),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
