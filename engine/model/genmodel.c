/* Synthetic models with the shapes of known models, written as GGUF (see genmodel.h).
 * The file is streamed: metadata and tensor infos first, then each tensor generated in
 * chunks, so an 8B-shaped model needs only a few MB of memory to write. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/genmodel.h"
#include "kvweave/util.h"

static const kw_genmodel_shape shapes[] = {
    {"smollm2-135m", "llama", 30, 576, 9, 3, 64, 1536, 49152, 8192, 100000.f, 1e-5f, 0, 1, 0},
    {"llama-3.1-8b", "llama", 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000.f, 1e-5f, 0,
     0, 1},
    {"qwen2.5-7b", "qwen2", 28, 3584, 28, 4, 128, 18944, 152064, 32768, 1000000.f, 1e-6f, 1, 0,
     0},
};

const kw_genmodel_shape *kw_genmodel_find(const char *like)
{
    for (size_t i = 0; like && i < sizeof shapes / sizeof *shapes; i++)
        if (!strcmp(like, shapes[i].like))
            return &shapes[i];
    return NULL;
}

const char *kw_genmodel_names(void) { return "smollm2-135m, llama-3.1-8b, qwen2.5-7b"; }

/* ---- a growable byte buffer for the header ---- */
typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n)
            c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

enum { GT_U32 = 4, GT_I32 = 5, GT_F32 = 6, GT_BOOL = 7, GT_STR = 8, GT_ARR = 9 };

static void kv_u32(buf *b, int *n, const char *k, uint32_t v)
{
    put_str(b, k), put_u32(b, GT_U32), put_u32(b, v), (*n)++;
}
static void kv_f32(buf *b, int *n, const char *k, float v)
{
    put_str(b, k), put_u32(b, GT_F32), put(b, &v, 4), (*n)++;
}
static void kv_str(buf *b, int *n, const char *k, const char *v)
{
    put_str(b, k), put_u32(b, GT_STR), put_str(b, v), (*n)++;
}
static void kv_bool(buf *b, int *n, const char *k, int v)
{
    uint8_t x = (uint8_t)(v != 0);
    put_str(b, k), put_u32(b, GT_BOOL), put(b, &x, 1), (*n)++;
}

/* GPT-2's byte -> code point map, as UTF-8. */
static void byte_token(int b, char out[4])
{
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = b;
    if (!printable) {
        int k = 0;
        for (int i = 0; i < b; i++)
            k += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255));
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
    }
}

static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
enum { N_SPECIAL = 3 };

