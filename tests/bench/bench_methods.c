/* KV methods on the CUDA engine at long context: decode speed and KV memory of each
 * method against full attention, side by side in one run, with the bandwidth floor.
 *
 * Per method and batch size: each sequence's context is filled with C - W random K/V
 * tokens (not prefilled: speed does not depend on the values), then its last W = 32
 * prompt tokens run as the prompt's last chunk with the method's hook (so SnapKV and
 * PyramidKV score the observation window and evict, StreamingLLM and H2O evict, Quest
 * builds its page bounds), then `steps` decode steps are timed (median). The method
 * sees the prompt's last chunk only, so H2O's accumulated scores start there (its
 * decode-time work is the same as with a full prefill).
 *   floor = (weight bytes + KV bytes attention reads per step) / measured copy bandwidth
 * decode_ms is the median step; decode_mean_ms the mean, which counts the steps that
 * carry a method's periodic host work (KVStar's votes and loads: pass --steps > 16 for
 * a load to fall inside the timed steps).
 *
 * Also, when named in --methods: kvstar (KVStar's defaults: blocks of 128, 25% of the
 * middle blocks, a vote every 8 steps; the prompt's end writes every block to a store
 * under $TMPDIR, timed as the last chunk; budget unused) and deltakv (sink 16, a
 * reference every 10 tokens, the last 128 whole, int8 latents of a quarter of each
 * token's values through a coordinate basis: the values do not change the time; held_mb
 * is what it holds on the host beside the pool).
 *
 *   bench_methods MODEL.gguf [--ctx 32768] [--batch 1,8] [--budget 2048] [--steps 20]
 *                 [--methods full,snapkv,pyramidkv,streaming,h2o,quest] */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/deltakv.h"
#include "compress/evict.h"
#include "bench_common.h"
#include "cuda/kernels_cuda.h"
#include "kvweave/model.h"
#include "kvweave/util.h"
#include "retrieve/kvstar.h"
#include "retrieve/quest.h"
#include "runtime/forward.h"

#define W 32

static uint64_t rs = 88172645463325252ULL;
static int32_t rand_id(int V)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (int32_t)(3 + rs % (uint64_t)(V - 3));
}

static kw_kvmethod *make_method(const char *name, int budget, const kw_model_config *c,
                                kw_error *err)
{
    if (!strcmp(name, "full"))
        return NULL;
    kw_kvmethod *m = NULL;
    if (!strcmp(name, "kvstar")) {
        kw_kvstar_opts o = kw__kvstar_defaults();
        return kw__kvstar_method(&o, &m, err) < 0 ? NULL : m;
    }
    if (!strcmp(name, "deltakv")) {
        kw_deltakv_comp *dc = calloc(1, sizeof *dc);
        if (!dc)
            return kw_error_set(err, KW_ENOMEM, "out of memory"), NULL;
        dc->n_layer = c->n_layer, dc->dim = 2 * c->n_head_kv * c->head_dim;
        dc->latent = dc->dim / 4;
        dc->u = calloc((size_t)dc->n_layer * dc->dim * dc->latent, sizeof(float));
        for (int l = 0; dc->u && l < dc->n_layer; l++) /* column j: coordinate 4 j */
            for (int j = 0; j < dc->latent; j++)
                dc->u[((size_t)l * dc->dim + 4 * (size_t)j) * dc->latent + j] = 1.f;
        kw_value *comp = dc->u ? kw__value_compressor(dc) : NULL;
        if (!comp) {
            kw__compressor_free(dc);
            return kw_error_set(err, KW_ENOMEM, "out of memory"), NULL;
        }
        kw_deltakv_opts o = {.sink = 16, .every = 10, .recent = 128, .int8 = true};
        int rc = kw__deltakv_method(&o, comp, &m, err);
        kw_value_unref(comp);
        return rc < 0 ? NULL : m;
    }
    if (!strcmp(name, "quest")) {
        kw_quest_opts o = {.page = 16, .budget = budget, .min_pages = 2, .dense_layers = 2};
        if (kw__quest_method(&o, NULL, &m, err) < 0)
            return NULL;
        return m;
    }
    kw__evict_params *p = calloc(1, sizeof *p);
    *p = (kw__evict_params){.capacity = budget, .window = W, .kernel = 5,
                            .pooling = KW_POOLING_AVG, .beta = 20, .sink = 4,
                            .heavy_share = 0.5};
    if (!strcmp(name, "snapkv"))
        p->kind = KW_EVICT_SNAPKV;
    else if (!strcmp(name, "pyramidkv"))
        p->kind = KW_EVICT_PYRAMID;
    else if (!strcmp(name, "streaming"))
        p->kind = KW_EVICT_STREAMING;
    else if (!strcmp(name, "h2o"))
        p->kind = KW_EVICT_H2O;
    else {
        free(p);
        kw_error_set(err, KW_EINVAL, "unknown method '%s'", name);
        return NULL;
    }
    return kw__evict_method(p);
}

