/* The CUDA kernels of the device engine against the CPU references, on random shapes and
 * data with poisoned outputs: cuBLAS GEMMs (f32, and bf16 with f32 accumulation), the
 * weight-streaming GEMVs and their folded norm, RoPE and append forms, causal
 * prefill attention over paged bf16 views (dense, token-level and run spans over both
 * pools, GQA, chunks; dense views also in table mode), page append (and RoPE fused with
 * it, bit-identical to the two launches), bf16 embedding gather. Skipped (exit 77, with
 * a line saying why) without a CUDA device. Bounds: f32 paths rel L2 < 1e-4; bf16 GEMM
 * against the reference on the same bf16-rounded inputs < 1e-4 (and < 1e-2 against the
 * unrounded f32 inputs); attention (bf16 pages, Q and P rounded to bf16 for the tensor
 * cores) < 1e-2. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels_cuda.h"
#include "kernels.h"
#include "kvweave/tensor.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uni(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

#define CK(x)                                                                            \
    do {                                                                                 \
        if ((x) != cudaSuccess) {                                                        \
            fprintf(stderr, "%s failed at line %d\n", #x, __LINE__);                     \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

static void *dput(const void *h, size_t bytes)
{
    void *d;
    CK(cudaMalloc(&d, bytes ? bytes : 1));
    if (h)
        CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    else
        CK(cudaMemset(d, 0xff, bytes)); /* poison: NaN for f32 and bf16 */
    return d;
}

static void dget(void *h, const void *d, size_t bytes)
{
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

static float *randv(size_t n, float scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((uni() * 2 - 1) * scale);
    return v;
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

static int report(const char *what, int rc, double err, double bound, const char *shape)
{
    int ok = rc == 0 && err < bound;
    printf("%s %-12s %s rel_l2=%.3g (bound %.0e)%s%s\n", ok ? "ok  " : "FAIL", what, shape, err,
           bound, rc ? " " : "", rc ? kw_cuda_last_error() : "");
    return !ok;
}

static uint16_t *to_bf16(const float *x, size_t n, float *rounded)
{
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        h[i] = kw_f32_to_bf16(x[i]);
        if (rounded)
            rounded[i] = kw_bf16_to_f32(h[i]);
    }
    return h;
}

static int test_gemm(void)
{
    int fails = 0;
    for (int trial = 0; trial < 22; trial++) {
        int M = trial < 3 ? 1 + trial : 1 + (int)(uni() * 300), N = 1 + (int)(uni() * 1500),
            K = 1 + (int)(uni() * 1200);
        if (trial == 11)
            M = 512, N = 2048, K = 1024;
        if (trial >= 12) /* decode shapes: the weight-streaming kernel (K a multiple of 8) */
            M = 1 + (trial - 12) % 8, K = 8 * (1 + (int)(uni() * 700)),
            N = trial == 21 ? 4099 : 1 + (int)(uni() * 3000);
        size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
        float *x = randv(nx, 1), *w = randv(nw, 0.05f), *b = randv((size_t)N, 0.5f),
              *y = malloc(ny * 4), *r = malloc(ny * 4), *xr = malloc(nx * 4), *wr = malloc(nw * 4);
        int with_bias = trial % 2;
        char shape[64];
        snprintf(shape, sizeof shape, "M=%d N=%d K=%d%s", M, N, K, with_bias ? " +bias" : "");
        /* f32 */
        float *dx = dput(x, nx * 4), *dw = dput(w, nw * 4), *db = dput(b, (size_t)N * 4),
              *dy = dput(NULL, ny * 4);
        int rc = kw_k_linear(KW_BK_CUDA, NULL, dx, dw, with_bias ? db : NULL, dy, M, N, K);
        dget(y, dy, ny * 4);
        kw_ref_linear(x, w, with_bias ? b : NULL, r, M, N, K);
        fails += report("linear_f32", rc, rel_l2(y, r, ny), 1e-4, shape);
        /* bf16 */
        uint16_t *xb = to_bf16(x, nx, xr), *wb = to_bf16(w, nw, wr);
        void *dxb = dput(xb, nx * 2), *dwb = dput(wb, nw * 2);
        CK(cudaMemset(dy, 0xff, ny * 4));
        rc = kw_cuda_linear_bf16(NULL, dxb, dwb, with_bias ? db : NULL, dy, M, N, K);
        dget(y, dy, ny * 4);
        double e_f32 = rel_l2(y, r, ny);
        kw_ref_linear(xr, wr, with_bias ? b : NULL, r, M, N, K);
        fails += report("linear_bf16", rc, rel_l2(y, r, ny), 1e-4, shape);
        fails += report("linear_bf16~", rc, e_f32, 1e-2, shape);
        if (M <= 8 && K % 8 == 0) { /* the weight-streaming kernel, called directly */
            CK(cudaMemset(dy, 0xff, ny * 4));
            rc = kw_cuda_gemv_bf16(NULL, dxb, dwb, with_bias ? db : NULL, dy, M, N, K);
            dget(y, dy, ny * 4);
            fails += report("gemv_bf16", rc, rel_l2(y, r, ny), 1e-4, shape);
        }
        /* the epilogues: y += x w^T + b on a random y (residual), and a bf16 y; the bf16
         * bound is its rounding (2^-9 relative per element) */
        float *y0 = randv(ny, 1);
        CK(cudaMemcpy(dy, y0, ny * 4, cudaMemcpyHostToDevice));
        rc = kw_cuda_linear_bf16_ex(NULL, dxb, dwb, with_bias ? db : NULL, dy, M, N, K,
                                    KW_LIN_ADD);
        dget(y, dy, ny * 4);
        float *ra = malloc(ny * 4);
        for (size_t i = 0; i < ny; i++)
            ra[i] = r[i] + y0[i];
        fails += report("linear_bf16_add", rc, rel_l2(y, ra, ny), 1e-4, shape);
        CK(cudaMemset(dy, 0xff, ny * 4));
        rc = kw_cuda_linear_bf16_ex(NULL, dxb, dwb, NULL, dy, M, N, K, KW_LIN_BF16);
        uint16_t *yb = malloc(ny * 2);
        dget(yb, dy, ny * 2);
        kw_ref_linear(xr, wr, NULL, ra, M, N, K);
        for (size_t i = 0; i < ny; i++)
            y[i] = kw_bf16_to_f32(yb[i]);
        fails += report("linear_bf16_out16", rc, rel_l2(y, ra, ny), 1e-2, shape);
        if (kw_cuda_linear_bf16_ex(NULL, dxb, dwb, db, dy, M, N, K, KW_LIN_BF16) != KW_EINVAL ||
            kw_cuda_linear_bf16_ex(NULL, dxb, dwb, NULL, dy, M, N, K, 3) != KW_EINVAL)
            fails += report("linear_bf16_ex refuses bias with bf16 out, or both flags",
                            KW_EINVAL, 1, 0, shape);
        free(y0), free(ra), free(yb);
        cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dy), cudaFree(dxb), cudaFree(dwb);
        free(x), free(w), free(b), free(y), free(r), free(xr), free(wr), free(xb), free(wb);
    }
    return fails;
}

