/* The tiny test model (tiny_model.h). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "kvweave/util.h"
#include "tiny_model.h"

static const char *const merges[][2] = {
    {"\xc4\xa0", "t"}, {"h", "e"}, {"\xc4\xa0t", "he"}, {"i", "n"}, {"\xc4\xa0", "a"},
    {"e", "r"}, {"o", "n"}, {"\xc4\xa0", "s"}, {"r", "e"}, {"a", "t"}, {"e", "n"},
    {"o", "r"}, {"\xc4\xa0", "w"}, {"\xc4\xa0", "c"}, {"i", "s"}, {"i", "t"}, {"a", "n"},
    {"\xc4\xa0", "b"}, {"\xc4\xa0", "h"}, {"l", "l"}, {"\xc4\xa0", "o"}, {"\xc4\xa0", "m"},
    {"e", "s"}, {"in", "g"}, {"\xc4\xa0", "f"}, {"\xc4\xa0" "a", "n"}, {"\xc4\xa0" "an", "d"},
    {"\xc4\xa0", "p"}, {"o", "u"}, {"\xc4\xa0", "d"}, {"e", "d"}, {"\xc4\xa0", "i"},
    {"H", "e"}, {"He", "ll"}, {"Hell", "o"}, {"\xc4\xa0w", "or"}, {"\xc4\xa0wor", "l"},
    {"\xc4\xa0worl", "d"}, {"\xc4\xa0", "\xc4\xa0"}, {"\xc4\x8a", "\xc4\x8a"},
};
#define N_MERGES ((int)(sizeof merges / sizeof *merges))
#define N_SPECIAL 3
static const char *const specials[N_SPECIAL] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
static const char *const chat_template =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

int kw_tiny_n_vocab(void) { return N_SPECIAL + 256 + N_MERGES; }
int kw_tiny_head_dim(const kw_tiny_spec *s) { return s->n_embd / s->n_head; }

kw_tiny_spec kw_tiny_default(uint64_t seed)
{
    kw_tiny_spec s = {.seed = seed, .n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2,
                      .n_ff = 128, .gguf_dtype = KW_DT_F32, .hf_dtype = KW_DT_F32,
                      .n_shards = 1};
    return s;
}

uint64_t kw_tiny_rand(uint64_t *x)
{
    return kw_splitmix64(x);
}

float kw_tiny_uniform(uint64_t *x, float lo, float hi)
{
    return lo + (hi - lo) * (float)((kw_tiny_rand(x) >> 40) * 0x1p-24);
}

/* ---- vocabulary ---- */

/* GPT-2's byte -> code point map, as UTF-8. */
static void byte_token(int b, char out[4])
{
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int k = 0;
        for (int i = 0; i < b; i++)
            k += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255));
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

/* (n_vocab) token strings, malloc'd; free with free_vocab. */
static char **make_vocab(void)
{
    int n = kw_tiny_n_vocab();
    char **v = calloc((size_t)n, sizeof *v);
    for (int i = 0; i < N_SPECIAL; i++)
        v[i] = strdup(specials[i]);
    for (int b = 0; b < 256; b++) {
        char t[4];
        byte_token(b, t);
        v[N_SPECIAL + b] = strdup(t);
    }
    for (int m = 0; m < N_MERGES; m++) {
        char *t = malloc(strlen(merges[m][0]) + strlen(merges[m][1]) + 1);
        sprintf(t, "%s%s", merges[m][0], merges[m][1]);
        v[N_SPECIAL + 256 + m] = t;
    }
    return v;
}

static void free_vocab(char **v)
{
    for (int i = 0; i < kw_tiny_n_vocab(); i++)
        free(v[i]);
    free(v);
}

/* ---- tensors ---- */

static const char *const layer_names[] = {
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_q.bias",
    "attn_k.bias",      "attn_v.bias",   "attn_output.weight", "ffn_norm.weight",
    "ffn_gate.weight",  "ffn_up.weight", "ffn_down.weight"};
#define N_LAYER_NAMES 12

static int per_layer(const kw_tiny_spec *s) { return s->qwen2 ? 12 : 9; }

int kw_tiny_n_tensors(const kw_tiny_spec *s)
{
    return 2 + (s->tie_embeddings ? 0 : 1) + s->n_layer * per_layer(s);
}

