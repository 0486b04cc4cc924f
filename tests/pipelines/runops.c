/* A plug-in of small real operators ("t.*") for the run executor's end-to-end tests: no
 * model, numbers that a test can check by hand.
 *
 *   t.count (source)  n samples {"id": "s<i>", "x": i}; fail_at: the source fails there
 *   t.sum (reduce)    calibration: {"sum": sum of x, "n": samples, "xs": [x...]} (stats)
 *   t.score (map)     {"x": x, "score": x / (1 + calib mean)} from a sample and the stats;
 *                     fail_x: that sample fails; sleep_ms: per sample
 *   t.io, t.cpu, t.gpu (maps) sleep ms per sample on their lane; t.gpu completes
 *                     asynchronously from a "device" thread (returns KW_PENDING), like a
 *                     decode stage; for the overlap test
 *   t.gen (map)       a stand-in decode: a generation of sample x that keeps a share
 *                     `keep` of its 100 + x prompt tokens: n_prompt, n_gen, memory
 *                     {kv_payload_peak_bytes: 1024 * kept, pages_peak: ceil(kept / 16),
 *                     attended_mean: kept}, kept = round(keep * (100 + x))
 *   t.judge (map)     metrics of a generation: {"score": scale * kept / n_prompt,
 *                     "hits": kept % 7}; with several t.gen and t.judge stages, a run
 *                     with method branches as a budget sweep records them */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <time.h>

#include "kvweave/op.h"

typedef struct count_st {
    int64_t next;
} count_st;

static int count_run(kw_opctx *c, void *vst, kw_task *t)
{
    count_st *st = vst;
    if (st->next >= kw_param_int(c, "n"))
        return KW_END;
    if (st->next == kw_param_int(c, "fail_at"))
        return kw_task_fail(t, KW_EINVAL, "record %" PRId64 " is broken (fail_at)", st->next);
    char id[32];
    snprintf(id, sizeof id, "s%" PRId64, st->next);
    json_t *rec = json_pack("{s:s,s:I,s:[s]}", "id", id, "x", (json_int_t)st->next, "outputs", id);
    st->next++;
    return kw_task_out(t, 0, kw_value_json(KW_T_SAMPLE, rec));
}

static int count_init(kw_opctx *c, void *st, kw_error *err)
{
    (void)st;
    char v[32];
    snprintf(v, sizeof v, "%" PRId64, kw_param_int(c, "n"));
    kw_ctx_record(c, "count.n", v);
    if (kw_param_int(c, "n") == 0)
        return kw_error_set(err, KW_EINVAL, "t.count: n = 0 is refused (init failure test)");
    return 0;
}

static const kw_port count_out[] = {{"out", KW_T_SAMPLE, KW_EACH, 0, "records"}};
static const kw_param_spec count_p[] = {
    {"n", KW_PARAM_INT, "10", 0, 1000000, NULL, "how many samples"},
    {"fail_at", KW_PARAM_INT, "-1", -1, 1000000, NULL, "the source fails at this index"},
};
static const kw_op op_count = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "t.count", .version = 1,
    .doc = "counting source", .lanes = KW_LANE_IO, .flags = KW_OP_SOURCE,
    .outputs = count_out, .n_outputs = 1, .params = count_p, .n_params = 2,
    .state_size = sizeof(count_st), .init = count_init, .run = count_run,
};

typedef struct sum_st {
    json_t *xs;
    int64_t sum;
} sum_st;

static int sum_init(kw_opctx *c, void *vst, kw_error *err)
{
    (void)c, (void)err;
    ((sum_st *)vst)->xs = json_array();
    return 0;
}

static int sum_run(kw_opctx *c, void *vst, kw_task *t)
{
    (void)c;
    sum_st *st = vst;
    json_int_t x = json_integer_value(json_object_get(kw_value_jsonobj(kw_task_in(t, 0)), "x"));
    st->sum += x;
    json_array_append_new(st->xs, json_integer(x));
    return 0;
}

