/* Hugging Face config.json and friends (hfconfig.h). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hfconfig.h"
#include "kvweave/util.h"
#include "sniff.h"

static int bad(kw_error *err, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(kw_error *err, const char *label, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kw_error_vset(err, KW_EFORMAT, label, 0, 0, fmt, ap);
    va_end(ap);
    return KW_EFORMAT;
}

/* A JSON syntax error, with a hint when the file is something else (an HTML page). */
static int json_fail(kw_error *err, const char *label, const char *text, size_t n,
                     const json_error_t *je)
{
    size_t s = 0;
    while (s < n && s < 64 && (text[s] == ' ' || text[s] == '\n' || text[s] == '\r' ||
                               text[s] == '\t'))
        s++;
    if (s < n && text[s] == '<') {
        char what[160];
        kw__sniff(text, n, what, sizeof what);
        return kw_error_at(err, KW_EFORMAT, label, 0, 0, "not JSON (%s)", what);
    }
    return kw_error_at(err, KW_EPARSE, label, je->line, je->column, "%s", je->text);
}

/* An integer field; absent or null gives def, or an error when def < 0 (required). */
static int get_int(json_t *o, const char *key, long long def, long long lo, long long *out,
                   const char *label, kw_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (def < 0)
            return bad(err, label, "required field '%s' is missing", key);
        *out = def;
        return KW_OK;
    }
    if (!json_is_integer(v))
        return bad(err, label, "field '%s' is not an integer", key);
    *out = json_integer_value(v);
    if (*out < lo || *out > INT32_MAX)
        return bad(err, label, "field '%s' is %lld; it must be in [%lld, %d]", key, *out, lo,
                   INT32_MAX);
    return KW_OK;
}

static int get_num(json_t *o, const char *key, double def, double *out, const char *label,
                   kw_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (isnan(def))
            return bad(err, label, "required field '%s' is missing", key);
        *out = def;
        return KW_OK;
    }
    if (!json_is_number(v))
        return bad(err, label, "field '%s' is not a number", key);
    *out = json_number_value(v);
    if (!isfinite(*out) || *out <= 0)
        return bad(err, label, "field '%s' is %g; it must be positive", key, *out);
    return KW_OK;
}

static int add_eos(kw_model_config *cfg, json_t *v, const char *label, kw_error *err)
{
    if (!v || json_is_null(v))
        return KW_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return bad(err, label, "eos_token_id must be a non-negative integer or a list of them");
        int id = (int)json_integer_value(x), dup = 0;
        for (int k = 0; k < cfg->n_eos; k++)
            dup |= cfg->eos_ids[k] == id;
        if (dup)
            continue;
        if (cfg->n_eos == KW_MAX_EOS)
            return bad(err, label, "more than %d eos_token_id values", KW_MAX_EOS);
        cfg->eos_ids[cfg->n_eos++] = id;
    }
    return KW_OK;
}

static int parse_arch(json_t *root, kw_model_config *cfg, const char *label, kw_error *err)
{
    static const struct { const char *type, *cls; kw_arch arch; } archs[] = {
        {"llama", "LlamaForCausalLM", KW_ARCH_LLAMA},
        {"mistral", "MistralForCausalLM", KW_ARCH_LLAMA},
        {"qwen2", "Qwen2ForCausalLM", KW_ARCH_QWEN2},
    };
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    const char *cls = json_string_value(json_array_get(json_object_get(root, "architectures"), 0));
    for (size_t i = 0; i < sizeof archs / sizeof *archs; i++)
        if ((mt && strcmp(mt, archs[i].type) == 0) || (!mt && cls && !strcmp(cls, archs[i].cls))) {
            cfg->arch = archs[i].arch;
            return KW_OK;
        }
    if (!mt && !cls)
        return bad(err, label, "required field 'model_type' is missing");
    return bad(err, label, "unknown architecture '%s' (kvweave runs llama, mistral and qwen2)",
               mt ? mt : cls);
}

