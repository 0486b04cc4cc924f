/* Test support for the runtime tests: the tiny model, the plain reference forward and a
 * step driver. */
#include "runtime_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kvweave/tensor.h"
#include "kvweave/util.h"
#include "runtime/forward.h"

/* ---- tiny model ---- */

uint64_t rt_rand_u64(uint64_t *s)
{
    return kw_splitmix64(s);
}

double rt_rand01(uint64_t *s) { return (double)(rt_rand_u64(s) >> 11) / 9007199254740992.0; }

kw_model_config rt_tiny_config(int arch_qwen2, kw_rope_layout layout)
{
    kw_model_config c = {0};
    c.arch = arch_qwen2 ? KW_ARCH_QWEN2 : KW_ARCH_LLAMA;
    c.n_layer = 3;
    c.n_embd = 48;
    c.n_head = 6;
    c.n_head_kv = 2;
    c.head_dim = 8;
    c.n_ff = 80;
    c.n_vocab = 97;
    c.n_ctx_train = 4096;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.f;
    c.rope_layout = layout;
    c.tie_embeddings = !arch_qwen2;
    c.qkv_bias = arch_qwen2;
    c.bos_id = 1;
    c.eos_ids[0] = 2;
    c.n_eos = 1;
    return c;
}

static void add_tensor(kw_model *m, const char *name, int64_t d0, int64_t d1, double amp,
                       double base, uint64_t *rs)
{
    kw_tensor *t = &m->tensors[m->n_tensors++];
    int64_t n = d0 * (d1 ? d1 : 1);
    float *d = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(base + amp * (2 * rt_rand01(rs) - 1));
    t->name = strdup(name);
    t->dtype = KW_DT_F32;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = d;
    t->nbytes = (size_t)n * sizeof(float);
}

kw_model *rt_tiny_model(const kw_model_config *cfg, uint64_t seed)
{
    kw_model *m = calloc(1, sizeof *m);
    m->cfg = *cfg;
    m->name = strdup("tiny");
    m->tensors = calloc((size_t)(4 + 16 * cfg->n_layer), sizeof(kw_tensor));
    uint64_t rs = seed;
    int E = cfg->n_embd, qd = cfg->n_head * cfg->head_dim, kd = cfg->n_head_kv * cfg->head_dim;
    add_tensor(m, "token_embd.weight", cfg->n_vocab, E, 1.0, 0, &rs);
    add_tensor(m, "output_norm.weight", E, 0, 0.2, 1.0, &rs);
    if (!cfg->tie_embeddings)
        add_tensor(m, "output.weight", cfg->n_vocab, E, 0.5, 0, &rs);
    char nm[64];
    for (int l = 0; l < cfg->n_layer; l++) {
#define T(suf, d0, d1, amp, base)                                \
    snprintf(nm, sizeof nm, "blk.%d." suf, l);                   \
    add_tensor(m, nm, d0, d1, amp, base, &rs);
        T("attn_norm.weight", E, 0, 0.2, 1.0)
        T("attn_q.weight", qd, E, 2.0 / sqrt(E), 0)
        T("attn_k.weight", kd, E, 2.0 / sqrt(E), 0)
        T("attn_v.weight", kd, E, 1.5 / sqrt(E), 0)
        if (cfg->qkv_bias) {
            T("attn_q.bias", qd, 0, 0.3, 0)
            T("attn_k.bias", kd, 0, 0.3, 0)
            T("attn_v.bias", kd, 0, 0.3, 0)
        }
        T("attn_output.weight", E, qd, 1.5 / sqrt(qd), 0)
        T("ffn_norm.weight", E, 0, 0.2, 1.0)
        T("ffn_gate.weight", cfg->n_ff, E, 1.5 / sqrt(E), 0)
        T("ffn_up.weight", cfg->n_ff, E, 1.5 / sqrt(E), 0)
        T("ffn_down.weight", E, cfg->n_ff, 1.5 / sqrt(cfg->n_ff), 0)
#undef T
    }
    return m;
}

void rt_tiny_free(kw_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_tensors; i++) {
        free((void *)m->tensors[i].name);
        free((void *)m->tensors[i].data);
    }
    free(m->tensors);
    free(m->name);
    free(m);
}

/* ---- plain reference forward (double) ---- */

static const float *W(const kw_model *m, const char *fmt, int l)
{
    char nm[64];
    snprintf(nm, sizeof nm, fmt, l);
    const kw_tensor *t = kw_model_tensor(m, nm);
    return t ? t->data : NULL;
}

static void mat(const double *x, const float *w, const float *b, double *y, int n, int k)
{
    for (int i = 0; i < n; i++) {
        double s = b ? b[i] : 0;
        for (int j = 0; j < k; j++)
            s += x[j] * w[(int64_t)i * k + j];
        y[i] = s;
    }
}

static void norm(const double *x, const float *g, double *y, int d, double eps)
{
    double ss = 0;
    for (int i = 0; i < d; i++)
        ss += x[i] * x[i];
    double sc = 1 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++)
        y[i] = x[i] * sc * g[i];
}

