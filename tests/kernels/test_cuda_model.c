/* The CUDA kernels of the device engine against the CPU references, on random shapes and
 * data with poisoned outputs: cuBLAS GEMMs (f32, and bf16 with f32 accumulation; the
 * weight-streaming GEMV behind them at few rows; its fused and folded forms are in
 * test_cuda_gemv.c), causal prefill attention over paged bf16 views (dense, token-level and run spans over both
 * pools, GQA, chunks; dense views also in table mode), page append (and RoPE fused with
 * it, bit-identical to the two launches), bf16 embedding gather; int8 pages (append_i8):
 * the appends' bytes and scales bit-identical to the host pool's quantization of the same
 * rows (and RoPE fused with the append to the two launches), and the prefill path's
 * gather bit-identical to bf16(scale x int8). Skipped (exit 77, with a line saying why)
 * without a CUDA device. Bounds: f32 paths rel L2 < 1e-4; bf16 GEMM
 * against the reference on the same bf16-rounded inputs < 1e-4 (and < 1e-2 against the
 * unrounded f32 inputs); attention (bf16 pages, Q and P rounded to bf16 for the tensor
 * cores) < 1e-2. */
#include "cuda_check.h"
#include "kernels.h"

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
    static int said, said_cudnn;
    int fail = 0;
    const int last = a->host_kv_len ? KW_CUDA_PREFILL_CUDNN : KW_CUDA_PREFILL_WGMMA;
    for (int k = KW_CUDA_PREFILL_MMA; k <= last; k++) {
        a->kernel = k;
        int rc = run_prefill(a, out, n);
        if (k == KW_CUDA_PREFILL_WGMMA && rc == KW_ENOSYS) {
            if (a->head_dim == 128 && !said++)
                printf("skip %s/wgmma: this device has no sm_90a warpgroup MMA\n", what);
            continue;
        }
        if (k == KW_CUDA_PREFILL_CUDNN && rc == KW_ENOSYS) {
            char why[256];
            kw_cuda_cudnn_version(why, sizeof why);
            if (!said_cudnn++)
                printf("skip %s/cudnn: %s\n", what, why);
            continue;
        }
        char name[64];
        static const char *const kname[] = {"auto", "mma", "wgmma", "cudnn"};
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
        /* rows whose positions increase and whose last tokens are the queries: the cuDNN
         * kernel's bottom-right causal mask over indices is the view's mask over positions */
        a.host_tok_off = tok_off, a.host_kv_len = ctx;
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
        /* sizes cuDNN's plans are built for exactly (1024 whole, 512 after 1536 keys; the
         * others pad to them), and 5000 queries after 1000 keys, padded to 5120 x 6144 */
        static const int c[3][2] = {{1024, 1024}, {2048, 512}, {6000, 5000}};
        for (int i = 0; i < 3; i++)
            fails += test_prefill_case(128, 8, 2, 16, 1, c[i], c[i] + 1, PF_DENSE, "bucket");
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

/* ---- int8 pages ---- */

/* A host int8 pool holding n_tok tokens of one layer (k, v: (n_tok, n_kv, hd)), appended
 * in two calls (so a page is filled across them); slots[t * n_kv + h]: where the host put
 * token t of KV head h (page * P + slot). */
static kw_kvpool *host_i8(int P, int hd, int n_kv, int n_tok, const float *k, const float *v,
                          const int32_t *pos, int32_t *slots, kw_kvseq **seq)
{
    kw_model_config cfg = {.n_layer = 1, .n_head = 2 * n_kv, .n_head_kv = n_kv, .head_dim = hd};
    kw_kvpool_opts o = kw_kvpool_defaults();
    o.page_tokens = P, o.dtype = KW_KV_I8;
    o.n_pages = (int64_t)n_kv * ((n_tok + P - 1) / P) + 4;
    kw_kvpool *pool = NULL;
    kw_error err = {0};
    if (kw_kvpool_new(&cfg, &o, &pool, &err) < 0) {
        fprintf(stderr, "kw_kvpool_new: %s\n", err.msg);
        exit(1);
    }
    *seq = kw_kvseq_new(pool);
    int a = n_tok / 3;
    size_t row = (size_t)n_kv * hd;
    if (kw_kvseq_append(*seq, 0, k, v, pos, a) < 0 ||
        kw_kvseq_append(*seq, 0, k + a * row, v + a * row, pos + a, n_tok - a) < 0) {
        fprintf(stderr, "kw_kvseq_append failed\n");
        exit(1);
    }
    for (int h = 0; h < n_kv; h++) {
        int np;
        const int32_t *pg = kw_kvseq_pages(*seq, 0, h, &np);
        for (int t = 0; t < n_tok; t++)
            slots[(size_t)t * n_kv + h] = pg[t / P] * P + t % P;
    }
    return pool;
}

/* Rows of random magnitude (1/16 .. 16) with some exact zeros (a zero row's scale is 0), so
 * every row has its own scale. */
static float *rows_i8_input(size_t n_rows, int hd)
{
    float *x = randv(n_rows * hd, 1);
    for (size_t r = 0; r < n_rows; r++) {
        float m = (float)exp2(uni() * 8 - 4);
        for (int d = 0; d < hd; d++)
            x[r * hd + d] = r % 11 == 7 ? 0.f : x[r * hd + d] * m;
    }
    return x;
}

/* Bytes of token t's K and V rows and scales at slot s that differ between two int8
 * pools (page layout of kvpool.h). */
static size_t i8_slot_diff(const uint8_t *a, const uint8_t *b, int P, int hd, int32_t s)
{
    size_t pb = (size_t)kw_cuda_i8_page_bytes(P, hd), d = 0, off = (size_t)(s / P) * pb;
    int slot = s % P;
    for (int w = 0; w < 2; w++) {
        size_t r = off + ((size_t)w * P + slot) * hd, sc = off + (size_t)2 * P * hd +
                                                          ((size_t)w * P + slot) * 4;
        for (int i = 0; i < hd; i++)
            d += a[r + i] != b[r + i];
        for (int i = 0; i < 4; i++)
            d += a[sc + i] != b[sc + i];
    }
    return d;
}

/* kw_cuda_kv_append_i8 against the host pool's own quantization (kw_kvseq_append on a
 * KW_KV_I8 pool) of the same f32 rows: the K and V bytes, scales and positions of every
 * appended slot equal bit for bit; slots marked -1 leave the poisoned pool as it was. */
static int test_append_i8_exact(void)
{
    int fails = 0;
    static const int shapes[][4] = {{16, 128, 8, 37}, {16, 64, 4, 100}, {6, 128, 2, 50},
                                    {7, 40, 3, 23}, {2, 64, 1, 9}}; /* P, hd, n_kv, n_tok */
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int P = shapes[si][0], hd = shapes[si][1], n_kv = shapes[si][2], n_tok = shapes[si][3];
        size_t nr = (size_t)n_tok * n_kv;
        float *k = rows_i8_input(nr, hd), *v = rows_i8_input(nr, hd);
        int32_t *pos = malloc((size_t)n_tok * 4), *slots = malloc(nr * 4), *dsl = malloc(nr * 4);
        for (int t = 0; t < n_tok; t++)
            pos[t] = 17 + 5 * t;
        kw_kvseq *seq;
        kw_kvpool *pool = host_i8(P, hd, n_kv, n_tok, k, v, pos, slots, &seq);
        kw_kvmem mem = kw_kvpool_mem(pool);
        int64_t n_pages = kw_kvpool_options(pool)->n_pages;
        size_t bytes = (size_t)(n_pages * mem.page_bytes[0]);
        if (mem.page_bytes[0] != kw_cuda_i8_page_bytes(P, hd)) {
            printf("FAIL append_i8: host page of %lld bytes, device layout %lld\n",
                   (long long)mem.page_bytes[0], (long long)kw_cuda_i8_page_bytes(P, hd));
            fails++;
        }
        uint8_t *poison = malloc(bytes), *got = malloc(bytes);
        for (size_t i = 0; i < bytes; i++)
            poison[i] = (uint8_t)(uni() * 256);
        for (size_t i = 0; i < nr; i++)
            dsl[i] = i % 5 == 3 ? -1 : slots[i]; /* skipped: stays poisoned */
        void *base = dput(poison, bytes);
        int32_t *dpos = dput(NULL, (size_t)n_pages * P * 4);
        int32_t *gpos = malloc((size_t)n_pages * P * 4);
        int rc = kw_cuda_kv_append_i8(NULL, base, dpos, P, hd, n_tok, n_kv, dput(k, nr * hd * 4),
                                      dput(v, nr * hd * 4), dput(pos, (size_t)n_tok * 4),
                                      dput(dsl, nr * 4));
        dget(got, base, bytes);
        dget(gpos, dpos, (size_t)n_pages * P * 4);
        size_t diff = 0, kept = 0, bad_pos = 0;
        for (size_t i = 0; i < nr; i++) {
            if (dsl[i] < 0)
                kept += i8_slot_diff(got, poison, P, hd, slots[i]) == 0;
            else {
                diff += i8_slot_diff(got, mem.base[0], P, hd, slots[i]);
                bad_pos += gpos[slots[i]] != pos[i / n_kv];
            }
        }
        size_t n_skip = (nr + 1) / 5;
        int ok = rc == 0 && diff == 0 && bad_pos == 0 && kept == n_skip;
        printf("%s append_i8    P=%d hd=%d kv=%d tok=%d: %zu bytes differ from the host pool's "
               "(bound 0), %zu bad positions, %zu of %zu skipped slots untouched%s%s\n",
               ok ? "ok  " : "FAIL", P, hd, n_kv, n_tok, diff, bad_pos, kept, n_skip,
               rc ? " " : "", rc ? kw_cuda_last_error() : "");
        fails += !ok;
        kw_kvseq_free(seq);
        kw_kvpool_free(pool);
        free(k), free(v), free(pos), free(slots), free(dsl), free(poison), free(got), free(gpos);
    }
    return fails;
}

