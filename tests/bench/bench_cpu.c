/* CPU engine benchmark (a measurement, never a test): prefill tokens/s at several prompt
 * lengths, decode tokens/s at several contexts for batch 1 and 8, each beside a floor:
 * prefill beside the time the same linear-layer FLOPs take at the OpenBLAS sgemm rate
 * measured here, decode beside the time it takes to read the weights and the KV once at
 * the memory bandwidth measured here.
 *
 *   bench_cpu [--model SPEC] [--quick] [--threads N]
 *
 * Without --model the weights are random with SmolLM2-135M's shape (speed does not
 * depend on the values). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "kvweave/engine.h"
#include "kvweave/util.h"
#include "runtime/forward.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 12345;
static float frand(void)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)((double)(rs >> 11) / 9007199254740992.0 * 2 - 1);
}

static void add(kw_model *m, const char *name, int64_t d0, int64_t d1, float amp, float base)
{
    kw_tensor *t = &m->tensors[m->n_tensors++];
    int64_t n = d0 * (d1 ? d1 : 1);
    float *d = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        d[i] = base + amp * frand();
    t->name = strdup(name);
    t->dtype = KW_DT_F32;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = d;
    t->nbytes = (size_t)n * 4;
}

static kw_model *smollm2_shaped(void)
{
    kw_model *m = calloc(1, sizeof *m);
    kw_model_config *c = &m->cfg;
    *c = (kw_model_config){.arch = KW_ARCH_LLAMA, .n_layer = 30, .n_embd = 576, .n_head = 9,
                           .n_head_kv = 3, .head_dim = 64, .n_ff = 1536, .n_vocab = 49152,
                           .n_ctx_train = 16384, .norm_eps = 1e-5f, .rope_theta = 100000.f,
                           .rope_layout = KW_ROPE_INTERLEAVED, .tie_embeddings = true,
                           .eos_ids = {2}, .n_eos = 1};
    m->name = "smollm2-135m-shaped";
    m->tensors = calloc(3 + 9 * (size_t)c->n_layer, sizeof(kw_tensor));
    int E = c->n_embd, qd = c->n_head * c->head_dim, kd = c->n_head_kv * c->head_dim;
    add(m, "token_embd.weight", c->n_vocab, E, 0.05f, 0);
    add(m, "output_norm.weight", E, 0, 0.1f, 1);
    char nm[64];
    for (int l = 0; l < c->n_layer; l++) {
#define T(s, a, b, amp, base) snprintf(nm, sizeof nm, "blk.%d." s, l), add(m, nm, a, b, amp, base)
        T("attn_norm.weight", E, 0, 0.1f, 1);
        T("attn_q.weight", qd, E, 0.05f, 0);
        T("attn_k.weight", kd, E, 0.05f, 0);
        T("attn_v.weight", kd, E, 0.05f, 0);
        T("attn_output.weight", E, qd, 0.05f, 0);
        T("ffn_norm.weight", E, 0, 0.1f, 1);
        T("ffn_gate.weight", c->n_ff, E, 0.05f, 0);
        T("ffn_up.weight", c->n_ff, E, 0.05f, 0);
        T("ffn_down.weight", E, c->n_ff, 0.05f, 0);
#undef T
    }
    return m;
}

/* Linear-layer FLOPs per token (QKV, output, MLP; the LM head only where logits are
 * taken) and weight bytes read per step. */
static double linear_flops(const kw_model_config *c)
{
    double E = c->n_embd, qd = c->n_head * c->head_dim, kd = c->n_head_kv * c->head_dim;
    return 2.0 * c->n_layer * (E * qd + 2 * E * kd + qd * E + 3 * E * c->n_ff);
}

/* Bytes of the matrices a step reads from memory: the codes of a matrix kw_split_bits
 * splits, with a float scale and minimum per group (forward.c keeps only those), other
 * types' f32 forms; the LM head is the output matrix or the tied embedding. */
static double weight_bytes(const kw_model *m)
{
    double b = 0;
    bool has_output = false;
    for (int i = 0; i < m->n_tensors; i++)
        has_output = has_output || !strcmp(m->tensors[i].name, "output.weight");
    for (int i = 0; i < m->n_tensors; i++) {
        const kw_tensor *t = &m->tensors[i];
        const char *nm = t->name;
        if (t->ndim != 2 || strstr(nm, "norm") || (!strcmp(nm, "token_embd.weight") && has_output))
            continue;
        double n = (double)kw_tensor_nelems(t);
        size_t be, bb;
        int bits = kw_split_bits(t->dtype);
        bool q = bits && kw_dtype_block(t->dtype, &be, &bb) == 0 && t->shape[1] % (int64_t)be == 0;
        b += q ? n * bits / 8 + n / kw_split_group(t->dtype) * 8 : 4 * n;
    }
    return b;
}

