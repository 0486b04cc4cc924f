/* The CUDA device engine against the CPU engine on the same model: a SmolLM2-135M-shaped
 * synthetic model (kvweave gen model), or the model named by $KW_CUDA_TEST_MODEL.
 *  1. forward parity: chunked prefill (logits of every position) then 32 decode steps fed
 *     the CPU's greedy tokens; relative L2 of the logits (bound 2e-2: bf16 weights and KV
 *     on the device, f32 on the CPU) and how often the argmax agrees;
 *  2. the engine: prompts decoded greedily as one continuous batch on both devices; the
 *     number of identical 32-token continuations is reported;
 *  3. memory admission: a pool larger than the device fails at open with the numbers.
 * Skipped (exit 77, with a line saying why) without a CUDA device. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda/kernels_cuda.h"
#include "kvweave/engine.h"
#include "kvweave/genmodel.h"
#include "runtime/forward.h"

static uint64_t rng = 12345;
static uint64_t rnd(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += isfinite(a[i]) ? d * d : INFINITY;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

typedef struct side {
    kw_fwd *f;
    kw_kvpool *pool;
    kw_seq seq;
} side;

static int step(side *sd, const int32_t *ids, const int32_t *pos, int n, float *logits,
                kw_error *err)
{
    kw_seq *sp = &sd->seq;
    int first = 0, tn = n, lt[1024];
    bool pre = n > 1, last = true;
    for (int i = 0; i < n; i++)
        lt[i] = i;
    kw_fwd_step s = {.n_seq = 1, .seqs = &sp, .tok_first = &first, .tok_n = &tn, .ids = ids,
                     .pos = pos, .prefill = &pre, .last_chunk = &last, .logit_tok = lt,
                     .n_logits = n, .logits = logits, .obs_window = 32};
    int rc = kw__fwd_run(sd->f, sd->pool, &s, err);
    sp->n_past += n;
    return rc < 0 ? rc : s.seq_rc[0];
}

/* A step of the side that runs with programmatic dependent launch off. */
static int pdl_off_step(side *sd, const int32_t *ids, const int32_t *pos, int n, float *logits,
                        kw_error *err)
{
    kw_cuda_set_pdl(0);
    int rc = step(sd, ids, pos, n, logits, err);
    kw_cuda_set_pdl(1);
    return rc;
}

