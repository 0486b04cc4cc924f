/* The CPU forward pass: the layer loop and its hook calls (ARCHITECTURE.md s4).
 *
 * One step runs a batch whose sequences each bring a contiguous range of tokens (a
 * prefill chunk or one decode token). Per layer: norm, QKV, on_kv (K before RoPE),
 * RoPE, append to the pool (K before RoPE when the pool says so), dense views, SELECT
 * hooks, materialize, attention over the views (causal by stored position), after_attn,
 * on_prefill_end, output projection and the SwiGLU MLP. Extra tensors (LSE,
 * observation-window probabilities, per-step probability sums) are computed only when a
 * hook needs them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "forward_cuda.h"
#include "hookcall.h"
#include "kernels.h"

typedef struct kw_lw {
    const float *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo; /* wq (n_head*hd, n_embd) */
    const float *ffn_norm, *wgate, *wup, *wdown;                /* wdown (n_embd, n_ff) */
    /* the matrices in their GGUF blocks (codes NULL: the f32 form above is used) */
    kw_qmat qq, qk, qv, qo, qgate, qup, qdown;
} kw_lw;

struct kw_fwd {
    kw_model_config cfg;
    const float *tok_embd, *out_norm, *output; /* (n_vocab, n_embd) */
    kw_qmat qembd, qoutput;
    int q_rows; /* steps of at most this many tokens read the blocks directly */
    float *tile; /* scratch for kw_k_linear_qt: tile_floats */
    int64_t tile_floats;
    kw_lw *L;
    float *inv_freq;
    float **owned;
    int n_owned;
    int max_tok;
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *lse, *rows;
    kw_view *views[KW_FWD_MAX_SEQ];
    kw_cfwd *cuda; /* set: the step runs on a CUDA device (forward_cuda.c) */
};

const kw_model_config *kw__fwd_cfg(const kw_fwd *f) { return &f->cfg; }

/* A matrix's GGUF blocks split for kw_k_linear_q / kw_k_linear_qt (the types
 * kw_split_bits names, with rows of whole blocks); 0 with q->codes NULL for others. */
static int weight_q(kw_fwd *f, const kw_tensor *t, const char *name, kw_qmat *q,
                    kw_error *err)
{
    memset(q, 0, sizeof *q);
    size_t be, bb;
    int64_t n = kw_tensor_nelems(t), bits = kw_split_bits(t->dtype),
            group = kw_split_group(t->dtype);
    if (t->ndim != 2 || !bits || kw_dtype_block(t->dtype, &be, &bb) < 0
        || t->shape[1] % (int64_t)be)
        return 0;
    size_t cb = (size_t)(n * bits / 8), sb = (size_t)(n / group) * sizeof(float);
    uint8_t *buf = malloc(cb + 2 * sb);
    float **o = buf ? realloc(f->owned, (size_t)(f->n_owned + 1) * sizeof *o) : NULL;
    if (!o) {
        free(buf);
        return kw_error_set(err, KW_ENOMEM, "model: out of memory");
    }
    f->owned = o;
    f->owned[f->n_owned++] = (float *)(void *)buf;
    float *scale = (float *)(void *)(buf + cb), *min = scale + n / group;
    int rc = kw_split_blocks(t->dtype, t->data, n, buf + 0, scale, min);
    if (rc < 0)
        return kw_error_set(err, rc, "model: tensor '%s': cannot split its blocks", name);
    *q = (kw_qmat){.bits = (int)bits, .group = (int)group, .codes = buf, .scale = scale,
                   .min = min};
    if (n > f->tile_floats)
        f->tile_floats = n;
    return 0;
}

/* A tensor with the expected shape (optional when `opt`): its blocks in *q where q is
 * given and the type splits (weight_q), else an f32 view in *out (F32 tensors in place,
 * others dequantized once). */
