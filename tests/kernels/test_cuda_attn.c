/* CUDA decode attention over views against a plain double-precision reference: random
 * pools (f32, bf16 and int8 pages), dense, token-level and page-level views, and dense
 * views in table mode (page lists and row lengths), rows per KV head (g = 2, 4, 8) and per
 * query head (g = 1), masked positions, empty rows, and rows long enough to be split.
 * Int8 pages: rows of random magnitudes quantized as the host pool does (kvpool.c), the
 * reference on their dequantized values (scale x int8, as the CPU engine reads them), span
 * views reading both pools, pages of 16, 6 and 2 tokens (6: not a power of two). Poisoned
 * outputs. Without a CUDA device only the host-side plans and the launchers' argument
 * checks run, then 77 (skip). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels_cuda.h"
#include "kvweave/status.h"
#include "kvweave/tensor.h"
#include "kvweave/util.h"

static uint64_t rng = 0x51a7e5ull;
static double uni(void)
{
    return (double)(kw_splitmix64(&rng) >> 11) * 0x1.0p-53;
}
static int irand(int n) { return (int)(uni() * n); }

/* bf16 round to nearest even, and back (test-local: no dependency on the loaders) */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void *dev(const void *h, size_t bytes)
{
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 4) != cudaSuccess ||
        (h && bytes && cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess)) {
        fprintf(stderr, "cuda alloc/copy failed\n");
        exit(1);
    }
    return d;
}

enum { KV_F32 = 0, KV_BF16 = 1, KV_I8 = 2 };
static const char *const kv_name[] = {"f32 ", "bf16", "int8"};

/* One row quantized as kvpool.c's row_put does: absmax, scale absmax / 127, int8 =
 * lrintf(x * 127 / absmax) clamped to [-127, 127]. */
