/* CUDA selection and page kernels against the CPU plain references, on random shapes
 * and random data (never zeros), with poisoned outputs:
 *   window scores, average pooling, page scores: relative error bounds (float sums
 *     against double references), stated per check;
 *   max pooling, page bounds: bit-exact;
 *   top-k: exact indices, with heavy ties (-0 and +0 among them), infinities, k = 0,
 *     k = n, and a NaN row (k indices of -1);
 *   page compaction: bit-exact against kw_kvseq_keep on f32 and int8 pools (in place,
 *     ragged tables, partial last pages) and against the reference on bf16-sized rows
 *     into other pages;
 *   attention probabilities over a view (each query, summed, LSE) against a double
 *     reference on the same bf16 keys;
 *   host reads of page rows (bf16 and int8 pages, runs across pages): bit-exact.
 * Skipped (exit 77, with a line saying why) without a CUDA device. */
#include <cuda_runtime_api.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels_cuda.h"
#include "kernels.h"
#include "kvweave/kvpool.h"
#include "kvweave/util.h"

static uint64_t rng = 0x6a09e667f3bcc909ull;
static double uni(void)
{
    return (double)(kw_splitmix64(&rng) >> 11) * 0x1.0p-53;
}
static int irand(int lo, int hi) { return lo + (int)(uni() * (hi - lo + 1)); } /* [lo, hi] */

/* never zero: magnitude in [1e-3, scale] with a random sign when signed */
static float nz(float scale, int is_signed)
{
    float m = (float)(1e-3 + uni() * (scale - 1e-3));
    return is_signed && uni() < 0.5 ? -m : m;
}

static void *dput(const void *h, size_t bytes)
{
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess ||
        (bytes && cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess)) {
        fprintf(stderr, "cudaMalloc/cudaMemcpy of %zu bytes failed\n", bytes);
        exit(1);
    }
    return d;
}

static void dget(void *h, const void *d, size_t bytes)
{
    if (cudaDeviceSynchronize() != cudaSuccess ||
        (bytes && cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)) {
        fprintf(stderr, "cuda error: %s\n", cudaGetErrorString(cudaGetLastError()));
        exit(1);
    }
}

/* poisoned device output: NaN bytes for floats, 0x80808080 for indices */
static void *dpoison_byte(size_t bytes, int byte);
static void *dpoison(size_t bytes) { return dpoison_byte(bytes, 0xff); }
static void *dpoison_byte(size_t bytes, int byte)
{
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess)
        exit(1);
    cudaMemset(d, byte, bytes);
    return d;
}

/* worst measured error per kernel, printed at the end */
static double worst_ws, worst_avg, worst_ps;

static int report(const char *what, int rc, double err, double bound, const char *shape)
{
    int ok = rc == 0 && err <= bound;
    printf("%s %-12s %s err=%.3g (bound %.3g)%s%s\n", ok ? "ok  " : "FAIL", what, shape, err,
           bound, rc ? " rc: " : "", rc ? kw_cuda_last_error() : "");
    return !ok;
}

static int test_window_scores(void)
{
    int fails = 0;
    for (int trial = 0; trial < 12; trial++) {
        int n_q = irand(1, 40), n_kv = irand(1, 8), group = irand(1, 8), len = irand(1, 6000);
        int n_head = n_kv * group, n_key = trial % 3 ? irand(1, len) : len;
        size_t np = (size_t)n_q * n_head * len, no = (size_t)n_kv * n_key;
        float *p = malloc(np * 4), *g = malloc(no * 4 + 4), *r = malloc(no * 4 + 4);
        for (size_t i = 0; i < np; i++)
            p[i] = nz(1.f, 0);
        float *dp = dput(p, np * 4), *dout = dpoison(no * 4);
        int rc = kw_k_window_scores(KW_BK_CUDA, NULL, dp, n_q, n_head, len, group, n_key, dout);
        dget(g, dout, no * 4);
        kw_ref_window_scores(p, n_q, n_head, len, group, n_key, r);
        double err = 0; /* max relative error; every term is positive */
        for (size_t i = 0; i < no; i++) {
            double e = fabs((double)g[i] - r[i]) / r[i];
            err = e > err || isnan(g[i]) ? (isnan(g[i]) ? INFINITY : e) : err;
        }
        /* a float sum of m positive terms is within (m - 1) eps relative, plus the
         * final scaling and the reference's rounding to float */
        double bound = (n_q * group + 2) * (double)FLT_EPSILON;
        worst_ws = err > worst_ws ? err : worst_ws;
        char shape[96];
        snprintf(shape, sizeof shape, "q=%d heads=%d group=%d len=%d keys=%d", n_q, n_head,
                 group, len, n_key);
        fails += report("window", rc, err, bound, shape);
        cudaFree(dp), cudaFree(dout), free(p), free(g), free(r);
    }
    return fails;
}

