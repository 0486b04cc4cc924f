/* The weight-streaming decode GEMVs of the device engine in their fused forms (Q/K/V in
 * one launch, the residual add, gate/up/SwiGLU) and their folded forms (kw_cuda_gemv_ext:
 * RMSNorm on either side of a pass, RoPE with the page append), each against a host
 * reference on random shapes and data with poisoned outputs (bounds at each group).
 * Skipped (exit 77, with a line saying why) without a CUDA device. */
#include "cuda_check.h"
#include "kernels.h"

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

/* test_cuda_gemv [GROUP...]: every group, or the named ones */
int main(int argc, char **argv)
{
    static const cuda_check_group groups[] = {{"fused", test_gemv_fused},
                                              {"fold", test_gemv_fold}};
    return cuda_check_main("test_cuda_gemv", groups, sizeof groups / sizeof *groups, argc,
                           argv);
}
