/* Selection and page kernels on the GPU at the sizes of an 8B-shaped model (32 layers,
 * 32 query / 8 KV heads, head_dim 128) at 32k tokens: SnapKV window scores, pooling,
 * top-k of 2048 of 32k per (layer, KV head), Quest page bounds and decode page scores,
 * and page compaction of a bf16 pool keeping 2048 tokens of every table. Times with
 * CUDA events (warm-up, median of repeats) on random data (never zeros) and reports
 * each kernel's bytes moved against the device-to-device copy bandwidth measured in the
 * same run: pct_floor = (bytes / copy bandwidth) / time. Prints one CSV line per case
 * (header first). A benchmark, never a test. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "cuda/kernels_cuda.h"
#include "kernels.h"

#define CK KWB_CK

static uint64_t rng = 11;
static double uni(void)
{
    return kwb_uni(&rng);
}

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

#define REPS 20

/* Times one launch (a callback) REPS times after 3 warm-ups; returns the median in ms. */
typedef int (*launch_fn)(void *ctx);
static float time_ms(launch_fn f, void *ctx)
{
    cudaEvent_t ev[2 * REPS];
    for (int i = 0; i < 2 * REPS; i++)
        CK(cudaEventCreate(&ev[i]));
    for (int i = 0; i < 3; i++)
        if (f(ctx) != 0) {
            fprintf(stderr, "launch failed: %s\n", kw_cuda_last_error());
            exit(1);
        }
    for (int i = 0; i < REPS; i++) {
        CK(cudaEventRecord(ev[2 * i], 0));
        f(ctx);
        CK(cudaEventRecord(ev[2 * i + 1], 0));
    }
    CK(cudaDeviceSynchronize());
    float t[REPS];
    for (int i = 0; i < REPS; i++)
        CK(cudaEventElapsedTime(&t[i], ev[2 * i], ev[2 * i + 1]));
    for (int i = 0; i < 2 * REPS; i++)
        cudaEventDestroy(ev[i]);
    qsort(t, REPS, sizeof(float), cmpf);
    return t[REPS / 2];
}

/* Device buffer of n floats: random values in [lo, lo + span) (never zero for lo > 0
 * or for span crossing 0 at no representable draw), a 16 MB host tile repeated. */