static int test_pool1d(void)
{
    int fails = 0;
    for (int trial = 0; trial < 16; trial++) {
        int rows = irand(1, 24), n = irand(1, 7000);
        int kernel = trial % 4 == 3 ? irand(1, 300) : irand(1, 15);
        int is_signed = trial % 2;
        size_t tot = (size_t)rows * n;
        float *x = malloc(tot * 4), *g = malloc(tot * 4), *r = malloc(tot * 4);
        for (size_t i = 0; i < tot; i++)
            x[i] = nz(1.f, is_signed);
        float *dx = dput(x, tot * 4), *dout = dpoison(tot * 4);
        char shape[96];
        snprintf(shape, sizeof shape, "rows=%d n=%d kernel=%d %s", rows, n, kernel,
                 is_signed ? "signed" : "positive");
        /* max: bit-exact */
        int rc = kw_k_pool1d(KW_BK_CUDA, NULL, dx, rows, n, kernel, KW_POOLING_MAX, dout);
        dget(g, dout, tot * 4);
        kw_ref_pool1d(x, rows, n, kernel, KW_POOLING_MAX, r);
        fails += report("pool max", rc, memcmp(g, r, tot * 4) != 0, 0, shape);
        /* average: error over the window's sum of |x| / kernel */
        cudaMemset(dout, 0xff, tot * 4);
        rc = kw_k_pool1d(KW_BK_CUDA, NULL, dx, rows, n, kernel, KW_POOLING_AVG, dout);
        dget(g, dout, tot * 4);
        kw_ref_pool1d(x, rows, n, kernel, KW_POOLING_AVG, r);
        double err = 0;
        for (int row = 0; row < rows; row++)
            for (int i = 0; i < n; i++) {
                double a = 0;
                for (int t = 0; t < kernel; t++) {
                    int j = i - kernel / 2 + t;
                    a += j >= 0 && j < n ? fabs(x[(size_t)row * n + j]) : 0;
                }
                size_t at = (size_t)row * n + i;
                double e = fabs((double)g[at] - r[at]) / (a / kernel);
                err = isnan(g[at]) ? INFINITY : e > err ? e : err;
            }
        double bound = (kernel + 2) * (double)FLT_EPSILON;
        worst_avg = err > worst_avg ? err : worst_avg;
        fails += report("pool avg", rc, err, bound, shape);
        cudaFree(dx), cudaFree(dout), free(x), free(g), free(r);
    }
    return fails;
}

/* kinds of rows: distinct values, few values (heavy ties, -0 and +0 among them),
 * infinities mixed in, and all equal */
static void topk_fill(float *x, size_t n, int kind)
{
    static const float few[] = {0.5f, -0.25f, 0.0f, -0.0f, 3.0f, 0.5f, 1e-30f};
    for (size_t i = 0; i < n; i++) {
        if (kind == 0)
            x[i] = nz(4.f, 1);
        else if (kind == 1)
            x[i] = few[(int)(uni() * 7)];
        else if (kind == 2)
            x[i] = uni() < 0.05 ? (uni() < 0.5 ? INFINITY : -INFINITY) : nz(1.f, 1);
        else
            x[i] = 0.75f;
    }
}

static int test_topk(void)
{
    int fails = 0;
    for (int trial = 0; trial < 28; trial++) {
        int big = trial >= 20; /* long rows: checked against the CPU kernel */
        int rows = big ? irand(1, 6) : irand(1, 12), n = big ? irand(20000, 40000) : irand(1, 3000);
        int kind = trial % 4;
        int k = trial % 7 == 0 ? 0 : trial % 7 == 1 ? n : trial % 7 == 2 ? 1 : irand(0, n);
        if (big && trial % 2)
            k = n / 16;
        size_t tot = (size_t)rows * n, no = (size_t)rows * k;
        float *x = malloc(tot * 4);
        int32_t *g = malloc(no * 4 + 4), *r = malloc(no * 4 + 4);
        topk_fill(x, tot, kind);
        float *dx = dput(x, tot * 4);
        int32_t *di = dpoison_byte(no * 4, 0x80);
        int rc = kw_k_topk(KW_BK_CUDA, NULL, dx, rows, n, k, di);
        dget(g, di, no * 4);
        int rrc = 0;
        if (big)
            rrc = kw_k_topk(KW_BK_CPU, NULL, x, rows, n, k, r);
        else
            kw_ref_topk(x, rows, n, k, r);
        char shape[96];
        snprintf(shape, sizeof shape, "rows=%d n=%d k=%d %s vs %s", rows, n, k,
                 (const char *[]){"distinct", "ties", "inf", "all-equal"}[kind],
                 big ? "cpu" : "ref");
        fails += report("topk", rc | rrc, memcmp(g, r, no * 4) != 0, 0, shape);
        cudaFree(dx), cudaFree(di), free(x), free(g), free(r);
    }
    /* a NaN in row 1 of 3: that row gets -1s, the others their top-k */
    int rows = 3, n = 1000, k = 100;
    float *x = malloc((size_t)rows * n * 4);
    int32_t *g = malloc((size_t)rows * k * 4), *r = malloc((size_t)rows * k * 4);
    topk_fill(x, (size_t)rows * n, 0);
    x[n + 417] = NAN;
    float *dx = dput(x, (size_t)rows * n * 4);
    int32_t *di = dpoison_byte((size_t)rows * k * 4, 0x80);
    int rc = kw_k_topk(KW_BK_CUDA, NULL, dx, rows, n, k, di);
    dget(g, di, (size_t)rows * k * 4);
    kw_ref_topk(x, 1, n, k, r);
    kw_ref_topk(x + 2 * n, 1, n, k, r + 2 * k);
    int bad = memcmp(g, r, (size_t)k * 4) != 0 || memcmp(g + 2 * k, r + 2 * k, (size_t)k * 4);
    for (int i = 0; i < k; i++)
        bad |= g[k + i] != -1;
    fails += report("topk nan", rc, bad, 0, "rows=3 n=1000 k=100, NaN in row 1 -> -1s");
    cudaFree(dx), cudaFree(di), free(x), free(g), free(r);
    return fails;
}