static int weight(kw_fwd *f, const kw_model *m, const char *name, int64_t d0, int64_t d1,
                  bool opt, const float **out, kw_qmat *q, kw_error *err)
{
    *out = NULL;
    if (q)
        memset(q, 0, sizeof *q);
    const kw_tensor *t = kw_model_tensor(m, name);
    if (!t)
        return opt ? 0 : kw_error_set(err, KW_ENOTFOUND, "model: tensor '%s' is missing", name);
    int64_t n = kw_tensor_nelems(t);
    bool ok = d1 ? (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1)
                 : (n == d0 && (t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1)));
    if (!ok)
        return kw_error_set(err, KW_EFORMAT, "model: tensor '%s' has shape (%lld, %lld), "
                            "expected (%lld, %lld)", name, (long long)t->shape[0],
                            t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)d0,
                            (long long)d1);
    int rc = q ? weight_q(f, t, name, q, err) : 0;
    if (rc < 0 || (q && q->codes))
        return rc;
    if (t->dtype == KW_DT_F32) {
        *out = t->data;
        return 0;
    }
    float *buf;
    rc = kw_tensor_to_f32(t, &buf, err);
    if (rc < 0)
        return kw_error_prefix(err, "model: tensor '%s': ", name);
    float **o = realloc(f->owned, (size_t)(f->n_owned + 1) * sizeof *o);
    if (!o) {
        free(buf);
        return kw_error_set(err, KW_ENOMEM, "model: out of memory");
    }
    f->owned = o;
    f->owned[f->n_owned++] = buf;
    *out = buf;
    return 0;
}

/* y = x w^T + b: from w's blocks (read directly on steps of at most q_rows tokens, else
 * dequantized a tile at a time for sgemm) or from its f32 form */
static int linear(const kw_fwd *f, const kw_qmat *q, const float *x, const float *w,
                  const float *b, float *y, int M, int N, int K)
{
    if (q->codes && M <= f->q_rows)
        return kw_k_linear_q(KW_BK_CPU, NULL, x, q, b, y, M, N, K);
    if (q->codes)
        return kw_k_linear_qt(KW_BK_CPU, NULL, x, q, b, y, M, N, K, f->tile, f->tile_floats);
    return kw_k_linear(KW_BK_CPU, NULL, x, w, b, y, M, N, K);
}

static int load_layer(kw_fwd *f, const kw_model *m, int l, kw_error *err)
{
    const kw_model_config *c = &f->cfg;
    int64_t E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim,
            kd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    kw_lw *w = &f->L[l];
    char nm[96];
    int rc = 0;
#define W(field, suffix, d0, d1, opt, q)                                         \
    if (rc == 0) {                                                               \
        snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                         \
        rc = weight(f, m, nm, d0, d1, opt, &w->field, q, err);                   \
    }
    W(attn_norm, "attn_norm.weight", E, 0, false, NULL)
    W(wq, "attn_q.weight", qd, E, false, &w->qq)
    W(wk, "attn_k.weight", kd, E, false, &w->qk)
    W(wv, "attn_v.weight", kd, E, false, &w->qv)
    W(bq, "attn_q.bias", qd, 0, !c->qkv_bias, NULL)
    W(bk, "attn_k.bias", kd, 0, !c->qkv_bias, NULL)
    W(bv, "attn_v.bias", kd, 0, !c->qkv_bias, NULL)
    W(wo, "attn_output.weight", E, qd, false, &w->qo)
    W(ffn_norm, "ffn_norm.weight", E, 0, false, NULL)
    W(wgate, "ffn_gate.weight", F, E, false, &w->qgate)
    W(wup, "ffn_up.weight", F, E, false, &w->qup)
    W(wdown, "ffn_down.weight", E, F, false, &w->qdown)
#undef W
    return rc;
}