const char *kw_tiny_tensor_name(const kw_tiny_spec *s, int i, char buf[64])
{
    if (i == 0)
        return strcpy(buf, "token_embd.weight");
    i--;
    int pl = per_layer(s);
    if (i < s->n_layer * pl) {
        int l = i / pl, k = i % pl;
        if (!s->qwen2 && k >= 4)
            k += 3; /* skip the biases */
        snprintf(buf, 64, "blk.%d.%s", l, layer_names[k]);
        return buf;
    }
    i -= s->n_layer * pl;
    return strcpy(buf, i == 0 ? "output_norm.weight" : "output.weight");
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

float *kw_tiny_weight(const kw_tiny_spec *s, const char *name, int *ndim, int64_t shape[2])
{
    int64_t E = s->n_embd, V = kw_tiny_n_vocab(), hd = kw_tiny_head_dim(s);
    int64_t Q = s->n_head * hd, KV = s->n_head_kv * hd, F = s->n_ff;
    int l = -1, used = 0;
    const char *sub = name;
    if (sscanf(name, "blk.%d.%n", &l, &used) == 1 && used > 0) {
        if (l >= s->n_layer)
            return NULL;
        sub = name + used;
    }
    static const struct { const char *n; int layer; char d0, d1; } tab[] = {
        {"token_embd.weight", 0, 'V', 'E'}, {"output_norm.weight", 0, 'E', 0},
        {"output.weight", 0, 'V', 'E'},     {"attn_norm.weight", 1, 'E', 0},
        {"attn_q.weight", 1, 'Q', 'E'},     {"attn_k.weight", 1, 'K', 'E'},
        {"attn_v.weight", 1, 'K', 'E'},     {"attn_q.bias", 1, 'Q', 0},
        {"attn_k.bias", 1, 'K', 0},         {"attn_v.bias", 1, 'K', 0},
        {"attn_output.weight", 1, 'E', 'Q'}, {"ffn_norm.weight", 1, 'E', 0},
        {"ffn_gate.weight", 1, 'F', 'E'},   {"ffn_up.weight", 1, 'F', 'E'},
        {"ffn_down.weight", 1, 'E', 'F'},
    };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++) {
        if (strcmp(sub, tab[i].n) || tab[i].layer != (l >= 0))
            continue;
        if ((strstr(sub, ".bias") && !s->qwen2) || (!strcmp(sub, "output.weight") && s->tie_embeddings))
            return NULL;
        int64_t dim[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            char c = k ? tab[i].d1 : tab[i].d0;
            dim[k] = c == 'V' ? V : c == 'E' ? E : c == 'Q' ? Q : c == 'K' ? KV : c == 'F' ? F : 0;
        }
        *ndim = dim[1] ? 2 : 1;
        shape[0] = dim[0];
        shape[1] = dim[1];
        int64_t n = dim[0] * (dim[1] ? dim[1] : 1);
        float *w = malloc((size_t)n * sizeof *w);
        uint64_t st = s->seed ^ fnv1a(name);
        int norm = strstr(sub, "norm") != NULL;
        for (int64_t j = 0; j < n; j++)
            w[j] = norm ? kw_tiny_uniform(&st, 0.9f, 1.1f) : kw_tiny_uniform(&st, -0.25f, 0.25f);
        return w;
    }
    return NULL;
}

int64_t kw_tiny_unpermute_row(int64_t r, int head_dim)
{
    int64_t h = r / head_dim, w = r % head_dim;
    return h * head_dim + (w % 2) * (head_dim / 2) + w / 2;
}

void kw_tiny_quantize_q8_0(const float *x, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, x += 32, out += 34) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        uint16_t h = kw_f32_to_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < 32; j++)
            out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

/* ---- GGUF ---- */