static int test_page_bounds_scores(void)
{
    static const int dims[] = {64, 128, 96, 3, 256};
    static const int pages[] = {16, 1, 7, 32, 16};
    int fails = 0;
    for (int trial = 0; trial < 15; trial++) {
        int hd = dims[trial % 5], page = pages[(trial / 5 + trial) % 5];
        int n_tok = irand(1, 6000), n_q = irand(1, 32);
        int n_pages = (n_tok + page - 1) / page;
        size_t nk = (size_t)n_tok * hd, nb = (size_t)n_pages * hd, ns = (size_t)n_q * n_pages;
        float *k = malloc(nk * 4), *q = malloc((size_t)n_q * hd * 4);
        float *mn = malloc(nb * 4), *mx = malloc(nb * 4), *rmn = malloc(nb * 4),
              *rmx = malloc(nb * 4), *s = malloc(ns * 4), *rs = malloc(ns * 4);
        for (size_t i = 0; i < nk; i++)
            k[i] = nz(3.f, 1);
        for (size_t i = 0; i < (size_t)n_q * hd; i++)
            q[i] = nz(2.f, 1);
        float *dk = dput(k, nk * 4), *dq = dput(q, (size_t)n_q * hd * 4);
        float *dmn = dpoison(nb * 4), *dmx = dpoison(nb * 4), *ds = dpoison(ns * 4);
        char shape[96];
        snprintf(shape, sizeof shape, "tok=%d d=%d page=%d (last page %d rows) q=%d", n_tok,
                 hd, page, n_tok - (n_pages - 1) * page, n_q);
        int rc = kw_k_page_bounds(KW_BK_CUDA, NULL, dk, n_tok, hd, page, dmn, dmx);
        dget(mn, dmn, nb * 4);
        dget(mx, dmx, nb * 4);
        kw_ref_page_bounds(k, n_tok, hd, page, rmn, rmx);
        fails += report("page bounds", rc,
                        memcmp(mn, rmn, nb * 4) != 0 || memcmp(mx, rmx, nb * 4) != 0, 0, shape);
        /* scores from the device's bounds (equal to the reference's, checked above) */
        rc = kw_k_page_scores(KW_BK_CUDA, NULL, dq, n_q, hd, dmn, dmx, n_pages, ds);
        dget(s, ds, ns * 4);
        kw_ref_page_scores(q, n_q, hd, rmn, rmx, n_pages, rs);
        double err = 0; /* over sum_i |max(q_i min_i, q_i max_i)|: terms of both signs */
        for (int h = 0; h < n_q; h++)
            for (int p = 0; p < n_pages; p++) {
                double a = 0;
                for (int i = 0; i < hd; i++) {
                    double qi = q[(size_t)h * hd + i];
                    a += fabs(fmax(qi * rmn[(size_t)p * hd + i], qi * rmx[(size_t)p * hd + i]));
                }
                size_t at = (size_t)h * n_pages + p;
                double e = fabs((double)s[at] - rs[at]) / a;
                err = isnan(s[at]) ? INFINITY : e > err ? e : err;
            }
        double bound = (hd + 2) * (double)FLT_EPSILON;
        worst_ps = err > worst_ps ? err : worst_ps;
        fails += report("page scores", rc, err, bound, shape);
        cudaFree(dk), cudaFree(dq), cudaFree(dmn), cudaFree(dmx), cudaFree(ds);
        free(k), free(q), free(mn), free(mx), free(rmn), free(rmx), free(s), free(rs);
    }
    return fails;
}

/* random strictly increasing subset of [0, n) of about `frac` of it; some tables keep
 * everything, none, or only a prefix */
static int random_keep(int n, int mode, int32_t *keep)
{
    int m = 0;
    double frac = uni();
    for (int j = 0; j < n; j++)
        if (mode == 0 ? uni() < frac : mode == 1 ? 1 : mode == 2 ? 0 : j < n / 3)
            keep[m++] = j;
    return m;
}