static int sum_finish(kw_opctx *c, void *vst, kw_task *t)
{
    (void)c;
    sum_st *st = vst;
    json_t *o = json_pack("{s:I,s:I,s:O}", "sum", (json_int_t)st->sum, "n",
                          (json_int_t)json_array_size(st->xs), "xs", st->xs);
    return kw_task_out(t, 0, kw_value_json(KW_T_STATS, o));
}

static void sum_fini(kw_opctx *c, void *vst)
{
    (void)c;
    json_decref(((sum_st *)vst)->xs);
}

static const kw_port sum_in[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, "samples"}};
static const kw_port sum_out[] = {{"stats", KW_T_STATS, KW_ONCE, 0, "sum, n, xs"}};
static const kw_op op_sum = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "t.sum", .version = 1,
    .doc = "calibration reduce", .lanes = KW_LANE_CPU, .inputs = sum_in, .n_inputs = 1,
    .outputs = sum_out, .n_outputs = 1, .state_size = sizeof(sum_st), .init = sum_init,
    .run = sum_run, .finish = sum_finish, .fini = sum_fini,
};

static void nap(int64_t ms)
{
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int score_run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    json_int_t x = json_integer_value(json_object_get(kw_value_jsonobj(kw_task_in(t, 0)), "x"));
    nap(kw_param_int(c, "sleep_ms"));
    if (x == kw_param_int(c, "fail_x"))
        return kw_task_fail(t, KW_EINVAL, "x = %lld is refused (fail_x)", (long long)x);
    double mean = 0;
    kw_value *s = kw_task_in(t, 1);
    if (s) {
        json_t *o = kw_value_jsonobj(s);
        json_int_t n = json_integer_value(json_object_get(o, "n"));
        mean = n ? (double)json_integer_value(json_object_get(o, "sum")) / (double)n : 0;
    }
    json_t *m = json_pack("{s:I,s:f}", "x", x, "score", (double)x / (1.0 + mean));
    return kw_task_out(t, 0, kw_value_json(KW_T_METRICS, m));
}

static const kw_port score_in[] = {
    {"in", KW_T_SAMPLE, KW_EACH, 0, "samples"},
    {"stats", KW_T_STATS, KW_ONCE, KW_PORT_OPTIONAL, "calibration"},
};
static const kw_port score_out[] = {{"metrics", KW_T_METRICS, KW_EACH, 0, "x, score"}};
static const kw_param_spec score_p[] = {
    {"fail_x", KW_PARAM_INT, "-1", -1, 1000000, NULL, "this sample fails"},
    {"sleep_ms", KW_PARAM_INT, "0", 0, 100000, NULL, "per sample"},
};
static const kw_op op_score = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "t.score", .version = 1,
    .doc = "x / (1 + calibration mean)", .lanes = KW_LANE_CPU, .inputs = score_in,
    .n_inputs = 2, .outputs = score_out, .n_outputs = 1, .params = score_p, .n_params = 2,
    .run = score_run,
};

/* ---- lanes: sleep on io, cpu, and an asynchronous "device" for gpu ---- */

static int pass_on(kw_task *t, int64_t ms)
{
    nap(ms);
    return kw_task_out(t, 0, kw_value_ref(kw_task_in(t, 0)));
}

static int io_run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    return pass_on(t, kw_param_int(c, "ms"));
}

typedef struct dev_job {
    kw_task *t;
    int64_t ms;
} dev_job;

static void *device_thread(void *p)
{
    dev_job *j = p;
    int rc = pass_on(j->t, j->ms);
    kw_task_complete(j->t, rc);
    free(j);
    return NULL;
}

/* One device: jobs run one after another (a mutex), each on its own thread. */
static pthread_mutex_t device_mu = PTHREAD_MUTEX_INITIALIZER;

static void *serial_device(void *p)
{
    pthread_mutex_lock(&device_mu);
    device_thread(p);
    pthread_mutex_unlock(&device_mu);
    return NULL;
}

static int gpu_run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    dev_job *j = malloc(sizeof *j);
    pthread_t th;
    if (!j)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    *j = (dev_job){t, kw_param_int(c, "ms")};
    if (pthread_create(&th, NULL, serial_device, j) != 0) {
        free(j);
        return kw_task_fail(t, KW_EINTERNAL, "no thread");
    }
    pthread_detach(th);
    return KW_PENDING;
}