static double sgemm_gflops(int M, int N, int K)
{
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * N * K),
          *y = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++)
        a[i] = frand();
    for (int i = 0; i < N * K; i++)
        b[i] = frand();
    int reps = 0;
    double t0 = now_s(), t;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a, K, b, K, 0.f, y, N);
        reps++;
    } while ((t = now_s() - t0) < 0.5);
    free(a), free(b), free(y);
    return 2.0 * M * N * K * reps / t / 1e9;
}

static double read_gbs(void)
{
    size_t n = (size_t)1 << 28; /* 1 GiB of floats */
    float *a = malloc(n * sizeof(float));
#pragma omp parallel for
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(i & 7);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        float s = 0;
        double t0 = now_s();
#pragma omp parallel for simd reduction(+ : s)
        for (size_t i = 0; i < n; i++)
            s += a[i];
        double t = now_s() - t0;
        best = fmax(best, n * 4.0 / t / 1e9);
        if (s < 0)
            printf("%g", s);
    }
    free(a);
    return best;
}

/* Median seconds of kw_k_attn_view over 5 runs (after one to warm up). */
static double time_attn(const kw_attn_args *a)
{
    double t[5];
    for (int r = -1; r < 5; r++) {
        double t0 = now_s();
        if (kw_k_attn_view(KW_BK_CPU, NULL, a) < 0) {
            fprintf(stderr, "bench: attention failed\n");
            exit(3);
        }
        if (r >= 0)
            t[r] = now_s() - t0;
    }
    for (int i = 1; i < 5; i++) /* sort: the median is t[2] */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    return t[2];
}

/* The attention kernel alone, one layer of the model's shape over L stored tokens (pages
 * of 16 of type dt): prefill of the last 512 tokens (FLOPs against the sgemm rate) and
 * decode steps of 1 and 8 sequences (the pages' K/V payload against the memory
 * bandwidth). */
/* The MLP's gate matrix (n_ff, n_embd) of every layer, as f32 and as int4 blocks with
 * minima (Q4_1's split form): the median time of one pass over all layers' copies (so
 * that the weights come from memory, as in a step), f32 (kw_k_linear) against the blocks
 * read directly (kw_k_linear_q, what steps of at most KW_FWD_QROWS rows do) and
 * dequantized into a tile for sgemm (kw_k_linear_qt, what larger steps do), for M input
 * rows, beside the memory read rate. */
static void bench_linear(const kw_model_config *c, double bw)
{
    const int N = c->n_ff, K = c->n_embd, nl = c->n_layer;
    const int64_t n = (int64_t)N * K, nb = n / 32;
    enum { MMAX = 64 };
    float **w = malloc(sizeof(float *) * nl), *x = malloc(sizeof(float) * MMAX * K),
          *y = malloc(sizeof(float) * MMAX * N), *tile = malloc(sizeof(float) * n);
    kw_qmat *q = malloc(sizeof(kw_qmat) * nl);
    for (int l = 0; l < nl; l++) {
        w[l] = malloc(sizeof(float) * n);
        uint8_t *codes = malloc(n / 2);
        float *sc = malloc(sizeof(float) * nb * 2);
        for (int64_t i = 0; i < n / 2; i++)
            codes[i] = (uint8_t)(frand() * 127 + 128);
        for (int64_t i = 0; i < nb; i++)
            sc[i] = 0.01f + 0.001f * frand(), sc[nb + i] = -0.08f + 0.01f * frand();
        for (int64_t i = 0; i < n; i++) {
            int64_t b = i / 32, j = i % 32;
            int cd = (codes[b * 16 + j % 16] >> (j < 16 ? 0 : 4)) & 15;
            w[l][i] = (float)cd * sc[b] + sc[nb + b];
        }
        q[l] = (kw_qmat){.bits = 4, .codes = codes, .scale = sc, .min = sc + nb};
    }
    for (int i = 0; i < MMAX * K; i++)
        x[i] = frand();
    const int Ms[] = {1, 8, 16, 32, MMAX};
    for (int mi = 0; mi < 5; mi++) {
        int M = Ms[mi];
        double t[3][5];
        for (int r = -1; r < 5; r++)
            for (int v = 0; v < 3; v++) {
                double t0 = now_s();
                for (int l = 0; l < nl; l++)
                    if (v == 2 ? kw_k_linear_qt(KW_BK_CPU, NULL, x, &q[l], NULL, y, M, N, K,
                                                tile, n)
                        : v ? kw_k_linear_q(KW_BK_CPU, NULL, x, &q[l], NULL, y, M, N, K)
                            : kw_k_linear(KW_BK_CPU, NULL, x, w[l], NULL, y, M, N, K))
                        exit(3);
                if (r >= 0)
                    t[v][r] = (now_s() - t0) / nl;
            }
        for (int v = 0; v < 3; v++)
            for (int i = 1; i < 5; i++)
                for (int j = i; j > 0 && t[v][j] < t[v][j - 1]; j--) {
                    double s = t[v][j];
                    t[v][j] = t[v][j - 1], t[v][j - 1] = s;
                }
        double bf = 4.0 * n, bq = n / 2.0 + 8.0 * nb;
        printf("linear alone, %d x %d, %d row%s: f32 %.3f ms (%.1f GB/s), int4 blocks %.3f ms "
               "(%.1f GB/s; %.2fx), dequantized tile %.3f ms (memory read %.1f GB/s)\n", N, K,
               M, M > 1 ? "s" : "", t[0][2] * 1e3, bf / t[0][2] / 1e9, t[1][2] * 1e3,
               bq / t[1][2] / 1e9, t[0][2] / t[1][2], t[2][2] * 1e3, bw);
    }
    for (int l = 0; l < nl; l++)
        free(w[l]), free((void *)q[l].codes), free((void *)q[l].scale);
    free(w), free(q), free(x), free(y), free(tile);
}