static void gguf_metadata(const kw_tiny_spec *s, kw_gw *w, char **vocab)
{
    const char *a = s->qwen2 ? "qwen2" : "llama";
    char k[128];
    int n = kw_tiny_n_vocab();
    kw_gw_str(w, "general.architecture", a);
    kw_gw_str(w, "general.name", "tiny");
    kw_gw_u32(w, "general.alignment", 32);
#define AK(suffix) (snprintf(k, sizeof k, "%s.%s", a, suffix), k)
    kw_gw_u32(w, AK("block_count"), (uint32_t)s->n_layer);
    kw_gw_u32(w, AK("context_length"), 256);
    kw_gw_u32(w, AK("embedding_length"), (uint32_t)s->n_embd);
    kw_gw_u32(w, AK("feed_forward_length"), (uint32_t)s->n_ff);
    kw_gw_u32(w, AK("attention.head_count"), (uint32_t)s->n_head);
    kw_gw_u32(w, AK("attention.head_count_kv"), (uint32_t)s->n_head_kv);
    kw_gw_f32(w, AK("rope.freq_base"), 10000.0f);
    kw_gw_f32(w, AK("attention.layer_norm_rms_epsilon"), 1e-5f);
    kw_gw_u32(w, AK("rope.dimension_count"), (uint32_t)kw_tiny_head_dim(s));
    kw_gw_u32(w, AK("vocab_size"), (uint32_t)n);
#undef AK
    kw_gw_str(w, "tokenizer.ggml.model", "gpt2");
    kw_gw_str(w, "tokenizer.ggml.pre", "smollm");
    kw_gw_arr_str(w, "tokenizer.ggml.tokens", (uint64_t)n, (const char *const *)vocab);
    int32_t *types = malloc((size_t)n * sizeof *types);
    for (int i = 0; i < n; i++)
        types[i] = i < N_SPECIAL ? 3 : 1;
    kw_gw_arr(w, "tokenizer.ggml.token_type", KW_GGUF_I32, (uint64_t)n, types);
    free(types);
    char *ms[N_MERGES];
    for (int m = 0; m < N_MERGES; m++) {
        ms[m] = malloc(strlen(merges[m][0]) + strlen(merges[m][1]) + 2);
        sprintf(ms[m], "%s %s", merges[m][0], merges[m][1]);
    }
    kw_gw_arr_str(w, "tokenizer.ggml.merges", N_MERGES, (const char *const *)ms);
    for (int m = 0; m < N_MERGES; m++)
        free(ms[m]);
    kw_gw_u32(w, "tokenizer.ggml.bos_token_id", 1);
    kw_gw_u32(w, "tokenizer.ggml.eos_token_id", 2);
    kw_gw_u32(w, "tokenizer.ggml.eot_token_id", 0);
    kw_gw_u32(w, "tokenizer.ggml.padding_token_id", 2);
    kw_gw_bool(w, "tokenizer.ggml.add_bos_token", false);
    kw_gw_str(w, "tokenizer.chat_template", chat_template);
}

static void gguf_tensor(const kw_tiny_spec *s, kw_gw *w, const char *name)
{
    int nd;
    int64_t sh[2];
    float *x = kw_tiny_weight(s, name, &nd, sh);
    int64_t n = sh[0] * (nd == 2 ? sh[1] : 1), hd = kw_tiny_head_dim(s);
    if (!s->qwen2 && (strstr(name, "attn_q.weight") || strstr(name, "attn_k.weight"))) {
        float *p = malloc((size_t)n * sizeof *p);
        for (int64_t r = 0; r < sh[0]; r++)
            memcpy(p + r * sh[1], x + kw_tiny_unpermute_row(r, (int)hd) * sh[1],
                   (size_t)sh[1] * sizeof *p);
        free(x);
        x = p;
    }
    uint64_t ne[2] = {(uint64_t)(nd == 2 ? sh[1] : sh[0]), (uint64_t)sh[0]};
    kw_dtype dt = nd == 2 ? s->gguf_dtype : KW_DT_F32;
    int64_t nbytes = kw_dtype_nbytes(dt, n);
    uint8_t *data = malloc((size_t)nbytes);
    if (dt == KW_DT_F32) {
        memcpy(data, x, (size_t)nbytes);
    } else if (dt == KW_DT_F16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = kw_f32_to_f16(x[i]);
            memcpy(data + 2 * i, &h, 2);
        }
    } else {
        kw_tiny_quantize_q8_0(x, data, n);
    }
    uint32_t gt = 0;
    kw_dtype_to_ggml(dt, &gt);
    kw_gw_tensor(w, name, gt, nd, ne, data, (size_t)nbytes);
    free(data);
    free(x);
}