static int alloc_scratch(kw_fwd *f)
{
    const kw_model_config *c = &f->cfg;
    size_t T = (size_t)f->max_tok, E = (size_t)c->n_embd,
           qd = (size_t)c->n_head * c->head_dim, kd = (size_t)c->n_head_kv * c->head_dim;
    f->x = malloc(T * E * sizeof(float));
    f->xn = malloc(T * E * sizeof(float));
    f->q = malloc(T * qd * sizeof(float));
    f->k = malloc(T * kd * sizeof(float));
    f->v = malloc(T * kd * sizeof(float));
    f->att = malloc(T * qd * sizeof(float));
    f->gate = malloc(T * (size_t)c->n_ff * sizeof(float));
    f->up = malloc(T * (size_t)c->n_ff * sizeof(float));
    f->lse = malloc(T * (size_t)c->n_head * sizeof(float));
    f->rows = malloc(T * E * sizeof(float));
    f->inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    if (!f->x || !f->xn || !f->q || !f->k || !f->v || !f->att || !f->gate || !f->up
        || !f->lse || !f->rows || !f->inv_freq)
        return KW_ENOMEM;
    for (int i = 0; i < KW_FWD_MAX_SEQ; i++)
        if (!(f->views[i] = kw_view_new()))
            return KW_ENOMEM;
    return 0;
}

int kw__fwd_new(const kw_model *m, int max_tok, kw_fwd **out, kw_error *err)
{
    *out = NULL;
    const kw_model_config *c = &m->cfg;
    if (c->n_layer < 1 || c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv
        || c->head_dim < 2 || c->head_dim % 2 || c->n_embd < 1 || c->n_ff < 1
        || c->n_vocab < 1 || max_tok < 1)
        return kw_error_set(err, KW_EINVAL, "model '%s': unsupported shape (layers %d, "
                            "heads %d/%d, head_dim %d)", m->name ? m->name : "?",
                            c->n_layer, c->n_head, c->n_head_kv, c->head_dim);
    kw_fwd *f = calloc(1, sizeof *f);
    if (!f)
        return kw_error_set(err, KW_ENOMEM, "forward: out of memory");
    f->cfg = *c;
    f->max_tok = max_tok;
    /* KVWEAVE_CPU_QROWS=N: the row count up to which steps read the GGUF blocks directly
     * (larger steps dequantize tiles for sgemm; 0: every step does) */
    const char *qe = getenv("KVWEAVE_CPU_QROWS");
    f->q_rows = qe && *qe ? atoi(qe) : KW_FWD_QROWS;
    f->L = calloc((size_t)c->n_layer, sizeof *f->L);
    int rc = f->L && alloc_scratch(f) == 0 ? 0
                                             : kw_error_set(err, KW_ENOMEM, "forward: out of memory");
    int64_t E = c->n_embd, V = c->n_vocab;
    if (rc == 0)
        rc = weight(f, m, "token_embd.weight", V, E, false, &f->tok_embd, &f->qembd, err);
    if (rc == 0)
        rc = weight(f, m, "output_norm.weight", E, 0, false, &f->out_norm, NULL, err);
    if (rc == 0)
        rc = weight(f, m, "output.weight", V, E, true, &f->output, &f->qoutput, err);
    if (rc == 0 && !f->output && !f->qoutput.codes) /* tied */
        f->output = f->tok_embd, f->qoutput = f->qembd;
    for (int l = 0; rc == 0 && l < c->n_layer; l++)
        rc = load_layer(f, m, l, err);
    /* a tile of at most KW_FWD_TILE_FLOATS (the largest split matrix if smaller) */
    if (f->tile_floats > KW_FWD_TILE_FLOATS)
        f->tile_floats = KW_FWD_TILE_FLOATS;
    if (rc == 0 && f->tile_floats && !(f->tile = malloc((size_t)f->tile_floats * sizeof(float))))
        rc = kw_error_set(err, KW_ENOMEM, "forward: out of memory");
    if (rc < 0) {
        kw__fwd_free(f);
        return rc;
    }
    const float *freqs = NULL; /* llama3 scaling as GGUF stores it: per-pair divisors */
    if (rc == 0)
        rc = weight(f, m, "rope_freqs.weight", c->head_dim / 2, 0, true, &freqs, NULL, err);
    if (rc < 0) {
        kw__fwd_free(f);
        return rc;
    }
    if (freqs) {
        kw_model_config plain = *c;
        plain.rope_scaling = KW_ROPE_SCALE_NONE;
        kw_rope_inv_freq(&plain, f->inv_freq);
        for (int i = 0; i < c->head_dim / 2; i++)
            f->inv_freq[i] /= freqs[i];
    } else {
        kw_rope_inv_freq(c, f->inv_freq);
    }
    *out = f;
    return 0;
}