static const kw_port pass_in[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, "samples"}};
static const kw_port pass_out[] = {{"out", KW_T_SAMPLE, KW_EACH, 0, "the same samples"}};
static const kw_param_spec ms_p[] = {{"ms", KW_PARAM_INT, "10", 0, 100000, NULL, "sleep"}};
#define LANE_OP(var, nm, lane, fn)                                                         \
    static const kw_op var = {                                                             \
        .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = nm, .version = 1,                 \
        .doc = "sleeps on its lane", .lanes = lane, .inputs = pass_in, .n_inputs = 1,      \
        .outputs = pass_out, .n_outputs = 1, .params = ms_p, .n_params = 1, .run = fn,     \
    }
LANE_OP(op_io, "t.io", KW_LANE_IO, io_run);
LANE_OP(op_cpu, "t.cpu", KW_LANE_CPU, io_run);
LANE_OP(op_gpu, "t.gpu", KW_LANE_GPU, gpu_run);

/* ---- a stand-in decode and its scorer: branches without a model ---- */

static int gen_run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    json_int_t x = json_integer_value(json_object_get(kw_value_jsonobj(kw_task_in(t, 0)), "x"));
    double prompt = 100.0 + (double)x, kept = floor(kw_param_float(c, "keep") * prompt + 0.5);
    json_t *g = json_pack("{s:s,s:f,s:i,s:{s:f,s:f,s:f}}", "text", "ok", "n_prompt", prompt,
                          "n_gen", 4, "memory", "kv_payload_peak_bytes", 1024.0 * kept,
                          "pages_peak", ceil(kept / 16.0), "attended_mean", kept);
    return kw_task_out(t, 0, kw_value_json(KW_T_GENERATION, g));
}

static const kw_port gen_in[] = {{"in", KW_T_SAMPLE, KW_EACH, 0, "samples"}};
static const kw_port gen_out[] = {{"generation", KW_T_GENERATION, KW_EACH, 0, "figures"}};
static const kw_param_spec gen_p[] = {
    {"keep", KW_PARAM_FLOAT, "1", 0, 1, NULL, "share of the prompt kept"},
};
static const kw_op op_gen = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "t.gen", .version = 1,
    .doc = "a stand-in decode", .lanes = KW_LANE_CPU, .inputs = gen_in, .n_inputs = 1,
    .outputs = gen_out, .n_outputs = 1, .params = gen_p, .n_params = 1, .run = gen_run,
};

static int judge_run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    json_t *g = kw_value_jsonobj(kw_task_in(t, 0));
    double prompt = json_number_value(json_object_get(g, "n_prompt"));
    double kept = json_number_value(json_object_get(json_object_get(g, "memory"),
                                                    "attended_mean"));
    json_t *m = json_pack("{s:f,s:i}", "score", kw_param_float(c, "scale") * kept / prompt,
                          "hits", (int)fmod(kept, 7.0));
    return kw_task_out(t, 0, kw_value_json(KW_T_METRICS, m));
}

static const kw_port judge_in[] = {{"generation", KW_T_GENERATION, KW_EACH, 0, "of t.gen"}};
static const kw_port judge_out[] = {{"metrics", KW_T_METRICS, KW_EACH, 0, "score, hits"}};
static const kw_param_spec judge_p[] = {
    {"scale", KW_PARAM_FLOAT, "1", 0, 0, NULL, "score factor"},
};
static const kw_op op_judge = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "t.judge", .version = 1,
    .doc = "scores a t.gen generation", .lanes = KW_LANE_CPU, .inputs = judge_in,
    .n_inputs = 1, .outputs = judge_out, .n_outputs = 1, .params = judge_p, .n_params = 1,
    .run = judge_run,
};

const uint32_t kw_plugin_abi = KW_OP_ABI;
const kw_op *const kw_plugin_ops[] = {&op_count, &op_sum, &op_score, &op_io, &op_cpu,
                                      &op_gpu, &op_gen, &op_judge, NULL};