static int parity(const kw_model *m, int *fails)
{
    const int V = m->cfg.n_vocab, CH = 256, NDEC = 32;
    kw_error err = {0};
    /* gpu0: the same steps with PDL off and a device page table small enough to be
     * rebuilt again and again (its regions overflow as the prompts grow) */
    side cpu = {0}, gpu = {0}, gpu0 = {0};
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.n_pages = (int64_t)m->cfg.n_layer * m->cfg.n_head_kv * (1200 / 16 + 4);
    if (kw_kvpool_new(&m->cfg, &po, &cpu.pool, &err) < 0 || kw__fwd_new(m, CH, &cpu.f, &err) < 0)
        return printf("FAIL cpu side: %s\n", err.msg), 1;
    po.device_pages = true;
    if (kw_kvpool_new(&m->cfg, &po, &gpu.pool, &err) < 0
        || kw__fwd_new_cuda(m, CH, 4, gpu.pool, 0, &gpu.f, &err) < 0
        || kw_kvpool_new(&m->cfg, &po, &gpu0.pool, &err) < 0
        || kw__fwd_new_cuda(m, CH, 4, gpu0.pool, 0, &gpu0.f, &err) < 0)
        return printf("FAIL cuda side: %s\n", err.msg), 1;
    kw__fwd_ptab(gpu0.f, 512);
    kw_cuda_set_pdl(1); /* the gpu side; pdl_off_step turns it off for gpu0's steps */
    int lens[] = {7, 100, 700};
    float *lc = malloc(sizeof(float) * CH * V), *lg = malloc(sizeof(float) * CH * V),
          *l0 = malloc(sizeof(float) * CH * V);
    int pdl_differ = 0, pdl_steps = 0; /* steps whose logits differ with PDL off */
    double worst_pre = 0, worst_dec = 0, sum_dec = 0;
    int agree = 0, total = 0;
    int64_t logit_bytes = 0; /* what the steps must have copied down: every logit row */
    for (int p = 0; p < 3; p++) {
        int n = lens[p];
        int32_t *ids = malloc(sizeof(int32_t) * (n + NDEC)), *pos = malloc(sizeof(int32_t) * (n + NDEC));
        for (int i = 0; i < n; i++)
            ids[i] = (int32_t)(3 + rnd() % (uint64_t)(V - 3)), pos[i] = i;
        cpu.seq = (kw_seq){.id = (uint64_t)p, .kv = kw_kvseq_new(cpu.pool)};
        gpu.seq = (kw_seq){.id = (uint64_t)p, .kv = kw_kvseq_new(gpu.pool)};
        gpu0.seq = (kw_seq){.id = (uint64_t)p, .kv = kw_kvseq_new(gpu0.pool)};
        for (int t = 0; t < n; t += CH) {
            int c = n - t < CH ? n - t : CH;
            if (step(&cpu, ids + t, pos + t, c, lc, &err) < 0
                || step(&gpu, ids + t, pos + t, c, lg, &err) < 0
                || pdl_off_step(&gpu0, ids + t, pos + t, c, l0, &err) < 0)
                return printf("FAIL prefill: %s\n", err.msg), 1;
            pdl_differ += memcmp(lg, l0, sizeof(float) * c * V) != 0, pdl_steps++;
            double e = rel_l2(lg, lc, (size_t)c * V);
            worst_pre = e > worst_pre ? e : worst_pre;
            logit_bytes += (int64_t)c * V * 4;
        }
        int32_t next = argmax(lc + (size_t)((n - 1) % CH) * V, V);
        for (int d = 0; d < NDEC; d++) {
            int32_t ps = n + d;
            if (step(&cpu, &next, &ps, 1, lc, &err) < 0 || step(&gpu, &next, &ps, 1, lg, &err) < 0
                || pdl_off_step(&gpu0, &next, &ps, 1, l0, &err) < 0)
                return printf("FAIL decode: %s\n", err.msg), 1;
            pdl_differ += memcmp(lg, l0, sizeof(float) * V) != 0, pdl_steps++;
            double e = rel_l2(lg, lc, (size_t)V);
            worst_dec = e > worst_dec ? e : worst_dec;
            logit_bytes += (int64_t)V * 4;
            sum_dec += e;
            int a = argmax(lc, V), b = argmax(lg, V);
            agree += a == b;
            total++;
            next = a;
        }
        kw_kvseq_free(cpu.seq.kv);
        kw_kvseq_free(gpu.seq.kv);
        kw_kvseq_free(gpu0.seq.kv);
        free(ids), free(pos);
    }
    int64_t caps, launches, h2d, d2h;
    kw__fwd_graph_stats(gpu.f, &caps, &launches);
    kw__fwd_io_stats(gpu.f, &h2d, &d2h);
    /* copies counted: exactly the logit rows down (no hooks here), some lists up */
    bool io_ok = d2h == logit_bytes && h2d > 0;
    printf("%s host<->device copies counted: %lld bytes down (logits: %lld), %lld up\n",
           io_ok ? "ok  " : "FAIL", (long long)d2h, (long long)logit_bytes, (long long)h2d);
    *fails += !io_ok;
    const char *ge = getenv("KVWEAVE_CUDA_GRAPHS");
    bool graphs = !(ge && strcmp(ge, "0") == 0);
    /* with graphs on, every decode step after each batch size's first two replays one */
    int ok = worst_pre < 2e-2 && worst_dec < 2e-2 && (!graphs || launches >= total - 2);
    printf("%s logits CUDA vs CPU (decode graphs %s: %lld captured, %lld replayed): prefill "
           "(chunks of %d, prompts 7/100/700) worst rel_l2 %.3g; decode worst %.3g mean %.3g "
           "(bound 2e-2); argmax agreement %d/%d\n", ok ? "ok  " : "FAIL", graphs ? "on" : "off",
           (long long)caps, (long long)launches, CH, worst_pre, worst_dec, sum_dec / total,
           agree, total);
    *fails += !ok;
    /* launches that overlap (programmatic dependent launch) and rebuilding the device
     * page table must not change a bit */
    int64_t rebuilt = kw__fwd_ptab(gpu0.f, 0);
    int same_ok = pdl_differ == 0 && rebuilt >= 1;
    printf("%s logits with PDL %s and the page table kept vs PDL off and the table rebuilt "
           "%lld times: %d of %d steps differ\n", same_ok ? "ok  " : "FAIL",
           kw_cuda_pdl_on() ? "on" : "unavailable", (long long)rebuilt, pdl_differ, pdl_steps);
    *fails += !same_ok;
    kw_cuda_set_pdl(-1);
    kw__fwd_free(cpu.f), kw__fwd_free(gpu.f), kw__fwd_free(gpu0.f);
    kw_kvpool_free(cpu.pool), kw_kvpool_free(gpu.pool), kw_kvpool_free(gpu0.pool);
    free(lc), free(lg), free(l0);
    return 0;
}

#define NP 6
#define NGEN 32
typedef struct sink {
    pthread_mutex_t mu;
    kw_gen_result *r[NP];
} sink;
typedef struct slot {
    sink *s;
    int i;
} slot;
static void on_done(void *u, kw_gen_result *r)
{
    slot *sl = u;
    pthread_mutex_lock(&sl->s->mu);
    sl->s->r[sl->i] = r;
    pthread_mutex_unlock(&sl->s->mu);
}