static void bench_attention(const kw_model_config *c, int L, double gf, double bw,
                            kw_kvdtype dt)
{
    kw_model_config one = *c;
    one.n_layer = 1;
    const int B = 8, H = c->n_head, hd = c->head_dim, nkv = c->n_head_kv, nq = 512;
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.n_pages = (int64_t)B * nkv * (L / 16 + 2);
    po.dtype = dt;
    kw_kvpool *pool;
    kw_error err = {0};
    if (kw_kvpool_new(&one, &po, &pool, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        exit(3);
    }
    float *k = malloc(sizeof(float) * L * nkv * hd), *v = malloc(sizeof(float) * L * nkv * hd);
    float *q = malloc(sizeof(float) * nq * H * hd), *o = malloc(sizeof(float) * nq * H * hd);
    int32_t *pos = malloc(sizeof(int32_t) * L), qp[512];
    for (int i = 0; i < L * nkv * hd; i++)
        k[i] = frand(), v[i] = frand();
    for (int i = 0; i < nq * H * hd; i++)
        q[i] = frand();
    for (int i = 0; i < L; i++)
        pos[i] = i;
    kw_kvseq *sq[8];
    kw_view *w[8];
    for (int b = 0; b < B; b++) {
        sq[b] = kw_kvseq_new(pool);
        w[b] = kw_view_new();
        if (kw_kvseq_append(sq[b], 0, k, v, pos, L) < 0 ||
            kw_view_dense(w[b], sq[b], 0, false) < 0) {
            fprintf(stderr, "bench: attention pool\n");
            exit(3);
        }
    }
    int off[9];
    kw_attn_args a = {.mem = kw_kvpool_mem(pool), .views = (const kw_view *const *)w,
                      .tok_off = off, .q = q, .q_pos = qp, .n_head = H, .n_kv = nkv,
                      .scale = 1.f / sqrtf((float)hd), .out = o};
    /* prefill: the last nq positions of one sequence */
    for (int i = 0; i < nq; i++)
        qp[i] = L - nq + i;
    off[0] = 0, off[1] = nq;
    a.n_seq = 1;
    static const char *const names[] = {"f32", "int8", "int8_kchan", "int4_kchan"};
    double t = time_attn(&a), fl = 4.0 * H * hd * ((double)nq * (L - nq) + nq * (nq + 1) / 2.0);
    printf("attention alone, one layer, ctx %d, %s pages: prefill of %d tokens %.2f ms (%.1f "
           "GFLOP/s, sgemm rate %.0f)", L, names[dt], nq, t * 1e3, fl / t / 1e9, gf);
    for (int bi = 0; bi < 2; bi++) {
        int nb = bi ? B : 1;
        for (int b = 0; b <= nb; b++)
            off[b] = b;
        for (int b = 0; b < nb; b++)
            qp[b] = L - 1;
        a.n_seq = nb;
        t = time_attn(&a);
        double bytes = (double)nb * kw_kvseq_payload_bytes(sq[0]);
        printf("; decode batch %d %.3f ms (%.1f GB/s of K/V)", nb, t * 1e3, bytes / t / 1e9);
    }
    printf(" (memory read %.1f GB/s)\n", bw);
    for (int b = 0; b < B; b++)
        kw_view_free(w[b]), kw_kvseq_free(sq[b]);
    kw_kvpool_free(pool);
    free(k), free(v), free(q), free(o), free(pos);
}

/* One step of the forward pass: sequences seqs[0..B) each bring n tokens from ids at
 * positions p0[i]..; logits for each sequence's last token. */
/* KVStar's vote (kw_k_kvstar_vote, one layer, on the calling thread as on a retrieval
 * thread) at its defaults (the prompt's last 8 queries; channels pruned to a quarter,
 * pairs of tokens averaged: 64 sub-vectors a block of 128) over the middle blocks of a
 * 32k prompt, with Llama-3.1-8B's heads (32/8, head_dim 128), and SmolLM2-135M's
 * (9/3, 64) at 8k. */
static void bench_kvstar_vote(void)
{
    const int shapes[2][5] = {{32, 8, 128, 253, 8}, {9, 3, 64, 61, 8}}; /* H, Hk, hd, blocks, nq */
    for (int i = 0; i < 2; i++) {
        int H = shapes[i][0], Hk = shapes[i][1], hd = shapes[i][2], nb = shapes[i][3];
        int nq = shapes[i][4], dk = hd / 4, per = 64, n_sub = nb * per;
        float *q = malloc(sizeof(float) * (size_t)nq * H * hd), *score = malloc(sizeof(float) * nb);
        int32_t *chan = malloc(sizeof(int32_t) * (size_t)Hk * dk);
        uint16_t *sub = malloc(sizeof(uint16_t) * (size_t)Hk * n_sub * dk);
        for (int j = 0; j < nq * H * hd; j++)
            q[j] = frand();
        for (int j = 0; j < Hk * dk; j++)
            chan[j] = (j % dk) * 4;
        for (int j = 0; j < Hk * n_sub * dk; j++)
            sub[j] = kw_f32_to_f16(frand());
        double best = 1e9;
        for (int r = 0; r < 5; r++) {
            double t0 = now_s();
            kw_k_kvstar_vote(q, nq, H, Hk, hd, chan, dk, sub, n_sub, per, score);
            double t = now_s() - t0;
            best = t < best ? t : best;
        }
        double fl = 2.0 * nq * H * (double)n_sub * dk;
        printf("kvstar vote, one layer, %d/%d heads, head_dim %d, %d blocks (%d sub-vectors of "
               "%d channels), %d queries: %.2f ms (%.1f GFLOP/s, one thread)\n", H, Hk, hd, nb,
               n_sub, dk, nq, best * 1e3, fl / best / 1e9);
        free(q), free(score), free(chan), free(sub);
    }
}

static void step(kw_fwd *f, kw_kvpool *pool, int B, kw_seq **seqs, const int32_t *ids, int n,
                 const int *p0, float *logits)
{
    int first[64], tn[64], lt[64];
    bool pre[64], last[64];
    int32_t *tid = malloc(sizeof(int32_t) * B * n), *pos = malloc(sizeof(int32_t) * B * n);
    for (int i = 0; i < B; i++) {
        first[i] = i * n;
        tn[i] = n;
        lt[i] = i * n + n - 1;
        pre[i] = n > 1;
        last[i] = false;
        for (int j = 0; j < n; j++) {
            tid[i * n + j] = ids[j];
            pos[i * n + j] = p0[i] + j;
        }
    }
    kw_fwd_step st = {.n_seq = B, .seqs = seqs, .tok_first = first, .tok_n = tn, .ids = tid,
                      .pos = pos, .prefill = pre, .last_chunk = last, .logit_tok = lt,
                      .n_logits = B, .logits = logits};
    kw_error err = {0};
    if (kw__fwd_run(f, pool, &st, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        exit(3);
    }
    free(tid), free(pos);
}

int main(int argc, char **argv)
{
    kw_quiet_threads(argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *spec = NULL;
    bool quick = false;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            spec = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_cpu [--model SPEC] [--quick] [--threads N]\n");
            return 2;
        }
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    kw_model *m = NULL;
    kw_error err = {0};
    if (spec && kw_model_open(spec, &m, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 2;
    }
    if (!m)
        m = smollm2_shaped();
    const kw_model_config *c = &m->cfg;
    const int chunk = 512, max_b = 8;
    kw_fwd *f;
    if (kw__fwd_new(m, chunk * max_b, &f, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 3;
    }
    int pre[3] = {512, 2048, 8192}, np = quick ? 2 : 3, G = quick ? 4 : 16;
    kw_kvpool_opts po = kw_kvpool_defaults();
    po.n_pages = (int64_t)(pre[np - 1] + G + 16) / 16 * 30 * 3 * (max_b + 1);
    kw_kvpool *pool;
    if (kw_kvpool_new(c, &po, &pool, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 3;
    }
    double bw = read_gbs();
    double kvtok = 2.0 * c->n_layer * c->n_head_kv * c->head_dim * 4; /* bytes per token */
    printf("model %s, %d threads, OMP_WAIT_POLICY=%s, GOMP_SPINCOUNT=%s, "
           "OPENBLAS_THREAD_TIMEOUT=%s, memory read %.1f GB/s\n", m->name, omp_get_max_threads(),
           getenv("OMP_WAIT_POLICY"), getenv("GOMP_SPINCOUNT"), getenv("OPENBLAS_THREAD_TIMEOUT"),
           bw);
    int32_t *ids = malloc(sizeof(int32_t) * pre[np - 1]);
    for (int i = 0; i < pre[np - 1]; i++)
        ids[i] = 100 + (i * 7919) % 40000;
    float *logits = malloc(sizeof(float) * max_b * c->n_vocab);
    double gf = sgemm_gflops(chunk, c->n_ff, c->n_embd);
    if (c->n_embd % 32 == 0)
        bench_linear(c, bw);
    bench_kvstar_vote();
    for (int i = 0; i < np; i++) {
        int L = pre[i];
        kw_seq s0 = {.kv = kw_kvseq_new(pool)};
        kw_seq *sp[max_b];
        sp[0] = &s0;
        double t0 = now_s();
        for (int p = 0; p < L; p += chunk) {
            int n = L - p < chunk ? L - p : chunk;
            step(f, pool, 1, sp, ids + p, n, &p, logits);
        }
        double t = now_s() - t0;
        double flops = linear_flops(c) * L + 2.0 * c->n_vocab * c->n_embd;
        double att = 4.0 * c->n_layer * c->n_head * c->head_dim * (double)L * L / 2;
        printf("prefill %5d: %8.1f tok/s (%.2f s); sgemm %.1f GFLOP/s -> linear floor %.2f s; "
               "attention %.0f GFLOP more\n", L, L / t, t, gf, flops / gf / 1e9, att / 1e9);
        if (L == 512)
            goto next;
        for (int dt = KW_KV_F32; dt <= KW_KV_I4K; dt++)
            bench_attention(c, L, gf, bw, (kw_kvdtype)dt);
        /* decode at context L: batch 1, then 8 forks of the same prefix */
        for (int bi = 0; bi < 2; bi++) {
            int B = bi ? max_b : 1, p0[max_b];
            kw_seq fs[max_b];
            for (int j = 1; j < B; j++) {
                fs[j] = (kw_seq){.kv = kw_kvseq_fork(s0.kv)};
                sp[j] = &fs[j];
            }
            kw_kvseq *keep = kw_kvseq_fork(s0.kv); /* to restore the prefix after */
            double td = now_s();
            for (int g = 0; g < G; g++) {
                for (int j = 0; j < B; j++)
                    p0[j] = L + g;
                step(f, pool, B, sp, ids + g, 1, p0, logits);
            }
            double per = (now_s() - td) / G;
            double bytes = weight_bytes(m) + (double)B * (L + G / 2) * kvtok;
            printf("decode ctx %5d batch %d: %8.1f tok/s (%.1f ms/step); bandwidth floor %.1f "
                   "ms/step (%.0f MB at %.1f GB/s)\n", L, B, B / per, per * 1e3,
                   bytes / bw / 1e6, bytes / 1e6, bw);
            for (int j = 1; j < B; j++)
                kw_kvseq_free(fs[j].kv);
            kw_kvseq_free(s0.kv);
            s0.kv = keep;
        }
next:
        kw_kvseq_free(s0.kv);
    }
    free(ids), free(logits);
    kw_kvpool_free(pool);
    kw__fwd_free(f);
    return 0;
}