static int parse_rope_scaling(json_t *rs, kw_model_config *cfg, const char *label,
                              kw_error *err)
{
    cfg->rope_scaling = KW_ROPE_SCALE_NONE;
    cfg->rope_factor = 1.0f;
    if (!rs || json_is_null(rs))
        return KW_OK;
    if (!json_is_object(rs))
        return bad(err, label, "field 'rope_scaling' is not an object");
    const char *ty = json_string_value(json_object_get(rs, "rope_type"));
    if (!ty)
        ty = json_string_value(json_object_get(rs, "type"));
    if (!ty)
        return bad(err, label, "rope_scaling has neither 'rope_type' nor 'type'");
    if (strcmp(ty, "default") == 0)
        return KW_OK;
    double f, lo, hi;
    long long orig;
    int rc;
    if (strcmp(ty, "linear") == 0) {
        if ((rc = get_num(rs, "factor", NAN, &f, label, err)) < 0)
            return kw_error_prefix(err, "rope_scaling");
        cfg->rope_scaling = KW_ROPE_SCALE_LINEAR;
        cfg->rope_factor = (float)f;
        return KW_OK;
    }
    if (strcmp(ty, "llama3") != 0)
        return bad(err, label, "rope_scaling type '%s' is not supported (kvweave supports "
                   "linear and llama3)", ty);
    if ((rc = get_num(rs, "factor", NAN, &f, label, err)) < 0 ||
        (rc = get_num(rs, "low_freq_factor", NAN, &lo, label, err)) < 0 ||
        (rc = get_num(rs, "high_freq_factor", NAN, &hi, label, err)) < 0 ||
        (rc = get_int(rs, "original_max_position_embeddings", -1, 1, &orig, label, err)) < 0)
        return rc;
    if (hi <= lo)
        return bad(err, label, "rope_scaling: high_freq_factor %g must exceed low_freq_factor %g",
                   hi, lo);
    cfg->rope_scaling = KW_ROPE_SCALE_LLAMA3;
    cfg->rope_factor = (float)f;
    cfg->rope_low_freq_factor = (float)lo;
    cfg->rope_high_freq_factor = (float)hi;
    cfg->rope_orig_ctx = (int)orig;
    return KW_OK;
}

static int parse_dims(json_t *root, kw_model_config *cfg, const char *label, kw_error *err)
{
    long long embd = 0, nl = 0, nh = 1, nkv = 1, ff = 0, nv = 0, hd = 0, ctx = 0;
    int rc;
    if ((rc = get_int(root, "hidden_size", -1, 1, &embd, label, err)) < 0 ||
        (rc = get_int(root, "num_hidden_layers", -1, 1, &nl, label, err)) < 0 ||
        (rc = get_int(root, "num_attention_heads", -1, 1, &nh, label, err)) < 0 ||
        (rc = get_int(root, "intermediate_size", -1, 1, &ff, label, err)) < 0 ||
        (rc = get_int(root, "vocab_size", -1, 1, &nv, label, err)) < 0 ||
        (rc = get_int(root, "num_key_value_heads", nh, 1, &nkv, label, err)) < 0 ||
        (rc = get_int(root, "max_position_embeddings", 2048, 1, &ctx, label, err)) < 0)
        return rc;
    if (!json_object_get(root, "head_dim") && embd % nh)
        return bad(err, label, "hidden_size %lld is not a multiple of num_attention_heads %lld",
                   embd, nh);
    if ((rc = get_int(root, "head_dim", embd / nh, 1, &hd, label, err)) < 0)
        return rc;
    if (nh % nkv)
        return bad(err, label, "num_attention_heads %lld is not a multiple of "
                   "num_key_value_heads %lld", nh, nkv);
    if (hd % 2)
        return bad(err, label, "head_dim %lld is odd; RoPE needs an even head size", hd);
    cfg->n_embd = (int)embd;
    cfg->n_layer = (int)nl;
    cfg->n_head = (int)nh;
    cfg->n_head_kv = (int)nkv;
    cfg->head_dim = (int)hd;
    cfg->n_ff = (int)ff;
    cfg->n_vocab = (int)nv;
    cfg->n_ctx_train = (int)ctx;
    return KW_OK;
}

