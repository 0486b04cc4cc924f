/* tokenize.chat / tokenize.raw: their core (sample -> kw_tokens) with tokenizers built
 * here: the prompt text from fields, the chat rendering, max_new, the attached sample,
 * and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/model.h"
#include "model/tokenizer.h"
#include "tok_fixture.h"
#include "tokenize/tokprompt.h"

static kw_tokenizer *tiny(void)
{
    char *dir = tokfix_golden_path("tok_tiny_bytelevel");
    kw_tokenizer *tk = NULL;
    kw_error err = {0};
    assert_int_equal(kw_tokenizer_from_hf_dir(dir, &tk, &err), 0);
    free(dir);
    return tk;
}

static void free_tokens(kw_tokens *t)
{
    json_decref(t->sample);
    json_decref(t->extra);
    free(t->ids);
    free(t);
}

static void test_raw_takes_field_and_max_new(void **s)
{
    (void)s;
    kw_tokenizer *tk = tiny();
    json_t *sample = json_pack("{s:s,s:s,s:i}", "input", "hello world", "q", "the cat",
                               "max_new", 17);
    kw_tokprompt_opts o = {.style = KW_CHAT_NONE};
    kw_tokens *t;
    kw_error err = {0};
    assert_int_equal(kw_tokprompt_make(tk, sample, &o, &t, &err), 0);
    int32_t want[64];
    int n = kw_tokenize(tk, "hello world", 1, want, 64);
    assert_int_equal(t->n, n);
    assert_memory_equal(t->ids, want, (size_t)n * sizeof *want);
    assert_int_equal(t->max_new, 17);
    assert_ptr_equal(t->sample, sample);
    assert_int_equal(sample->refcount, 2); /* the tokens hold their own reference */
    free_tokens(t);
    o.field = "q";
    o.max_new = 5;
    assert_int_equal(kw_tokprompt_make(tk, sample, &o, &t, &err), 0);
    n = kw_tokenize(tk, "the cat", 1, want, 64);
    assert_int_equal(t->n, n);
    assert_memory_equal(t->ids, want, (size_t)n * sizeof *want);
    assert_int_equal(t->max_new, 5);
    free_tokens(t);
    assert_int_equal(sample->refcount, 1);
    json_decref(sample);
    kw_tokenizer_free(tk);
}