static void rope(double *v, int pos, const kw_model_config *c)
{
    int d = c->head_dim;
    for (int i = 0; i < d / 2; i++) {
        double f = pow(c->rope_theta, -2.0 * i / d), a = pos * f;
        int i0 = c->rope_layout == KW_ROPE_INTERLEAVED ? 2 * i : i;
        int i1 = c->rope_layout == KW_ROPE_INTERLEAVED ? 2 * i + 1 : i + d / 2;
        double x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * cos(a) - x1 * sin(a);
        v[i1] = x0 * sin(a) + x1 * cos(a);
    }
}

void rt_ref_forward(const kw_model *m, const int32_t *ids, int n, float *logits,
                    rt_keep_fn keep, void *u, int keep_per_qhead)
{
    const kw_model_config *c = &m->cfg;
    int E = c->n_embd, H = c->n_head, KV = c->n_head_kv, d = c->head_dim, F = c->n_ff;
    int g = H / KV;
    double *x = calloc((size_t)n * E, sizeof(double)), *xn = malloc(sizeof(double) * E);
    double *q = malloc(sizeof(double) * (size_t)n * H * d), *k = malloc(sizeof(double) * (size_t)n * KV * d),
           *v = malloc(sizeof(double) * (size_t)n * KV * d), *att = malloc(sizeof(double) * H * d),
           *o = malloc(sizeof(double) * E), *ga = malloc(sizeof(double) * F),
           *up = malloc(sizeof(double) * F), *sc = malloc(sizeof(double) * n);
    const float *emb = W(m, "token_embd.weight", 0);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < E; i++)
            x[(int64_t)t * E + i] = emb[(int64_t)ids[t] * E + i];
    for (int l = 0; l < c->n_layer; l++) {
        for (int t = 0; t < n; t++) {
            norm(x + (int64_t)t * E, W(m, "blk.%d.attn_norm.weight", l), xn, E, c->norm_eps);
            mat(xn, W(m, "blk.%d.attn_q.weight", l), W(m, "blk.%d.attn_q.bias", l),
                q + (int64_t)t * H * d, H * d, E);
            mat(xn, W(m, "blk.%d.attn_k.weight", l), W(m, "blk.%d.attn_k.bias", l),
                k + (int64_t)t * KV * d, KV * d, E);
            mat(xn, W(m, "blk.%d.attn_v.weight", l), W(m, "blk.%d.attn_v.bias", l),
                v + (int64_t)t * KV * d, KV * d, E);
            for (int h = 0; h < H; h++)
                rope(q + ((int64_t)t * H + h) * d, t, c);
            for (int h = 0; h < KV; h++)
                rope(k + ((int64_t)t * KV + h) * d, t, c);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < H; h++) {
                int kh = h / g;
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    sc[s] = -INFINITY;
                    if (keep && !keep(u, l, keep_per_qhead ? h : kh, t, s))
                        continue;
                    double dd = 0;
                    for (int i = 0; i < d; i++)
                        dd += q[((int64_t)t * H + h) * d + i] * k[((int64_t)s * KV + kh) * d + i];
                    sc[s] = dd / sqrt(d);
                    mx = sc[s] > mx ? sc[s] : mx;
                }
                for (int i = 0; i < d; i++)
                    att[h * d + i] = 0;
                for (int s = 0; s <= t; s++) {
                    if (sc[s] == -INFINITY)
                        continue;
                    double p = exp(sc[s] - mx);
                    sum += p;
                    for (int i = 0; i < d; i++)
                        att[h * d + i] += p * v[((int64_t)s * KV + kh) * d + i];
                }
                for (int i = 0; i < d; i++)
                    att[h * d + i] = sum > 0 ? att[h * d + i] / sum : 0;
            }
            mat(att, W(m, "blk.%d.attn_output.weight", l), NULL, o, E, H * d);
            for (int i = 0; i < E; i++)
                x[(int64_t)t * E + i] += o[i];
            norm(x + (int64_t)t * E, W(m, "blk.%d.ffn_norm.weight", l), xn, E, c->norm_eps);
            mat(xn, W(m, "blk.%d.ffn_gate.weight", l), NULL, ga, F, E);
            mat(xn, W(m, "blk.%d.ffn_up.weight", l), NULL, up, F, E);
            for (int i = 0; i < F; i++)
                ga[i] = ga[i] / (1 + exp(-ga[i])) * up[i];
            mat(ga, W(m, "blk.%d.ffn_down.weight", l), NULL, o, E, F);
            for (int i = 0; i < E; i++)
                x[(int64_t)t * E + i] += o[i];
        }
    }
    const float *out = W(m, "output.weight", 0);
    out = out ? out : emb;
    double *lg = malloc(sizeof(double) * c->n_vocab);
    for (int t = 0; t < n; t++) {
        norm(x + (int64_t)t * E, W(m, "output_norm.weight", 0), xn, E, c->norm_eps);
        mat(xn, out, NULL, lg, c->n_vocab, E);
        for (int i = 0; i < c->n_vocab; i++)
            logits[(int64_t)t * c->n_vocab + i] = (float)lg[i];
    }
    free(x), free(xn), free(q), free(k), free(v), free(att), free(o), free(ga), free(up);
    free(sc), free(lg);
}