int kw_hfconfig_parse(const char *text, size_t n, const char *label, kw_model_config *cfg,
                      kw_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t je;
    json_t *root = json_loadb(text, n, 0, &je);
    if (!root)
        return json_fail(err, label, text, n, &je);
    int rc;
    double eps, theta;
    long long bos = -1;
    if (!json_is_object(root)) {
        rc = bad(err, label, "not a JSON object");
        goto done;
    }
    if ((rc = parse_arch(root, cfg, label, err)) < 0 || (rc = parse_dims(root, cfg, label, err)) < 0 ||
        (rc = get_num(root, "rms_norm_eps", 1e-6, &eps, label, err)) < 0 ||
        (rc = get_num(root, "rope_theta", 10000.0, &theta, label, err)) < 0 ||
        (rc = get_int(root, "bos_token_id", 0x7fffffff, 0, &bos, label, err)) < 0 ||
        (rc = parse_rope_scaling(json_object_get(root, "rope_scaling"), cfg, label, err)) < 0 ||
        (rc = add_eos(cfg, json_object_get(root, "eos_token_id"), label, err)) < 0)
        goto done;
    cfg->norm_eps = (float)eps;
    cfg->rope_theta = (float)theta;
    cfg->bos_id = bos == 0x7fffffff ? -1 : (int)bos;
    cfg->rope_layout = KW_ROPE_HALF;
    cfg->tie_embeddings = json_is_true(json_object_get(root, "tie_word_embeddings"));
    cfg->qkv_bias = cfg->arch == KW_ARCH_QWEN2 || json_is_true(json_object_get(root, "attention_bias"));
    cfg->add_bos = false; /* decided by the tokenizer files (kw_hfconfig_load) */
    rc = KW_OK;
done:
    json_decref(root);
    return rc;
}

int kw_hfconfig_merge_generation(const char *text, size_t n, const char *label,
                                 kw_model_config *cfg, kw_error *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, n, 0, &je);
    if (!root)
        return json_fail(err, label, text, n, &je);
    int rc = json_is_object(root) ? add_eos(cfg, json_object_get(root, "eos_token_id"), label, err)
                                  : bad(err, label, "not a JSON object");
    json_t *b = json_object_get(root, "bos_token_id");
    if (rc == 0 && json_is_integer(b) && json_integer_value(b) >= 0 &&
        json_integer_value(b) <= INT32_MAX)
        cfg->bos_id = (int)json_integer_value(b);
    json_decref(root);
    return rc;
}

/* A JSON file of dir, or NULL (and KW_OK) when optional and absent. */
static int load_json(const char *dir, const char *name, int optional, json_t **out,
                     char *path, size_t cap, kw_error *err)
{
    *out = NULL;
    snprintf(path, cap, "%s/%s", dir, name);
    struct stat sb;
    if (stat(path, &sb) < 0) {
        if (optional)
            return KW_OK;
        return kw_error_at(err, KW_ENOTFOUND, path, 0, 0, "missing (a Hugging Face model "
                           "directory needs config.json)");
    }
    json_error_t je;
    *out = json_load_file(path, 0, &je);
    if (!*out)
        return kw_error_at(err, KW_EPARSE, path, je.line, je.column, "%s", je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return bad(err, path, "not a JSON object");
    }
    return KW_OK;
}