int kw__fwd_fill_random(kw_fwd *f, kw_kvseq *kv, int n_past, int n_tok, uint64_t seed,
                        kw_error *err)
{
    if (!f->cuda)
        return kw_error_set(err, KW_ENOSYS, "forward: random fill is for CUDA forwards");
    return kw__cfwd_fill(f->cuda, kv, n_past, n_tok, seed, err);
}

int64_t kw__fwd_device_used(const kw_fwd *f)
{
    return f->cuda ? kw__cfwd_device_used(f->cuda) : -1;
}

void kw__fwd_io_stats(const kw_fwd *f, int64_t *h2d, int64_t *d2h)
{
    *h2d = 0, *d2h = 0;
    if (f->cuda)
        kw__cfwd_io_stats(f->cuda, h2d, d2h);
}

int64_t kw__fwd_ptab(kw_fwd *f, int64_t min_ints)
{
    return f->cuda ? kw__cfwd_ptab(f->cuda, min_ints) : 0;
}

void kw__fwd_graph_stats(const kw_fwd *f, int64_t *captures, int64_t *launches)
{
    *captures = 0, *launches = 0;
    if (f->cuda)
        kw__cfwd_graph_stats(f->cuda, captures, launches);
}

int kw__fwd_new_cuda(const kw_model *m, int max_tok, int max_seq, kw_kvpool *pool,
                     int device, kw_fwd **out, kw_error *err)
{
    *out = NULL;
    kw_fwd *f = calloc(1, sizeof *f);
    if (!f)
        return kw_error_set(err, KW_ENOMEM, "forward: out of memory");
    f->cfg = m->cfg;
    f->max_tok = max_tok;
    int rc = kw__cfwd_new(m, max_tok, max_seq, pool, device, &f->cuda, err);
    if (rc < 0) {
        free(f);
        return rc;
    }
    *out = f;
    return 0;
}

kw_fwd *kw__fwd_free(kw_fwd *f)
{
    if (!f)
        return NULL;
    if (f->cuda) {
        kw__cfwd_free(f->cuda);
        free(f);
        return NULL;
    }
    for (int i = 0; i < f->n_owned; i++)
        free(f->owned[i]);
    free(f->owned);
    free(f->L);
    free(f->x), free(f->xn), free(f->q), free(f->k), free(f->v), free(f->att);
    free(f->gate), free(f->up), free(f->lse), free(f->rows), free(f->inv_freq), free(f->tile);
    for (int i = 0; i < KW_FWD_MAX_SEQ; i++)
        kw_view_free(f->views[i]);
    free(f);
    return NULL;
}

/* ---- hook dispatch (hookcall.c) ---- */

typedef struct stepctx {
    kw_fwd *f;
    kw_kvpool *pool;
    kw_fwd_step *s;
    kw_hookcall hc;
} stepctx;

/* K of slot cs of span s as attention reads it (after RoPE: a pre-RoPE pool's row is
 * rotated from its stored position into kb, head_dim floats; else the row itself, or kb
 * holding it where the pool does not store f32). */