static void tokenizer_kv(buf *b, int *n, int n_vocab)
{
    kv_str(b, n, "tokenizer.ggml.model", "gpt2");
    kv_str(b, n, "tokenizer.ggml.pre", "smollm");
    put_str(b, "tokenizer.ggml.tokens"), put_u32(b, GT_ARR), put_u32(b, GT_STR);
    put_u64(b, (uint64_t)n_vocab), (*n)++;
    for (int i = 0; i < n_vocab; i++) {
        char t[32];
        if (i < N_SPECIAL)
            put_str(b, specials[i]);
        else if (i < N_SPECIAL + 256)
            byte_token(i - N_SPECIAL, t), put_str(b, t);
        else
            snprintf(t, sizeof t, "<|filler_%d|>", i), put_str(b, t);
    }
    put_str(b, "tokenizer.ggml.token_type"), put_u32(b, GT_ARR), put_u32(b, GT_I32);
    put_u64(b, (uint64_t)n_vocab), (*n)++;
    for (int i = 0; i < n_vocab; i++) {
        int32_t ty = i < N_SPECIAL ? 3 : 1;
        put(b, &ty, 4);
    }
    put_str(b, "tokenizer.ggml.merges"), put_u32(b, GT_ARR), put_u32(b, GT_STR);
    put_u64(b, 0), (*n)++;
    kv_u32(b, n, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(b, n, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(b, n, "tokenizer.ggml.eot_token_id", 0);
    kv_u32(b, n, "tokenizer.ggml.padding_token_id", 2);
    kv_bool(b, n, "tokenizer.ggml.add_bos_token", 0);
    kv_str(b, n, "tokenizer.chat_template",
           "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
           "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
           "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
}

/* ---- tensors ---- */
typedef struct gt {
    char name[64];
    int ndim;
    uint64_t ne[2];
    int is_norm;    /* 1-D norm weight: ones */
    int is_matrix;  /* stored in the chosen dtype; else F32 */
} gt;

static uint64_t mix(uint64_t x) { return kw_splitmix64(&x); }

static uint64_t name_key(uint64_t seed, const char *s)
{
    uint64_t h = 1469598103934665603ULL ^ mix(seed);
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return mix(h);
}

static int n_tensors(const kw_genmodel_shape *m, int n_layer, gt *out)
{
    int n = 0;
    uint64_t E = (uint64_t)m->n_embd, qd = (uint64_t)m->n_head * m->head_dim,
             kd = (uint64_t)m->n_head_kv * m->head_dim, F = (uint64_t)m->n_ff,
             V = (uint64_t)m->n_vocab;
#define T(nm_fmt, l, nd, a, b_, norm)                                                  \
    do {                                                                               \
        if (out) {                                                                     \
            gt *t = &out[n];                                                           \
            snprintf(t->name, sizeof t->name, nm_fmt, l);                              \
            t->ndim = nd, t->ne[0] = a, t->ne[1] = b_, t->is_norm = norm;              \
            t->is_matrix = nd == 2;                                                    \
        }                                                                              \
        n++;                                                                           \
    } while (0)
    T("token_embd.weight%.0d", 0, 2, E, V, 0);
    for (int l = 0; l < n_layer; l++) {
        T("blk.%d.attn_norm.weight", l, 1, E, 1, 1);
        T("blk.%d.attn_q.weight", l, 2, E, qd, 0);
        T("blk.%d.attn_k.weight", l, 2, E, kd, 0);
        T("blk.%d.attn_v.weight", l, 2, E, kd, 0);
        if (m->qkv_bias) {
            T("blk.%d.attn_q.bias", l, 1, qd, 1, 0);
            T("blk.%d.attn_k.bias", l, 1, kd, 1, 0);
            T("blk.%d.attn_v.bias", l, 1, kd, 1, 0);
        }
        T("blk.%d.attn_output.weight", l, 2, qd, E, 0);
        T("blk.%d.ffn_norm.weight", l, 1, E, 1, 1);
        T("blk.%d.ffn_gate.weight", l, 2, E, F, 0);
        T("blk.%d.ffn_up.weight", l, 2, E, F, 0);
        T("blk.%d.ffn_down.weight", l, 2, F, E, 0);
    }
    T("output_norm.weight%.0d", 0, 1, E, 1, 1);
    if (!m->tied)
        T("output.weight%.0d", 0, 2, E, V, 0);
#undef T
    return n;
}

static int ggml_type(kw_dtype d) { return d == KW_DT_BF16 ? 30 : d == KW_DT_F16 ? 1 : 0; }
static size_t elem_size(kw_dtype d) { return d == KW_DT_F32 ? 4 : 2; }

static uint64_t nbytes(const gt *t, kw_dtype dt)
{
    uint64_t n = t->ne[0] * (t->ndim == 2 ? t->ne[1] : 1);
    return n * (t->is_matrix ? elem_size(dt) : 4);
}

/* Element i of a tensor: uniform in [-a, a) with a = 0.02 * sqrt(3) (std 0.02). */
static float value(uint64_t key, uint64_t i)
{
    uint64_t x = mix(key ^ (i * 0xd1b54a32d192ed03ULL));
    float u = (float)(x >> 40) * (1.0f / 16777216.0f);
    return (2.0f * u - 1.0f) * 0.034641016f;
}

static int write_tensor(FILE *f, const gt *t, kw_dtype dt, uint64_t seed, uint8_t *chunk,
                        size_t chunk_elems)
{
    uint64_t n = t->ne[0] * (t->ndim == 2 ? t->ne[1] : 1), key = name_key(seed, t->name);
    kw_dtype ty = t->is_matrix ? dt : KW_DT_F32;
    size_t es = elem_size(ty);
    for (uint64_t s = 0; s < n; s += chunk_elems) {
        int64_t m = (int64_t)(n - s < chunk_elems ? n - s : chunk_elems);
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < m; j++) {
            float v = t->is_norm ? 1.0f : value(key, s + (uint64_t)j);
            if (ty == KW_DT_F32)
                memcpy(chunk + 4 * j, &v, 4);
            else {
                uint16_t h = ty == KW_DT_BF16 ? kw_f32_to_bf16(v) : kw_f32_to_f16(v);
                memcpy(chunk + 2 * j, &h, 2);
            }
        }
        if (fwrite(chunk, es, (size_t)m, f) != (size_t)m)
            return -1;
    }
    return 0;
}

int64_t kw_genmodel_write(const kw_genmodel_spec *s, const char *path, kw_error *err)
{
    const kw_genmodel_shape *m = kw_genmodel_find(s->like);
    if (!m)
        return kw_error_set(err, KW_EINVAL, "gen model: unknown model '%s' (known: %s)",
                            s->like ? s->like : "", kw_genmodel_names());
    if (s->dtype != KW_DT_BF16 && s->dtype != KW_DT_F16 && s->dtype != KW_DT_F32)
        return kw_error_set(err, KW_EINVAL, "gen model: dtype must be bf16, f16 or f32");
    int n_layer = s->n_layer > 0 ? s->n_layer : m->n_layer;
    if (n_layer > m->n_layer)
        return kw_error_set(err, KW_EINVAL, "gen model: %d layers asked, '%s' has %d", n_layer,
                            m->like, m->n_layer);
    int nt = n_tensors(m, n_layer, NULL);
    gt *t = calloc((size_t)nt, sizeof *t);
    buf b = {0};
    int nkv = 0;
    char k[128];
    if (!t)
        return kw_error_set(err, KW_ENOMEM, "gen model: out of memory");
    n_tensors(m, n_layer, t);
    kv_str(&b, &nkv, "general.architecture", m->arch);
    snprintf(k, sizeof k, "synthetic-%s", m->like);
    kv_str(&b, &nkv, "general.name", k);
    kv_u32(&b, &nkv, "general.alignment", 32);
#define AK(suffix) (snprintf(k, sizeof k, "%s.%s", m->arch, suffix), k)
    kv_u32(&b, &nkv, AK("block_count"), (uint32_t)n_layer);
    kv_u32(&b, &nkv, AK("context_length"), (uint32_t)m->n_ctx);
    kv_u32(&b, &nkv, AK("embedding_length"), (uint32_t)m->n_embd);
    kv_u32(&b, &nkv, AK("feed_forward_length"), (uint32_t)m->n_ff);
    kv_u32(&b, &nkv, AK("attention.head_count"), (uint32_t)m->n_head);
    kv_u32(&b, &nkv, AK("attention.head_count_kv"), (uint32_t)m->n_head_kv);
    kv_f32(&b, &nkv, AK("rope.freq_base"), m->rope_theta);
    kv_f32(&b, &nkv, AK("attention.layer_norm_rms_epsilon"), m->norm_eps);
    kv_u32(&b, &nkv, AK("rope.dimension_count"), (uint32_t)m->head_dim);
    kv_u32(&b, &nkv, AK("vocab_size"), (uint32_t)m->n_vocab);
    if (m->llama3_rope) {
        kv_str(&b, &nkv, AK("rope.scaling.type"), "llama3");
        kv_f32(&b, &nkv, AK("rope.scaling.factor"), 8.0f);
        kv_u32(&b, &nkv, AK("rope.scaling.original_context_length"), 8192);
        kv_f32(&b, &nkv, AK("rope.scaling.low_freq_factor"), 1.0f);
        kv_f32(&b, &nkv, AK("rope.scaling.high_freq_factor"), 4.0f);
    }
#undef AK
    tokenizer_kv(&b, &nkv, m->n_vocab);
    buf h = {0};
    put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, (uint64_t)nt);
    put_u64(&h, (uint64_t)nkv);
    put(&h, b.p, b.n);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        put_str(&h, t[i].name);
        put_u32(&h, (uint32_t)t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            put_u64(&h, t[i].ne[d]);
        put_u32(&h, (uint32_t)(t[i].is_matrix ? ggml_type(s->dtype) : 0));
        put_u64(&h, off);
        off = (off + nbytes(&t[i], s->dtype) + 31) / 32 * 32;
    }
    static const uint8_t zeros[32];
    put(&h, zeros, (32 - h.n % 32) % 32);
    int64_t rc = 0;
    size_t chunk_elems = (size_t)1 << 22;
    uint8_t *chunk = malloc(chunk_elems * 4);
    FILE *f = NULL;
    if (b.oom || h.oom || !chunk)
        rc = kw_error_set(err, KW_ENOMEM, "gen model: out of memory");
    else if (!(f = fopen(path, "wb")))
        rc = kw_error_set(err, KW_EIO, "gen model: cannot create '%s': %s", path, strerror(errno));
    if (rc == 0 && fwrite(h.p, 1, h.n, f) != h.n)
        rc = KW_EIO;
    int64_t total = (int64_t)h.n;
    for (int i = 0; rc == 0 && i < nt; i++) {
        uint64_t nb = nbytes(&t[i], s->dtype), pad = (32 - nb % 32) % 32;
        if (write_tensor(f, &t[i], s->dtype, s->seed, chunk, chunk_elems) < 0
            || (i + 1 < nt && fwrite(zeros, 1, pad, f) != pad))
            rc = KW_EIO;
        total += (int64_t)(nb + (i + 1 < nt ? pad : 0));
    }
    if (f && fclose(f) != 0 && rc == 0)
        rc = KW_EIO;
    if (rc == KW_EIO)
        kw_error_set(err, KW_EIO, "gen model: cannot write '%s': %s", path, strerror(errno));
    free(chunk), free(t), free(b.p), free(h.p);
    return rc < 0 ? rc : total;
}