/* The fused decode GEMVs: three outputs of different widths in one launch (with biases,
 * stored), a residual add (y += x w^T on a random y), and gate/up/SwiGLU into bf16, each
 * against an f32 reference on the same bf16-rounded inputs, for M = 1..8 rows. Bounds:
 * 1e-4 for f32 outputs; 1e-2 for the bf16 SwiGLU output (its rounding, 2^-9 relative). */
static int test_gemv_fused(void)
{
    int fails = 0;
    for (int trial = 0; trial < 8; trial++) {
        const int M = 1 + trial, K = 8 * (1 + (int)(uni() * 600));
        int n[3] = {1 + (int)(uni() * 2000), 1 + (int)(uni() * 700), 1 + (int)(uni() * 700)};
        if (trial == 7)
            n[0] = 4099;
        char shape[80];
        snprintf(shape, sizeof shape, "M=%d K=%d n=%d/%d/%d", M, K, n[0], n[1], n[2]);
        float *x = randv((size_t)M * K, 1), *xr = malloc(sizeof(float) * M * K);
        uint16_t *xb = to_bf16(x, (size_t)M * K, xr);
        void *dx = dput(xb, (size_t)M * K * 2);
        kw_cuda_gemv_out o[3];
        float *w[3], *wr[3], *b[3], *ref[3], *got[3], *dy[3];
        uint16_t *wb[3];
        for (int s = 0; s < 3; s++) {
            w[s] = randv((size_t)n[s] * K, 0.05f), wr[s] = malloc(sizeof(float) * n[s] * K);
            wb[s] = to_bf16(w[s], (size_t)n[s] * K, wr[s]);
            b[s] = randv((size_t)n[s], 0.5f);
            ref[s] = malloc(sizeof(float) * M * n[s]), got[s] = malloc(sizeof(float) * M * n[s]);
            kw_ref_linear(xr, wr[s], s == 1 ? NULL : b[s], ref[s], M, n[s], K);
            o[s] = (kw_cuda_gemv_out){dput(wb[s], (size_t)n[s] * K * 2),
                                      s == 1 ? NULL : dput(b[s], (size_t)n[s] * 4),
                                      dy[s] = dput(NULL, (size_t)M * n[s] * 4), n[s]};
        }
        int rc = kw_cuda_gemv_multi_bf16(NULL, dx, M, K, o, 3, 0);
        double e = 0;
        for (int s = 0; s < 3; s++) {
            dget(got[s], dy[s], (size_t)M * n[s] * 4);
            double es = rel_l2(got[s], ref[s], (size_t)M * n[s]);
            e = es > e ? es : e;
        }
        fails += report("gemv_qkv", rc, e, 1e-4, shape);
        /* residual: y starts random, gets x w0^T + b0 added */
        float *y0 = randv((size_t)M * n[0], 2);
        CK(cudaMemcpy(dy[0], y0, sizeof(float) * M * n[0], cudaMemcpyHostToDevice));
        rc = kw_cuda_gemv_multi_bf16(NULL, dx, M, K, o, 1, 1);
        dget(got[0], dy[0], (size_t)M * n[0] * 4);
        for (int i = 0; i < M * n[0]; i++)
            ref[0][i] += y0[i];
        fails += report("gemv_add", rc, rel_l2(got[0], ref[0], (size_t)M * n[0]), 1e-4, shape);
        /* SwiGLU: gate = w1 (n[1] rows), up = w2 (n[2] rows; the first n[1]) */
        int F = n[1] < n[2] ? n[1] : n[2];
        float *g = malloc(sizeof(float) * M * F), *u = malloc(sizeof(float) * M * F),
              *sref = malloc(sizeof(float) * M * F), *sgot = malloc(sizeof(float) * M * F);
        kw_ref_linear(xr, wr[1], NULL, g, M, F, K);
        kw_ref_linear(xr, wr[2], NULL, u, M, F, K);
        for (int i = 0; i < M * F; i++)
            sref[i] = g[i] / (1.f + expf(-g[i])) * u[i];
        void *dsw = dput(NULL, (size_t)M * F * 2);
        rc = kw_cuda_gemv_swiglu_bf16(NULL, dx, o[1].w, o[2].w, dsw, M, F, K);
        uint16_t *hs = malloc((size_t)M * F * 2);
        dget(hs, dsw, (size_t)M * F * 2);
        for (int i = 0; i < M * F; i++)
            sgot[i] = kw_bf16_to_f32(hs[i]);
        fails += report("gemv_swiglu", rc, rel_l2(sgot, sref, (size_t)M * F), 1e-2, shape);
        /* the prefill form: SwiGLU of bf16 gate and up (the reference on the same rounded
         * inputs; bound: the output's bf16 rounding), poisoned output */
        if (M * F % 2 == 0) {
            float *gr = malloc(sizeof(float) * M * F), *ur = malloc(sizeof(float) * M * F);
            uint16_t *gb = to_bf16(g, (size_t)M * F, gr), *ub = to_bf16(u, (size_t)M * F, ur);
            void *dg = dput(gb, (size_t)M * F * 2), *du = dput(ub, (size_t)M * F * 2);
            CK(cudaMemset(dsw, 0xff, (size_t)M * F * 2));
            rc = kw_cuda_swiglu_bf16_in(NULL, dg, du, dsw, (int64_t)M * F);
            dget(hs, dsw, (size_t)M * F * 2);
            for (int i = 0; i < M * F; i++)
                sgot[i] = kw_bf16_to_f32(hs[i]), sref[i] = gr[i] / (1.f + expf(-gr[i])) * ur[i];
            fails += report("swiglu_bf16_in", rc, rel_l2(sgot, sref, (size_t)M * F), 1e-2, shape);
            cudaFree(dg), cudaFree(du), free(gr), free(ur), free(gb), free(ub);
        }
        cudaFree(dx), cudaFree(dsw);
        for (int s = 0; s < 3; s++) {
            cudaFree((void *)o[s].w), cudaFree((void *)o[s].bias), cudaFree(dy[s]);
            free(w[s]), free(wr[s]), free(wb[s]), free(b[s]), free(ref[s]), free(got[s]);
        }
        free(x), free(xr), free(xb), free(y0), free(g), free(u), free(sref), free(sgot), free(hs);
    }
    return fails;
}