/* kw_cuda_rope_append_i8 against kw_cuda_rope then kw_cuda_kv_append_i8 (bit for bit: q,
 * k, the pool, positions), and its pages against the host pool's quantization of the
 * rotated K it left in k and of V. */
static int test_rope_append_i8(void)
{
    int fails = 0;
    for (int trial = 0; trial < 6; trial++) {
        int D = trial < 2 ? 128 : trial < 4 ? 64 : 2 * (4 + (int)(uni() * 60));
        int n_kv = 1 + (int)(uni() * 8), n_head = n_kv * (1 + (int)(uni() * 4));
        int n_tok = 1 + (int)(uni() * 40), P = trial % 3 ? 16 : 6, il = trial % 2;
        size_t nq = (size_t)n_tok * n_head * D, nk = (size_t)n_tok * n_kv * D, nr = nk / D;
        float *q = randv(nq, 2), *k = rows_i8_input(nr, D), *v = rows_i8_input(nr, D), inv[256];
        for (int i = 0; i < D / 2; i++)
            inv[i] = powf(10000.f, -2.f * i / D);
        int32_t *pos = malloc((size_t)n_tok * 4), *slots = malloc(nr * 4);
        for (int t = 0; t < n_tok; t++)
            pos[t] = (int32_t)(uni() * 100000);
        /* the host pool places the tokens; its pages are compared after the rotation */
        kw_kvseq *seq;
        kw_kvpool *pool = host_i8(P, D, n_kv, n_tok, k, v, pos, slots, &seq);
        int64_t n_pages = kw_kvpool_options(pool)->n_pages;
        size_t bytes = (size_t)(n_pages * kw_cuda_i8_page_bytes(P, D)), npos = (size_t)n_pages * P;
        uint8_t *poison = malloc(bytes);
        for (size_t i = 0; i < bytes; i++)
            poison[i] = (uint8_t)(uni() * 256);
        void *dq[2], *dk[2], *base[2], *dpp[2];
        for (int w = 0; w < 2; w++)
            dq[w] = dput(q, nq * 4), dk[w] = dput(k, nk * 4), base[w] = dput(poison, bytes),
            dpp[w] = dput(NULL, npos * 4);
        const float *dv = dput(v, nk * 4), *dinv = dput(inv, sizeof inv);
        const int32_t *dpos = dput(pos, (size_t)n_tok * 4), *dsl = dput(slots, nr * 4);
        int rc = kw_cuda_rope(NULL, dq[0], dpos, n_tok, n_head, D, dinv, il);
        rc = rc ? rc : kw_cuda_rope(NULL, dk[0], dpos, n_tok, n_kv, D, dinv, il);
        rc = rc ? rc : kw_cuda_kv_append_i8(NULL, base[0], dpp[0], P, D, n_tok, n_kv, dk[0], dv,
                                            dpos, dsl);
        rc = rc ? rc : kw_cuda_rope_append_i8(NULL, dq[1], dk[1], dv, dpos, n_tok, n_head, n_kv,
                                              D, dinv, il, base[1], dpp[1], P, dsl);
        size_t diff = 0, sizes[4] = {nq * 4, nk * 4, bytes, npos * 4};
        void *bufs[4][2] = {{dq[0], dq[1]}, {dk[0], dk[1]}, {base[0], base[1]}, {dpp[0], dpp[1]}};
        uint8_t *pages = malloc(bytes);
        for (int b = 0; b < 4; b++) {
            uint8_t *h0 = malloc(sizes[b]), *h1 = malloc(sizes[b]);
            dget(h0, bufs[b][0], sizes[b]);
            dget(h1, bufs[b][1], sizes[b]);
            for (size_t i = 0; i < sizes[b]; i++)
                diff += h0[i] != h1[i];
            if (b == 1) /* the rotated K, into a second host pool */
                memcpy(k, h1, nk * 4);
            if (b == 2)
                memcpy(pages, h1, bytes);
            free(h0), free(h1);
        }
        kw_kvseq *seq2;
        int32_t *slots2 = malloc(nr * 4);
        kw_kvpool *pool2 = host_i8(P, D, n_kv, n_tok, k, v, pos, slots2, &seq2);
        kw_kvmem mem = kw_kvpool_mem(pool2);
        size_t host_diff = 0;
        for (size_t i = 0; i < nr; i++) /* the same placement: the same pool history */
            host_diff += slots2[i] != slots[i] ? 1
                                               : i8_slot_diff(pages, mem.base[0], P, D, slots[i]);
        int ok = rc == 0 && diff == 0 && host_diff == 0;
        printf("%s rope_append_i8 D=%d heads=%d/%d tok=%d P=%d %s: %zu bytes differ from the two "
               "launches, %zu from the host pool's quantization (bound 0)%s%s\n",
               ok ? "ok  " : "FAIL", D, n_head, n_kv, n_tok, P, il ? "interleaved" : "half", diff,
               host_diff, rc ? " " : "", rc ? kw_cuda_last_error() : "");
        fails += !ok;
        kw_kvseq_free(seq), kw_kvseq_free(seq2);
        kw_kvpool_free(pool), kw_kvpool_free(pool2);
        free(q), free(k), free(v), free(pos), free(slots), free(slots2), free(poison), free(pages);
    }
    return fails;
}