double rt_rel_l2(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

void rt_drive(struct kw_fwd *f, kw_kvpool *pool, int n_seq, kw_seq **seqs,
              const kw_hookstack *const *stacks, int32_t **ids, const int *n,
              const int *n_prompt, const int *start, const int *chunk, float **out)
{
    int done[KW_FWD_MAX_SEQ];
    const kw_model_config *cf = kw__fwd_cfg(f);
    int V = cf->n_vocab;
    for (int i = 0; i < n_seq; i++)
        done[i] = start ? start[i] : 0;
    float *lg = malloc(sizeof(float) * 256 * V);
    for (int64_t step = 0;; step++) {
        kw_seq *ss[KW_FWD_MAX_SEQ];
        const kw_hookstack *hs[KW_FWD_MAX_SEQ];
        int first[KW_FWD_MAX_SEQ], tn[KW_FWD_MAX_SEQ], idx[KW_FWD_MAX_SEQ], lt[256];
        int nt = 0, k = 0;
        int32_t tid[256], pos[256];
        bool pre[KW_FWD_MAX_SEQ], last[KW_FWD_MAX_SEQ];
        for (int i = 0; i < n_seq; i++) {
            if (done[i] == n[i])
                continue;
            bool p = done[i] < n_prompt[i];
            int c = p ? n_prompt[i] - done[i] : 1;
            c = p && c > chunk[i] ? chunk[i] : c;
            ss[k] = seqs[i];
            hs[k] = stacks ? stacks[i] : NULL;
            first[k] = nt;
            tn[k] = c;
            pre[k] = p;
            last[k] = p && done[i] + c == n_prompt[i];
            idx[k] = i;
            seqs[i]->n_past = done[i];
            for (int j = 0; j < c; j++) {
                tid[nt] = ids[i][done[i] + j];
                pos[nt] = done[i] + j;
                lt[nt] = nt;
                nt++;
            }
            k++;
        }
        if (k == 0)
            break;
        kw_fwd_step st = {.n_seq = k, .seqs = ss, .stacks = hs, .tok_first = first,
                          .tok_n = tn, .ids = tid, .pos = pos, .prefill = pre,
                          .last_chunk = last, .logit_tok = lt, .n_logits = nt, .logits = lg,
                          .obs_window = 8, .step = step};
        kw_error err = {0};
        int rc = kw__fwd_run(f, pool, &st, &err);
        if (rc < 0) {
            fprintf(stderr, "step %lld: %s\n", (long long)step, err.msg);
            abort();
        }
        for (int j = 0; j < k; j++) {
            if (st.seq_rc[j] != 0) {
                fprintf(stderr, "sequence %d failed: %d (%s)\n", idx[j], st.seq_rc[j],
                        ss[j]->error[0] ? ss[j]->error : kw_strerror(st.seq_rc[j]));
                abort();
            }
            int i = idx[j];
            memcpy(out[i] + (int64_t)done[i] * V, lg + (int64_t)first[j] * V,
                   sizeof(float) * tn[j] * V);
            done[i] += tn[j];
        }
        kw_kvpool_tmp_reset(pool);
    }
    free(lg);
}


/* ---- stand-in KV methods ---- */

/* Keeps the stored tokens j of every KV head of the layer for which want(s, j) holds. */
static int keep_where(kw_lctx *c, kw_seq *s, bool (*want)(const kw_seq *s, int j))
{
    for (int h = 0; h < c->cfg->n_head_kv; h++) {
        int n = kw_kvseq_len(s->kv, c->layer, h), nk = 0;
        int32_t *keep = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        if (!keep)
            return KW_ENOMEM;
        for (int j = 0; j < n; j++)
            if (want(s, j))
                keep[nk++] = j;
        int rc = kw_kvseq_keep(s->kv, c->layer, h, keep, nk);
        free(keep);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static bool in_half(const kw_seq *s, int j)
{
    return j < s->n_prompt / 2 || j >= s->n_prompt - 3;
}

int rt_keep_half_at_prefill_end(void *st, kw_lctx *c, const kw_batch *b)
{
    (void)st;
    for (int i = 0; i < b->n_seq; i++) {
        int rc = keep_where(c, b->seqs[i], in_half);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static bool not_first(const kw_seq *s, int j)
{
    (void)s;
    return j > 0;
}

int rt_drop_oldest_after_chunk(void *st, kw_lctx *c, const kw_batch *b, const kw_attn_stats *a)
{
    (void)st, (void)a;
    for (int i = 0; i < b->n_seq; i++) {
        if (!b->prefill[i] || b->last_chunk[i])
            continue;
        int rc = keep_where(c, b->seqs[i], not_first);
        if (rc < 0)
            return rc;
    }
    return 0;
}