/* In place against kw_kvseq_keep: the pool's arena goes to the device, every (layer,
 * KV head) table is compacted in one call, then the CPU pool runs kw_kvseq_keep and the
 * kept slots (K, V, scales, positions) must match byte for byte. */
static int test_compact_vs_keep(kw_kvdtype dtype, int P, int hd)
{
    kw_model_config cfg = {.n_layer = 3, .n_head = 8, .n_head_kv = 4, .head_dim = hd};
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = P;
    o.n_pages = 4096;
    o.dtype = dtype;
    kw_kvpool *pool;
    kw_error err = {0};
    if (kw_kvpool_new(&cfg, &o, &pool, &err) < 0) {
        printf("FAIL compact: kw_kvpool_new: %s\n", err.msg);
        return 1;
    }
    kw_kvseq *s = kw_kvseq_new(pool);
    int n_kv = cfg.n_head_kv, n_tab = cfg.n_layer * n_kv;
    for (int l = 0; l < cfg.n_layer; l++) {
        int n_tok = irand(1, 700);
        float *k = malloc((size_t)n_tok * n_kv * hd * 4), *v = malloc((size_t)n_tok * n_kv * hd * 4);
        int32_t *pos = malloc((size_t)n_tok * 4);
        for (size_t i = 0; i < (size_t)n_tok * n_kv * hd; i++)
            k[i] = nz(2.f, 1), v[i] = nz(2.f, 1);
        for (int t = 0; t < n_tok; t++)
            pos[t] = 1000 * l + 3 * t + 1;
        kw_kvseq_append(s, l, k, v, pos, n_tok);
        free(k), free(v), free(pos);
    }
    kw_kvmem m = kw_kvpool_mem(pool);
    size_t arena = (size_t)o.n_pages * m.page_bytes[0], posb = (size_t)o.n_pages * P * 4;
    int32_t keep_off[64], src_off[64], *keep = malloc(sizeof(int32_t) * 3 * 700 * 4),
                                       *src = malloc(sizeof(int32_t) * 4096);
    keep_off[0] = src_off[0] = 0;
    for (int t = 0; t < n_tab; t++) {
        int np, n = kw_kvseq_len(s, t / n_kv, t % n_kv);
        const int32_t *pg = kw_kvseq_pages(s, t / n_kv, t % n_kv, &np);
        memcpy(src + src_off[t], pg, sizeof(int32_t) * np);
        src_off[t + 1] = src_off[t] + np;
        keep_off[t + 1] = keep_off[t] + random_keep(n, t < 4 ? t : 0, keep + keep_off[t]);
    }
    uint8_t *dbase = dput(m.base[0], arena);
    int32_t *dpos = dput(m.pos[0], posb);
    int32_t *dko = dput(keep_off, sizeof(int32_t) * (n_tab + 1)),
            *dk = dput(keep, sizeof(int32_t) * keep_off[n_tab]),
            *dso = dput(src_off, sizeof(int32_t) * (n_tab + 1)),
            *ds = dput(src, sizeof(int32_t) * src_off[n_tab]);
    kw_page_layout L = {.base = dbase, .pos = dpos, .page_bytes = m.page_bytes[0],
                        .page_tokens = P, .row_bytes = dtype == KW_KV_F32 ? 4 * hd : hd,
                        .scale_bytes = dtype == KW_KV_F32 ? 0 : 4};
    int rc = kw_k_page_compact(KW_BK_CUDA, NULL, &L, n_tab, dko, dk, dso, ds, dso, ds);
    uint8_t *got = malloc(arena);
    int32_t *gpos = malloc(posb);
    dget(got, dbase, arena);
    dget(gpos, dpos, posb);
    int bad = 0, kept = 0;
    for (int t = 0; t < n_tab; t++) {
        int l = t / n_kv, h = t % n_kv, n_keep = keep_off[t + 1] - keep_off[t];
        rc |= kw_kvseq_keep(s, l, h, keep + keep_off[t], n_keep);
        int np;
        const int32_t *pg = kw_kvseq_pages(s, l, h, &np);
        kept += n_keep;
        for (int i = 0; i < n_keep; i++) {
            int64_t g = pg[i / P], sl = i % P;
            bad |= g != src[src_off[t] + i / P]; /* kept in place: the same pages */
            const uint8_t *want = m.base[0] + g * m.page_bytes[0], *have = got + g * m.page_bytes[0];
            for (int w = 0; w < 2; w++) {
                int64_t at = (w * P + sl) * L.row_bytes;
                bad |= memcmp(want + at, have + at, (size_t)L.row_bytes) != 0;
                if (L.scale_bytes) {
                    int64_t sa = 2 * (int64_t)P * L.row_bytes + (w * P + sl) * 4;
                    bad |= memcmp(want + sa, have + sa, 4) != 0;
                }
            }
            bad |= gpos[g * P + sl] != m.pos[0][g * P + sl];
        }
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s P=%d d=%d tables=%d kept=%d, in place vs kw_kvseq_keep",
             dtype ? "int8" : "f32", P, hd, n_tab, kept);
    int f = report("compact", rc, bad, 0, shape);
    cudaFree(dbase), cudaFree(dpos), cudaFree(dko), cudaFree(dk), cudaFree(dso), cudaFree(ds);
    free(got), free(gpos), free(keep), free(src);
    s = kw_kvseq_free(s);
    pool = kw_kvpool_free(pool);
    return f;
}