/* kw_cuda_rows_i8_to_bf16 (the prefill path's gather) against the host: every valid slot
 * of every row's pages is bf16(scale x int8) bit for bit (kw_kvmem_row's value, rounded
 * to nearest even) with its position; slots past a row's end are zeros at position
 * 0x7f7f7f7f; rows with no destination (-1) and pages past the rows leave the poisoned
 * scratch as it was. Rows of random lengths (some empty) over shuffled pages. */
static int test_gather_i8(void)
{
    int fails = 0;
    static const int shapes[][3] = {{16, 128, 12}, {16, 64, 30}, {6, 128, 7}, {2, 64, 5}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int P = shapes[si][0], hd = shapes[si][1], n_rows = shapes[si][2];
        int32_t *len = malloc((size_t)n_rows * 4), *row_ptr = malloc((size_t)n_rows * 4),
                *dst_ptr = malloc((size_t)n_rows * 4);
        int n_src = 0, n_dst = 0, maxp = 0;
        for (int r = 0; r < n_rows; r++) {
            len[r] = r % 5 == 2 ? 0 : 1 + (int)(uni() * 40 * P);
            int np = (len[r] + P - 1) / P;
            row_ptr[r] = n_src, n_src += np;
            dst_ptr[r] = r % 7 == 4 ? -1 : n_dst;
            n_dst += dst_ptr[r] < 0 ? 0 : np;
            maxp = np > maxp ? np : maxp;
        }
        /* a random int8 pool (bytes from the host quantization of random rows) */
        int n_pages = n_src + 3;
        size_t pb = (size_t)kw_cuda_i8_page_bytes(P, hd), bytes = (size_t)n_pages * pb;
        uint8_t *pool = malloc(bytes);
        int32_t *pos = malloc((size_t)n_pages * P * 4), *pages = malloc((size_t)(n_src + 1) * 4);
        for (int g = 0; g < n_pages; g++) { /* random bytes and scales (some 0) */
            float *sc = (float *)(void *)(pool + g * pb + (size_t)2 * P * hd);
            for (int r = 0; r < 2 * P; r++) {
                int8_t *q = (int8_t *)pool + g * pb + (size_t)r * hd;
                for (int d = 0; d < hd; d++)
                    q[d] = (int8_t)(-127 + (int)(uni() * 255));
                sc[r] = r % 9 == 5 ? 0.f : (float)exp2(uni() * 8 - 4) / 127.f;
            }
        }
        for (int i = 0; i < n_pages * P; i++)
            pos[i] = (int32_t)(uni() * 1e6);
        for (int i = 0; i < n_src; i++) /* a permutation of the pool's pages */
            pages[i] = i;
        for (int i = n_src - 1; i > 0; i--) {
            int j = (int)(uni() * (i + 1)), t = pages[i];
            pages[i] = pages[j], pages[j] = t;
        }
        size_t dbytes = (size_t)(n_dst + 2) * 2 * P * hd * 2, dpos_n = (size_t)(n_dst + 2) * P;
        uint8_t *poison = malloc(dbytes);
        for (size_t i = 0; i < dbytes; i++)
            poison[i] = (uint8_t)(uni() * 256);
        void *ddst = dput(poison, dbytes);
        int32_t *ddpos = dput(NULL, dpos_n * 4);
        int rc = kw_cuda_rows_i8_to_bf16(NULL, dput(pool, bytes),
                                         dput(pos, (size_t)n_pages * P * 4), P, hd, n_rows,
                                         dput(pages, (size_t)(n_src + 1) * 4),
                                         dput(row_ptr, (size_t)n_rows * 4),
                                         dput(len, (size_t)n_rows * 4),
                                         dput(dst_ptr, (size_t)n_rows * 4), maxp, ddst, ddpos);
        uint16_t *got = malloc(dbytes);
        int32_t *gpos = malloc(dpos_n * 4);
        dget(got, ddst, dbytes);
        dget(gpos, ddpos, dpos_n * 4);
        size_t vals = 0, bad = 0, tail_bad = 0, untouched = 0;
        for (int r = 0; r < n_rows; r++) {
            if (dst_ptr[r] < 0)
                continue;
            for (int i = 0; i * P < len[r]; i++) {
                int g = pages[row_ptr[r] + i], d = dst_ptr[r] + i;
                const uint8_t *pg = pool + g * pb;
                const float *sc = (const float *)(const void *)(pg + (size_t)2 * P * hd);
                for (int slot = 0; slot < P; slot++) {
                    bool valid = i * P + slot < len[r];
                    int32_t want_pos = valid ? pos[(size_t)g * P + slot] : 0x7f7f7f7f;
                    if (gpos[(size_t)d * P + slot] != want_pos)
                        *(valid ? &bad : &tail_bad) += 1;
                    for (int w = 0; w < 2; w++) {
                        const int8_t *q = (const int8_t *)pg + ((size_t)w * P + slot) * hd;
                        const uint16_t *o = got + ((size_t)d * 2 * P + (size_t)w * P + slot) * hd;
                        for (int e = 0; e < hd; e++) {
                            float x = sc[w * P + slot] * (float)q[e];
                            uint16_t want = valid ? kw_f32_to_bf16(x) : 0;
                            if (o[e] != want)
                                *(valid ? &bad : &tail_bad) += 1;
                            vals += valid;
                        }
                    }
                }
            }
        }
        /* the scratch past the written pages keeps its poison */
        size_t past = (size_t)n_dst * 2 * P * hd * 2;
        untouched = memcmp((uint8_t *)got + past, poison + past, dbytes - past) == 0;
        int ok = rc == 0 && bad == 0 && tail_bad == 0 && untouched;
        printf("%s gather_i8    P=%d hd=%d rows=%d pages=%d: %zu of %zu values differ from "
               "bf16(scale x int8) (bound 0), %zu tail slots not cleared, scratch past the rows "
               "%s%s%s\n", ok ? "ok  " : "FAIL", P, hd, n_rows, n_dst, bad, vals, tail_bad,
               untouched ? "untouched" : "WRITTEN", rc ? " " : "", rc ? kw_cuda_last_error() : "");
        fails += !ok;
        free(len), free(row_ptr), free(dst_ptr), free(pool), free(pos), free(pages);
        free(poison), free(got), free(gpos);
    }
    return fails;
}

static int test_append_i8(void)
{
    return test_append_i8_exact() + test_rope_append_i8() + test_gather_i8();
}

/* test_cuda_model [GROUP...]: every group, or the named ones */
int main(int argc, char **argv)
{
    static const cuda_check_group groups[] = {{"gemm", test_gemm},
                                              {"prefill", test_prefill},
                                              {"append", test_append_embed},
                                              {"rope", test_rope_append},
                                              {"append_i8", test_append_i8}};
    return cuda_check_main("test_cuda_model", groups, sizeof groups / sizeof *groups, argc,
                           argv);
}