/* A random paged pool: n_seq sequences, each KV head with ctx tokens at increasing
 * positions (with gaps, as after eviction) on shuffled pages; query chunks are the last
 * nq tokens' positions. Views (mode): PF_DENSE whole pages, PF_TOKENS a random subset of
 * single tokens, PF_RUNS random runs inside pages, a third of them read through the
 * temporary pool (which holds the main pool's pages shifted by one, so a wrong pool
 * reads wrong data). Dense views also run in table mode. */
enum { PF_DENSE = 0, PF_TOKENS = 1, PF_RUNS = 2 };

/* out poisoned (NaN) before the kernel, so an element it does not write fails */
static int run_prefill(const kw_cuda_prefill *a, float *out, size_t n)
{
    CK(cudaMemset(a->out, 0xff, n * 4));
    int rc = kw_cuda_attn_prefill(NULL, a);
    dget(out, a->out, n * 4);
    return rc;
}

/* Runs a with each kernel (mma.sync everywhere; the wgmma kernel where the device has it,
 * said once when it does not) and reports each against ref. */
static int prefill_kernels(kw_cuda_prefill *a, float *out, const float *ref, size_t n,
                           const char *what, int bad, const char *shape)
{
    static int said;
    int fail = 0;
    for (int k = KW_CUDA_PREFILL_MMA; k <= KW_CUDA_PREFILL_WGMMA; k++) {
        a->kernel = k;
        int rc = run_prefill(a, out, n);
        if (k == KW_CUDA_PREFILL_WGMMA && rc == KW_ENOSYS) {
            if (a->head_dim == 128 && !said++)
                printf("skip %s/wgmma: this device has no sm_90a warpgroup MMA\n", what);
            continue;
        }
        char name[64];
        static const char *const kname[] = {"auto", "mma", "wgmma"};
        snprintf(name, sizeof name, "%s/%s", what, kname[k]);
        fail += report(name, rc, bad ? INFINITY : rel_l2(out, ref, n), 1e-2, shape);
    }
    a->kernel = KW_CUDA_PREFILL_AUTO;
    return fail;
}

