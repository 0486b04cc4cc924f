/* Dense CPU kernels of kernels.h: OpenBLAS for GEMM/GEMV, OpenMP over rows elsewhere.
 * Compare kernels/cpu/reference.c for the plain definitions. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "cpu/kernels_cpu.h"

int kw_cpu_linear(const float *x, const float *w,
                const float *bias, float *y, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0)
        return KW_EINVAL;
    if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, 0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f,
                    y, N);
    if (bias) {
#pragma omp parallel for if ((int64_t)M * N > 65536)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                y[(int64_t)m * N + n] += bias[n];
    }
    return KW_OK;
}

int kw_cpu_rmsnorm(const float *x, const float *g, float *y,
                 int rows, int dim, float eps)
{
#pragma omp parallel for if (rows > 4)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * dim;
        float *yr = y + (int64_t)r * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + (double)eps));
        for (int i = 0; i < dim; i++)
            yr[i] = xr[i] * inv * g[i];
    }
    return KW_OK;
}

void kw_rope_inv_freq(const kw_model_config *cfg, float *inv_freq)
{
    int half = cfg->head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* as the reference implementations compute it: in float, base^(2i/d) */
        float f = 1.0f / powf(cfg->rope_theta, (float)(2 * i) / (float)cfg->head_dim);
        if (cfg->rope_scaling == KW_ROPE_SCALE_LINEAR && cfg->rope_factor > 0) {
            f /= cfg->rope_factor;
        } else if (cfg->rope_scaling == KW_ROPE_SCALE_LLAMA3 && cfg->rope_factor > 0) {
            double lo_wl = cfg->rope_orig_ctx / cfg->rope_low_freq_factor;
            double hi_wl = cfg->rope_orig_ctx / cfg->rope_high_freq_factor;
            double wl = 2 * M_PI / f;
            if (wl > lo_wl) {
                f = f / cfg->rope_factor;
            } else if (wl >= hi_wl) {
                double smooth = (cfg->rope_orig_ctx / wl - cfg->rope_low_freq_factor) /
                                (cfg->rope_high_freq_factor - cfg->rope_low_freq_factor);
                f = (float)((1 - smooth) * f / cfg->rope_factor + smooth * f);
            }
        }
        inv_freq[i] = f;
    }
}

int kw_cpu_rope(float *x, const int32_t *pos, int n_tok,
              int n_heads, int head_dim, const float *inv_freq, kw_rope_layout layout)
{
    if (head_dim % 2)
        return KW_EINVAL;
    int half = head_dim / 2;
#pragma omp parallel for if (n_tok > 8)
    for (int t = 0; t < n_tok; t++) {
        float cs[512], sn[512];
        for (int i = 0; i < half && i < 512; i++) {
            float a = (float)pos[t] * inv_freq[i];
            cs[i] = cosf(a);
            sn[i] = sinf(a);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_dim;
            if (layout == KW_ROPE_INTERLEAVED) {
                for (int i = 0; i < half; i++) {
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * cs[i] - b * sn[i];
                    v[2 * i + 1] = a * sn[i] + b * cs[i];
                }
            } else {
                for (int i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * cs[i] - b * sn[i];
                    v[i + half] = b * cs[i] + a * sn[i];
                }
            }
        }
    }
    return KW_OK;
}

int kw_cpu_swiglu(const float *gate, const float *up, float *out,
                int64_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
    return KW_OK;
}

int kw_cpu_embed(const float *table, int64_t n_rows, int dim,
               const int32_t *ids, int n, float *out)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_rows)
            return KW_ERANGE;
    for (int i = 0; i < n; i++)
        memcpy(out + (int64_t)i * dim, table + (int64_t)ids[i] * dim, sizeof(float) * dim);
    return KW_OK;
}

int kw_cpu_add(float *y, const float *x, int64_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
    return KW_OK;
}

int kw_cpu_softmax(float *x, int rows, int n)
{
#pragma omp parallel for if (rows > 8)
    for (int r = 0; r < rows; r++) {
        float *v = x + (int64_t)r * n;
        float mx = -INFINITY;
        for (int i = 0; i < n; i++)
            mx = v[i] > mx ? v[i] : mx;
        double s = 0;
        for (int i = 0; i < n; i++) {
            v[i] = expf(v[i] - mx);
            s += v[i];
        }
        float inv = (float)(1.0 / s);
        for (int i = 0; i < n; i++)
            v[i] *= inv;
    }
    return KW_OK;
}

double kw_k_logsumexp(const float *logits, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp((double)logits[i] - mx);
    return mx + log(s);
}

int kw_k_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}