static const float *key_row(const kw_fwd *f, const kw_kvmem *mem, const kw_span *s, int cs,
                            float *kb)
{
    const float *k = kw_kvmem_row(mem, s->pool, s->page, cs, 0, kb);
    if (!mem->pre_rope)
        return k;
    const int hd = f->cfg.head_dim;
    if (k != kb)
        memcpy(kb, k, (size_t)hd * sizeof(float));
    kw_k_rope(KW_BK_CPU, NULL, kb, &mem->pos[s->pool][(int64_t)s->page * mem->page_tokens + cs],
              1, 1, hd, f->inv_freq, f->cfg.rope_layout);
    return kb;
}

/* Probabilities of the last obs_n queries of sequence i over its view rows, from the
 * LSE the attention kernel returned. */
static int obs_probs(stepctx *c, int i)
{
    kw_fwd *f = c->f;
    const kw_model_config *cf = &f->cfg;
    const kw_view *w = f->views[i];
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int hd = cf->head_dim, H = cf->n_head, g = H / cf->n_head_kv, P = mem.page_tokens;
    int n = c->s->tok_n[i] < c->s->obs_window ? c->s->tok_n[i] : c->s->obs_window, len = 0;
    for (int r = 0; r < w->n_rows; r++) {
        int rl = kw_view_row_tokens(w, r);
        len = rl > len ? rl : len;
    }
    free(c->hc.probs[i]);
    c->hc.probs[i] = calloc((size_t)n * H * (len ? len : 1), sizeof(float));
    if (!c->hc.probs[i])
        return KW_ENOMEM;
    c->hc.obs_n[i] = n;
    c->hc.obs_len[i] = len;
    float scale = 1.f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int qi = 0; qi < n; qi++)
        for (int h = 0; h < H; h++) {
            int t = c->s->tok_first[i] + c->s->tok_n[i] - n + qi, r = w->per_qhead ? h : h / g;
            const float *q = f->q + ((int64_t)t * H + h) * hd;
            float lse = f->lse[(int64_t)t * H + h], kb[512];
            if (hd > 512)
                continue;
            float *out = c->hc.probs[i] + ((int64_t)qi * H + h) * len;
            int col = 0;
            for (int sp = w->row_ptr[r]; sp < w->row_ptr[r + 1]; sp++) {
                const kw_span *s = &w->spans[sp];
                const int32_t *pp = mem.pos[s->pool] + (int64_t)s->page * P;
                for (int cs = s->first; cs < s->first + s->n; cs++, col++) {
                    if (pp[cs] > c->s->pos[t])
                        continue;
                    const float *k = key_row(f, &mem, s, cs, kb);
                    float d = 0;
                    for (int x = 0; x < hd; x++)
                        d += q[x] * k[x];
                    out[col] = expf(d * scale - lse);
                }
            }
        }
    return 0;
}

/* KW_NEED_STEP_PROBS: for each query head and each token of its view row, the sum of
 * the probabilities the sequence's step queries put on it, from the LSE the attention
 * kernel returned. Each key is read (and rotated, in a pre-RoPE pool) once per head; the
 * step's positions of a sequence are consecutive, so the queries that see a key are a
 * suffix of them. */