static void test_chat_styles_render_system_and_user(void **s)
{
    (void)s;
    kw_tokenizer *tk = tiny();
    json_t *sample = json_pack("{s:s}", "input", "the cat");
    static const struct { kw_chat_style st; const char *sys, *dsys, *want; } cases[] = {
        {KW_CHAT_LLAMA3, "Be brief.", NULL,
         "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nthe cat<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {KW_CHAT_LLAMA2, "", NULL, "<s>[INST] the cat [/INST]"},
        {KW_CHAT_LLAMA2, "Sys", NULL, "<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nthe cat [/INST]"},
        {KW_CHAT_CHATML, "", "Default.",
         "<|im_start|>system\nDefault.<|im_end|>\n<|im_start|>user\nthe cat<|im_end|>\n"
         "<|im_start|>assistant\n"},
        {KW_CHAT_CHATML, "Mine.", "Default.",
         "<|im_start|>system\nMine.<|im_end|>\n<|im_start|>user\nthe cat<|im_end|>\n"
         "<|im_start|>assistant\n"},
        {KW_CHAT_CHATML, NULL, NULL,
         "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kw_tokprompt_opts o = {.style = cases[i].st, .system = cases[i].sys,
                               .default_system = cases[i].dsys};
        kw_tokens *t;
        kw_error err = {0};
        assert_int_equal(kw_tokprompt_make(tk, sample, &o, &t, &err), 0);
        int32_t want[512];
        int n = kw_tokenize(tk, cases[i].want, 1, want, 512);
        assert_int_equal(t->n, n);
        assert_memory_equal(t->ids, want, (size_t)n * sizeof *want);
        free_tokens(t);
    }
    json_decref(sample);
    kw_tokenizer_free(tk);
}

/* RULER's answer_prefix goes after the rendered prompt (the assistant turn starts with
 * it); "chat": false renders raw whatever the style (LongBench's no-chat tasks). */
static void test_answer_prefix_follows_the_assistant_header_and_chat_false_is_raw(void **s)
{
    (void)s;
    kw_tokenizer *tk = tiny();
    static const struct { const char *sample, *want; kw_chat_style st; } cases[] = {
        {"{\"input\": \"the cat\", \"answer_prefix\": \" It is\"}",
         "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n It is", KW_CHAT_CHATML},
        {"{\"input\": \"the cat\", \"answer_prefix\": \" It is\", \"chat\": false}",
         "the cat It is", KW_CHAT_CHATML},
        {"{\"input\": \"the cat\", \"chat\": false}", "the cat", KW_CHAT_LLAMA3},
        {"{\"input\": \"the cat\", \"chat\": true}",
         "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n", KW_CHAT_CHATML},
        {"{\"input\": \"the cat\", \"answer_prefix\": \" A:\"}", "the cat A:", KW_CHAT_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *sample = json_loads(cases[i].sample, 0, NULL);
        assert_non_null(sample);
        kw_tokprompt_opts o = {.style = cases[i].st};
        kw_tokens *t;
        kw_error err = {0};
        assert_int_equal(kw_tokprompt_make(tk, sample, &o, &t, &err), 0);
        int32_t want[512];
        int n = kw_tokenize(tk, cases[i].want, 1, want, 512);
        if (t->n != n || memcmp(t->ids, want, (size_t)n * sizeof *want))
            fail_msg("case %zu: prompt differs from '%s'", i, cases[i].want);
        free_tokens(t);
        json_decref(sample);
    }
    json_t *bad = json_pack("{s:s,s:s}", "input", "x", "chat", "no");
    kw_tokprompt_opts o = {.style = KW_CHAT_CHATML};
    kw_tokens *t = NULL;
    kw_error err = {0};
    assert_int_equal(kw_tokprompt_make(tk, bad, &o, &t, &err), KW_ETYPE);
    assert_non_null(strstr(err.msg, "'chat'"));
    json_object_set_new(bad, "chat", json_true());
    json_object_set_new(bad, "answer_prefix", json_integer(3));
    assert_int_equal(kw_tokprompt_make(tk, bad, &o, &t, &err), KW_ETYPE);
    assert_non_null(strstr(err.msg, "'answer_prefix'"));
    json_decref(bad);
    kw_tokenizer_free(tk);
}

static void test_template_joins_fields(void **s)
{
    (void)s;
    json_t *sample = json_pack("{s:s,s:s,s:i}", "context", "CTX", "input", "Q?", "n", 42);
    char *text;
    kw_error err = {0};
    assert_int_equal(kw_tokprompt_text(sample, "input", "{context}\n\n{input} {{x}} {n}",
                                       &text, &err), 0);
    assert_string_equal(text, "CTX\n\nQ? {x} 42");
    free(text);
    assert_int_equal(kw_tokprompt_text(sample, "input", "{context} {missing}", &text, &err),
                     KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "'missing'"));
    assert_null(text);
    assert_int_equal(kw_tokprompt_text(sample, "input", "{context", &text, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "offset 0"));
    assert_int_equal(kw_tokprompt_text(sample, "input", "a } b", &text, &err), KW_EINVAL);
    assert_int_equal(kw_tokprompt_text(sample, "absent", NULL, &text, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "'absent'"));
    json_t *arr = json_array();
    assert_int_equal(kw_tokprompt_text(arr, "input", NULL, &text, &err), KW_ETYPE);
    json_decref(arr);
    json_decref(sample);
}

static void test_style_names_and_auto(void **s)
{
    (void)s;
    kw_chat_style st;
    kw_error err = {0};
    assert_int_equal(kw_tokprompt_style("auto", "x<|im_start|>y", &st, &err), 0);
    assert_int_equal(st, KW_CHAT_CHATML);
    assert_int_equal(kw_tokprompt_style("llama3", NULL, &st, &err), 0);
    assert_int_equal(st, KW_CHAT_LLAMA3);
    assert_int_equal(kw_tokprompt_style("none", NULL, &st, &err), 0);
    assert_int_equal(st, KW_CHAT_NONE);
    assert_int_equal(kw_tokprompt_style("auto", NULL, &st, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "tokenize.raw"));
    assert_int_equal(kw_tokprompt_style("vicuna", NULL, &st, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "'vicuna'"));
}

static void test_chat_prompt_ids_match_hf_for_smollm2(void **s)
{
    (void)s;
    char *p = tokfix_model_path();
    kw_tokenizer *tk;
    char *tmpl;
    int rc = tokfix_load_gguf(p, &tk, &tmpl);
    free(p);
    if (rc < 0) {
        skip();
        return;
    }
    json_t *g = tokfix_golden("tokenizer_smollm2.json"), *c;
    size_t i;
    int checked = 0;
    json_array_foreach(json_object_get(g, "chat"), i, c) {
        json_t *msgs = json_object_get(c, "messages");
        json_t *first = json_array_get(msgs, 0), *last = json_array_get(msgs, json_array_size(msgs) - 1);
        const char *sys = !strcmp(json_string_value(json_object_get(first, "role")), "system")
                              ? json_string_value(json_object_get(first, "content")) : "";
        json_t *sample = json_pack("{s:O}", "prompt", json_object_get(last, "content"));
        char *dsys = kw_chat_default_system(tmpl);
        kw_tokprompt_opts o = {.style = KW_CHAT_CHATML, .system = sys, .default_system = dsys,
                               .field = "prompt"};
        assert_int_equal(kw_tokprompt_style("auto", tmpl, &o.style, NULL), 0);
        kw_tokens *t;
        kw_error err = {0};
        assert_int_equal(kw_tokprompt_make(tk, sample, &o, &t, &err), 0);
        json_t *want = json_object_get(c, "ids");
        assert_int_equal((size_t)t->n, json_array_size(want));
        for (int k = 0; k < t->n; k++)
            assert_int_equal(t->ids[k], json_integer_value(json_array_get(want, (size_t)k)));
        assert_int_equal(t->max_new, 0);
        checked++;
        free_tokens(t);
        free(dsys);
        json_decref(sample);
    }
    assert_int_equal(checked, 3);
    json_decref(g);
    free(tmpl);
    kw_tokenizer_free(tk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_takes_field_and_max_new),
        cmocka_unit_test(test_template_joins_fields),
        cmocka_unit_test(test_answer_prefix_follows_the_assistant_header_and_chat_false_is_raw),
        cmocka_unit_test(test_chat_styles_render_system_and_user),
        cmocka_unit_test(test_style_names_and_auto),
        cmocka_unit_test(test_chat_prompt_ids_match_hf_for_smollm2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
