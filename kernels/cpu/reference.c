/* Plain reference kernels: the definitions the optimized kernels are tested against.
 * Written for clarity, accumulating in double. */
#include <math.h>

#include "kernels.h"

void kw_ref_linear(const float *x, const float *w, const float *bias, float *y, int M, int N,
                   int K)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0.0;
            for (int k = 0; k < K; k++)
                s += (double)x[(int64_t)m * K + k] * w[(int64_t)n * K + k];
            y[(int64_t)m * N + n] = (float)s;
        }
}

void kw_ref_rmsnorm(const float *x, const float *g, float *y, int rows, int dim, float eps)
{
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++)
            y[r * dim + i] = (float)(x[r * dim + i] * inv * g[i]);
    }
}

void kw_ref_rope(float *x, const int32_t *pos, int n_tok, int n_heads, int head_dim,
                 const float *inv_freq, kw_rope_layout layout)
{
    int half = head_dim / 2;
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                /* the angle is the float product, as every implementation computes it */
                double a = (double)((float)pos[t] * inv_freq[i]);
                int i0 = layout == KW_ROPE_INTERLEAVED ? 2 * i : i;
                int i1 = layout == KW_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
                double p = v[i0], q = v[i1];
                v[i0] = (float)(p * cos(a) - q * sin(a));
                v[i1] = (float)(p * sin(a) + q * cos(a));
            }
        }
}

void kw_ref_swiglu(const float *gate, const float *up, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)(gate[i] / (1.0 + exp(-(double)gate[i])) * up[i]);
}

void kw_ref_softmax(float *x, int rows, int n)
{
    for (int r = 0; r < rows; r++) {
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < n; i++)
            mx = fmax(mx, x[r * n + i]);
        for (int i = 0; i < n; i++)
            s += exp(x[r * n + i] - mx);
        for (int i = 0; i < n; i++)
            x[r * n + i] = (float)(exp(x[r * n + i] - mx) / s);
    }
}
