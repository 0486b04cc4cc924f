/* Causal prefill attention alone on the GPU: one sequence whose every token is a query
 * (q tokens = ctx), 32 query / 8 KV heads, head_dim 128, bf16 pages of 16 tokens on
 * shuffled pages, as a table-mode view (page lists) and a span-mode view (one span per
 * page), contexts 4k..32k. Times with CUDA events (warm-up, median of repeats). FLOPs are
 * those of the causal half: 4 * n_head * head_dim * ctx * (ctx + 1) / 2 (QK^T and PV),
 * reported as TFLOP/s and as a share of a nominal peak (800 TFLOP/s unless given). One
 * CSV line per case (header first). A benchmark, never a test.
 * Usage: bench_cuda_prefill [MAX_CTX] [PEAK_TFLOPS] [MIN_CTX] [Q_TOKENS]   (contexts MIN_CTX,
 * 2 MIN_CTX, .. MAX_CTX; MIN_CTX = MAX_CTX gives one context, e.g. for a profiler;
 * Q_TOKENS: the queries are the context's last Q_TOKENS tokens, a chunk of a chunked
 * prefill, whose FLOPs are the rectangle before it plus its causal half) */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "cuda/kernels_cuda.h"

#define CK KWB_CK

enum { P = 16, D = 128, H = 32, HKV = 8 };

static uint64_t rng = 11;
static double uni(void)
{
    return kwb_uni(&rng);
}

static void *upload(const void *h, size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes));
    CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}

static int launch_prefill(void *a) { return kw_cuda_attn_prefill(NULL, a); }

/* median milliseconds of one launch */
static double time_prefill(const kw_cuda_prefill *a, int reps)
{
    return kwb_time_ms(launch_prefill, (void *)a, 3, reps);
}