/* Into other pages, on a raw arena of bf16-sized rows (2 * hd bytes, odd hd included):
 * against kw_ref_page_compact on a host copy of the same arena. */
static int test_compact_other_pages(int hd, int P)
{
    int n_tab = irand(1, 40), n_pages = 0;
    int32_t *keep_off = malloc(4 * (n_tab + 1)), *src_off = malloc(4 * (n_tab + 1)),
            *dst_off = malloc(4 * (n_tab + 1));
    int *ntok = malloc(sizeof(int) * n_tab);
    keep_off[0] = src_off[0] = dst_off[0] = 0;
    for (int t = 0; t < n_tab; t++) {
        ntok[t] = irand(1, 900);
        src_off[t + 1] = src_off[t] + (ntok[t] + P - 1) / P;
    }
    int32_t *keep = malloc(4 * (size_t)src_off[n_tab] * P);
    for (int t = 0; t < n_tab; t++) {
        int nk = random_keep(ntok[t], t % 4 == 3 ? 1 : 0, keep + keep_off[t]);
        keep_off[t + 1] = keep_off[t] + nk;
        dst_off[t + 1] = dst_off[t] + (nk + P - 1) / P;
    }
    n_pages = src_off[n_tab] + dst_off[n_tab];
    /* pages in a shuffled order: sources first, then destinations */
    int32_t *perm = malloc(4 * (size_t)n_pages), *src = perm, *dst = perm + src_off[n_tab];
    for (int i = 0; i < n_pages; i++)
        perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = irand(0, i), x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    int rb = 2 * hd;
    int64_t page_bytes = 2 * (int64_t)P * rb;
    size_t arena = (size_t)n_pages * page_bytes, posb = (size_t)n_pages * P * 4;
    uint8_t *h = malloc(arena), *got = malloc(arena);
    int32_t *hpos = malloc(posb), *gpos = malloc(posb);
    for (size_t i = 0; i < arena; i++)
        h[i] = (uint8_t)irand(1, 255);
    for (size_t i = 0; i < posb / 4; i++)
        hpos[i] = irand(1, 1 << 30);
    uint8_t *dbase = dput(h, arena);
    int32_t *dpos = dput(hpos, posb);
    int32_t *dko = dput(keep_off, 4 * (n_tab + 1)), *dk = dput(keep, 4 * (size_t)keep_off[n_tab]),
            *dso = dput(src_off, 4 * (n_tab + 1)), *ds = dput(src, 4 * (size_t)src_off[n_tab]),
            *ddo = dput(dst_off, 4 * (n_tab + 1)), *dd = dput(dst, 4 * (size_t)dst_off[n_tab]);
    kw_page_layout L = {.base = dbase, .pos = dpos, .page_bytes = page_bytes, .page_tokens = P,
                        .row_bytes = rb, .scale_bytes = 0};
    int rc = kw_k_page_compact(KW_BK_CUDA, NULL, &L, n_tab, dko, dk, dso, ds, ddo, dd);
    dget(got, dbase, arena);
    dget(gpos, dpos, posb);
    L.base = h, L.pos = hpos;
    kw_ref_page_compact(&L, n_tab, keep_off, keep, src_off, src, dst_off, dst);
    int bad = memcmp(got, h, arena) != 0 || memcmp(gpos, hpos, posb) != 0;
    char shape[96];
    snprintf(shape, sizeof shape, "bf16 rows d=%d P=%d tables=%d kept=%d, into other pages", hd,
             P, n_tab, keep_off[n_tab]);
    int f = report("compact", rc, bad, 0, shape);
    cudaFree(dbase), cudaFree(dpos), cudaFree(dko), cudaFree(dk), cudaFree(dso), cudaFree(ds),
        cudaFree(ddo), cudaFree(dd);
    free(keep_off), free(src_off), free(dst_off), free(ntok), free(keep), free(perm), free(h),
        free(got), free(hpos), free(gpos);
    return f;
}


/* ---- attention probabilities over a view (attn_probs.cu) ----
 * A bf16 pool of random K rows with random positions; views of random spans (gaps,
 * partial pages, rows of different lengths), in half the trials over two pools (main and
 * temporary); random queries, some keys masked by position. Reference in double from the same bf16 values. Bound: max absolute error
 * 2e-5 on probabilities (each is in [0, 1]; __expf and f32 sums) and 1e-4 relative on
 * the per-step sums and on LSE. */
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