/* Whether tokenizer.json's post-processor puts a special token first (Llama-3 style). */
static bool post_processor_adds_bos(const char *dir)
{
    char path[4096];
    json_t *tj = NULL;
    if (load_json(dir, "tokenizer.json", 1, &tj, path, sizeof path, NULL) < 0 || !tj)
        return false;
    json_t *pp = json_object_get(tj, "post_processor");
    bool r = false;
    json_t *list = json_object_get(pp, "processors");
    size_t n = json_is_array(list) ? json_array_size(list) : 1;
    for (size_t i = 0; i < n && !r; i++) {
        json_t *p = json_is_array(list) ? json_array_get(list, i) : pp;
        const char *ty = json_string_value(json_object_get(p, "type"));
        if (ty && strcmp(ty, "TemplateProcessing") == 0)
            r = json_object_get(json_array_get(json_object_get(p, "single"), 0), "SpecialToken");
    }
    json_decref(tj);
    return r;
}

static char *chat_template_of(const char *dir, json_t *tc)
{
    json_t *t = json_object_get(tc, "chat_template");
    if (json_is_string(t))
        return strdup(json_string_value(t));
    if (json_is_array(t)) { /* [{"name": "default", "template": "..."}, ...] */
        for (size_t i = 0; i < json_array_size(t); i++) {
            json_t *e = json_array_get(t, i);
            const char *nm = json_string_value(json_object_get(e, "name"));
            const char *tx = json_string_value(json_object_get(e, "template"));
            if (tx && (!nm || strcmp(nm, "default") == 0))
                return strdup(tx);
        }
    }
    char path[4096], *text = NULL;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (kw_read_file(path, &text, NULL, NULL) == KW_OK)
        return text;
    return NULL;
}

int kw_hfconfig_load(const char *dir, kw_model_config *cfg, char **chat_template,
                     kw_error *err)
{
    char path[4096];
    char *text = NULL;
    size_t n;
    if (chat_template)
        *chat_template = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = kw_read_file(path, &text, &n, err);
    if (rc < 0)
        return kw_error_at(err, rc, path, 0, 0, "missing or unreadable (a Hugging Face model "
                           "directory needs config.json)");
    rc = kw_hfconfig_parse(text, n, path, cfg, err);
    free(text);
    if (rc < 0)
        return rc;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (kw_read_file(path, &text, &n, NULL) == KW_OK) {
        rc = kw_hfconfig_merge_generation(text, n, path, cfg, err);
        free(text);
        if (rc < 0)
            return rc;
    }
    json_t *tc = NULL;
    if ((rc = load_json(dir, "tokenizer_config.json", 1, &tc, path, sizeof path, err)) < 0)
        return rc;
    json_t *ab = json_object_get(tc, "add_bos_token");
    if (json_is_boolean(ab))
        cfg->add_bos = json_is_true(ab);
    else
        cfg->add_bos = post_processor_adds_bos(dir);
    if (chat_template)
        *chat_template = chat_template_of(dir, tc);
    json_decref(tc);
    return KW_OK;
}

int kw_hf_tensor_name(const char *hf, char *out, size_t cap)
{
    static const struct { const char *hf, *gg; } glob[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const struct { const char *hf, *gg; } layer[] = {
        {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},       {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
    };
    for (size_t i = 0; i < sizeof glob / sizeof *glob; i++)
        if (strcmp(hf, glob[i].hf) == 0)
            return snprintf(out, cap, "%s", glob[i].gg) < (int)cap ? 1 : KW_ELIMIT;
    if (strstr(hf, "rotary_emb.inv_freq"))
        return 0;
    unsigned layer_no;
    int used = 0;
    if (sscanf(hf, "model.layers.%u.%n", &layer_no, &used) == 1 && used > 0) {
        for (size_t i = 0; i < sizeof layer / sizeof *layer; i++)
            if (strcmp(hf + used, layer[i].hf) == 0)
                return snprintf(out, cap, "blk.%u.%s", layer_no, layer[i].gg) < (int)cap
                           ? 1 : KW_ELIMIT;
    }
    return KW_ENOTFOUND;
}
