/* Decode attention over views on the GPU: dense, token-level (25%) and page-level (25%)
 * views of a bf16 paged pool, 32 query / 8 KV heads, head_dim 128, batch 1 and 8,
 * contexts 4k..128k, and the dense view in table mode (the engine's dense decode) over
 * bf16 pages and over int8 pages (view table_i8: its bytes are the int8 rows, scales and
 * positions read, about half of bf16's, so its % of copy bandwidth compares it with the
 * device, and its ms with table's: int8 pages pay off where they run faster). Times
 * with CUDA events (warm-up, median of repeats of 16 calls back to back) and reports
 * achieved bytes/s against the measured device-to-device copy bandwidth
 * (kwb_copy_bandwidth). Prints one CSV line per case (header first). A benchmark, never a
 * test. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "cuda/kernels_cuda.h"

#define CK KWB_CK

static uint64_t rng = 7;
static double uni(void)
{
    return kwb_uni(&rng);
}

static int run_decode(void *arg)
{
    return kw_cuda_attn_decode(NULL, (const kw_cuda_attn *)arg);
}

/* mode 0 dense, 1 token-level 25%, 2 page-level 25%, 3 dense in table mode (page lists),
 * 4 the same over int8 pages */
static void bench(int B, int ctx, int mode, double bw)
{
    const int P = 16, D = 128, HKV = 8, G = 4, pages_row = ctx / P;
    const int n_rows = B * HKV, i8 = mode == 4, table = mode >= 3;
    size_t n_pages = (size_t)n_rows * pages_row;
    /* bf16: pages of 2P rows of D; int8: the host pool's int8 page (K and V rows as int8,
     * then a float scale per row) */
    const size_t page_bytes = i8 ? (size_t)kw_cuda_i8_page_bytes(P, D) : (size_t)2 * P * D * 2;
    const size_t chunk_pages = 256, pool_bytes = n_pages * page_bytes;
    unsigned char *h = malloc(chunk_pages * page_bytes);
    for (size_t pg = 0; pg < chunk_pages; pg++) {
        unsigned char *hb = h + pg * page_bytes;
        if (i8) {
            for (int i = 0; i < 2 * P * D; i++)
                hb[i] = (unsigned char)(int)(uni() * 255 - 127); /* int8 in [-127, 127] */
            for (int i = 0; i < 2 * P; i++) {
                float s = (float)(0.004 + 0.004 * uni());
                memcpy(hb + 2 * P * D + 4 * i, &s, 4);
            }
        } else {
            for (int i = 0; i < 2 * P * D; i++) { /* bf16 in [1, 2): not zeros */
                uint16_t v = (uint16_t)(0x3c00 + (int)(uni() * 512));
                memcpy(hb + 2 * i, &v, 2);
            }
        }
    }
    void *base;
    int32_t *pos;
    CK(cudaMalloc(&base, pool_bytes));
    for (size_t off = 0; off < pool_bytes; off += chunk_pages * page_bytes) {
        size_t n = pool_bytes - off < chunk_pages * page_bytes ? pool_bytes - off
                                                                : chunk_pages * page_bytes;
        CK(cudaMemcpy((unsigned char *)base + off, h, n, cudaMemcpyHostToDevice));
    }
    int32_t *hp = malloc(sizeof(int32_t) * n_pages * P);
    for (size_t i = 0; i < n_pages * P; i++)
        hp[i] = (int32_t)(i % ((size_t)pages_row * P));
    CK(cudaMalloc((void **)&pos, sizeof(int32_t) * n_pages * P));
    CK(cudaMemcpy(pos, hp, sizeof(int32_t) * n_pages * P, cudaMemcpyHostToDevice));

    int32_t *row_ptr = malloc(sizeof(int32_t) * (n_rows + 1)), *q_row = malloc(4 * n_rows),
            *q_pos = malloc(4 * n_rows);
    kw_cuda_span *sp = malloc(sizeof(kw_cuda_span) * (size_t)n_rows * ctx);
    size_t ns = 0, tokens = 0;
    row_ptr[0] = 0;
    for (int r = 0; r < n_rows; r++) {
        for (int p = 0; p < pages_row; p++) {
            int32_t page = r * pages_row + p;
            if (mode == 0 || table) {
                sp[ns++] = (kw_cuda_span){page, 0, (uint16_t)P, 0};
                tokens += P;
            } else if (mode == 2) {
                if (p % 4 == 0) {
                    sp[ns++] = (kw_cuda_span){page, 0, (uint16_t)P, 0};
                    tokens += P;
                }
            } else {
                for (int c = 0; c < P; c++)
                    if (uni() < 0.25) {
                        if (ns > (size_t)row_ptr[r] && sp[ns - 1].page == page &&
                            sp[ns - 1].first + sp[ns - 1].n == c)
                            sp[ns - 1].n++;
                        else
                            sp[ns++] = (kw_cuda_span){page, (uint16_t)c, 1, 0};
                        tokens++;
                    }
            }
        }
        row_ptr[r + 1] = (int32_t)ns;
        q_row[r] = r * G;
        q_pos[r] = ctx;
    }
    int32_t *pages = malloc(4 * (ns + 1)), *row_tok = malloc(4 * (size_t)n_rows);
    for (int r = 0; r < n_rows; r++) {
        row_tok[r] = 0;
        for (int i = row_ptr[r]; i < row_ptr[r + 1]; i++)
            pages[i] = sp[i].page, row_tok[r] += sp[i].n;
    }
    /* item size: as the engine plans (whole waves of the device's concurrent blocks), or
     * KW_BENCH_ITEM tokens */
    const char *ei = getenv("KW_BENCH_ITEM");
    int max_tok = ei && atoi(ei) > 0
                      ? atoi(ei)
                      : kw_cuda_attn_plan_tokens(n_rows, row_tok, kw_cuda_attn_slots_kv(D, i8 ? KW_CUDA_KV_I8 : KW_CUDA_KV_BF16),
                                                 table ? 0 : 768);
    int n_items = table ? kw_cuda_attn_plan_table_size(n_rows, row_tok, P, max_tok)
                            : kw_cuda_attn_plan_size(n_rows, row_ptr, sp, max_tok);
    int32_t *items = malloc(16 * (size_t)n_items), *row_part = malloc(8 * (size_t)n_rows);
    int n_parts = table ? kw_cuda_attn_plan_table(n_rows, row_tok, P, max_tok, items, row_part)
                            : kw_cuda_attn_plan(n_rows, row_ptr, sp, max_tok, items, row_part);

    kw_cuda_attn a = {0};
    a.base[0] = base, a.pos[0] = pos, a.kv = i8 ? KW_CUDA_KV_I8 : KW_CUDA_KV_BF16, a.page_tokens = P;
    a.head_dim = D, a.n_rows = n_rows, a.g_per_row = G, a.scale = 0.088f;
    a.n_items = n_items, a.n_parts = n_parts;
    void *d;
#define UP(field, hostp, bytes)                                                            \
    CK(cudaMalloc(&d, (bytes)));                                                           \
    CK(cudaMemcpy(d, (hostp), (bytes), cudaMemcpyHostToDevice));                           \
    a.field = d
    UP(row_ptr, row_ptr, 4 * (size_t)(n_rows + 1));
    UP(spans, sp, sizeof(kw_cuda_span) * ns);
    UP(q_row, q_row, 4 * (size_t)n_rows);
    UP(q_pos, q_pos, 4 * (size_t)n_rows);
    UP(items, items, 16 * (size_t)n_items);
    UP(row_part, row_part, 8 * (size_t)n_rows);
    if (table) {
        UP(pages, pages, 4 * (ns + 1));
        UP(row_tokens, row_tok, 4 * (size_t)n_rows);
    }
    float *hq = malloc(sizeof(float) * n_rows * G * D);
    for (int i = 0; i < n_rows * G * D; i++)
        hq[i] = (float)(uni() - 0.5);
    UP(q, hq, sizeof(float) * n_rows * G * D);
    CK(cudaMalloc((void **)&a.out, sizeof(float) * n_rows * G * D));
    CK(cudaMalloc((void **)&a.partial, sizeof(float) * (n_parts + 1) * G * (D + 2)));
    /* as the engine's decode steps: a call's first tiles start before the call ahead ends
     * (KW_BENCH_EARLY=0: not) */
    const char *ee = getenv("KW_BENCH_EARLY");
    a.early = ee && atoi(ee) == 0 ? 0 : 1;

    /* 16 calls back to back between two events: one call alone would also time the host
     * launching onto an idle GPU, several us of a 20-50 us call (bench_sdpa.py times
     * PyTorch the same way) */
    float ms = (float)kwb_time_ms_batch(run_decode, &a, 5, 15, 16);
    /* bytes read: K and V of every attended token (int8: and their two scales), positions,
     * spans or page ids */
    double bytes = (double)tokens * 2 * D * (i8 ? 1 : 2) + (double)tokens * (i8 ? 12 : 4)
                   + ns * (table ? 4 : sizeof(kw_cuda_span));
    double dense_bytes = (double)n_rows * ctx * 2 * D * 2;
    printf("attn_view,%s,%d,%d,%.4f,%.1f,%.1f,%.1f,%d,%d\n",
           mode == 0 ? "dense" : mode == 1 ? "tokens25" : mode == 2 ? "pages25"
           : mode == 3 ? "table" : "table_i8",
           B, ctx, ms,
           bytes / 1e6, bytes / (ms * 1e-3) / 1e9, 100.0 * bytes / (ms * 1e-3) / bw,
           n_items, n_parts);
    (void)dense_bytes;
    cudaFree(base), cudaFree(pos), cudaFree((void *)a.row_ptr), cudaFree((void *)a.spans);
    cudaFree((void *)a.q_row), cudaFree((void *)a.q_pos), cudaFree((void *)a.items);
    cudaFree((void *)a.row_part), cudaFree((void *)a.q), cudaFree(a.out), cudaFree(a.partial);
    cudaFree((void *)a.pages), cudaFree((void *)a.row_tokens), free(pages), free(row_tok);
    free(h), free(hp), free(row_ptr), free(q_row), free(q_pos), free(sp), free(items);
    free(row_part), free(hq);
}

int main(int argc, char **argv)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    double bw = kwb_copy_bandwidth();
    printf("copy_bandwidth_GBps,%.1f\n", bw / 1e9);
    /* launches overlap as in the engine's decode steps (KVWEAVE_CUDA_PDL decides if set) */
    if (kw_cuda_pdl_auto())
        kw_cuda_pdl_step(1);
    printf("pdl,%d\n", kw_cuda_pdl_on());
    printf("bench,view,batch,ctx,ms,MB,GBps,pct_copy_bw,items,parts\n");
    int max_ctx = argc > 1 ? atoi(argv[1]) : 131072;
    const char *only = getenv("KW_BENCH_ONLY"); /* "B,ctx,mode": one case (for profilers) */
    int ob, oc, om;
    if (only && sscanf(only, "%d,%d,%d", &ob, &oc, &om) == 3) {
        bench(ob, oc, om, bw);
        return 0;
    }
    for (int B = 1; B <= 8; B *= 8)
        for (int ctx = 4096; ctx <= max_ctx; ctx *= 2)
            for (int mode = 0; mode < 5; mode++)
                bench(B, ctx, mode, bw);
    return 0;
}