void kw_tiny_rope_freqs(const kw_tiny_spec *s, float *out)
{
    const double factor = 8, lo = 1, hi = 4, orig = 64, pi = 3.14159265358979323846;
    int hd = kw_tiny_head_dim(s);
    for (int i = 0; i < hd / 2; i++) {
        double freq = pow(10000.0, -2.0 * i / hd), wavelen = 2 * pi / freq;
        if (wavelen < orig / hi) {
            out[i] = 1.0f;
        } else if (wavelen > orig / lo) {
            out[i] = (float)factor;
        } else {
            double smooth = (orig / wavelen - lo) / (hi - lo);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

int kw_tiny_write_gguf(const kw_tiny_spec *s, const char *path, kw_error *err)
{
    kw_gw *w = kw_gw_new(3);
    char **vocab = make_vocab();
    gguf_metadata(s, w, vocab);
    free_vocab(vocab);
    if (s->rope_llama3) {
        float f[256];
        uint64_t ne = (uint64_t)kw_tiny_head_dim(s) / 2;
        kw_tiny_rope_freqs(s, f);
        kw_gw_tensor(w, "rope_freqs.weight", KW_GGML_F32, 1, &ne, f, ne * sizeof *f);
    }
    for (int i = 0; i < kw_tiny_n_tensors(s); i++) {
        char buf[64];
        gguf_tensor(s, w, kw_tiny_tensor_name(s, i, buf));
    }
    int rc = kw_gw_write(w, path, err);
    kw_gw_free(w);
    return rc;
}

/* ---- Hugging Face directory ---- */

static void hf_name(const char *gg, char *out, size_t cap)
{
    static const struct { const char *g, *h; } glob[] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"}, {"output.weight", "lm_head.weight"}};
    static const struct { const char *g, *h; } lay[] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"}, {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"}, {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},     {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"}, {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"}};
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(gg, glob[i].g)) {
            snprintf(out, cap, "%s", glob[i].h);
            return;
        }
    int l, used = 0;
    sscanf(gg, "blk.%d.%n", &l, &used);
    for (size_t i = 0; i < sizeof lay / sizeof *lay; i++)
        if (!strcmp(gg + used, lay[i].g)) {
            snprintf(out, cap, "model.layers.%d.%s", l, lay[i].h);
            return;
        }
    snprintf(out, cap, "?");
}

static int write_shard(const kw_tiny_spec *s, const char *path, int t0, int t1, json_t *wmap,
                       const char *fname, kw_error *err)
{
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t esz = s->hf_dtype == KW_DT_F32 ? 4 : 2, off = 0;
    const char *dts = s->hf_dtype == KW_DT_F32 ? "F32" : s->hf_dtype == KW_DT_F16 ? "F16" : "BF16";
    uint8_t *data = NULL;
    for (int i = t0; i < t1; i++) {
        char gb[64], hn[128];
        const char *gg = kw_tiny_tensor_name(s, i, gb);
        int nd;
        int64_t sh[2];
        float *x = kw_tiny_weight(s, gg, &nd, sh);
        int64_t n = sh[0] * (nd == 2 ? sh[1] : 1);
        hf_name(gg, hn, sizeof hn);
        json_t *shape = nd == 2 ? json_pack("[I,I]", (json_int_t)sh[0], (json_int_t)sh[1])
                                : json_pack("[I]", (json_int_t)sh[0]);
        json_object_set_new(hdr, hn, json_pack("{s:s,s:o,s:[I,I]}", "dtype", dts, "shape", shape,
                                               "data_offsets", (json_int_t)off,
                                               (json_int_t)(off + (size_t)n * esz)));
        if (wmap)
            json_object_set_new(wmap, hn, json_string(fname));
        data = realloc(data, off + (size_t)n * esz);
        for (int64_t j = 0; j < n; j++) {
            if (esz == 4) {
                memcpy(data + off + 4 * j, &x[j], 4);
            } else {
                uint16_t h = s->hf_dtype == KW_DT_F16 ? kw_f32_to_f16(x[j]) : kw_f32_to_bf16(x[j]);
                memcpy(data + off + 2 * j, &h, 2);
            }
        }
        off += (size_t)n * esz;
        free(x);
    }
    char *js = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hl = strlen(js), padded = (hl + 7) / 8 * 8;
    uint64_t n64 = padded;
    FILE *f = fopen(path, "wb");
    int rc = KW_OK;
    if (!f) {
        rc = kw_error_set(err, KW_EIO, "cannot create '%s'", path);
    } else {
        fwrite(&n64, 8, 1, f);
        fwrite(js, 1, hl, f);
        for (size_t i = hl; i < padded; i++)
            fputc(' ', f);
        if (off)
            fwrite(data, 1, off, f);
        if (fclose(f) != 0)
            rc = kw_error_set(err, KW_EIO, "cannot write '%s'", path);
    }
    free(js);
    free(data);
    return rc;
}

