/* The CUDA device engine's forward on a whole model: chunked prefill tokens/s (one
 * sequence, contexts given) and decode tokens/s (batches x contexts; the context is
 * filled with random K/V, not prefilled), each beside its physical floor:
 *   decode:  (weight bytes + KV bytes read) / measured device copy bandwidth
 *   prefill: FLOPs (2 x matmul params x tokens + causal attention) / peak bf16 FLOP/s
 * Times are wall-clock around whole steps (each step ends with a stream sync and the
 * logits copy), medians over repeats after warm-up; the bytes steps copied host <->
 * device are averaged per step. Prints CSV; the last lines are a short table.
 *
 *   bench_model MODEL.gguf [--ctx 2048,8192,32768] [--batch 1,8] [--chunk 4096]
 *               [--prefill-max 32768] [--peak-tflops 800] [--steps 20] [--kv bf16|int8]
 * --kv int8: int8 KV pages on the device (decode reads half the KV bytes; prefill reads
 * each layer's pages dequantized into bf16 first). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "cuda/kernels_cuda.h"
#include "kvweave/model.h"
#include "kvweave/util.h"
#include "runtime/forward.h"

static uint64_t rs = 88172645463325252ULL;
static int32_t rand_id(int V)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (int32_t)(3 + rs % (uint64_t)(V - 3));
}

static int run_step(kw_fwd *f, kw_kvpool *pool, kw_seq **seqs, int ns, const int *first,
                    const int *ntok, const int32_t *ids, const int32_t *pos, int n_logits,
                    const int *logit_tok, float *logits)
{
    bool pre[64], last[64];
    for (int i = 0; i < ns; i++)
        pre[i] = ntok[i] > 1, last[i] = true;
    kw_fwd_step s = {.n_seq = ns, .seqs = seqs, .tok_first = first, .tok_n = ntok, .ids = ids,
                     .pos = pos, .prefill = pre, .last_chunk = last, .logit_tok = logit_tok,
                     .n_logits = n_logits, .logits = logits, .obs_window = 32};
    kw_error err = {0};
    int rc = kw__fwd_run(f, pool, &s, &err);
    if (rc < 0 || s.seq_rc[0] < 0) {
        fprintf(stderr, "bench_model: step failed: %s (%d)\n", err.msg, s.seq_rc[0]);
        exit(1);
    }
    for (int i = 0; i < ns; i++)
        seqs[i]->n_past += ntok[i];
    return 0;
}

int main(int argc, char **argv)
{
    kw_quiet_threads(argv);
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: bench_model MODEL.gguf [--ctx 2048,8192,32768] [--batch 1,8] "
                        "[--chunk 4096] [--prefill-max 32768] [--peak-tflops 800] [--steps 20] "
                        "[--kv bf16|int8]\n");
        return 2;
    }
    int ctx[8] = {2048, 8192, 32768}, nctx = 3, bat[8] = {1, 8}, nbat = 2, chunk = 4096,
        pmax = 32768, steps = 20;
    double peak = 800e12;
    bool i8 = false;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--kv")) {
            if (strcmp(argv[i + 1], "int8") && strcmp(argv[i + 1], "bf16")) {
                fprintf(stderr, "bench_model: --kv %s: bf16 or int8\n", argv[i + 1]);
                return 2;
            }
            i8 = !strcmp(argv[i + 1], "int8");
        }
        if (!strcmp(argv[i], "--ctx")) nctx = kwb_parse_list(argv[i + 1], ctx, 8);
        else if (!strcmp(argv[i], "--batch")) nbat = kwb_parse_list(argv[i + 1], bat, 8);
        else if (!strcmp(argv[i], "--chunk")) chunk = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefill-max")) pmax = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--peak-tflops")) peak = atof(argv[i + 1]) * 1e12;
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
    }
    if (kw_cuda_device_count() < 1) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    kw_error err = {0};
    kw_model *m;
    if (kw_model_open(argv[1], &m, &err) < 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    const kw_model_config *c = &m->cfg;
    int maxc = 0, maxb = 0;
    for (int i = 0; i < nctx; i++)
        maxc = ctx[i] > maxc ? ctx[i] : maxc;
    for (int i = 0; i < nbat; i++)
        maxb = bat[i] > maxb ? bat[i] : maxb;
    int64_t E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim,
            kd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff, V = c->n_vocab;
    double layer_params = (double)(2 * qd * E + 2 * kd * E + 3 * F * E);
    double mat_params = layer_params * c->n_layer;
    double weight_bytes = 2.0 * (mat_params + (double)V * E); /* bf16, with the head */
    /* K + V per token: bf16, or int8 with a 4-byte scale per row */
    double kv_tok_bytes = i8 ? 2.0 * ((double)kd + 4.0 * c->n_head_kv) * c->n_layer
                             : 2.0 * 2.0 * (double)kd * c->n_layer;
    double bw = kwb_copy_bandwidth();
    printf("# model %s: %d layers, %lld dim, %d/%d heads, ff %lld, vocab %lld; weights %.2f GB "
           "(bf16); KV %.0f KB/token (%s pages); copy bandwidth %.0f GB/s; peak %.0f TFLOP/s\n",
           argv[1], c->n_layer, (long long)E, c->n_head, c->n_head_kv, (long long)F,
           (long long)V, weight_bytes / 1e9, kv_tok_bytes / 1024, i8 ? "int8" : "bf16",
           bw / 1e9, peak / 1e12);
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.device_pages = true;
    po.dtype = i8 ? KW_KV_I8 : KW_KV_F32;
    po.n_pages = (int64_t)c->n_layer * c->n_head_kv * ((maxc + steps + 64) / 16 + 2) * maxb;
    kw_kvpool *pool;
    kw_fwd *f;
    int max_tok = chunk > maxb ? chunk : maxb;
    double t0 = kwb_now();
    if (kw_kvpool_new(c, &po, &pool, &err) < 0
        || kw__fwd_new_cuda(m, max_tok, maxb, pool, 0, &f, &err) < 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    printf("# engine open (upload %.2f GB of weights) %.1f s\n", weight_bytes / 1e9, kwb_now() - t0);
    float *logits = malloc(sizeof(float) * (size_t)maxb * V);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_tok), *pos = malloc(sizeof(int32_t) * (size_t)max_tok);
    printf("kind,batch,ctx,ms,tok_per_s,floor_ms,pct_of_floor,h2d_bytes_per_step,"
           "d2h_bytes_per_step\n");
    int64_t h0, d0, h1, d1;
    char table[4096] = "";
    /* prefill: one sequence, chunks of `chunk` tokens */
    for (int ci = 0; ci < nctx; ci++) {
        int C = ctx[ci];
        if (C > pmax)
            continue;
        /* a warm-up run at every context: cuDNN's plans (prefill attention) are built once
         * per shape and reported apart below */
        int reps = C <= 8192 ? 3 : 1, warm = 1;
        double t[4];
        kw__fwd_io_stats(f, &h0, &d0);
        for (int r = -warm; r < reps; r++) {
            kw_seq sq = {.id = 1, .kv = kw_kvseq_new(pool)}, *sp = &sq;
            double a = kwb_now();
            for (int p = 0; p < C; p += chunk) {
                int n = C - p < chunk ? C - p : chunk, first = 0, lt = n - 1;
                for (int i = 0; i < n; i++)
                    ids[i] = rand_id((int)V), pos[i] = p + i;
                run_step(f, pool, &sp, 1, &first, &n, ids, pos, p + n >= C ? 1 : 0, &lt, logits);
            }
            if (r >= 0)
                t[r] = kwb_now() - a;
            kw_kvseq_free(sq.kv);
        }
        double s = kwb_median(t, reps);
        double flops = 2.0 * mat_params * C + 2.0 * 2.0 * c->n_layer * (double)qd * C * (C + 1) / 2.0;
        double floor_s = flops / peak;
        kw__fwd_io_stats(f, &h1, &d1);
        const int chunks = (C + chunk - 1) / chunk, nst = chunks * (reps + warm);
        printf("prefill,1,%d,%.2f,%.0f,%.2f,%.1f,%.0f,%.0f\n", C, s * 1e3, C / s, floor_s * 1e3,
               100 * floor_s / s, (double)(h1 - h0) / nst, (double)(d1 - d0) / nst);
        snprintf(table + strlen(table), sizeof table - strlen(table),
                 "prefill  b=1 ctx=%-6d %9.0f tok/s  %8.1f ms  floor %8.1f ms  %5.1f%% of floor\n",
                 C, C / s, s * 1e3, floor_s * 1e3, 100 * floor_s / s);
    }
    {
        int plans;
        double build_s;
        kw_cuda_cudnn_stats(&plans, &build_s);
        printf("# cuDNN prefill plans built (in warm-up runs): %d in %.2f s\n", plans, build_s);
    }
    /* decode: batch B at context C (random K/V context), `steps` timed steps */
    for (int bi = 0; bi < nbat; bi++)
        for (int ci = 0; ci < nctx; ci++) {
            int B = bat[bi], C = ctx[ci];
            kw_seq sq[64], *sp[64];
            int first[64], ntok[64], lt[64];
            for (int i = 0; i < B; i++) {
                sq[i] = (kw_seq){.id = (uint64_t)i, .kv = kw_kvseq_new(pool)};
                sp[i] = &sq[i];
                if (kw__fwd_fill_random(f, sq[i].kv, 0, C, (uint64_t)i + 1, &err) < 0) {
                    fprintf(stderr, "bench_model: %s\n", err.msg);
                    return 1;
                }
                sq[i].n_past = C;
                first[i] = i, ntok[i] = 1, lt[i] = i;
            }
            double t[256];
            int n = steps > 256 ? 256 : steps;
            kw__fwd_io_stats(f, &h0, &d0);
            for (int st = -3; st < n; st++) {
                for (int i = 0; i < B; i++)
                    ids[i] = rand_id((int)V), pos[i] = sq[i].n_past;
                double a = kwb_now();
                run_step(f, pool, sp, B, first, ntok, ids, pos, B, lt, logits);
                if (st >= 0)
                    t[st] = kwb_now() - a;
            }
            kw__fwd_io_stats(f, &h1, &d1);
            double s = kwb_median(t, n);
            double floor_s = (weight_bytes + (double)B * C * kv_tok_bytes) / bw;
            double hs = (double)(h1 - h0) / (n + 3), dd = (double)(d1 - d0) / (n + 3);
            printf("decode,%d,%d,%.3f,%.1f,%.3f,%.1f,%.0f,%.0f\n", B, C, s * 1e3, B / s,
                   floor_s * 1e3, 100 * floor_s / s, hs, dd);
            snprintf(table + strlen(table), sizeof table - strlen(table),
                     "decode   b=%d ctx=%-6d %9.1f tok/s  %8.2f ms  floor %8.2f ms  %5.1f%% of floor"
                     "  copies/step %.2f MB up %.2f MB down\n",
                     B, C, B / s, s * 1e3, floor_s * 1e3, 100 * floor_s / s, hs / 1e6, dd / 1e6);
            for (int i = 0; i < B; i++)
                kw_kvseq_free(sq[i].kv);
        }
    int64_t caps, launches;
    kw__fwd_graph_stats(f, &caps, &launches);
    printf("# decode steps as CUDA graphs: %lld captured, %lld replayed (KVWEAVE_CUDA_GRAPHS=0 "
           "turns them off)\n", (long long)caps, (long long)launches);
    printf("# programmatic dependent launch: %s (KVWEAVE_CUDA_PDL=1 turns it on for every "
           "pass, =0 off)\n",
           kw_cuda_pdl_auto() ? "decode steps" : kw_cuda_pdl_on() ? "on" : "off");
    printf("\n# kvweave CUDA engine (%s KV pages)\n%s", i8 ? "int8" : "bf16", table);
    kw__fwd_free(f);
    kw_kvpool_free(pool);
    kw_model_free(m);
    free(logits), free(ids), free(pos);
    return 0;
}
