/* Weak stand-ins for the dense kernels and model accessors, for the runtime tests while
 * their own implementations are not in the tree: a strong definition, once linked,
 * always wins. Plain loops, no attempt at speed. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/tensor.h"

#define WEAK __attribute__((weak))

WEAK int kw_k_linear(kw_backend bk, void *stream, const float *x, const float *w,
                     const float *bias, float *y, int M, int N, int K)
{
#pragma omp parallel for collapse(2)
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float s = bias ? bias[n] : 0.f;
            const float *a = x + (int64_t)m * K, *b = w + (int64_t)n * K;
            for (int k = 0; k < K; k++)
                s += a[k] * b[k];
            y[(int64_t)m * N + n] = s;
        }
    return 0;
}

WEAK int kw_k_rmsnorm(kw_backend bk, void *stream, const float *x, const float *g, float *y,
                      int rows, int dim, float eps)
{
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[(int64_t)r * dim + i] * x[(int64_t)r * dim + i];
        float sc = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++)
            y[(int64_t)r * dim + i] = x[(int64_t)r * dim + i] * sc * g[i];
    }
    return 0;
}

WEAK int kw_k_rope(kw_backend bk, void *stream, float *x, const int32_t *pos, int n_tok,
                   int n_heads, int head_dim, const float *inv_freq, kw_rope_layout layout)
{
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < head_dim / 2; i++) {
                float a = (float)pos[t] * inv_freq[i], c = cosf(a), s = sinf(a);
                int i0 = layout == KW_ROPE_INTERLEAVED ? 2 * i : i;
                int i1 = layout == KW_ROPE_INTERLEAVED ? 2 * i + 1 : i + head_dim / 2;
                float x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * c - x1 * s;
                v[i1] = x0 * s + x1 * c;
            }
        }
    return 0;
}

WEAK void kw_rope_inv_freq(const kw_model_config *cfg, float *inv_freq)
{
    for (int i = 0; i < cfg->head_dim / 2; i++)
        inv_freq[i] = (float)pow(cfg->rope_theta, -2.0 * i / cfg->head_dim);
}

WEAK int kw_k_swiglu(kw_backend bk, void *stream, const float *gate, const float *up,
                     float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = gate[i] / (1.f + expf(-gate[i])) * up[i];
    return 0;
}

WEAK int kw_k_embed(kw_backend bk, void *stream, const float *table, int64_t n_rows, int dim,
                    const int32_t *ids, int n, float *out)
{
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_rows)
            return KW_ERANGE;
        memcpy(out + (int64_t)i * dim, table + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
    }
    return 0;
}

WEAK int kw_k_add(kw_backend bk, void *stream, float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
    return 0;
}

WEAK const kw_tensor *kw_model_tensor(const kw_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

WEAK int64_t kw_tensor_nelems(const kw_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

WEAK int kw_tensor_to_f32(const kw_tensor *t, float **out, kw_error *err)
{
    return kw_error_set(err, KW_ENOSYS, "no dequantizer linked");
}

WEAK int kw_k_argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

WEAK double kw_k_logsumexp(const float *logits, int n)
{
    double mx = logits[0], s = 0;
    for (int i = 1; i < n; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < n; i++)
        s += exp(logits[i] - mx);
    return mx + log(s);
}
