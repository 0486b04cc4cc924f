/* Hugging Face config.json, generation_config.json, tokenizer_config.json and tensor
 * names (hfconfig.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hfconfig.h"
#include "tiny_model.h"

static int parse(const char *json, kw_model_config *c, kw_error *err)
{
    memset(err, 0, sizeof *err);
    return kw_hfconfig_parse(json, strlen(json), "config.json", c, err);
}

static void expect_error(const char *json, const char *needle)
{
    kw_model_config c;
    kw_error err;
    int rc = parse(json, &c, &err);
    if (rc >= 0 || !kw_is_input_error(rc) || strncmp(err.msg, "config.json:", 12) ||
        !strstr(err.msg, needle))
        fail_msg("rc %d, message \"%s\" lacks \"%s\"", rc, err.msg, needle);
}

#define LLAMA31 \
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":4096," \
    "\"intermediate_size\":14336,\"num_hidden_layers\":32,\"num_attention_heads\":32," \
    "\"num_key_value_heads\":8,\"vocab_size\":128256,\"max_position_embeddings\":131072," \
    "\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"bos_token_id\":128000," \
    "\"eos_token_id\":[128001,128008,128009],\"tie_word_embeddings\":false," \
    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0," \
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}"

static void test_llama31_config_with_llama3_scaling(void **st)
{
    (void)st;
    kw_model_config c;
    kw_error err;
    assert_int_equal(parse(LLAMA31, &c, &err), 0);
    assert_int_equal(c.arch, KW_ARCH_LLAMA);
    assert_int_equal(c.n_embd, 4096);
    assert_int_equal(c.n_ff, 14336);
    assert_int_equal(c.n_layer, 32);
    assert_int_equal(c.n_head, 32);
    assert_int_equal(c.n_head_kv, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.n_vocab, 128256);
    assert_int_equal(c.n_ctx_train, 131072);
    assert_true(c.norm_eps == 1e-5f);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.rope_layout, KW_ROPE_HALF);
    assert_int_equal(c.rope_scaling, KW_ROPE_SCALE_LLAMA3);
    assert_true(c.rope_factor == 8.0f && c.rope_low_freq_factor == 1.0f &&
                c.rope_high_freq_factor == 4.0f);
    assert_int_equal(c.rope_orig_ctx, 8192);
    assert_int_equal(c.bos_id, 128000);
    assert_int_equal(c.n_eos, 3);
    assert_int_equal(c.eos_ids[2], 128009);
    assert_false(c.tie_embeddings);
    assert_false(c.qkv_bias);
    /* generation_config adds ids without duplicates */
    const char *gen = "{\"bos_token_id\":128000,\"eos_token_id\":[128001,128009,7]}";
    assert_int_equal(kw_hfconfig_merge_generation(gen, strlen(gen), "generation_config.json", &c,
                                                  &err), 0);
    assert_int_equal(c.n_eos, 4);
    assert_int_equal(c.eos_ids[3], 7);
}

static void test_defaults_and_legacy_linear_scaling(void **st)
{
    (void)st;
    kw_model_config c;
    kw_error err;
    const char *j = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":300,"
                    "\"eos_token_id\":2,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}";
    assert_int_equal(parse(j, &c, &err), 0);
    assert_int_equal(c.n_head_kv, 4);
    assert_int_equal(c.head_dim, 16);
    assert_true(c.rope_theta == 10000.0f);
    assert_true(c.norm_eps == 1e-6f);
    assert_int_equal(c.n_ctx_train, 2048);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_ids[0], 2);
    assert_int_equal(c.rope_scaling, KW_ROPE_SCALE_LINEAR);
    assert_true(c.rope_factor == 2.0f);
}

static void test_mistral_head_dim_and_qwen2_bias(void **st)
{
    (void)st;
    kw_model_config c;
    kw_error err;
    const char *nemo = "{\"model_type\":\"mistral\",\"hidden_size\":5120,\"head_dim\":128,"
                       "\"intermediate_size\":14336,\"num_hidden_layers\":40,"
                       "\"num_attention_heads\":32,\"num_key_value_heads\":8,"
                       "\"vocab_size\":131072,\"rope_theta\":1000000.0,\"rope_scaling\":null}";
    assert_int_equal(parse(nemo, &c, &err), 0);
    assert_int_equal(c.arch, KW_ARCH_LLAMA);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rope_scaling, KW_ROPE_SCALE_NONE);
    const char *qwen = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":896,"
                       "\"intermediate_size\":4864,\"num_hidden_layers\":24,"
                       "\"num_attention_heads\":14,\"num_key_value_heads\":2,"
                       "\"vocab_size\":151936,\"tie_word_embeddings\":true,"
                       "\"eos_token_id\":151645,\"bos_token_id\":151643}";
    assert_int_equal(parse(qwen, &c, &err), 0);
    assert_int_equal(c.arch, KW_ARCH_QWEN2);
    assert_true(c.qkv_bias);
    assert_true(c.tie_embeddings);
    assert_int_equal(c.head_dim, 64);
}