static void step_or_die(kw_fwd *f, kw_kvpool *pool, kw_fwd_step *s)
{
    kw_error err = {0};
    int rc = kw__fwd_run(f, pool, s, &err);
    for (int i = 0; rc == 0 && i < s->n_seq; i++)
        if (s->seq_rc[i] < 0)
            rc = s->seq_rc[i], snprintf(err.msg, sizeof err.msg, "sequence %d: %s", i,
                                        kw_strerror(rc));
    if (rc < 0) {
        fprintf(stderr, "bench_methods: step failed: %s\n", err.msg);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    kw_quiet_threads(argv);
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: bench_methods MODEL.gguf [--ctx 32768] [--batch 1,8] "
                        "[--budget 2048] [--steps 20] [--methods full,snapkv,...]\n");
        return 2;
    }
    int ctx = 32768, bat[8] = {1, 8}, nbat = 2, budget = 2048, steps = 20;
    char methods[256] = "full,snapkv,pyramidkv,streaming,h2o,quest";
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--ctx")) ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) nbat = kwb_parse_list(argv[i + 1], bat, 8);
        else if (!strcmp(argv[i], "--budget")) budget = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--methods")) snprintf(methods, sizeof methods, "%s", argv[i + 1]);
    }
    if (steps < 1 || steps > 256 || ctx <= W || budget < 1) {
        fprintf(stderr, "bench_methods: --steps 1..256, --ctx > %d, --budget > 0\n", W);
        return 2;
    }
    if (kw_cuda_device_count() < 1) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    kw_error err = {0};
    kw_model *m;
    if (kw_model_open(argv[1], &m, &err) < 0) {
        fprintf(stderr, "bench_methods: %s\n", err.msg);
        return 1;
    }
    const kw_model_config *c = &m->cfg;
    int maxb = 0;
    for (int i = 0; i < nbat; i++)
        maxb = bat[i] > maxb ? bat[i] : maxb;
    if (maxb > 64)
        return fprintf(stderr, "bench_methods: batch at most 64\n"), 2;
    int64_t E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim,
            kd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff, V = c->n_vocab;
    double weight_bytes = 2.0 * ((2 * qd * E + 2 * kd * E + 3 * F * E) * (double)c->n_layer + (double)V * E);
    double kv_tok_bytes = 2.0 * 2.0 * (double)kd * c->n_layer;
    double bw = kwb_copy_bandwidth();
    printf("# model %s: %d layers, %lld dim, %d/%d heads; weights %.2f GB (bf16); KV %.0f "
           "KB/token; copy bandwidth %.0f GB/s; context %d, budget %d tokens\n",
           argv[1], c->n_layer, (long long)E, c->n_head, c->n_head_kv, weight_bytes / 1e9,
           kv_tok_bytes / 1024, bw / 1e9, ctx, budget);
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.device_pages = true;
    po.n_pages = (int64_t)c->n_layer * c->n_head_kv * ((ctx + steps + 64) / 16 + 3) * maxb;
    if (strstr(methods, "deltakv")) /* a layer's rebuilt tokens, every sequence's at once */
        po.n_tmp_pages = (int64_t)c->n_head_kv * ((ctx + steps + 64) / 16 + 3) * maxb;
    kw_kvpool *pool;
    kw_fwd *f;
    if (kw_kvpool_new(c, &po, &pool, &err) < 0
        || kw__fwd_new_cuda(m, W * maxb, maxb, pool, 0, &f, &err) < 0) {
        fprintf(stderr, "bench_methods: %s\n", err.msg);
        return 1;
    }
    float *logits = malloc(sizeof(float) * (size_t)maxb * V);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)W * maxb), *pos = malloc(sizeof(int32_t) * (size_t)W * maxb);
    printf("method,batch,ctx,budget,last_chunk_ms,decode_ms,tok_per_s,attended_per_step,kv_mb,"
           "floor_ms,pct_of_floor,speedup_vs_full,held_mb,load_mb,decode_mean_ms\n");
    char table[8192] = "";
    for (int bi = 0; bi < nbat; bi++) {
        int B = bat[bi];
        double full_ms = 0;
        char list[256];
        snprintf(list, sizeof list, "%s", methods);
        for (char *tk = strtok(list, ","); tk; tk = strtok(NULL, ",")) {
            kw_kvmethod *meth = make_method(tk, budget, c, &err);
            if (!meth && strcmp(tk, "full")) {
                fprintf(stderr, "bench_methods: %s\n", err.msg);
                return 2;
            }
            void *st = NULL;
            if (meth && meth->state_new && meth->state_new(meth->params, c, &st, &err) < 0) {
                fprintf(stderr, "bench_methods: %s\n", err.msg);
                return 1;
            }
            if (meth && !meth->state_new)
                st = meth->params;
            kw_hookstack hs = {0};
            if (meth)
                hs.n = 1, hs.hooks[0] = meth->hook, hs.states[0] = st;
            kw_seq sq[64], *sp[64];
            const kw_hookstack *hsp[64];
            int first[64], ntok[64], lt[64];
            bool pre[64], last[64];
            for (int i = 0; i < B; i++) {
                sq[i] = (kw_seq){.id = (uint64_t)i, .sample = i, .n_prompt = ctx,
                                 .max_new = steps + 8, .kv = kw_kvseq_new(pool)};
                sp[i] = &sq[i];
                hsp[i] = &hs;
                if (meth && meth->hook->seq_open && meth->hook->seq_open(st, &sq[i], 0) < 0) {
                    fprintf(stderr, "bench_methods: seq_open failed\n");
                    return 1;
                }
                if (kw__fwd_fill_random(f, sq[i].kv, 0, ctx - W, (uint64_t)i + 1, &err) < 0) {
                    fprintf(stderr, "bench_methods: %s\n", err.msg);
                    return 1;
                }
                sq[i].n_past = ctx - W;
            }
            /* the prompt's last chunk, with the method */
            for (int i = 0; i < B; i++) {
                first[i] = i * W, ntok[i] = W, lt[i] = i * W + W - 1, pre[i] = true, last[i] = true;
                for (int j = 0; j < W; j++)
                    ids[i * W + j] = rand_id((int)V), pos[i * W + j] = ctx - W + j;
            }
            kw_fwd_step s = {.n_seq = B, .seqs = sp, .stacks = hsp, .tok_first = first,
                             .tok_n = ntok, .ids = ids, .pos = pos, .prefill = pre,
                             .last_chunk = last, .logit_tok = lt, .n_logits = B,
                             .logits = logits, .obs_window = W};
            double a = kwb_now();
            step_or_die(f, pool, &s);
            double last_ms = (kwb_now() - a) * 1e3;
            for (int i = 0; i < B; i++)
                sq[i].n_past += W;
            /* decode */
            double t[256];
            int64_t att = 0;
            for (int i = 0; i < B; i++)
                first[i] = i, ntok[i] = 1, lt[i] = i, pre[i] = false, last[i] = false;
            for (int k = -3; k < steps; k++) {
                for (int i = 0; i < B; i++)
                    ids[i] = rand_id((int)V), pos[i] = sq[i].n_past;
                s.step = k + 4;
                a = kwb_now();
                step_or_die(f, pool, &s);
                if (k >= 0)
                    t[k] = kwb_now() - a;
                for (int i = 0; i < B; i++)
                    sq[i].n_past++;
                if (k == steps - 1)
                    for (int i = 0; i < B; i++)
                        att += s.attended[i];
            }
            double ms = 1e3 * kwb_median(t, steps), mean_ms = 0;
            for (int k = 0; k < steps; k++) /* with the steps of periodic host work */
                mean_ms += 1e3 * t[k] / steps;
            int64_t pages = 0;
            for (int i = 0; i < B; i++)
                pages += kw_kvseq_pages_held(sq[i].kv);
            double kv_mb = (double)pages * 16 * 2 * 2 * c->head_dim / 1e6, held_mb = 0,
                   load_mb = 0;
            for (int i = 0; i < B; i++)
                held_mb += sq[i].held_peak_bytes / 1e6, load_mb += sq[i].load_bytes / 1e6;
            /* attended: tokens read per step summed over layers and KV heads */
            double floor_ms = 1e3 * (weight_bytes + (double)att * 2 * 2 * c->head_dim) / bw;
            if (!strcmp(tk, "full"))
                full_ms = ms;
            printf("%s,%d,%d,%d,%.1f,%.3f,%.1f,%lld,%.1f,%.3f,%.1f,%.2f,%.1f,%.1f,%.3f\n", tk,
                   B, ctx, meth ? budget : ctx, last_ms, ms, B / (ms * 1e-3), (long long)att,
                   kv_mb, floor_ms, 100 * floor_ms / ms, full_ms > 0 ? full_ms / ms : 0,
                   held_mb, load_mb, mean_ms);
            char held[64] = "";
            if (held_mb > 0)
                snprintf(held, sizeof held, "  + %.1f MB held on the host", held_mb);
            snprintf(table + strlen(table), sizeof table - strlen(table),
                     "%-9s b=%d  decode %8.2f ms (mean %8.2f) %8.1f tok/s  %5.2fx full  KV "
                     "%8.1f MB  floor %6.2f ms (%5.1f%%)  last chunk %7.1f ms%s\n",
                     tk, B, ms, mean_ms, B / (ms * 1e-3), full_ms > 0 ? full_ms / ms : 0,
                     kv_mb, floor_ms, 100 * floor_ms / ms, last_ms, held);
            for (int i = 0; i < B; i++) {
                if (meth && meth->hook->seq_close)
                    meth->hook->seq_close(st, &sq[i], 0);
                kw_kvseq_free(sq[i].kv);
            }
            if (meth && meth->state_free)
                meth->state_free(st);
            if (meth && meth->params_free)
                meth->params_free(meth->params);
            free(meth);
        }
    }
    printf("\n# KV methods on the CUDA engine, context %d, budget %d\n%s", ctx, budget, table);
    kw__fwd_free(f);
    kw_kvpool_free(pool);
    kw_model_free(m);
    free(logits), free(ids), free(pos);
    return 0;
}