static int run_engine(const kw_model *m, bool cuda, int32_t prompts[NP][600], const int *plen,
                      sink *out, double *secs)
{
    kw_engine_opts o = kw_engine_defaults();
    o.cuda = cuda;
    o.pool_mb = 256;
    o.max_batch = 8;
    o.chunk = 256;
    kw_engine *e;
    kw_error err = {0};
    if (kw_engine_open_model(m, &o, &e, &err) < 0)
        return printf("FAIL engine open (%s): %s\n", cuda ? "cuda" : "cpu", err.msg), 1;
    memset(out, 0, sizeof *out);
    pthread_mutex_init(&out->mu, NULL);
    slot sl[NP];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < NP; i++) {
        sl[i] = (slot){out, i};
        kw_gen_req r = {.prompt = prompts[i], .n_prompt = plen[i], .max_new = NGEN,
                        .ignore_eos = true, .sample = i, .done = on_done, .user = &sl[i]};
        if (kw_engine_submit(e, &r, &err) < 0)
            return printf("FAIL submit: %s\n", err.msg), 1;
    }
    kw_engine_wait_idle(e);
    clock_gettime(CLOCK_MONOTONIC, &b);
    *secs = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    kw_engine_close(e);
    return 0;
}

static int engines(const kw_model *m, int *fails)
{
    static int32_t prompts[NP][600];
    int plen[NP] = {5, 40, 123, 300, 511, 17};
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < plen[i]; j++)
            prompts[i][j] = (int32_t)(3 + rnd() % (uint64_t)(m->cfg.n_vocab - 3));
    sink sc, sg;
    double tc, tg;
    if (run_engine(m, false, prompts, plen, &sc, &tc) || run_engine(m, true, prompts, plen, &sg, &tg))
        return (*fails)++, 1;
    int same = 0, okrc = 1, first_diff_sum = 0;
    for (int i = 0; i < NP; i++) {
        okrc &= sc.r[i] && sg.r[i] && sc.r[i]->rc == 0 && sg.r[i]->rc == 0
                && sg.r[i]->n_gen == NGEN;
        if (!okrc) {
            printf("FAIL engine sequence %d: %s\n", i, sg.r[i] ? sg.r[i]->error : "no result");
            break;
        }
        int d = 0;
        while (d < NGEN && sc.r[i]->tokens[d] == sg.r[i]->tokens[d])
            d++;
        same += d == NGEN;
        first_diff_sum += d;
    }
    printf("%s engine continuous batch (%d prompts, greedy %d tokens): identical continuations "
           "%d/%d, mean agreeing prefix %.1f tokens; wall cpu %.2f s, cuda %.2f s\n",
           okrc ? "ok  " : "FAIL", NP, NGEN, same, NP, (double)first_diff_sum / NP, tc, tg);
    *fails += !okrc;
    for (int i = 0; i < NP; i++)
        kw_gen_result_free(sc.r[i]), kw_gen_result_free(sg.r[i]);
    return 0;
}

static void admission(const kw_model *m, int *fails)
{
    kw_engine_opts o = kw_engine_defaults();
    o.cuda = true;
    o.pool_mb = 400000; /* 400 GB of pages */
    kw_engine *e = NULL;
    kw_error err = {0};
    int rc = kw_engine_open_model(m, &o, &e, &err);
    int ok = rc == KW_ENOMEM && strstr(err.msg, "MiB free") && strstr(err.msg, "pool");
    printf("%s admission: %s\n", ok ? "ok  " : "FAIL", err.msg);
    *fails += !ok;
    kw_engine_close(e);
}

int main(void)
{
    if (kw_cuda_device_count() < 1) {
        printf("SKIP: no CUDA device (the CUDA engine tests need one)\n");
        return 77;
    }
    const char *path = getenv("KW_CUDA_TEST_MODEL");
    char tmp[256];
    kw_error err = {0};
    if (!path || !*path) {
        const char *td = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/kw_cuda_engine_%d.gguf", td && *td ? td : "/tmp",
                 (int)getpid());
        kw_genmodel_spec s = {.like = "smollm2-135m", .dtype = KW_DT_BF16, .seed = 3};
        if (kw_genmodel_write(&s, tmp, &err) < 0)
            return printf("FAIL gen model: %s\n", err.msg), 1;
        path = tmp;
    }
    kw_model *m;
    if (kw_model_open(path, &m, &err) < 0)
        return printf("FAIL model: %s\n", err.msg), 1;
    printf("model %s: %d layers, %d dim, %d/%d heads\n", path, m->cfg.n_layer, m->cfg.n_embd,
           m->cfg.n_head, m->cfg.n_head_kv);
    int fails = 0;
    if (parity(m, &fails) == 0)
        engines(m, &fails);
    else
        fails++;
    admission(m, &fails);
    kw_model_free(m);
    if (path == tmp)
        unlink(tmp);
    printf("%s: %d failure(s)\n", fails ? "FAIL" : "ok", fails);
    return fails ? 1 : 0;
}