static int test_view_probs(void)
{
    int fails = 0;
    double worst_p = 0, worst_s = 0, worst_l = 0;
    for (int trial = 0; trial < 10; trial++) {
        int P = trial % 2 ? 16 : 7, hd = trial % 3 ? 64 : 128, n_kv = irand(1, 4);
        int group = irand(1, 4), H = n_kv * group, per_q = trial % 4 == 3;
        int n_rows = per_q ? H : n_kv, n_pages = irand(20, 120), n_q = irand(1, 70);
        int tile = irand(1, 20);
        size_t nel = (size_t)n_pages * 2 * P * hd;
        uint16_t *kv = malloc(nel * 2);
        for (size_t i = 0; i < nel; i++)
            kv[i] = to_bf16(nz(1.f, 1));
        int32_t *pos = malloc(sizeof(int32_t) * n_pages * P);
        for (int i = 0; i < n_pages * P; i++)
            pos[i] = irand(0, 3000);
        /* rows: random spans of random pages */
        int32_t *off = malloc(sizeof(int32_t) * (n_rows + 1)), *sl = malloc(sizeof(int32_t) * 40000);
        int k = 0, len = 0;
        for (int r = 0; r < n_rows; r++) {
            off[r] = k;
            int ns = irand(0, 12);
            for (int j = 0; j < ns; j++) {
                int g = irand(0, n_pages - 1), f = irand(0, P - 1), n = irand(1, P - f);
                for (int t = 0; t < n; t++)
                    sl[k++] = g * P + f + t;
            }
            len = k - off[r] > len ? k - off[r] : len;
        }
        off[n_rows] = k;
        float *q = malloc(sizeof(float) * n_q * H * hd);
        int32_t *qp = malloc(sizeof(int32_t) * n_q);
        for (int i = 0; i < n_q * H * hd; i++)
            q[i] = nz(0.3f, 1);
        for (int i = 0; i < n_q; i++)
            qp[i] = irand(0, 3200);
        float scale = 1.f / sqrtf((float)hd);
        /* reference */
        size_t hl = (size_t)H * (len ? len : 1);
        double *rp = calloc((size_t)n_q * hl, sizeof(double)), *rs = calloc(hl, sizeof(double));
        double *rl = malloc(sizeof(double) * n_q * H);
        for (int i = 0; i < n_q; i++)
            for (int h = 0; h < H; h++) {
                int r = per_q ? h : h / group, n = off[r + 1] - off[r];
                double mx = -INFINITY, *sc = malloc(sizeof(double) * (n ? n : 1));
                for (int c = 0; c < n; c++) {
                    int32_t s0 = sl[off[r] + c];
                    sc[c] = -INFINITY;
                    if (pos[s0] > qp[i])
                        continue;
                    const uint16_t *kr = kv + ((size_t)(s0 / P) * 2 * P + s0 % P) * hd;
                    double d = 0;
                    for (int x = 0; x < hd; x++)
                        d += (double)q[((size_t)i * H + h) * hd + x] * from_bf16(kr[x]);
                    sc[c] = d * scale;
                    mx = sc[c] > mx ? sc[c] : mx;
                }
                double sum = 0;
                for (int c = 0; c < n && mx > -INFINITY; c++)
                    sum += exp(sc[c] - mx);
                double l = mx > -INFINITY ? mx + log(sum) : -INFINITY;
                rl[i * H + h] = l;
                for (int c = 0; c < n; c++) {
                    double pr = l > -INFINITY && sc[c] > -INFINITY ? exp(sc[c] - l) : 0;
                    rp[(size_t)i * hl + (size_t)h * len + c] = pr;
                    rs[(size_t)h * len + c] += pr;
                }
                free(sc);
            }
        /* even trials: pages from n_main on are a temporary pool of their own on the
         * device, their slots given with the high bit set */
        int n_main = trial % 2 ? n_pages : n_pages / 2;
        int32_t *esl = malloc(sizeof(int32_t) * (size_t)(k + 1));
        for (int i = 0; i < k; i++)
            esl[i] = sl[i] / P < n_main ? sl[i] : (int32_t)(0x80000000u | (uint32_t)(sl[i] - n_main * P));
        void *dkv = dput(kv, (size_t)n_main * 2 * P * hd * 2);
        void *dtmp = n_main < n_pages ? dput(kv + (size_t)n_main * 2 * P * hd,
                                             (size_t)(n_pages - n_main) * 2 * P * hd * 2) : NULL;
        int32_t *dpos = dput(pos, sizeof(int32_t) * n_main * P), *doff = dput(off, 4 * (n_rows + 1)),
                *dtpos = n_main < n_pages ? dput(pos + (size_t)n_main * P,
                                                 sizeof(int32_t) * (n_pages - n_main) * P) : NULL,
                *dsl = dput(esl, 4 * (size_t)(k + 1)), *dqp = dput(qp, 4 * (size_t)n_q);
        float *dq = dput(q, sizeof(float) * n_q * H * hd);
        float *dout = dpoison(4 * (size_t)n_q * hl), *dsum = dpoison(4 * hl),
              *dscr = dpoison(4 * (size_t)tile * hl), *dlse = dpoison(4 * (size_t)n_q * H);
        kw_cuda_view_probs_args a = {.base = dkv, .pos = dpos, .page_tokens = P, .head_dim = hd,
                                     .n_head = H, .group = group, .per_qhead = per_q,
                                     .row_off = doff, .slots = dsl, .q = dq, .q_pos = dqp,
                                     .n_q = n_q, .len = len, .mode = KW_CUDA_PROBS_EACH,
                                     .scale = scale, .out = dout, .base_tmp = dtmp,
                                     .pos_tmp = dtpos};
        int rc = kw_cuda_view_probs(NULL, &a);
        a.mode = KW_CUDA_PROBS_SUM, a.tile = tile, a.out = dsum, a.scratch = dscr, a.lse = dlse;
        rc = rc ? rc : kw_cuda_view_probs(NULL, &a);
        float *gp = malloc(4 * (size_t)n_q * hl), *gs = malloc(4 * hl), *gl = malloc(4 * (size_t)n_q * H);
        dget(gp, dout, 4 * (size_t)n_q * (len ? hl : 0));
        dget(gs, dsum, 4 * (len ? hl : 0));
        dget(gl, dlse, 4 * (size_t)n_q * H);
        double ep = 0, es = 0, el = 0;
        for (size_t i = 0; len && i < (size_t)n_q * hl; i++) {
            double e = fabs(gp[i] - rp[i]);
            ep = isnan(gp[i]) ? INFINITY : e > ep ? e : ep;
        }
        for (size_t i = 0; len && i < hl; i++) {
            double e = fabs(gs[i] - rs[i]) / (rs[i] > 1e-3 ? rs[i] : 1e-3);
            es = isnan(gs[i]) ? INFINITY : e > es ? e : es;
        }
        for (int i = 0; len && i < n_q * H; i++) {
            double e = isinf(rl[i]) ? (isinf(gl[i]) && gl[i] < 0 ? 0 : INFINITY)
                                    : fabs(gl[i] - rl[i]) / (fabs(rl[i]) > 1 ? fabs(rl[i]) : 1);
            el = isnan(gl[i]) ? INFINITY : e > el ? e : el;
        }
        worst_p = ep > worst_p ? ep : worst_p;
        worst_s = es > worst_s ? es : worst_s;
        worst_l = el > worst_l ? el : worst_l;
        char shape[128];
        snprintf(shape, sizeof shape, "P=%d d=%d heads=%d/%d %s q=%d tile=%d len=%d%s", P, hd,
                 H, n_kv, per_q ? "rows per q head" : "rows per kv head", n_q, tile, len,
                 n_main < n_pages ? " +tmp pool" : "");
        fails += report("view probs", rc, ep, 2e-5, shape);
        fails += report("probs sum", rc, es, 1e-4, shape);
        fails += report("probs lse", rc, el, 1e-4, shape);
        cudaFree(dkv), cudaFree(dpos), cudaFree(doff), cudaFree(dsl), cudaFree(dqp), cudaFree(dq);
        cudaFree(dtmp), cudaFree(dtpos), free(esl);
        cudaFree(dout), cudaFree(dsum), cudaFree(dscr), cudaFree(dlse);
        free(kv), free(pos), free(off), free(sl), free(q), free(qp), free(rp), free(rs), free(rl);
        free(gp), free(gs), free(gl);
    }
    printf("view probabilities: worst abs %.3g, sums rel %.3g, lse rel %.3g\n", worst_p, worst_s,
           worst_l);
    return fails;
}