static int step_probs(stepctx *c, int i)
{
    kw_fwd *f = c->f;
    const kw_model_config *cf = &f->cfg;
    const kw_view *w = f->views[i];
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    int hd = cf->head_dim, H = cf->n_head, g = H / cf->n_head_kv, P = mem.page_tokens, len = 0;
    if (hd > 512)
        return KW_ELIMIT;
    for (int r = 0; r < w->n_rows; r++) {
        int rl = kw_view_row_tokens(w, r);
        len = rl > len ? rl : len;
    }
    free(c->hc.sprobs[i]);
    c->hc.sprobs[i] = calloc((size_t)H * (len ? len : 1), sizeof(float));
    if (!c->hc.sprobs[i])
        return KW_ENOMEM;
    c->hc.slen[i] = len;
    int t0 = c->s->tok_first[i], nq = c->s->tok_n[i];
    int32_t p0 = c->s->pos[t0];
    float scale = 1.f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic)
    for (int h = 0; h < H; h++) {
        int r = w->per_qhead ? h : h / g, col = 0;
        float kb[512];
        float *out = c->hc.sprobs[i] + (int64_t)h * len;
        for (int sp = w->row_ptr[r]; sp < w->row_ptr[r + 1]; sp++) {
            const kw_span *s = &w->spans[sp];
            const int32_t *pp = mem.pos[s->pool] + (int64_t)s->page * P;
            for (int cs = s->first; cs < s->first + s->n; cs++, col++) {
                const float *k = key_row(f, &mem, s, cs, kb);
                int q0 = pp[cs] > p0 ? (int)(pp[cs] - p0) : 0;
                double acc = 0;
                for (int qi = q0; qi < nq; qi++) {
                    int t = t0 + qi;
                    float lse = f->lse[(int64_t)t * H + h];
                    if (!isfinite(lse))
                        continue;
                    const float *q = f->q + ((int64_t)t * H + h) * hd;
                    float d = 0;
#pragma omp simd reduction(+ : d)
                    for (int x = 0; x < hd; x++)
                        d += q[x] * k[x];
                    acc += expf(d * scale - lse);
                }
                out[col] = (float)acc;
            }
        }
    }
    return 0;
}

/* ---- the layer loop ---- */

static int attention(stepctx *c, int layer, int n_tok)
{
    kw_fwd *f = c->f;
    kw_fwd_step *s = c->s;
    const kw_model_config *cf = &f->cfg;
    int hd = cf->head_dim, rc;
    for (int i = 0; i < s->n_seq; i++)
        if ((rc = kw_view_dense(f->views[i], s->seqs[i]->kv, layer, false)) < 0)
            return rc;
    kw__hooks_layer(&c->hc, layer);
    kw__hooks_call(&c->hc, layer, KW_HC_SELECT, f->q, NULL, NULL, NULL);
    kw__hooks_call(&c->hc, layer, KW_HC_MATERIALIZE, NULL, NULL, NULL, NULL);
    int off[KW_FWD_MAX_SEQ + 1];
    for (int i = 0; i < s->n_seq; i++)
        off[i] = s->tok_first[i];
    off[s->n_seq] = n_tok;
    bool want_lse = c->hc.needs & (KW_NEED_LSE | KW_NEED_OBS_PROBS | KW_NEED_STEP_PROBS
                                   | KW_NEED_DECODE_PROBS);
    kw_kvmem mem = kw_kvpool_mem(c->pool);
    kw_attn_args a = {.mem = mem, .n_seq = s->n_seq,
                      .views = (const kw_view *const *)f->views, .tok_off = off, .q = f->q,
                      .q_pos = s->pos, .n_head = cf->n_head, .n_kv = cf->n_head_kv,
                      .scale = 1.f / sqrtf((float)hd),
                      .inv_freq = mem.pre_rope ? f->inv_freq : NULL,
                      .layout = cf->rope_layout, .out = f->att,
                      .lse = want_lse ? f->lse : NULL};
    if ((rc = kw_k_attn_view(KW_BK_CPU, NULL, &a)) < 0)
        return rc;
    for (int i = 0; i < s->n_seq; i++) {
        int64_t nv = kw_view_tokens(f->views[i]);
        s->attended[i] += f->views[i]->per_qhead ? nv / (cf->n_head / cf->n_head_kv) : nv;
        if (c->hc.want_obs[i] && (rc = obs_probs(c, i)) < 0)
            return rc;
        if (c->hc.want_step[i] && (rc = step_probs(c, i)) < 0)
            return rc;
    }
    kw_attn_stats st = {.lse = want_lse ? f->lse : NULL, .n_head = cf->n_head};
    kw__hooks_call(&c->hc, layer, KW_HC_AFTER_ATTN, NULL, NULL, NULL, &st);
    /* a reference branch takes this layer's whole prompt KV before a method evicts */
    kw__hooks_twins(&c->hc, layer);
    kw__hooks_call(&c->hc, layer, KW_HC_PREFILL_END, NULL, NULL, NULL, NULL);
    return 0;
}