static float quant_row(const float *x, int n, int8_t *q)
{
    float mx = 0.f;
    for (int i = 0; i < n; i++)
        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    float sc = mx / 127.f, inv = mx > 0.f ? 127.f / mx : 0.f;
    for (int i = 0; i < n; i++) {
        long v = lrintf(x[i] * inv);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return sc;
}

/* A random pool of n_pages pages of P tokens. dev: its device bytes in the layout of type
 * kv; kv: the values the kernel should see (bf16-rounded for bf16, scale x int8 for int8,
 * K (P, D) then V (P, D) per page). Int8 rows get magnitudes from 1/8 to 8, so the
 * scales differ from row to row. */
typedef struct pool {
    float *kv;
    uint8_t *dev;
    size_t dev_bytes;
} pool;

static pool make_pool(int kv, int P, int D, int n_pages)
{
    size_t n = (size_t)2 * P * D * n_pages, eb = kv == KV_F32 ? 4 : kv == KV_BF16 ? 2 : 1;
    pool pl = {malloc(sizeof(float) * n), NULL, 0};
    pl.dev_bytes = kv == KV_I8 ? (size_t)n_pages * (size_t)kw_cuda_i8_page_bytes(P, D) : n * eb;
    pl.dev = malloc(pl.dev_bytes);
    for (size_t i = 0; i < n; i++) {
        float x = (float)(uni() * 2 - 1);
        if (kv == KV_BF16) {
            ((uint16_t *)pl.dev)[i] = to_bf16(x);
            x = from_bf16(((uint16_t *)pl.dev)[i]);
        } else if (kv == KV_F32) {
            memcpy(pl.dev + 4 * i, &x, 4);
        }
        pl.kv[i] = x;
    }
    for (int pg = 0; kv == KV_I8 && pg < n_pages; pg++) {
        uint8_t *b = pl.dev + (size_t)pg * (size_t)kw_cuda_i8_page_bytes(P, D);
        float *sc = (float *)(void *)(b + (size_t)2 * P * D);
        for (int r = 0; r < 2 * P; r++) {
            float *x = pl.kv + ((size_t)pg * 2 * P + r) * D;
            float m = (float)exp2((uni() * 6 - 3)); /* 1/8 .. 8 */
            for (int d = 0; d < D; d++)
                x[d] *= m;
            int8_t *q = (int8_t *)b + (size_t)r * D;
            sc[r] = quant_row(x, D, q);
            for (int d = 0; d < D; d++)
                x[d] = sc[r] * (float)q[d]; /* as kw_kvmem_row reads it */
        }
    }
    return pl;
}

/* mode 0 dense pages, 1 token subset, 2 page subset (3: dense, passed in table mode);
 * rows of len tokens each; with two_pools a third of the spans read the temporary pool */
static int build_row(kw_cuda_span *spans, int n, int mode, int len, int P, int page0,
                     bool two_pools)
{
    int pages = (len + P - 1) / P;
    for (int p = 0; p < pages; p++) {
        int cnt = p == pages - 1 ? len - p * P : P;
        if (mode == 2 && uni() < 0.6)
            continue;
        if (mode == 1) {
            for (int c = 0; c < cnt; c++)
                if (uni() < 0.3)
                    spans[n++] = (kw_cuda_span){page0 + p, (uint16_t)c, 1,
                                                (uint8_t)(two_pools && uni() < 0.3)};
        } else {
            spans[n++] = (kw_cuda_span){page0 + p, 0, (uint16_t)cnt,
                                        (uint8_t)(two_pools && uni() < 0.3)};
        }
    }
    return n;
}

static int run_case(int D, int g, int kv, int mode, int n_rows, int len, int max_tokens, int P)
{
    int pages_per_row = (len + P - 1) / P, n_pages = n_rows * pages_per_row + 1;
    /* int8 span views read both pools (the temporary one holds other values) */
    const bool two = kv == KV_I8 && mode != 3;
    pool pl[2] = {make_pool(kv, P, D, n_pages), {0}};
    if (two)
        pl[1] = make_pool(kv, P, D, n_pages);
    int32_t *pos = malloc(sizeof(int32_t) * P * (size_t)n_pages);
    for (int i = 0; i < P * n_pages; i++)
        pos[i] = i % (P * pages_per_row);
    int32_t *row_ptr = malloc(sizeof(int32_t) * (n_rows + 1)), *q_row = malloc(4 * n_rows),
            *q_pos = malloc(4 * n_rows);
    kw_cuda_span *spans = malloc(sizeof(kw_cuda_span) * (size_t)n_rows * (len + 1));
    int ns = 0;
    row_ptr[0] = 0;
    for (int r = 0; r < n_rows; r++) {
        if (r % 7 != 3) /* every 7th row stays empty */
            ns = build_row(spans, ns, mode, len, P, r * pages_per_row, two);
        row_ptr[r + 1] = ns;
        q_row[r] = r * g;
        q_pos[r] = r % 3 == 0 ? len / 2 : len; /* some rows mask their later tokens */
    }
    int nq = n_rows * g;
    float *q = malloc(sizeof(float) * nq * D), *out = malloc(sizeof(float) * nq * D),
          *lse = malloc(sizeof(float) * nq);
    for (int i = 0; i < nq * D; i++)
        q[i] = (float)(uni() * 2 - 1);
    float scale = 1.0f / sqrtf((float)D);

    const bool table = mode == 3;
    int32_t *pages = malloc(sizeof(int32_t) * (size_t)(ns + 1)), *row_tok = malloc(4 * n_rows);
    for (int r = 0; r < n_rows; r++) { /* mode 3 builds dense rows: spans are whole pages */
        row_tok[r] = 0;
        for (int i = row_ptr[r]; i < row_ptr[r + 1]; i++)
            pages[i] = spans[i].page, row_tok[r] += spans[i].n;
    }
    int n_items = table ? kw_cuda_attn_plan_table_size(n_rows, row_tok, P, max_tokens)
                        : kw_cuda_attn_plan_size(n_rows, row_ptr, spans, max_tokens);
    int32_t *items = malloc(sizeof(int32_t) * 4 * n_items), *row_part = malloc(8 * n_rows);
    int n_parts = table ? kw_cuda_attn_plan_table(n_rows, row_tok, P, max_tokens, items, row_part)
                        : kw_cuda_attn_plan(n_rows, row_ptr, spans, max_tokens, items, row_part);

    kw_cuda_attn a = {0};
    a.base[0] = dev(pl[0].dev, pl[0].dev_bytes);
    a.pos[0] = dev(pos, 4 * (size_t)P * n_pages);
    if (two)
        a.base[1] = dev(pl[1].dev, pl[1].dev_bytes), a.pos[1] = a.pos[0];
    a.kv = kv == KV_F32 ? KW_CUDA_KV_F32 : kv == KV_BF16 ? KW_CUDA_KV_BF16 : KW_CUDA_KV_I8;
    a.page_tokens = P, a.head_dim = D, a.n_rows = n_rows, a.g_per_row = g;
    a.row_ptr = dev(row_ptr, 4 * (size_t)(n_rows + 1));
    a.spans = dev(spans, sizeof(kw_cuda_span) * (size_t)(ns ? ns : 1));
    a.q_row = dev(q_row, 4 * (size_t)n_rows), a.q_pos = dev(q_pos, 4 * (size_t)n_rows);
    a.q = dev(q, 4 * (size_t)nq * D);
    for (int i = 0; i < nq * D; i++)
        out[i] = NAN; /* poison */
    a.out = dev(out, 4 * (size_t)nq * D), a.lse = dev(out, 4 * (size_t)nq);
    a.scale = scale, a.n_items = n_items, a.items = dev(items, 16 * (size_t)n_items);
    a.row_part = dev(row_part, 8 * (size_t)n_rows), a.n_parts = n_parts;
    a.partial = dev(NULL, 4 * (size_t)(n_parts ? n_parts : 1) * g * (D + 2));
    if (table)
        a.pages = dev(pages, 4 * (size_t)(ns + 1)), a.row_tokens = dev(row_tok, 4 * (size_t)n_rows);
    int rc = kw_cuda_attn_decode(NULL, &a);
    cudaDeviceSynchronize();
    cudaMemcpy(out, a.out, 4 * (size_t)nq * D, cudaMemcpyDeviceToHost);
    cudaMemcpy(lse, a.lse, 4 * (size_t)nq, cudaMemcpyDeviceToHost);

    /* reference */
    double num = 0, den = 0, lse_err = 0;
    double *acc = malloc(sizeof(double) * D);
    for (int r = 0; r < n_rows; r++)
        for (int j = 0; j < g; j++) {
            const float *qq = q + (size_t)(q_row[r] + j) * D;
            double mx = -INFINITY, l = 0;
            memset(acc, 0, sizeof(double) * D);
            for (int pass = 0; pass < 2; pass++)
                for (int s = row_ptr[r]; s < row_ptr[r + 1]; s++)
                    for (int c = 0; c < spans[s].n; c++) {
                        int slot = spans[s].first + c, pg = spans[s].page;
                        if (pos[pg * P + slot] > q_pos[r])
                            continue;
                        const float *kvp = pl[spans[s].pool].kv;
                        const float *k = kvp + ((size_t)pg * 2 * P + slot) * D;
                        const float *v = kvp + ((size_t)pg * 2 * P + P + slot) * D;
                        double sc = 0;
                        for (int d = 0; d < D; d++)
                            sc += (double)qq[d] * k[d];
                        sc *= scale;
                        if (pass == 0) {
                            mx = sc > mx ? sc : mx;
                        } else {
                            double p = exp(sc - mx);
                            l += p;
                            for (int d = 0; d < D; d++)
                                acc[d] += p * v[d];
                        }
                    }
            const float *o = out + (size_t)(q_row[r] + j) * D;
            for (int d = 0; d < D; d++) {
                double ref = l > 0 ? acc[d] / l : 0;
                num += (o[d] - ref) * (o[d] - ref);
                den += ref * ref;
            }
            double lref = l > 0 ? mx + log(l) : -INFINITY;
            float lg = lse[q_row[r] + j];
            if (l > 0)
                lse_err = fmax(lse_err, fabs(lg - lref) / fmax(1, fabs(lref)));
            else if (!isinf(lg))
                lse_err = 1;
        }
    double err = sqrt(num / (den > 0 ? den : 1));
    /* The fixed grid of CUDA graphs: a larger n_items, the live count read from device
     * memory, the merge always launched; outputs must be bit-identical to the plain call
     * (the same items in the same arithmetic) over a poisoned output. */
    kw_cuda_attn fx = a;
    fx.live_items = dev(&n_items, 4);
    fx.n_items = 3 * n_items + 7, fx.n_parts = n_parts > 0 ? n_parts : 1;
    float *out2 = malloc(sizeof(float) * nq * D), *lse2 = malloc(sizeof(float) * nq);
    cudaMemset(fx.out, 0xff, 4 * (size_t)nq * D), cudaMemset(fx.lse, 0xff, 4 * (size_t)nq);
    int rc2 = kw_cuda_attn_decode(NULL, &fx);
    cudaDeviceSynchronize();
    cudaMemcpy(out2, fx.out, 4 * (size_t)nq * D, cudaMemcpyDeviceToHost);
    cudaMemcpy(lse2, fx.lse, 4 * (size_t)nq, cudaMemcpyDeviceToHost);
    int same = rc2 == 0 && memcmp(out, out2, 4 * (size_t)nq * D) == 0
               && memcmp(lse, lse2, 4 * (size_t)nq) == 0;
    /* bf16 output (the decode step's output-projection input): each value the
     * round-to-nearest-even bf16 of the f32 output, over a poisoned buffer */
    kw_cuda_attn bo = a;
    uint16_t *ob = malloc(2 * (size_t)nq * D);
    bo.out = NULL;
    cudaMalloc(&bo.out_bf16, 2 * (size_t)nq * D);
    cudaMemset(bo.out_bf16, 0xff, 2 * (size_t)nq * D);
    int rc3 = kw_cuda_attn_decode(NULL, &bo);
    cudaDeviceSynchronize();
    cudaMemcpy(ob, bo.out_bf16, 2 * (size_t)nq * D, cudaMemcpyDeviceToHost);
    int bf_same = rc3 == 0;
    for (size_t i = 0; bf_same && i < (size_t)nq * D; i++)
        bf_same = ob[i] == kw_f32_to_bf16(out[i]);
    same = same && bf_same;
    cudaFree(bo.out_bf16), free(ob);
    /* early starts (table mode): a block's first tiles copied in two parts, the rows before
     * each row's last `early` tokens first; the same arithmetic, so identical outputs, for
     * a last part of 1 token and of 37 (more than a page, fewer than a tile) */
    for (int k = 1; k <= 37 && same; k += 36) {
        kw_cuda_attn ea = a;
        ea.early = k;
        cudaMemset(ea.out, 0xff, 4 * (size_t)nq * D);
        int rc5 = kw_cuda_attn_decode(NULL, &ea);
        cudaDeviceSynchronize();
        cudaMemcpy(out2, ea.out, 4 * (size_t)nq * D, cudaMemcpyDeviceToHost);
        same = rc5 == 0 && memcmp(out, out2, 4 * (size_t)nq * D) == 0;
    }
    cudaFree((void *)fx.live_items);
    free(out2), free(lse2);
    /* f32 pages: f32 math throughout. bf16 pages: tensor cores with q and the
     * probabilities rounded to bf16 (relative 2^-9 each). int8 pages: the same tensor-core
     * path on exact bf16 copies of the int8 values, with the probabilities times the V
     * scales rounded to bf16; against the dequantized values */
    double bound = kv == KV_I8 ? 1e-2 : kv == KV_BF16 ? 5e-3 : 1e-5;
    int ok = rc == 0 && err < bound && lse_err < bound && same;
    int n_tmp = 0;
    for (int i = 0; i < ns; i++)
        n_tmp += spans[i].pool;
    printf("%s attn D=%d g=%d %s %-6s P=%d rows=%d len=%d spans=%d (temporary pool %d) "
           "items=%d parts=%d rel_l2=%.3g lse=%.2g (bound %.0e) fixed-grid, bf16 out and "
           "early starts %s%s%s\n",
           ok ? "ok  " : "FAIL", D, g, kv_name[kv],
           mode == 0 ? "dense" : mode == 1 ? "tokens" : mode == 2 ? "pages" : "table", P, n_rows,
           len, ns, n_tmp, n_items, n_parts, err, lse_err, bound, same ? "identical" : "DIFFERS",
           rc ? " " : "", rc ? kw_cuda_last_error() : "");
    cudaFree((void *)a.base[0]), cudaFree((void *)a.base[1]), cudaFree((void *)a.pos[0]);
    cudaFree((void *)a.row_ptr);
    cudaFree((void *)a.spans), cudaFree((void *)a.q_row), cudaFree((void *)a.q_pos);
    cudaFree((void *)a.q), cudaFree(a.out), cudaFree(a.lse), cudaFree((void *)a.items);
    cudaFree((void *)a.row_part), cudaFree(a.partial), cudaFree((void *)a.pages);
    cudaFree((void *)a.row_tokens);
    free(pages), free(row_tok);
    for (int b = 0; b < 2; b++)
        free(pl[b].kv), free(pl[b].dev);
    free(pos), free(row_ptr), free(q_row), free(q_pos), free(spans);
    free(q), free(out), free(lse), free(items), free(row_part), free(acc);
    return !ok;
}

/* The host-side plans (no device needed): every row's spans or tokens covered exactly
 * once, in order, by items of at most the item size (a span is never cut), parts numbered
 * 0.. with row_part pointing at each split row's run of parts. */
static int check_plans(void)
{
    int bad = 0;
    for (int trial = 0; trial < 200; trial++) {
        int n_rows = 1 + irand(40), max_tok = 1 + irand(2000);
        int32_t *row_ptr = malloc(4 * (size_t)(n_rows + 1)), *row_tok = malloc(4 * (size_t)n_rows);
        kw_cuda_span *sp = malloc(sizeof *sp * (size_t)n_rows * 64);
        int ns = 0;
        row_ptr[0] = 0;
        for (int r = 0; r < n_rows; r++) {
            int k = irand(64);
            row_tok[r] = irand(5) ? irand(20000) : 0;
            for (int i = 0; i < k; i++)
                sp[ns++] = (kw_cuda_span){irand(1000), 0, (uint16_t)(1 + irand(255)), 0};
            row_ptr[r + 1] = ns;
        }
        for (int table = 0; table < 2; table++) {
            int n = table ? kw_cuda_attn_plan_table_size(n_rows, row_tok, 16, max_tok)
                          : kw_cuda_attn_plan_size(n_rows, row_ptr, sp, max_tok);
            int32_t *it = malloc(16 * (size_t)n + 16), *rp = malloc(8 * (size_t)n_rows);
            int parts = table ? kw_cuda_attn_plan_table(n_rows, row_tok, 16, max_tok, it, rp)
                              : kw_cuda_attn_plan(n_rows, row_ptr, sp, max_tok, it, rp);
            int cap = table ? (max_tok < 32 ? 32 : max_tok / 32 * 32) : max_tok;
            int k = 0, next_part = 0;
            for (int r = 0; r < n_rows && !bad; r++) {
                int pos = table ? 0 : row_ptr[r], end = table ? row_tok[r] : row_ptr[r + 1];
                int first = k;
                do {
                    if (k >= n || it[4 * k] != r || it[4 * k + 1] != pos || it[4 * k + 2] < pos) {
                        bad = 1;
                        break;
                    }
                    int size = 0;
                    if (table)
                        size = it[4 * k + 2] - pos;
                    else
                        for (int j = pos; j < it[4 * k + 2]; j++)
                            size += sp[j].n;
                    if (size > cap && it[4 * k + 2] - pos > 1)
                        bad = 1;
                    pos = it[4 * k + 2];
                    k++;
                } while (pos < end && !bad);
                int cnt = k - first;
                if (cnt > 1) {
                    if (rp[2 * r] != next_part || rp[2 * r + 1] != cnt)
                        bad = 1;
                    for (int i = first; i < k; i++)
                        bad |= it[4 * i + 3] != next_part++;
                } else {
                    bad |= rp[2 * r + 1] != 0 || (k > first && it[4 * first + 3] != -1);
                }
            }
            bad |= k != n || parts != next_part;
            if (bad)
                printf("FAIL plan (%s) trial %d: rows=%d max_tokens=%d items=%d parts=%d\n",
                       table ? "table" : "spans", trial, n_rows, max_tok, n, parts);
            free(it), free(rp);
            if (bad)
                break;
        }
        free(row_ptr), free(row_tok), free(sp);
        if (bad)
            break;
    }
    printf("%s attention plans: 200 random row sets, span and table plans\n", bad ? "FAIL" : "ok  ");
    return bad;
}

/* Item sizes (kw_cuda_attn_plan_tokens): multiples of 64 within [64, cap]; equal rows
 * fill whole waves: batch 1 (8 rows of 32k on 264 blocks) gets one wave of at least 200
 * long items, not four waves of short ones; on random row sets the chosen size costs at
 * most 1.25x the best multiple of 64 under the planner's cost model (waves x (size +
 * 192)), found by trying them all. */
static int check_item_sizes(void)
{
    int bad = 0;
    int32_t eight[8], sixty4[64];
    for (int r = 0; r < 64; r++)
        sixty4[r] = 131072, eight[r % 8] = 32768;
    int t = kw_cuda_attn_plan_tokens(8, eight, 264, 0);
    int n = kw_cuda_attn_plan_table_size(8, eight, 16, t);
    if (t % 64 || n > 264 || n < 200) {
        printf("FAIL item size: 8 rows of 32768 on 264 blocks: %d tokens, %d items\n", t, n);
        bad = 1;
    }
    t = kw_cuda_attn_plan_tokens(64, sixty4, 264, 0);
    n = kw_cuda_attn_plan_table_size(64, sixty4, 16, t);
    if (t % 64 || n % 64 || n > 4 * 264) {
        printf("FAIL item size: 64 rows of 131072 on 264 blocks: %d tokens, %d items\n", t, n);
        bad = 1;
    }
    double worst = 1;
    for (int trial = 0; trial < 300 && !bad; trial++) {
        int rows = 1 + irand(60), slots = 1 + irand(600), cap = irand(3) ? 0 : 64 + irand(2000);
        int32_t len[60];
        int maxlen = 0;
        for (int r = 0; r < rows; r++) {
            len[r] = irand(4) ? irand(20000) : irand(100);
            maxlen = len[r] > maxlen ? len[r] : maxlen;
        }
        t = kw_cuda_attn_plan_tokens(rows, len, slots, cap);
        int lim = cap ? (cap / 64 * 64 < 64 ? 64 : cap / 64 * 64) : maxlen + 64;
        int64_t best = INT64_MAX, got = 0;
        for (int c = 64; c <= lim; c += 64) { /* every size, under the same cost model */
            int64_t w = (kw_cuda_attn_plan_table_size(rows, len, 16, c) + slots - 1) / slots;
            best = w * (c + 192) < best ? w * (c + 192) : best;
            if (c == t)
                got = w * (c + 192);
        }
        if (got > 0 && (double)got / best > worst)
            worst = (double)got / best;
        if (t % 64 || t < 64 || t > lim || got == 0 || got > best * 5 / 4) {
            printf("FAIL item size trial %d: rows=%d slots=%d cap=%d: %d tokens, cost %lld, "
                   "best %lld\n", trial, rows, slots, cap, t, (long long)got, (long long)best);
            bad = 1;
        }
    }
    printf("    item sizes: worst cost %.3fx the best size's over 300 random row sets\n", worst);
    printf("%s attention item sizes: batch-1 and batch-8 shapes, 300 random row sets\n",
           bad ? "FAIL" : "ok  ");
    return bad;
}

/* The prefill launcher's argument checks, which come before any device call (so they run
 * without a GPU): an empty call with valid arguments is KW_OK under every kernel choice;
 * an unknown kernel choice, or a head_dim the kernels lack, is KW_EINVAL. */
static int check_prefill_args(void)
{
    static int32_t ints[16];
    static kw_cuda_span span;
    static float f[32] __attribute__((aligned(16)));
    kw_cuda_prefill a = {0};
    a.base[0] = a.base[1] = f, a.pos[0] = a.pos[1] = ints;
    a.kv = KW_CUDA_KV_BF16, a.page_tokens = 16, a.head_dim = 128;
    a.n_head = 8, a.n_kv = 2, a.n_seq = 1;
    a.tok_off = a.row_ptr = a.q_pos = a.items = ints;
    a.spans = &span, a.q = f, a.out = f, a.scale = 1.f, a.n_items = 0;
    int fails = 0;
    struct { int kernel, head_dim, want; } cases[] = {
        {KW_CUDA_PREFILL_AUTO, 128, KW_OK}, {KW_CUDA_PREFILL_MMA, 64, KW_OK},
        {KW_CUDA_PREFILL_WGMMA, 128, KW_OK}, {KW_CUDA_PREFILL_CUDNN, 128, KW_OK},
        {KW_CUDA_PREFILL_CUDNN + 1, 128, KW_EINVAL},
        {-1, 128, KW_EINVAL}, {KW_CUDA_PREFILL_AUTO, 96, KW_EINVAL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        a.kernel = cases[i].kernel, a.head_dim = cases[i].head_dim;
        int rc = kw_cuda_attn_prefill(NULL, &a);
        if (rc != cases[i].want) {
            printf("FAIL prefill args: kernel %d head_dim %d gave %d, want %d\n", a.kernel,
                   a.head_dim, rc, cases[i].want);
            fails++;
        }
    }
    if (!fails)
        printf("ok   prefill launcher argument checks (%zu cases)\n", sizeof cases / sizeof *cases);
    /* kernel names (KVWEAVE_CUDA_PREFILL) and which kernels can run for a head_dim */
    struct { const char *name; int want; } names[] = {
        {"auto", KW_CUDA_PREFILL_AUTO}, {"mma", KW_CUDA_PREFILL_MMA},
        {"wgmma", KW_CUDA_PREFILL_WGMMA}, {"cudnn", KW_CUDA_PREFILL_CUDNN}, {"wgmma_ws", -1},
        {"WGMMA", -1}, {"wgmma ", -1}, {"", -1}, {NULL, -1}};
    int nfail = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (kw_cuda_prefill_kernel_parse(names[i].name) != names[i].want) {
            printf("FAIL prefill kernel name '%s' gave %d, want %d\n",
                   names[i].name ? names[i].name : "(null)",
                   kw_cuda_prefill_kernel_parse(names[i].name), names[i].want);
            nfail++;
        }
    if (!kw_cuda_prefill_kernel_runs(KW_CUDA_PREFILL_AUTO, 64) ||
        !kw_cuda_prefill_kernel_runs(KW_CUDA_PREFILL_MMA, 128) ||
        kw_cuda_prefill_kernel_runs(KW_CUDA_PREFILL_AUTO, 96) ||
        kw_cuda_prefill_kernel_runs(KW_CUDA_PREFILL_WGMMA, 64) ||
        kw_cuda_prefill_kernel_runs(KW_CUDA_PREFILL_CUDNN + 1, 128)) {
        printf("FAIL prefill kernel runs: a kernel said to run where it cannot, or not to "
               "run where it always can\n");
        nfail++;
    }
    if (!nfail)
        printf("ok   prefill kernel names and head_dim limits (%zu names)\n",
               sizeof names / sizeof *names);
    return fails + nfail;
}

/* The int8 launchers' argument checks (before any device call): the decode kernel and
 * the prefill gather refuse odd page sizes (rows would not start on 16-byte lines) and
 * misaligned pools, the gather head_dims that are not a multiple of 16, the appends odd
 * head_dims; empty calls with valid arguments are KW_OK. */
static int check_i8_args(void)
{
    static int32_t ints[16];
    static float f[64] __attribute__((aligned(16)));
    kw_cuda_attn a = {0};
    a.base[0] = f, a.pos[0] = ints, a.kv = KW_CUDA_KV_I8, a.page_tokens = 7, a.head_dim = 128;
    a.n_rows = 0, a.g_per_row = 4, a.out = f;
    int fails = 0;
    typedef struct { const char *what; int got, want; } argcase;
    argcase c[8];
    int n = 0;
    c[n++] = (argcase){"decode, 7-token pages", kw_cuda_attn_decode(NULL, &a), KW_EINVAL};
    a.page_tokens = 16, a.base[0] = (const uint8_t *)f + 4;
    c[n++] = (argcase){"decode, pool not 16-byte aligned", kw_cuda_attn_decode(NULL, &a),
                            KW_EINVAL};
    c[n++] = (argcase){"gather, 7-token pages",
                            kw_cuda_rows_i8_to_bf16(NULL, f, ints, 7, 128, 0, ints, ints, ints,
                                                    ints, 0, f, ints), KW_EINVAL};
    c[n++] = (argcase){"gather, head_dim 72",
                            kw_cuda_rows_i8_to_bf16(NULL, f, ints, 16, 72, 0, ints, ints, ints,
                                                    ints, 0, f, ints), KW_EINVAL};
    c[n++] = (argcase){"gather, empty",
                            kw_cuda_rows_i8_to_bf16(NULL, f, ints, 16, 128, 0, ints, ints, ints,
                                                    ints, 0, f, ints), KW_OK};
    c[n++] = (argcase){"append, head_dim 63",
                            kw_cuda_kv_append_i8(NULL, f, ints, 16, 63, 1, 1, f, f, ints, ints),
                            KW_EINVAL};
    c[n++] = (argcase){"rope append, head_dim 63",
                            kw_cuda_rope_append_i8(NULL, f, f, f, ints, 1, 2, 1, 63, f, 1, f,
                                                   ints, 16, ints), KW_EINVAL};
    for (int i = 0; i < n; i++)
        if (c[i].got != c[i].want) {
            printf("FAIL int8 args: %s gave %d, want %d\n", c[i].what, c[i].got, c[i].want);
            fails++;
        }
    if (!fails)
        printf("ok   int8 launcher argument checks (%d cases)\n", n);
    return fails;
}

int main(void)
{
    if (check_plans() | check_item_sizes() | check_prefill_args() | check_i8_args())
        return 1;
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device found; the CUDA kernels were compiled and linked only "
               "(the host-side plans were checked)\n");
        return 77;
    }
    int fails = 0, cases = 0;
    for (int kv = KV_F32; kv <= KV_I8; kv++)
        for (int mode = 0; mode < (kv != KV_F32 ? 4 : 3); mode++) { /* table: bf16 and int8 */
            fails += run_case(128, 4, kv, mode, 8 + irand(20), 50 + irand(600), 256, 16);
            fails += run_case(64, 1, kv, mode, 16 + irand(30), 30 + irand(300), 128, 16);
            fails += run_case(128, 8, kv, mode, 2, 4000 + irand(1000), 512, 16); /* split rows */
            fails += run_case(128, 2, kv, mode, 5, 1 + irand(40), 64, 16);
            fails += run_case(64, 4, kv, mode, 3, 900 + irand(400), 200, 16);
            fails += run_case(64, 8, kv, mode, 4, 20 + irand(100), 32, 16);
            fails += run_case(128, 1, kv, mode, 6, 700 + irand(700), 320, 16);
            cases += 7;
            if (kv == KV_I8) { /* pages of 6 and 2 tokens: page and slot by division */
                fails += run_case(128, 4, kv, mode, 6, 300 + irand(900), 256, 6);
                fails += run_case(64, 2, kv, mode, 9, 40 + irand(300), 128, 6);
                fails += run_case(128, 8, kv, mode, 2, 3000 + irand(500), 384, 6); /* split */
                fails += run_case(128, 1, kv, mode, 4, 100 + irand(200), 64, 2);
                cases += 4;
            }
        }
    printf("cuda attention: %d of %d cases failed\n", fails, cases);
    return fails ? 1 : 0;
}