static float *dev_random(size_t n, float lo, float span)
{
    size_t tile = (size_t)4 << 20;
    float *h = malloc(tile * sizeof(float)), *d;
    for (size_t i = 0; i < tile; i++) {
        float v = lo + (float)uni() * span;
        h[i] = v == 0.f ? 1e-3f : v;
    }
    CK(cudaMalloc((void **)&d, n * sizeof(float)));
    for (size_t at = 0; at < n; at += tile)
        CK(cudaMemcpy(d + at, h, (n - at < tile ? n - at : tile) * sizeof(float),
                      cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static double bw;

static void row(const char *name, const char *shape, float ms, double bytes)
{
    double floor_ms = bytes / bw * 1e3;
    printf("%s,%s,%.4f,%.1f,%.4f,%.1f,%.1f\n", name, shape, ms, bytes / 1e6, floor_ms,
           bytes / (ms * 1e-3) / 1e9, 100.0 * floor_ms / ms);
    fflush(stdout);
}

/* ---- cases ---- */

typedef struct ws_ctx {
    const float *p;
    float *out;
    int n_q, n_head, len, group, n_key;
} ws_ctx;
static int ws_launch(void *c)
{
    ws_ctx *a = c;
    return kw_k_window_scores(KW_BK_CUDA, NULL, a->p, a->n_q, a->n_head, a->len, a->group,
                              a->n_key, a->out);
}

static void bench_window(int layers)
{
    ws_ctx a = {.n_q = 32, .n_head = 32 * layers, .len = 32768, .group = 4};
    a.n_key = a.len - a.n_q; /* SnapKV scores the keys before the window */
    size_t np = (size_t)a.n_q * a.n_head * a.len, no = (size_t)a.n_head / a.group * a.n_key;
    a.p = dev_random(np, 1e-6f, 1e-4f);
    CK(cudaMalloc((void **)&a.out, no * sizeof(float)));
    float ms = time_ms(ws_launch, &a);
    char shape[96];
    snprintf(shape, sizeof shape, "q=32 heads=%d group=4 len=32768 (%d layer%s)", a.n_head,
             layers, layers > 1 ? "s" : "");
    /* reads the probabilities of the scored keys, writes the scores */
    row("window_scores", shape, ms, (double)a.n_q * a.n_head * a.n_key * 4 + no * 4.0);
    cudaFree((void *)a.p), cudaFree(a.out);
}

typedef struct pool_ctx {
    const float *x;
    float *out;
    int rows, n, kernel;
    kw_pooling mode;
} pool_ctx;
static int pool_launch(void *c)
{
    pool_ctx *a = c;
    return kw_k_pool1d(KW_BK_CUDA, NULL, a->x, a->rows, a->n, a->kernel, a->mode, a->out);
}

static void bench_pool(int kernel, kw_pooling mode)
{
    pool_ctx a = {.rows = 256, .n = 32768, .kernel = kernel, .mode = mode};
    size_t n = (size_t)a.rows * a.n;
    a.x = dev_random(n, 1e-4f, 1.f);
    CK(cudaMalloc((void **)&a.out, n * sizeof(float)));
    float ms = time_ms(pool_launch, &a);
    char shape[96];
    snprintf(shape, sizeof shape, "rows=256 n=32768 kernel=%d %s", kernel,
             mode == KW_POOLING_MAX ? "max" : "avg");
    row("pool1d", shape, ms, 2.0 * n * 4);
    cudaFree((void *)a.x), cudaFree(a.out);
}

typedef struct topk_ctx {
    const float *x;
    int32_t *idx;
    int rows, n, k;
} topk_ctx;
static int topk_launch(void *c)
{
    topk_ctx *a = c;
    return kw_k_topk(KW_BK_CUDA, NULL, a->x, a->rows, a->n, a->k, a->idx);
}

static void bench_topk(int rows, int n, int k)
{
    topk_ctx a = {.rows = rows, .n = n, .k = k};
    a.x = dev_random((size_t)rows * n, 1e-4f, 1.f);
    CK(cudaMalloc((void **)&a.idx, (size_t)rows * k * sizeof(int32_t)));
    float ms = time_ms(topk_launch, &a);
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d n=%d k=%d", rows, n, k);
    row("topk", shape, ms, (double)rows * n * 4 + (double)rows * k * 4);
    cudaFree((void *)a.x), cudaFree(a.idx);
}

typedef struct pb_ctx {
    const float *k;
    float *mn, *mx;
    int n_tok, hd, page;
} pb_ctx;
static int pb_launch(void *c)
{
    pb_ctx *a = c;
    return kw_k_page_bounds(KW_BK_CUDA, NULL, a->k, a->n_tok, a->hd, a->page, a->mn, a->mx);
}

typedef struct psc_ctx {
    const float *q, *mn, *mx;
    float *s;
    int n_q, hd, n_pages;
} psc_ctx;
static int psc_launch(void *c)
{
    psc_ctx *a = c;
    return kw_k_page_scores(KW_BK_CUDA, NULL, a->q, a->n_q, a->hd, a->mn, a->mx, a->n_pages,
                            a->s);
}

/* all (layer, KV head) tables as one run of tokens: page boundaries fall on table
 * boundaries since 32768 is a multiple of the page */
static void bench_pages(int tables)
{
    int hd = 128, page = 16, n_tok = tables * 32768, n_pages = n_tok / page;
    pb_ctx b = {.n_tok = n_tok, .hd = hd, .page = page};
    b.k = dev_random((size_t)n_tok * hd, -2.f, 4.f);
    CK(cudaMalloc((void **)&b.mn, (size_t)n_pages * hd * 4));
    CK(cudaMalloc((void **)&b.mx, (size_t)n_pages * hd * 4));
    float ms = time_ms(pb_launch, &b);
    char shape[96];
    snprintf(shape, sizeof shape, "tables=%d tok=32768 d=128 page=16", tables);
    row("page_bounds", shape, ms, (double)n_tok * hd * 4 + 2.0 * n_pages * hd * 4);
    /* decode: the 4 query heads of a KV head score every page of their table */
    psc_ctx s = {.mn = b.mn, .mx = b.mx, .n_q = 4, .hd = hd, .n_pages = n_pages};
    s.q = dev_random((size_t)4 * hd, -1.f, 2.f);
    CK(cudaMalloc((void **)&s.s, (size_t)4 * n_pages * 4));
    ms = time_ms(psc_launch, &s);
    snprintf(shape, sizeof shape, "q=4 tables=%d pages=%d d=128", tables, n_pages);
    row("page_scores", shape, ms, 2.0 * n_pages * hd * 4 + 4.0 * n_pages * 4);
    cudaFree((void *)b.k), cudaFree(b.mn), cudaFree(b.mx), cudaFree((void *)s.q), cudaFree(s.s);
}

typedef struct cp_ctx {
    kw_page_layout L;
    int n_tab;
    const int32_t *keep_off, *keep, *src_off, *src;
} cp_ctx;
static int cp_launch(void *c)
{
    cp_ctx *a = c;
    return kw_k_page_compact(KW_BK_CUDA, NULL, &a->L, a->n_tab, a->keep_off, a->keep,
                             a->src_off, a->src, a->src_off, a->src);
}

/* bf16 pool (P 16, head_dim 128), every table of 32768 tokens keeps 2048 at random, in
 * place; tables over shuffled pages */
static void bench_compact(int tables, int keep_n)
{
    int P = 16, hd = 128, n_tok = 32768, per = n_tok / P, n_pages = tables * per;
    int64_t page_bytes = 2 * (int64_t)P * hd * 2;
    cp_ctx a = {.n_tab = tables};
    a.L = (kw_page_layout){.page_bytes = page_bytes, .page_tokens = P, .row_bytes = 2 * hd};
    a.L.base = (uint8_t *)dev_random((size_t)n_pages * page_bytes / 4, 1e-3f, 1.f);
    CK(cudaMalloc((void **)&a.L.pos, (size_t)n_pages * P * 4));
    CK(cudaMemset(a.L.pos, 1, (size_t)n_pages * P * 4));
    int32_t *ko = malloc(4 * (size_t)(tables + 1)), *so = malloc(4 * (size_t)(tables + 1));
    int32_t *keep = malloc(4 * (size_t)tables * keep_n), *src = malloc(4 * (size_t)n_pages);
    for (int i = 0; i < n_pages; i++)
        src[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = (int)(uni() * (i + 1)), x = src[i];
        src[i] = src[j], src[j] = x;
    }
    char *mark = malloc((size_t)n_tok);
    for (int t = 0; t <= tables; t++)
        ko[t] = t * keep_n, so[t] = t * per;
    for (int t = 0; t < tables; t++) {
        memset(mark, 0, (size_t)n_tok);
        for (int m = 0; m < keep_n;) {
            int j = (int)(uni() * n_tok);
            m += !mark[j];
            mark[j] = 1;
        }
        for (int j = 0, m = 0; j < n_tok; j++)
            if (mark[j])
                keep[t * keep_n + m++] = j;
    }
    int32_t *d[4];
    const int32_t *h[4] = {ko, keep, so, src};
    size_t nb[4] = {4 * (size_t)(tables + 1), 4 * (size_t)tables * keep_n,
                    4 * (size_t)(tables + 1), 4 * (size_t)n_pages};
    for (int i = 0; i < 4; i++) {
        CK(cudaMalloc((void **)&d[i], nb[i]));
        CK(cudaMemcpy(d[i], h[i], nb[i], cudaMemcpyHostToDevice));
    }
    a.keep_off = d[0], a.keep = d[1], a.src_off = d[2], a.src = d[3];
    float ms = time_ms(cp_launch, &a);
    char shape[96];
    snprintf(shape, sizeof shape, "bf16 tables=%d tok=32768 keep=%d d=128 P=16", tables,
             keep_n);
    /* each kept token: K and V rows and a position read and written, plus keep */
    double bytes = (double)tables * keep_n * (2.0 * (2 * hd * 2 + 4) + 4);
    row("page_compact", shape, ms, bytes);
    for (int i = 0; i < 4; i++)
        cudaFree(d[i]);
    cudaFree(a.L.base), cudaFree(a.L.pos);
    free(ko), free(so), free(keep), free(src), free(mark);
}

int main(void)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    bw = kwb_copy_bandwidth();
    printf("copy_bandwidth_GBps,%.1f\n", bw / 1e9);
    printf("bench,shape,ms,MB,floor_ms,GBps,pct_floor\n");
    bench_window(1);
    bench_window(32);
    bench_pool(5, KW_POOLING_AVG);
    bench_pool(7, KW_POOLING_MAX);
    bench_topk(256, 32768, 2048);
    bench_topk(8, 32768, 2048);
    bench_topk(256, 2048, 128); /* Quest: 128 of 2048 pages per query group */
    bench_pages(1);
    bench_pages(256);
    bench_compact(256, 2048);
    bench_compact(8, 2048);
    return 0;
}