static int layer_run(stepctx *c, int l, int n_tok)
{
    kw_fwd *f = c->f;
    kw_fwd_step *s = c->s;
    const kw_model_config *cf = &f->cfg;
    const kw_lw *w = &f->L[l];
    int E = cf->n_embd, hd = cf->head_dim, qd = cf->n_head * hd, kd = cf->n_head_kv * hd;
    int rc = kw_k_rmsnorm(KW_BK_CPU, NULL, f->x, w->attn_norm, f->xn, n_tok, E, cf->norm_eps);
    if (rc == 0)
        rc = linear(f, &w->qq, f->xn, w->wq, w->bq, f->q, n_tok, qd, E);
    if (rc == 0)
        rc = linear(f, &w->qk, f->xn, w->wk, w->bk, f->k, n_tok, kd, E);
    if (rc == 0)
        rc = linear(f, &w->qv, f->xn, w->wv, w->bv, f->v, n_tok, kd, E);
    if (rc < 0)
        return rc;
    kw__hooks_call(&c->hc, l, KW_HC_ON_KV, NULL, f->k, f->v, NULL);
    rc = kw_k_rope(KW_BK_CPU, NULL, f->q, s->pos, n_tok, cf->n_head, hd, f->inv_freq,
                   cf->rope_layout);
    if (rc == 0 && !kw_kvpool_options(c->pool)->pre_rope)
        rc = kw_k_rope(KW_BK_CPU, NULL, f->k, s->pos, n_tok, cf->n_head_kv, hd, f->inv_freq,
                       cf->rope_layout);
    if (rc < 0)
        return rc;
    for (int i = 0; i < s->n_seq; i++) {
        int t0 = s->tok_first[i];
        int ra = kw_kvseq_append(s->seqs[i]->kv, l, f->k + (int64_t)t0 * kd,
                                 f->v + (int64_t)t0 * kd, s->pos + t0, s->tok_n[i]);
        if (ra < 0 && s->seq_rc[i] == 0)
            s->seq_rc[i] = ra;
    }
    if ((rc = attention(c, l, n_tok)) < 0)
        return rc;
    rc = linear(f, &w->qo, f->att, w->wo, NULL, f->xn, n_tok, E, qd);
    if (rc == 0)
        rc = kw_k_add(KW_BK_CPU, NULL, f->x, f->xn, (int64_t)n_tok * E);
    if (rc == 0)
        rc = kw_k_rmsnorm(KW_BK_CPU, NULL, f->x, w->ffn_norm, f->xn, n_tok, E, cf->norm_eps);
    if (rc == 0)
        rc = linear(f, &w->qgate, f->xn, w->wgate, NULL, f->gate, n_tok, cf->n_ff, E);
    if (rc == 0)
        rc = linear(f, &w->qup, f->xn, w->wup, NULL, f->up, n_tok, cf->n_ff, E);
    if (rc == 0)
        rc = kw_k_swiglu(KW_BK_CPU, NULL, f->gate, f->up, f->gate, (int64_t)n_tok * cf->n_ff);
    if (rc == 0)
        rc = linear(f, &w->qdown, f->gate, w->wdown, NULL, f->xn, n_tok, E, cf->n_ff);
    if (rc == 0)
        rc = kw_k_add(KW_BK_CPU, NULL, f->x, f->xn, (int64_t)n_tok * E);
    return rc;
}