static json_t *tokenizer_json(char **vocab)
{
    json_t *v = json_object(), *added = json_array(), *ms = json_array();
    for (int i = 0; i < kw_tiny_n_vocab(); i++)
        json_object_set_new(v, vocab[i], json_integer(i));
    for (int i = 0; i < N_SPECIAL; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i,
                                               "content", specials[i], "single_word", 0, "lstrip",
                                               0, "rstrip", 0, "normalized", 0, "special", 1));
    for (int m = 0; m < N_MERGES; m++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s %s", merges[m][0], merges[m][1]);
        json_array_append_new(ms, json_string(buf));
    }
    json_t *bl = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 1);
    json_t *r = json_pack(
        "{s:s,s:n,s:n,s:o,s:n,s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},O]},s:O,s:O,"
        "s:{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:o,s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
        "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
        "\\p{N}", "behavior", "Isolated", "invert", 0, bl, "post_processor", bl, "decoder", bl,
        "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "vocab", v, "merges", ms);
    json_decref(bl);
    return r;
}

static int dump(json_t *j, const char *dir, const char *name, kw_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = json_dump_file(j, path, JSON_INDENT(2)) == 0
                 ? KW_OK : kw_error_set(err, KW_EIO, "cannot write '%s'", path);
    json_decref(j);
    return rc;
}

int kw_tiny_write_hf(const kw_tiny_spec *s, const char *dir, kw_error *err)
{
    mkdir(dir, 0755);
    json_t *cfg = json_pack(
        "{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:b,s:i,s:i,s:s,s:n}", "architectures",
        s->qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM", "model_type", s->qwen2 ? "qwen2" : "llama",
        "hidden_size", s->n_embd, "intermediate_size", s->n_ff, "num_hidden_layers", s->n_layer,
        "num_attention_heads", s->n_head, "num_key_value_heads", s->n_head_kv,
        "vocab_size", kw_tiny_n_vocab(), "max_position_embeddings", 256, "rms_norm_eps", 1e-5,
        "rope_theta", 10000.0, "tie_word_embeddings", s->tie_embeddings, "bos_token_id", 1,
        "eos_token_id", 2, "torch_dtype", "float32", "rope_scaling");
    if (s->rope_llama3)
        json_object_set_new(cfg, "rope_scaling",
                            json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", 8.0, "low_freq_factor",
                                      1.0, "high_freq_factor", 4.0,
                                      "original_max_position_embeddings", 64, "rope_type",
                                      "llama3"));
    int rc = dump(cfg, dir, "config.json", err);
    if (rc == 0)
        rc = dump(json_pack("{s:i,s:[i,i]}", "bos_token_id", 1, "eos_token_id", 2, 0), dir,
                  "generation_config.json", err);
    if (rc == 0)
        rc = dump(json_pack("{s:b,s:s,s:s,s:s,s:i}", "add_bos_token", 0, "bos_token",
                            "<|im_start|>", "eos_token", "<|im_end|>", "chat_template",
                            chat_template, "model_max_length", 256),
                  dir, "tokenizer_config.json", err);
    char **vocab = make_vocab();
    if (rc == 0)
        rc = dump(tokenizer_json(vocab), dir, "tokenizer.json", err);
    free_vocab(vocab);
    int nt = kw_tiny_n_tensors(s), ns = s->n_shards > 1 ? s->n_shards : 1;
    json_t *wmap = ns > 1 ? json_object() : NULL;
    for (int k = 0; k < ns && rc == 0; k++) {
        char fname[128], path[4096];
        if (ns == 1)
            snprintf(fname, sizeof fname, "model.safetensors");
        else
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, ns);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        rc = write_shard(s, path, k * nt / ns, (k + 1) * nt / ns, wmap, fname, err);
    }
    if (wmap && rc == 0)
        rc = dump(json_pack("{s:{},s:O}", "metadata", "weight_map", wmap), dir,
                  "model.safetensors.index.json", err);
    json_decref(wmap);
    return rc;
}