/* ---- host reads of device pages (kw_cuda_page_rows_f32, the engine's dev_read) ----
 * int8 pages: a host int8 pool's arena on the device, and runs of rows of one table
 * (starting mid-page, crossing pages, K or V) against kw_kvseq_rows_f32 on the host pool,
 * byte for byte (the same f32 product). bf16 pages: a random arena and random page
 * lists against the exact widening. */
static int test_page_rows(kw_kvdtype dtype, int P, int hd)
{
    int bad = 0, rc = 0, runs = 0;
    if (dtype == KW_KV_I8) {
        kw_model_config cfg = {.n_layer = 1, .n_head = 4, .n_head_kv = 2, .head_dim = hd};
        kw_kvpool_opts o = kw_kvpool_defaults();
        o.page_tokens = P, o.n_pages = 512, o.dtype = KW_KV_I8;
        kw_kvpool *pool;
        kw_error err = {0};
        if (kw_kvpool_new(&cfg, &o, &pool, &err) < 0)
            return printf("FAIL page_rows: kw_kvpool_new: %s\n", err.msg), 1;
        kw_kvseq *s = kw_kvseq_new(pool);
        int n_tok = irand(P + 1, 600);
        float *k = malloc((size_t)n_tok * 2 * hd * 4), *v = malloc((size_t)n_tok * 2 * hd * 4);
        int32_t *pos = malloc((size_t)n_tok * 4);
        for (size_t i = 0; i < (size_t)n_tok * 2 * hd; i++)
            k[i] = nz(3.f, 1), v[i] = nz(3.f, 1);
        for (int t = 0; t < n_tok; t++)
            pos[t] = t;
        rc |= kw_kvseq_append(s, 0, k, v, pos, n_tok);
        kw_kvmem m = kw_kvpool_mem(pool);
        uint8_t *dbase = dput(m.base[0], (size_t)o.n_pages * m.page_bytes[0]);
        float *ref = malloc((size_t)n_tok * hd * 4), *got = malloc((size_t)n_tok * hd * 4);
        for (int trial = 0; trial < 12; trial++) {
            int h = trial % 2, which = (trial / 2) % 2, np;
            int j0 = irand(0, n_tok - 1), n = irand(1, n_tok - j0);
            const int32_t *pg = kw_kvseq_pages(s, 0, h, &np);
            int32_t *dpg = dput(pg + j0 / P, sizeof(int32_t) * (size_t)(np - j0 / P));
            float *dout = dpoison((size_t)n * hd * 4);
            rc |= kw_cuda_page_rows_f32(NULL, dbase, KW_CUDA_KV_I8, P, hd, dpg, j0 % P, n, which, dout);
            dget(got, dout, (size_t)n * hd * 4);
            rc |= kw_kvseq_rows_f32(s, 0, h, j0, n, which, ref);
            bad |= memcmp(got, ref, (size_t)n * hd * 4) != 0;
            runs++;
            cudaFree(dpg), cudaFree(dout);
        }
        cudaFree(dbase);
        free(k), free(v), free(pos), free(ref), free(got);
        kw_kvseq_free(s);
        kw_kvpool_free(pool);
    } else {
        int n_pages = 64;
        size_t pe = (size_t)2 * P * hd, ne = (size_t)n_pages * pe;
        uint16_t *arena = malloc(ne * 2);
        for (size_t i = 0; i < ne; i++)
            arena[i] = to_bf16(nz(4.f, 1));
        uint16_t *dbase = dput(arena, ne * 2);
        for (int trial = 0; trial < 12; trial++) {
            int np = irand(1, 20), first = irand(0, P - 1), which = trial % 2;
            int n = irand(1, np * P - first);
            int32_t pg[20];
            for (int i = 0; i < np; i++)
                pg[i] = irand(0, n_pages - 1);
            int32_t *dpg = dput(pg, sizeof pg);
            float *dout = dpoison((size_t)n * hd * 4), *got = malloc((size_t)n * hd * 4);
            rc |= kw_cuda_page_rows_f32(NULL, dbase, KW_CUDA_KV_BF16, P, hd, dpg, first, n, which, dout);
            dget(got, dout, (size_t)n * hd * 4);
            for (int j = 0; j < n; j++) {
                int r = first + j;
                const uint16_t *x = arena + ((size_t)pg[r / P] * 2 * P + (size_t)which * P + r % P) * hd;
                for (int i = 0; i < hd; i++)
                    bad |= memcmp(&got[(size_t)j * hd + i], &(float){from_bf16(x[i])}, 4) != 0;
            }
            runs++;
            cudaFree(dpg), cudaFree(dout), free(got);
        }
        cudaFree(dbase);
        free(arena);
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s P=%d d=%d runs=%d, exact", dtype ? "int8" : "bf16", P, hd,
             runs);
    return report("page_rows", rc, bad, 0, shape);
}

int main(void)
{
    if (kw_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device found; the CUDA selection kernels were compiled and "
               "linked only\n");
        return 77;
    }
    int fails = test_window_scores() + test_pool1d() + test_topk() + test_page_bounds_scores();
    fails += test_compact_vs_keep(KW_KV_F32, 16, 128) + test_compact_vs_keep(KW_KV_F32, 5, 3) +
             test_compact_vs_keep(KW_KV_I8, 16, 64) + test_compact_vs_keep(KW_KV_I8, 7, 6);
    fails += test_view_probs();
    fails += test_page_rows(KW_KV_I8, 16, 128) + test_page_rows(KW_KV_I8, 6, 64) +
             test_page_rows(KW_KV_F32, 16, 128) + test_page_rows(KW_KV_F32, 5, 24);
    fails += test_compact_other_pages(128, 16) + test_compact_other_pages(64, 32) +
             test_compact_other_pages(3, 5) + test_compact_other_pages(2, 16);
    printf("worst relative errors: window %.3g, pool avg %.3g, page scores %.3g; max pool, "
           "page bounds, top-k and compaction exact\n",
           worst_ws, worst_avg, worst_ps);
    printf("cuda select: %d checks failed\n", fails);
    return fails ? 1 : 0;
}