static int check_step(const kw_fwd *f, const kw_fwd_step *s, int *n_tok, kw_error *err)
{
    if (s->n_seq < 1 || s->n_seq > KW_FWD_MAX_SEQ)
        return kw_error_set(err, KW_EINVAL, "forward: %d sequences in a step (1..%d)",
                            s->n_seq, KW_FWD_MAX_SEQ);
    int t = 0;
    for (int i = 0; i < s->n_seq; i++) {
        if (s->tok_first[i] != t || s->tok_n[i] < 1)
            return kw_error_set(err, KW_EINVAL, "forward: sequence %d has tokens [%d, +%d), "
                                "expected to start at %d", i, s->tok_first[i], s->tok_n[i], t);
        t += s->tok_n[i];
    }
    if (t > f->max_tok)
        return kw_error_set(err, KW_ELIMIT, "forward: %d tokens in a step, at most %d", t,
                            f->max_tok);
    if (s->n_logits > t)
        return kw_error_set(err, KW_EINVAL, "forward: %d logit rows for %d tokens",
                            s->n_logits, t);
    for (int i = 0; i < s->n_logits; i++)
        if (s->logit_tok[i] < 0 || s->logit_tok[i] >= t)
            return kw_error_set(err, KW_EINVAL, "forward: logit row %d is token %d of %d", i,
                                s->logit_tok[i], t);
    *n_tok = t;
    return 0;
}

int kw__fwd_run(kw_fwd *f, kw_kvpool *pool, kw_fwd_step *s, kw_error *err)
{
    int n_tok = 0, rc = check_step(f, s, &n_tok, err);
    if (rc < 0)
        return rc;
    const kw_model_config *cf = &f->cfg;
    memset(s->seq_rc, 0, sizeof s->seq_rc);
    memset(s->attended, 0, sizeof s->attended);
    memset(s->twin_rc, 0, sizeof s->twin_rc);
    if (f->cuda)
        return kw__cfwd_run(f->cuda, pool, s, n_tok, err);
    stepctx c = {.f = f, .pool = pool, .s = s};
    c.hc = (kw_hookcall){.cfg = cf, .pool = pool, .s = s, .views = f->views};
    if ((rc = kw__hooks_begin(&c.hc)) < 0)
        return kw_error_set(err, rc, "forward: out of memory");
    rc = f->qembd.codes ? kw_k_embed_q(KW_BK_CPU, NULL, &f->qembd, cf->n_vocab, cf->n_embd,
                                       s->ids, n_tok, f->x)
                        : kw_k_embed(KW_BK_CPU, NULL, f->tok_embd, cf->n_vocab, cf->n_embd,
                                     s->ids, n_tok, f->x);
    if (rc < 0)
        kw_error_set(err, rc, "forward: a token id is outside the vocabulary of %d", cf->n_vocab);
    for (int l = 0; rc == 0 && l < cf->n_layer; l++)
        if ((rc = layer_run(&c, l, n_tok)) < 0)
            kw_error_set(err, rc, "forward: layer %d failed (%s)", l, kw_strerror(rc));
    if (rc == 0)
        kw__hooks_step_end(&c.hc);
    if (rc == 0 && s->n_logits > 0) {
        for (int i = 0; i < s->n_logits; i++)
            memcpy(f->rows + (int64_t)i * cf->n_embd, f->x + (int64_t)s->logit_tok[i] * cf->n_embd,
                   (size_t)cf->n_embd * sizeof(float));
        rc = kw_k_rmsnorm(KW_BK_CPU, NULL, f->rows, f->out_norm, f->rows, s->n_logits,
                          cf->n_embd, cf->norm_eps);
        if (rc == 0)
            rc = linear(f, &f->qoutput, f->rows, f->output, NULL, s->logits, s->n_logits,
                        cf->n_vocab, cf->n_embd);
        if (rc < 0)
            kw_error_set(err, rc, "forward: output head failed");
    }
    kw__hooks_end(&c.hc);
    return rc;
}