static void bench(int ctx, int n_q, double peak)
{
    /* the queries: the last n_q tokens (a chunk of a chunked prefill), all when 0 */
    n_q = n_q > 0 && n_q < ctx ? n_q : ctx;
    const int pages_row = (ctx + P - 1) / P, n_rows = HKV, n_pages = n_rows * pages_row;
    size_t pool_elems = (size_t)n_pages * 2 * P * D;
    /* pool: random bf16 in [-1, 1), filled from a 1M-element pattern */
    uint16_t *pat = malloc(2 * 1024 * 1024);
    for (int i = 0; i < 1024 * 1024; i++) {
        float f = (float)(uni() * 2 - 1);
        uint32_t u;
        memcpy(&u, &f, 4);
        pat[i] = (uint16_t)(u >> 16);
    }
    void *base;
    CK(cudaMalloc(&base, pool_elems * 2));
    for (size_t off = 0; off < pool_elems; off += 1024 * 1024) {
        size_t n = pool_elems - off < 1024 * 1024 ? pool_elems - off : 1024 * 1024;
        CK(cudaMemcpy((uint16_t *)base + off, pat, n * 2, cudaMemcpyHostToDevice));
    }
    /* row r's page p is a shuffled pool page holding tokens p*P .. at positions = index */
    int32_t *perm = malloc(sizeof(int32_t) * n_pages), *pos = malloc(sizeof(int32_t) * n_pages * P);
    for (int i = 0; i < n_pages; i++)
        perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = (int)(uni() * (i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *row_ptr = malloc(sizeof(int32_t) * (n_rows + 1)), *row_tokens = malloc(4 * n_rows);
    kw_cuda_span *sp = malloc(sizeof(kw_cuda_span) * n_pages);
    for (int r = 0; r < n_rows; r++) {
        row_ptr[r] = r * pages_row;
        row_tokens[r] = ctx;
        for (int p = 0; p < pages_row; p++) {
            int g = perm[r * pages_row + p], n = ctx - p * P < P ? ctx - p * P : P;
            for (int c = 0; c < P; c++)
                pos[(size_t)g * P + c] = p * P + c;
            sp[r * pages_row + p] = (kw_cuda_span){g, 0, (uint16_t)n, 0};
        }
    }
    row_ptr[n_rows] = n_pages;
    int32_t *q_pos = malloc(4 * (size_t)n_q), tok_off[2] = {0, n_q};
    for (int i = 0; i < n_q; i++)
        q_pos[i] = ctx - n_q + i;
    int n_items = kw_cuda_prefill_items(1, tok_off, NULL);
    int32_t *items = malloc(8 * (size_t)n_items);
    kw_cuda_prefill_items(1, tok_off, items);
    size_t nq = (size_t)n_q * H * D;
    float *q, *out;
    CK(cudaMalloc((void **)&q, nq * 4));
    CK(cudaMalloc((void **)&out, nq * 4));
    float *hq = malloc(sizeof(float) * 1024 * 1024);
    for (int i = 0; i < 1024 * 1024; i++)
        hq[i] = (float)(uni() * 2 - 1);
    for (size_t off = 0; off < nq; off += 1024 * 1024) {
        size_t n = nq - off < 1024 * 1024 ? nq - off : 1024 * 1024;
        CK(cudaMemcpy(q + off, hq, n * 4, cudaMemcpyHostToDevice));
    }

    kw_cuda_prefill a = {0};
    a.base[0] = a.base[1] = base;
    a.pos[0] = a.pos[1] = upload(pos, sizeof(int32_t) * n_pages * P);
    a.kv = KW_CUDA_KV_BF16, a.page_tokens = P, a.head_dim = D;
    a.n_head = H, a.n_kv = HKV, a.n_seq = 1;
    a.tok_off = upload(tok_off, sizeof tok_off);
    a.row_ptr = upload(row_ptr, sizeof(int32_t) * (n_rows + 1));
    a.q_pos = upload(q_pos, 4 * (size_t)n_q);
    a.q = q, a.out = out, a.scale = 0.08838835f;
    a.n_items = n_items, a.items = upload(items, 8 * (size_t)n_items);
    const int32_t *d_pages = upload(perm, sizeof(int32_t) * n_pages); /* rows' pages in order */
    const int32_t *d_row_tokens = upload(row_tokens, 4 * (size_t)n_rows);
    const kw_cuda_span *d_spans = upload(sp, sizeof(kw_cuda_span) * n_pages);
    int reps = ctx <= 8192 ? 20 : 10;
    /* the rectangle before the chunk and the causal half of its own square */
    double flop = 4.0 * H * D * ((double)n_q * (ctx - n_q) + (double)n_q * (n_q + 1) / 2);
    /* table and spans: the kernel the device gets by default; where that is the wgmma
     * kernel, table_mma: the mma.sync kernel forced, and table_cpasync: the wgmma kernel
     * copying K/V by cp.async instead of TMA */
    /* table_cudnn: cuDNN's fused attention (the rows are ordered, so the caller may say so
     * with host_kv_len; the other modes leave it unset and run kvweave's kernels), its
     * copies of Q, K, V and O included */
    static const char *const mode_name[5] = {"table", "spans", "table_mma", "table_cpasync",
                                             "table_cudnn"};
    static const int mode_kernel[5] = {KW_CUDA_PREFILL_AUTO, KW_CUDA_PREFILL_AUTO,
                                       KW_CUDA_PREFILL_MMA, KW_CUDA_PREFILL_AUTO,
                                       KW_CUDA_PREFILL_CUDNN};
    const int wgmma = kw_cuda_prefill_kernel_runs(KW_CUDA_PREFILL_WGMMA, D);
    const int cudnn = kw_cuda_cudnn_version(NULL, 0) > 0;
    const int32_t kv_len[1] = {ctx};
    for (int mode = 0; mode < 5; mode++) {
        if ((mode >= 2 && mode <= 3 && !wgmma) || (mode == 4 && !cudnn))
            continue;
        const int spans = mode == 1;
        a.pages = spans ? NULL : d_pages;
        a.row_tokens = spans ? NULL : d_row_tokens;
        a.spans = spans ? d_spans : NULL;
        a.kernel = mode_kernel[mode];
        a.no_tma = mode == 3;
        a.host_tok_off = mode == 4 ? tok_off : NULL;
        a.host_kv_len = mode == 4 ? kv_len : NULL;
        int rc = kw_cuda_attn_prefill(NULL, &a); /* first call: cuDNN builds its plan */
        if (rc < 0 || cudaDeviceSynchronize() != cudaSuccess) {
            char why[256] = "";
            if (mode == 4)
                kw_cuda_cudnn_version(why, sizeof why);
            printf("prefill_attn,%s,%d,%d,failed,%d,%s %s\n", mode_name[mode], n_q, ctx, rc,
                   kw_cuda_last_error(), why);
            continue;
        }
        double ms = time_prefill(&a, reps), tf = flop / (ms * 1e-3) / 1e12;
        printf("prefill_attn,%s,%d,%d,%.4f,%.3f,%.1f,%.1f\n", mode_name[mode], n_q, ctx, ms,
               flop / 1e12, tf, 100.0 * tf / peak);
        fflush(stdout);
    }
    cudaFree(base), cudaFree((void *)a.pos[0]), cudaFree((void *)a.tok_off);
    cudaFree((void *)a.row_ptr), cudaFree((void *)a.q_pos), cudaFree((void *)a.items);
    cudaFree((void *)d_pages), cudaFree((void *)d_row_tokens), cudaFree((void *)d_spans);
    cudaFree(q), cudaFree(out);
    free(pat), free(perm), free(pos), free(row_ptr), free(row_tokens), free(sp), free(q_pos);
    free(items), free(hq);
}

int main(int argc, char **argv)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    int max_ctx = argc > 1 ? atoi(argv[1]) : 32768;
    double peak = argc > 2 ? atof(argv[2]) : 800.0;
    int min_ctx = argc > 3 ? atoi(argv[3]) : 4096; /* one context alone: a profiler's view */
    int n_q = argc > 4 ? atoi(argv[4]) : 0;
    printf("peak_TFLOPs,%.1f\n", peak);
    printf("bench,view,q_tokens,ctx,ms,TFLOP,TFLOPs,pct_peak\n");
    char why[256];
    int ver = kw_cuda_cudnn_version(why, sizeof why);
    if (ver)
        printf("cudnn_version,%d\n", ver);
    else
        printf("cudnn_version,0,%s\n", why);
    for (int ctx = min_ctx > 0 ? min_ctx : 4096; ctx <= max_ctx; ctx *= 2)
        bench(ctx, n_q, peak);
    int plans;
    double build_s;
    kw_cuda_cudnn_stats(&plans, &build_s);
    printf("cudnn_plans,%d,%.3f\n", plans, build_s);
    return 0;
}