static int test_prefill_case(int D, int n_head, int n_kv, int P, int n_seq, const int *ctx,
                             const int *nq, int mode, const char *label)
{
    int n_pages = 0;
    for (int s = 0; s < n_seq; s++)
        n_pages += n_kv * ((ctx[s] + P - 1) / P);
    size_t pf = (size_t)2 * P * D;
    float *pool = randv((size_t)n_pages * pf, 1.f);
    uint16_t *poolb = to_bf16(pool, (size_t)n_pages * pf, pool); /* host f32 = bf16 values */
    int32_t *pos = malloc((size_t)n_pages * P * 4);
    for (int i = 0; i < n_pages * P; i++)
        pos[i] = 1 << 30;
    int *perm = malloc((size_t)n_pages * sizeof(int));
    for (int i = 0; i < n_pages; i++)
        perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = (int)(uni() * (i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int n_tok = 0;
    int tok_off[65];
    for (int s = 0; s < n_seq; s++)
        tok_off[s] = n_tok, n_tok += nq[s];
    tok_off[n_seq] = n_tok;
    int32_t *q_pos = malloc((size_t)n_tok * 4);
    kw_view *views[64];
    int next = 0;
    /* one position sequence per sequence (shared by its KV heads) */
    for (int s = 0; s < n_seq; s++) {
        int32_t *sp = malloc((size_t)ctx[s] * 4);
        int p = 0;
        for (int j = 0; j < ctx[s]; j++)
            sp[j] = p, p += 1 + (uni() < 0.1 ? (int)(uni() * 3) : 0);
        for (int j = 0; j < nq[s]; j++)
            q_pos[tok_off[s] + j] = sp[ctx[s] - nq[s] + j];
        views[s] = kw_view_new();
        kw_view_reset(views[s], n_kv, false);
        for (int h = 0; h < n_kv; h++) {
            kw_view_begin_row(views[s], h);
            for (int pg = 0; pg * P < ctx[s]; pg++) {
                int g = perm[next++], n = ctx[s] - pg * P < P ? ctx[s] - pg * P : P;
                for (int c = 0; c < n; c++)
                    pos[(size_t)g * P + c] = sp[pg * P + c];
                if (mode == PF_DENSE) {
                    kw_view_add(views[s], 0, g, 0, n);
                } else if (mode == PF_TOKENS) {
                    for (int c = 0; c < n; c++)
                        if (uni() < 0.3 || pg * P + c >= ctx[s] - nq[s])
                            kw_view_add(views[s], 0, g, c, 1);
                } else {
                    for (int c = 0, len; c < n; c += len) {
                        len = 1 + (int)(uni() * (n - c));
                        if (uni() < 0.4 && pg * P + c + len <= ctx[s] - nq[s])
                            continue; /* dropped (never one holding a query's own token) */
                        int tmp = uni() < 0.3;
                        kw_view_add(views[s], tmp, tmp ? (g + n_pages - 1) % n_pages : g, c, len);
                    }
                }
            }
        }
        free(sp);
    }
    /* temporary pool: page x holds main page x + 1 */
    float *pool1 = malloc((size_t)n_pages * pf * 4);
    int32_t *pos1 = malloc((size_t)n_pages * P * 4);
    for (int x = 0; x < n_pages; x++) {
        int src = (x + 1) % n_pages;
        memcpy(pool1 + (size_t)x * pf, pool + (size_t)src * pf, pf * 4);
        memcpy(pos1 + (size_t)x * P, pos + (size_t)src * P, (size_t)P * 4);
    }
    uint16_t *poolb1 = to_bf16(pool1, (size_t)n_pages * pf, NULL);
    float *q = randv((size_t)n_tok * n_head * D, 1.f), *ref = malloc((size_t)n_tok * n_head * D * 4),
          *out = malloc((size_t)n_tok * n_head * D * 4);
    float scale = 1.f / sqrtf((float)D);
    kw_kvmem mem = {.base = {(const uint8_t *)pool, (const uint8_t *)pool1},
                    .page_bytes = {(int64_t)pf * 4, (int64_t)pf * 4},
                    .dtype = {KW_KV_F32, KW_KV_F32}, .pos = {pos, pos1}, .page_tokens = P,
                    .head_dim = D};
    kw_attn_args ra = {.mem = mem, .n_seq = n_seq, .views = (const kw_view *const *)views,
                       .tok_off = tok_off, .q = q, .q_pos = q_pos, .n_head = n_head,
                       .n_kv = n_kv, .scale = scale, .out = ref};
    kw_ref_attn_view(&ra);
    /* flatten the views into one CSR over rows seq * n_kv + kvh */
    int n_rows = n_seq * n_kv, n_spans = 0;
    for (int s = 0; s < n_seq; s++)
        n_spans += views[s]->row_ptr[n_kv];
    int32_t *row_ptr = malloc((size_t)(n_rows + 1) * 4);
    kw_cuda_span *spans = malloc((size_t)(n_spans + 1) * sizeof *spans);
    int k = 0;
    for (int s = 0; s < n_seq; s++)
        for (int h = 0; h < n_kv; h++) {
            row_ptr[s * n_kv + h] = k;
            for (int i = views[s]->row_ptr[h]; i < views[s]->row_ptr[h + 1]; i++) {
                kw_span v = views[s]->spans[i];
                spans[k++] = (kw_cuda_span){v.page, v.first, v.n, v.pool};
            }
        }
    row_ptr[n_rows] = k;
    int n_items = kw_cuda_prefill_items(n_seq, tok_off, NULL);
    int32_t *items = malloc((size_t)n_items * 8);
    kw_cuda_prefill_items(n_seq, tok_off, items);
    kw_cuda_prefill a = {0};
    a.base[0] = dput(poolb, (size_t)n_pages * pf * 2);
    a.base[1] = dput(poolb1, (size_t)n_pages * pf * 2);
    a.pos[0] = dput(pos, (size_t)n_pages * P * 4);
    a.pos[1] = dput(pos1, (size_t)n_pages * P * 4);
    a.kv = KW_CUDA_KV_BF16, a.page_tokens = P, a.head_dim = D;
    a.n_head = n_head, a.n_kv = n_kv, a.n_seq = n_seq;
    a.tok_off = dput(tok_off, (size_t)(n_seq + 1) * 4);
    a.row_ptr = dput(row_ptr, (size_t)(n_rows + 1) * 4);
    void *d_spans = dput(spans, (size_t)(k + 1) * sizeof *spans);
    a.spans = d_spans;
    a.q_pos = dput(q_pos, (size_t)n_tok * 4);
    a.q = dput(q, (size_t)n_tok * n_head * D * 4);
    size_t n_out = (size_t)n_tok * n_head * D;
    a.out = dput(NULL, n_out * 4);
    a.scale = scale, a.n_items = n_items, a.items = dput(items, (size_t)n_items * 8);
    char shape[160];
    snprintf(shape, sizeof shape, "%s D=%d heads=%d/%d P=%d seqs=%d tokens=%d", label, D, n_head,
             n_kv, P, n_seq, n_tok);
    int fail = prefill_kernels(&a, out, ref, n_out, "prefill", 0, shape);
    if (mode == PF_DENSE) {
        /* table mode over the same views: a dense row's spans are its pages in order, all
         * full from slot 0 but the last, so row_ptr indexes the page list as it did the
         * spans */
        int32_t *pages = malloc((size_t)(k + 1) * 4), *row_tokens = malloc((size_t)n_rows * 4);
        int bad = 0;
        for (int r = 0; r < n_rows; r++) {
            row_tokens[r] = 0;
            for (int i = row_ptr[r]; i < row_ptr[r + 1]; i++) {
                pages[i] = spans[i].page;
                row_tokens[r] += spans[i].n;
                bad += spans[i].first != 0 || spans[i].pool != 0 ||
                       (i + 1 < row_ptr[r + 1] && spans[i].n != P);
            }
        }
        a.pages = dput(pages, (size_t)(k + 1) * 4);
        a.row_tokens = dput(row_tokens, (size_t)n_rows * 4);
        a.spans = NULL; /* unused in table mode */
        fail += prefill_kernels(&a, out, ref, n_out, "prefill_tab", bad, shape);
        cudaFree((void *)a.pages), cudaFree((void *)a.row_tokens);
        free(pages), free(row_tokens);
    }
    cudaFree((void *)a.base[0]), cudaFree((void *)a.base[1]), cudaFree((void *)a.pos[0]);
    cudaFree((void *)a.pos[1]), cudaFree((void *)a.tok_off), cudaFree((void *)a.row_ptr);
    cudaFree(d_spans), cudaFree((void *)a.q_pos);
    cudaFree((void *)a.q), cudaFree(a.out), cudaFree((void *)a.items);
    for (int s = 0; s < n_seq; s++)
        kw_view_free(views[s]);
    free(pool), free(poolb), free(pos), free(perm), free(q_pos), free(q), free(ref), free(out);
    free(pool1), free(poolb1), free(pos1);
    free(row_ptr), free(spans), free(items);
    return fail;
}

static int test_prefill(void)
{
    int fails = 0;
    {
        int ctx[] = {300}, nq[] = {300};
        fails += test_prefill_case(128, 32, 8, 16, 1, ctx, nq, 0, "full");
    }
    {
        int ctx[] = {1000, 77, 513}, nq[] = {200, 77, 1};
        fails += test_prefill_case(64, 9, 3, 16, 3, ctx, nq, 0, "chunked");
    }
    {
        int ctx[] = {700, 130}, nq[] = {65, 130};
        fails += test_prefill_case(128, 28, 4, 8, 2, ctx, nq, PF_TOKENS, "tokens");
    }
    {
        /* runs crossing the kernel's 64-token tiles and 1024-token windows, both pools */
        int ctx[] = {2500, 300}, nq[] = {200, 300};
        fails += test_prefill_case(128, 8, 2, 64, 2, ctx, nq, PF_RUNS, "runs");
    }
    {
        /* pages (spans) longer than the kernel's 1024-token windows, ending inside them */
        int ctx[] = {7000}, nq[] = {300};
        fails += test_prefill_case(64, 4, 2, 3000, 1, ctx, nq, PF_DENSE, "bigpage");
    }
    {
        /* a whole causal prefill: early query tiles skip the later windows */
        int ctx[] = {5000}, nq[] = {5000};
        fails += test_prefill_case(64, 4, 2, 16, 1, ctx, nq, PF_DENSE, "causal");
    }
    {
        int ctx[] = {3000}, nq[] = {1000};
        fails += test_prefill_case(128, 32, 8, 16, 1, ctx, nq, PF_DENSE, "long");
    }
    {
        /* head_dim 128 (the wgmma path's): a whole causal prefill, pages crossing windows */
        int ctx[] = {4100}, nq[] = {4100};
        fails += test_prefill_case(128, 4, 1, 16, 1, ctx, nq, PF_DENSE, "causal128");
        int ctx2[] = {2600}, nq2[] = {700};
        fails += test_prefill_case(128, 4, 2, 1500, 1, ctx2, nq2, PF_DENSE, "bigpage128");
    }
    {
        /* table views copied by TMA with other page sizes (16, 2 and 1 pages a tile of
         * 128 keys), and pages of 24 tokens, which do not tile it (cp.async) */
        int ctx[] = {1500, 333}, nq[] = {1500, 200};
        static const int ps[] = {8, 64, 128, 24};
        for (int i = 0; i < 4; i++) {
            char label[32];
            snprintf(label, sizeof label, "page%d", ps[i]);
            fails += test_prefill_case(128, 8, 2, ps[i], 2, ctx, nq, PF_DENSE, label);
        }
    }
    {
        int ctx[24], nq[24];
        for (int s = 0; s < 24; s++) {
            ctx[s] = 1 + (int)(uni() * 600);
            nq[s] = s % 3 ? 1 + (int)(uni() * ctx[s]) : ctx[s];
        }
        fails += test_prefill_case(64, 16, 4, 16, 24, ctx, nq, PF_DENSE, "many");
        fails += test_prefill_case(128, 8, 4, 16, 24, ctx, nq, PF_DENSE, "many128");
    }
    for (int t = 0; t < 3; t++) {
        int n_seq = 1 + (int)(uni() * 4), ctx[4], nq[4];
        for (int s = 0; s < n_seq; s++) {
            ctx[s] = 1 + (int)(uni() * 900);
            nq[s] = 1 + (int)(uni() * ctx[s]);
        }
        fails += test_prefill_case(t % 2 ? 64 : 128, 8, 2, 16, n_seq, ctx, nq, t == 2, "random");
    }
    return fails;
}

static int test_append_embed(void)
{
    int P = 16, D = 128, n_kv = 8, n_tok = 37, n_pages = 64;
    size_t pf = (size_t)2 * P * D;
    float *k = randv((size_t)n_tok * n_kv * D, 1), *v = randv((size_t)n_tok * n_kv * D, 1);
    int32_t pos[37], slots[37 * 8];
    for (int t = 0; t < n_tok; t++)
        pos[t] = 1000 + 3 * t;
    for (int i = 0; i < n_tok * n_kv; i++)
        slots[i] = i % 5 == 4 ? -1 : (int32_t)((i * 97) % (n_pages * P)); /* distinct */
    void *base = dput(NULL, (size_t)n_pages * pf * 2);
    int32_t *dpos = dput(NULL, (size_t)n_pages * P * 4);
    int rc = kw_cuda_kv_append(NULL, base, dpos, P, D, n_tok, n_kv,
                               dput(k, (size_t)n_tok * n_kv * D * 4),
                               dput(v, (size_t)n_tok * n_kv * D * 4), dput(pos, sizeof pos),
                               dput(slots, sizeof slots));
    uint16_t *pb = malloc((size_t)n_pages * pf * 2);
    int32_t *pp = malloc((size_t)n_pages * P * 4);
    dget(pb, base, (size_t)n_pages * pf * 2);
    dget(pp, dpos, (size_t)n_pages * P * 4);
    double worst = 0;
    int bad = 0;
    for (int i = 0; i < n_tok * n_kv; i++) {
        if (slots[i] < 0)
            continue;
        int g = slots[i] / P, c = slots[i] % P, t = i / n_kv;
        bad += pp[slots[i]] != pos[t];
        for (int d = 0; d < D; d++) {
            float kk = kw_bf16_to_f32(pb[(size_t)g * pf + (size_t)c * D + d]);
            float vv = kw_bf16_to_f32(pb[(size_t)g * pf + (size_t)(P + c) * D + d]);
            double e = fmax(fabs(kk - k[(size_t)i * D + d]), fabs(vv - v[(size_t)i * D + d]));
            worst = fmax(worst, e);
        }
    }
    int fails = report("kv_append", rc, bad ? 1.0 : worst, 8e-3, "P=16 D=128 kv=8 tok=37 (max abs)");
    /* embedding from a bf16 table */
    int rows = 500, dim = 576, n = 19;
    float *tab = randv((size_t)rows * dim, 1), *o = malloc((size_t)n * dim * 4),
          *r = malloc((size_t)n * dim * 4);
    uint16_t *tb = to_bf16(tab, (size_t)rows * dim, tab);
    int32_t ids[19];
    for (int i = 0; i < n; i++) {
        ids[i] = (int32_t)(uni() * rows);
        memcpy(r + (size_t)i * dim, tab + (size_t)ids[i] * dim, (size_t)dim * 4);
    }
    float *dout = dput(NULL, (size_t)n * dim * 4);
    rc = kw_cuda_embed_bf16(NULL, dput(tb, (size_t)rows * dim * 2), rows, dim,
                            dput(ids, sizeof ids), n, dout);
    dget(o, dout, (size_t)n * dim * 4);
    fails += report("embed_bf16", rc, rel_l2(o, r, (size_t)n * dim), 1e-7, "rows=500 dim=576");
    free(k), free(v), free(pb), free(pp), free(tab), free(o), free(r), free(tb);
    return fails;
}

/* kw_cuda_rope_append against kw_cuda_rope (q, k) then kw_cuda_kv_append: the same
 * arithmetic, so q, k, the pages (poisoned alike first) and the positions must be equal
 * bit for bit. Random head_dim, heads, tokens, layouts, slots (some skipped). */
static int test_rope_append(void)
{
    int fails = 0;
    for (int trial = 0; trial < 6; trial++) {
        int D = trial < 2 ? 128 : trial < 4 ? 64 : 2 * (4 + (int)(uni() * 60));
        int n_kv = 1 + (int)(uni() * 8), n_head = n_kv * (1 + (int)(uni() * 4));
        int n_tok = 1 + (int)(uni() * 40), P = trial % 3 ? 16 : 7, n_pages = 8 + n_tok * n_kv;
        int il = trial % 2;
        size_t nq = (size_t)n_tok * n_head * D, nk = (size_t)n_tok * n_kv * D;
        size_t pool = (size_t)n_pages * 2 * P * D * 2, npos = (size_t)n_pages * P;
        float *q = randv(nq, 2), *k = randv(nk, 2), *v = randv(nk, 2), inv[256];
        for (int i = 0; i < D / 2; i++)
            inv[i] = powf(10000.f, -2.f * i / D);
        int32_t *pos = malloc((size_t)n_tok * 4), *slots = malloc(nk / D * 4);
        for (int t = 0; t < n_tok; t++)
            pos[t] = (int32_t)(uni() * 100000);
        for (int i = 0; i < n_tok * n_kv; i++) /* distinct slots, one in 6 skipped */
            slots[i] = i % 6 == 5 ? -1 : (int32_t)(((size_t)i * 7 + 3) % npos);
        uint8_t *poison = malloc(pool);
        for (size_t i = 0; i < pool; i++)
            poison[i] = (uint8_t)(uni() * 256);
        void *dq[2], *dk[2], *base[2], *dpp[2];
        for (int w = 0; w < 2; w++)
            dq[w] = dput(q, nq * 4), dk[w] = dput(k, nk * 4), base[w] = dput(poison, pool),
            dpp[w] = dput(NULL, npos * 4);
        const float *dv = dput(v, nk * 4), *dinv = dput(inv, sizeof inv);
        const int32_t *dpos = dput(pos, (size_t)n_tok * 4), *dsl = dput(slots, nk / D * 4);
        int rc = kw_cuda_rope(NULL, dq[0], dpos, n_tok, n_head, D, dinv, il);
        rc = rc ? rc : kw_cuda_rope(NULL, dk[0], dpos, n_tok, n_kv, D, dinv, il);
        rc = rc ? rc : kw_cuda_kv_append(NULL, base[0], dpp[0], P, D, n_tok, n_kv, dk[0], dv,
                                         dpos, dsl);
        rc = rc ? rc : kw_cuda_rope_append(NULL, dq[1], dk[1], dv, dpos, n_tok, n_head, n_kv, D,
                                           dinv, il, base[1], dpp[1], P, dsl);
        size_t diff = 0;
        size_t sizes[4] = {nq * 4, nk * 4, pool, npos * 4};
        void *bufs[4][2] = {{dq[0], dq[1]}, {dk[0], dk[1]}, {base[0], base[1]}, {dpp[0], dpp[1]}};
        for (int b = 0; b < 4; b++) {
            uint8_t *h0 = malloc(sizes[b]), *h1 = malloc(sizes[b]);
            dget(h0, bufs[b][0], sizes[b]);
            dget(h1, bufs[b][1], sizes[b]);
            for (size_t i = 0; i < sizes[b]; i++)
                diff += h0[i] != h1[i];
            free(h0), free(h1);
        }
        int ok = rc == 0 && diff == 0;
        printf("%s rope_append  D=%d heads=%d/%d tok=%d P=%d %s: %zu bytes differ (bound 0)%s%s\n",
               ok ? "ok  " : "FAIL", D, n_head, n_kv, n_tok, P, il ? "interleaved" : "half", diff,
               rc ? " " : "", rc ? kw_cuda_last_error() : "");
        fails += !ok;
        free(q), free(k), free(v), free(pos), free(slots), free(poison);
    }
    return fails;
}

/* The folded decode forms (kw_cuda_gemv_ext), M = 1..8 rows with random K and widths:
 * - kw_cuda_norm_parts: xg = bf16(h * g) bit for bit, the partial sums of h^2 < 1e-5;
 * - a residual pass with g_out: y < 1e-4, then xg from the new y bit for bit and its
 *   partial sums < 1e-5 (references computed from the kernel's own y);
 * - Q/K/V and gate/up/SwiGLU on xg with ss_in: against r * (xg w^T) + b in f64 on the same
 *   bf16 inputs (r = 1 / sqrt(mean(h^2) + eps)), < 1e-4 (f32) and < 1e-2 (bf16 out); and
 *   against the unfolded norm's semantics, bf16(h r g) w^T + b, < 1e-2;
 * - Q/K/V with RoPE and the append (interleaved pairs): against the plain pass followed by
 *   kw_cuda_rope_append on poisoned pools alike: q, k < 1e-5, the pages (bf16) and
 *   positions < 1e-3 (a one-ulp difference of f32 may round a bf16 the other way). */
static float host_bf(float x)
{
    return kw_bf16_to_f32(kw_f32_to_bf16(x));
}

static int test_gemv_fold(void)
{
    int fails = 0;
    for (int trial = 0; trial < 8; trial++) {
        const int M = 1 + trial, K = 8 * (8 + (int)(uni() * 600));
        const int D = trial % 2 ? 64 : 128, n_kv = 1 + (int)(uni() * 4),
                  n_head = n_kv * (1 + (int)(uni() * 4)), qd = n_head * D, kd = n_kv * D;
        const int F = 8 + (int)(uni() * 1500);
        const float eps = 1e-5f;
        char shape[96];
        snprintf(shape, sizeof shape, "M=%d K=%d q/k=%d/%d F=%d", M, K, qd, kd, F);
        const int nss = (K + 3) / 4;
        float *h = randv((size_t)M * K, 3), *g = randv((size_t)K, 1);
        float *dh = dput(h, (size_t)M * K * 4), *dg = dput(g, (size_t)K * 4);
        void *dxg = dput(NULL, (size_t)M * K * 2);
        float *dss = dput(NULL, (size_t)M * nss * 4);
        /* 1. the first layer's parts */
        int rc = kw_cuda_norm_parts(NULL, dh, dg, dxg, dss, M, K);
        uint16_t *xg = malloc((size_t)M * K * 2);
        float *ss = malloc((size_t)M * nss * 4), *ssr = malloc((size_t)M * nss * 4);
        dget(xg, dxg, (size_t)M * K * 2);
        dget(ss, dss, (size_t)M * nss * 4);
        size_t bad = 0;
        for (int m = 0; m < M; m++)
            for (int p = 0; p < nss; p++) {
                double t = 0;
                for (int k = p * 4; k < p * 4 + 4 && k < K; k++) {
                    bad += xg[(size_t)m * K + k] != kw_f32_to_bf16(h[(size_t)m * K + k] * g[k]);
                    t += (double)h[(size_t)m * K + k] * h[(size_t)m * K + k];
                }
                ssr[(size_t)m * nss + p] = (float)t;
            }
        fails += report("norm_parts", rc, bad ? 1 : rel_l2(ss, ssr, (size_t)M * nss), 1e-5, shape);
        /* 2. Q/K/V on xg with ss_in */
        float *xgf = malloc(sizeof(float) * M * K), *xn = malloc(sizeof(float) * M * K),
              rs[8];
        for (int m = 0; m < M; m++) {
            double t = 0;
            for (int k = 0; k < K; k++)
                t += (double)h[(size_t)m * K + k] * h[(size_t)m * K + k];
            rs[m] = (float)(1 / sqrt(t / K + eps));
            for (int k = 0; k < K; k++) {
                xgf[(size_t)m * K + k] = kw_bf16_to_f32(xg[(size_t)m * K + k]);
                xn[(size_t)m * K + k] = host_bf(h[(size_t)m * K + k] * rs[m] * g[k]);
            }
        }
        int n[3] = {qd, kd, kd};
        kw_cuda_gemv_out o[3];
        float *wr[3], *b[3], *ref[3], *refn[3], *got[3];
        for (int s = 0; s < 3; s++) {
            float *w = randv((size_t)n[s] * K, 0.05f);
            wr[s] = malloc(sizeof(float) * n[s] * K);
            uint16_t *wb = to_bf16(w, (size_t)n[s] * K, wr[s]);
            b[s] = randv((size_t)n[s], 0.5f);
            ref[s] = malloc(sizeof(float) * M * n[s]), refn[s] = malloc(sizeof(float) * M * n[s]);
            got[s] = malloc(sizeof(float) * M * n[s]);
            kw_ref_linear(xgf, wr[s], NULL, ref[s], M, n[s], K);
            kw_ref_linear(xn, wr[s], b[s], refn[s], M, n[s], K);
            for (int m = 0; m < M; m++)
                for (int j = 0; j < n[s]; j++)
                    ref[s][(size_t)m * n[s] + j] = ref[s][(size_t)m * n[s] + j] * rs[m] + b[s][j];
            o[s] = (kw_cuda_gemv_out){dput(wb, (size_t)n[s] * K * 2),
                                      dput(b[s], (size_t)n[s] * 4),
                                      dput(NULL, (size_t)M * n[s] * 4), n[s]};
            free(w), free(wb);
        }
        kw_cuda_gemv_ext e = {.ss_in = dss, .eps = eps};
        rc = kw_cuda_gemv_multi_ext(NULL, dxg, M, K, o, 3, 0, &e);
        double er = 0, en = 0;
        for (int s = 0; s < 3; s++) {
            dget(got[s], o[s].y, (size_t)M * n[s] * 4);
            double a1 = rel_l2(got[s], ref[s], (size_t)M * n[s]),
                   a2 = rel_l2(got[s], refn[s], (size_t)M * n[s]);
            er = a1 > er ? a1 : er, en = a2 > en ? a2 : en;
        }
        fails += report("gemv_norm_qkv", rc, er, 1e-4, shape);
        fails += report("gemv_norm_qkv~", rc, en, 1e-2, shape);
        /* 3. RoPE and the append, against the plain pass then kw_cuda_rope_append */
        {
            const int P = trial % 3 ? 16 : 7, n_pages = 8 + M * n_kv;
            const size_t pool = (size_t)n_pages * 2 * P * D * 2, npos = (size_t)n_pages * P;
            float inv[64];
            for (int i = 0; i < D / 2; i++)
                inv[i] = powf(10000.f, -2.f * i / D);
            int32_t pos[8], *slots = malloc(sizeof(int32_t) * M * n_kv);
            for (int m = 0; m < M; m++)
                pos[m] = (int32_t)(uni() * 100000);
            for (int i = 0; i < M * n_kv; i++)
                slots[i] = i % 6 == 5 ? -1 : (int32_t)(((size_t)i * 7 + 3) % npos);
            uint8_t *poison = malloc(pool);
            for (size_t i = 0; i < pool; i++)
                poison[i] = (uint8_t)(uni() * 256);
            void *base[2], *dpp[2];
            for (int w = 0; w < 2; w++)
                base[w] = dput(poison, pool), dpp[w] = dput(NULL, npos * 4);
            const float *dinv = dput(inv, sizeof inv);
            const int32_t *dpos = dput(pos, sizeof pos), *dsl = dput(slots, sizeof(int32_t) * M * n_kv);
            kw_cuda_gemv_out o2[3];
            for (int s = 0; s < 3; s++)
                o2[s] = o[s], o2[s].y = dput(NULL, (size_t)M * n[s] * 4);
            int rc2 = kw_cuda_gemv_multi_ext(NULL, dxg, M, K, o, 3, 0, &e);
            rc2 = rc2 ? rc2 : kw_cuda_rope_append(NULL, o[0].y, o[1].y, o[2].y, dpos, M, n_head,
                                                  n_kv, D, dinv, 1, base[0], dpp[0], P, dsl);
            kw_cuda_gemv_ext er2 = e;
            er2.pos = dpos, er2.slots = dsl, er2.inv_freq = dinv, er2.head_dim = D;
            er2.page_tokens = P, er2.kv_base = base[1], er2.kv_pos = dpp[1];
            rc2 = rc2 ? rc2 : kw_cuda_gemv_multi_ext(NULL, dxg, M, K, o2, 3, 0, &er2);
            double eq = 0;
            for (int s = 0; s < 3; s++) {
                float *a0 = malloc(sizeof(float) * M * n[s]), *a1 = malloc(sizeof(float) * M * n[s]);
                dget(a0, o[s].y, (size_t)M * n[s] * 4);
                dget(a1, o2[s].y, (size_t)M * n[s] * 4);
                double d = rel_l2(a1, a0, (size_t)M * n[s]);
                eq = d > eq ? d : eq;
                free(a0), free(a1);
                cudaFree(o2[s].y);
            }
            fails += report("gemv_rope_qkv", rc2, eq, 1e-5, shape);
            uint16_t *p0 = malloc(pool), *p1 = malloc(pool);
            int32_t *q0 = malloc(npos * 4), *q1 = malloc(npos * 4);
            dget(p0, base[0], pool), dget(p1, base[1], pool);
            dget(q0, dpp[0], npos * 4), dget(q1, dpp[1], npos * 4);
            size_t np = pool / 2, posdiff = 0;
            float *f0 = malloc(np * 4), *f1 = malloc(np * 4);
            for (size_t i = 0; i < np; i++) {
                f0[i] = kw_bf16_to_f32(p0[i]), f1[i] = kw_bf16_to_f32(p1[i]);
                if (!isfinite(f0[i]) && !isfinite(f1[i]) && p0[i] == p1[i])
                    f0[i] = f1[i] = 0; /* poison left alike */
            }
            for (size_t i = 0; i < npos; i++)
                posdiff += q0[i] != q1[i];
            fails += report("gemv_rope_append", rc2, posdiff ? 1 : rel_l2(f1, f0, np), 1e-3, shape);
            free(p0), free(p1), free(q0), free(q1), free(f0), free(f1), free(slots), free(poison);
            for (int w = 0; w < 2; w++)
                cudaFree(base[w]), cudaFree(dpp[w]);
            cudaFree((void *)dinv), cudaFree((void *)dpos), cudaFree((void *)dsl);
        }
        /* 4. gate/up/SwiGLU on xg with ss_in (gate = w1, up = w2 over their first F' rows) */
        {
            const int Fs = n[1];
            float *gg = malloc(sizeof(float) * M * Fs), *uu = malloc(sizeof(float) * M * Fs),
                  *sref = malloc(sizeof(float) * M * Fs), *sgot = malloc(sizeof(float) * M * Fs);
            kw_ref_linear(xgf, wr[1], NULL, gg, M, Fs, K);
            kw_ref_linear(xgf, wr[2], NULL, uu, M, Fs, K);
            for (int i = 0; i < M * Fs; i++) {
                const float gv = gg[i] * rs[i / Fs], uv = uu[i] * rs[i / Fs];
                sref[i] = gv / (1.f + expf(-gv)) * uv;
            }
            void *dsw = dput(NULL, (size_t)M * Fs * 2);
            rc = kw_cuda_gemv_swiglu_ext(NULL, dxg, o[1].w, o[2].w, dsw, M, Fs, K, &e);
            uint16_t *hs = malloc((size_t)M * Fs * 2);
            dget(hs, dsw, (size_t)M * Fs * 2);
            for (int i = 0; i < M * Fs; i++)
                sgot[i] = kw_bf16_to_f32(hs[i]);
            fails += report("gemv_norm_swiglu", rc, rel_l2(sgot, sref, (size_t)M * Fs), 1e-2, shape);
            free(gg), free(uu), free(sref), free(sgot), free(hs);
            cudaFree(dsw);
        }
        /* 5. a residual pass (K' = F inputs -> K outputs) that writes the next norm's input */
        {
            float *x2 = randv((size_t)M * F, 1), *x2r = malloc(sizeof(float) * M * F);
            uint16_t *x2b = to_bf16(x2, (size_t)M * F, x2r);
            int F8 = F / 8 * 8;
            float *w = randv((size_t)K * F8, 0.05f), *wrr = malloc(sizeof(float) * K * F8);
            uint16_t *wb = to_bf16(w, (size_t)K * F8, wrr);
            float *xr8 = malloc(sizeof(float) * M * F8);
            for (int m = 0; m < M; m++)
                for (int k = 0; k < F8; k++)
                    xr8[(size_t)m * F8 + k] = x2r[(size_t)m * F + k];
            uint16_t *x8b = to_bf16(xr8, (size_t)M * F8, NULL);
            float *y0 = randv((size_t)M * K, 2), *yref = malloc(sizeof(float) * M * K),
                  *y = malloc(sizeof(float) * M * K);
            kw_ref_linear(xr8, wrr, NULL, yref, M, K, F8);
            for (size_t i = 0; i < (size_t)M * K; i++)
                yref[i] += y0[i];
            float *dy = dput(y0, (size_t)M * K * 4);
            void *dx8 = dput(x8b, (size_t)M * F8 * 2), *dw = dput(wb, (size_t)K * F8 * 2);
            kw_cuda_gemv_out ro = {dw, NULL, dy, K};
            kw_cuda_gemv_ext eo = {.g_out = dg, .xg_out = dxg, .ss_out = dss};
            CK(cudaMemset(dxg, 0xff, (size_t)M * K * 2));
            CK(cudaMemset(dss, 0xff, (size_t)M * nss * 4));
            rc = kw_cuda_gemv_multi_ext(NULL, dx8, M, F8, &ro, 1, 1, &eo);
            dget(y, dy, (size_t)M * K * 4);
            dget(xg, dxg, (size_t)M * K * 2);
            dget(ss, dss, (size_t)M * nss * 4);
            fails += report("gemv_add_norm_out", rc, rel_l2(y, yref, (size_t)M * K), 1e-4, shape);
            bad = 0;
            for (int m = 0; m < M; m++)
                for (int p = 0; p < nss; p++) {
                    double t = 0;
                    for (int k = p * 4; k < p * 4 + 4 && k < K; k++) {
                        const float v = y[(size_t)m * K + k];
                        bad += xg[(size_t)m * K + k] != kw_f32_to_bf16(v * g[k]);
                        t += (double)v * v;
                    }
                    ssr[(size_t)m * nss + p] = (float)t;
                }
            fails += report("gemv_add_norm_parts", rc, bad ? 1 : rel_l2(ss, ssr, (size_t)M * nss),
                            1e-5, shape);
            cudaFree(dy), cudaFree(dx8), cudaFree(dw);
            free(x2), free(x2r), free(x2b), free(w), free(wrr), free(wb), free(xr8), free(x8b),
                free(y0), free(yref), free(y);
        }
        /* fields that do not fit the call are refused */
        kw_cuda_gemv_ext bad_e = {.g_out = dg, .xg_out = dxg, .ss_out = dss};
        if (kw_cuda_gemv_multi_ext(NULL, dxg, M, K, o, 3, 0, &bad_e) != KW_EINVAL ||
            kw_cuda_gemv_swiglu_ext(NULL, dxg, o[1].w, o[2].w, dxg, M, n[1], K, &bad_e) != KW_EINVAL)
            fails += report("gemv_ext refuses a norm output on a store", KW_EINVAL, 1, 0, shape);
        for (int s = 0; s < 3; s++) {
            cudaFree((void *)o[s].w), cudaFree((void *)o[s].bias), cudaFree(o[s].y);
            free(wr[s]), free(b[s]), free(ref[s]), free(refn[s]), free(got[s]);
        }
        cudaFree(dh), cudaFree(dg), cudaFree(dxg), cudaFree(dss);
        free(h), free(g), free(xg), free(ss), free(ssr), free(xgf), free(xn);
    }
    return fails;
}

/* test_cuda_model [GROUP...]: every group, or the named ones */
int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(void);
    } groups[] = {{"gemm", test_gemm},       {"gemv", test_gemv_fused},
                  {"prefill", test_prefill}, {"append", test_append_embed},
                  {"rope", test_rope_append}, {"fold", test_gemv_fold}};
    enum { N_GROUPS = sizeof groups / sizeof groups[0] };
    int want[N_GROUPS] = {0};
    for (int i = 1; i < argc; i++) {
        int g = 0;
        while (g < N_GROUPS && strcmp(argv[i], groups[g].name))
            g++;
        if (g == N_GROUPS) {
            fprintf(stderr, "test_cuda_model: no test group '%s' (gemm, gemv, prefill, "
                            "append, rope, fold)\n", argv[i]);
            return 2;
        }
        want[g] = 1;
    }
    if (kw_cuda_device_count() < 1) {
        printf("SKIP: no CUDA device (the CUDA model kernels need one)\n");
        return 77;
    }
    int fails = 0;
    for (int g = 0; g < N_GROUPS; g++)
        if (argc == 1 || want[g])
            fails += groups[g].run();
    printf("%s: %d failure(s)\n", fails ? "FAIL" : "ok", fails);
    return fails ? 1 : 0;
}