static void test_missing_and_bad_fields_are_named(void **st)
{
    (void)st;
    static const char *req[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads", "vocab_size"};
    for (size_t i = 0; i < 5; i++) {
        char j[512] = "{\"model_type\":\"llama\"";
        for (size_t k = 0; k < 5; k++)
            if (k != i)
                snprintf(j + strlen(j), sizeof j - strlen(j), ",\"%s\":8", req[k]);
        strcat(j, "}");
        char want[128];
        snprintf(want, sizeof want, "required field '%s' is missing", req[i]);
        expect_error(j, want);
    }
    expect_error("{\"hidden_size\":8}", "required field 'model_type' is missing");
    expect_error("{\"model_type\":\"gpt_neox\",\"hidden_size\":8}",
                 "unknown architecture 'gpt_neox' (kvweave runs llama, mistral and qwen2)");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":\"big\"}",
                 "field 'hidden_size' is not an integer");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":0}",
                 "field 'hidden_size' is 0; it must be in [1, 2147483647]");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":8,"
                 "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":3,"
                 "\"vocab_size\":8}", "num_attention_heads 4 is not a multiple of "
                 "num_key_value_heads 3");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":8,"
                 "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":8,"
                 "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
                 "rope_scaling type 'yarn' is not supported");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":8,"
                 "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":8,"
                 "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}}",
                 "required field 'low_freq_factor' is missing");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":8,"
                 "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":8,"
                 "\"eos_token_id\":[1,\"x\"]}", "eos_token_id must be");
    kw_model_config c;
    kw_error err;
    assert_int_equal(parse("{\"model_type\": \"llama\",\n  \"hidden_size\": 64,,}", &c, &err),
                     KW_EPARSE);
    assert_non_null(strstr(err.msg, "config.json:2:"));
    assert_int_equal(parse("\n<!DOCTYPE html><html>Sign in</html>", &c, &err), KW_EFORMAT);
    assert_string_equal(err.msg, "config.json: not JSON (starts with '<!DOCTYPE html>' \u2014 an "
                                 "HTML page saved instead of the file?)");
}

static void test_load_reads_the_directory_files(void **st)
{
    (void)st;
    char dir[] = "/tmp/kw_hfc_XXXXXX";
    assert_non_null(mkdtemp(dir));
    kw_tiny_spec s = kw_tiny_default(1);
    kw_error err = {0};
    assert_int_equal(kw_tiny_write_hf(&s, dir, &err), 0);
    kw_model_config c;
    char *tmpl = NULL;
    assert_int_equal(kw_hfconfig_load(dir, &c, &tmpl, &err), 0);
    assert_non_null(tmpl);
    assert_non_null(strstr(tmpl, "<|im_start|>"));
    free(tmpl);
    assert_false(c.add_bos);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.n_eos, 2); /* config's 2, generation_config's [2, 0] */
    assert_int_equal(c.eos_ids[0], 2);
    assert_int_equal(c.eos_ids[1], 0);
    assert_int_equal(c.n_vocab, kw_tiny_n_vocab());
    /* without add_bos_token, a TemplateProcessing post-processor that starts with a
     * special token means BOS is added (Llama-3 style) */
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"T\"},"
          "{\"name\":\"default\",\"template\":\"D\"}]}", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    f = fopen(path, "w");
    fputs("{\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},"
          "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
          "{\"Sequence\":{\"id\":\"A\"}}]}]}}", f);
    fclose(f);
    assert_int_equal(kw_hfconfig_load(dir, &c, &tmpl, &err), 0);
    assert_true(c.add_bos);
    assert_string_equal(tmpl, "D");
    free(tmpl);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    assert_int_equal(kw_hfconfig_load(dir, &c, &tmpl, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "config.json"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_tensor_names_map_to_gguf(void **st)
{
    (void)st;
    char out[96];
    static const char *pairs[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
        {"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"},
        {"model.layers.11.self_attn.k_proj.bias", "blk.11.attn_k.bias"},
        {"model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"},
        {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"},
        {"model.layers.29.input_layernorm.weight", "blk.29.attn_norm.weight"},
        {"model.layers.2.post_attention_layernorm.weight", "blk.2.ffn_norm.weight"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        assert_int_equal(kw_hf_tensor_name(pairs[i][0], out, sizeof out), 1);
        assert_string_equal(out, pairs[i][1]);
    }
    assert_int_equal(kw_hf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq", out,
                                       sizeof out), 0);
    assert_int_equal(kw_hf_tensor_name("vision_tower.x.weight", out, sizeof out), KW_ENOTFOUND);
    assert_int_equal(kw_hf_tensor_name("model.layers.0.mlp.experts.weight", out, sizeof out),
                     KW_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama31_config_with_llama3_scaling),
        cmocka_unit_test(test_defaults_and_legacy_linear_scaling),
        cmocka_unit_test(test_mistral_head_dim_and_qwen2_bias),
        cmocka_unit_test(test_missing_and_bad_fields_are_named),
        cmocka_unit_test(test_load_reads_the_directory_files),
        cmocka_unit_test(test_tensor_names_map_to_gguf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
