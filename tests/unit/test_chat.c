/* Chat renderers: the same text as transformers' apply_chat_template with the models'
 * Jinja templates (goldens by tests/golden/make_tokenizer_golden.py), and the ids of the
 * rendered SmolLM2 prompt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/model.h"
#include "tok_fixture.h"

static kw_chat_msg *messages_of(json_t *arr, int *n)
{
    *n = (int)json_array_size(arr);
    kw_chat_msg *m = calloc((size_t)*n + 1, sizeof *m);
    for (int i = 0; i < *n; i++) {
        json_t *x = json_array_get(arr, (size_t)i);
        m[i].role = json_string_value(json_object_get(x, "role"));
        m[i].content = json_string_value(json_object_get(x, "content"));
    }
    return m;
}

/* What a tokenize.chat stage does: the template's default system message first when the
 * conversation has none. */
static char *render_like_model(const char *tmpl, json_t *msgs_json)
{
    int n;
    kw_chat_msg *m = messages_of(msgs_json, &n);
    kw_chat_style st = kw_chat_detect(tmpl);
    char *sys = kw_chat_default_system(tmpl);
    kw_chat_msg *all = calloc((size_t)n + 2, sizeof *all);
    int k = 0;
    if (sys && (n == 0 || strcmp(m[0].role, "system")))
        all[k++] = (kw_chat_msg){"system", sys};
    for (int i = 0; i < n; i++) all[k++] = m[i];
    char *out = kw_chat_render(st, all, k, 1);
    free(all);
    free(sys);
    free(m);
    return out;
}

static void test_detect_picks_the_renderer(void **s)
{
    (void)s;
    assert_int_equal(kw_chat_detect(NULL), KW_CHAT_NONE);
    assert_int_equal(kw_chat_detect("{{ messages[0]['content'] }}"), KW_CHAT_NONE);
    assert_int_equal(kw_chat_detect("{{'<|im_start|>' + message['role']}}"), KW_CHAT_CHATML);
    assert_int_equal(kw_chat_detect("'<|start_header_id|>' + role"), KW_CHAT_LLAMA3);
    assert_int_equal(kw_chat_detect("'[INST] ' + '<<SYS>>\\n'"), KW_CHAT_LLAMA2);
    assert_int_equal(kw_chat_detect("'[INST] ' + content"), KW_CHAT_MISTRAL);
}

static void test_chatml_matches_transformers_render(void **s)
{
    (void)s;
    json_t *g = tokfix_golden("tokenizer_smollm2.json"), *c;
    assert_non_null(g);
    size_t i;
    assert_true(json_array_size(json_object_get(g, "chat")) >= 3);
    json_array_foreach(json_object_get(g, "chat"), i, c) {
        const char *tmpl = json_string_value(json_object_get(c, "template"));
        assert_int_equal(kw_chat_detect(tmpl), KW_CHAT_CHATML);
        char *out = render_like_model(tmpl, json_object_get(c, "messages"));
        assert_non_null(out);
        assert_string_equal(out, json_string_value(json_object_get(c, "text")));
        free(out);
    }
    json_decref(g);
}

static void test_llama3_llama2_mistral_match_transformers_render(void **s)
{
    (void)s;
    json_t *g = tokfix_golden("tokenizer_smollm2.json"), *c;
    size_t i;
    int seen[8] = {0};
    json_array_foreach(json_object_get(g, "chat_other"), i, c) {
        const char *tmpl = json_string_value(json_object_get(c, "template"));
        const char *style = json_string_value(json_object_get(c, "style"));
        kw_chat_style st = kw_chat_detect(tmpl);
        assert_int_equal(st, !strcmp(style, "llama3") ? KW_CHAT_LLAMA3
                             : !strcmp(style, "llama2") ? KW_CHAT_LLAMA2 : KW_CHAT_MISTRAL);
        assert_null(kw_chat_default_system(tmpl));
        char *out = render_like_model(tmpl, json_object_get(c, "messages"));
        assert_non_null(out);
        assert_string_equal(out, json_string_value(json_object_get(c, "text")));
        free(out);
        seen[st]++;
    }
    assert_true(seen[KW_CHAT_LLAMA3] >= 3 && seen[KW_CHAT_LLAMA2] >= 3 && seen[KW_CHAT_MISTRAL] >= 2);
    json_decref(g);
}

static void test_default_system_read_from_template(void **s)
{
    (void)s;
    char *d = kw_chat_default_system(
        "{% if x %}{{ '<|im_start|>system\\nYou are Qwen.\\nBe kind.<|im_end|>\\n' }}{% endif %}"
        "{{ '<|im_start|>system\\n' + message['content'] + '<|im_end|>' }}");
    assert_string_equal(d, "You are Qwen.\nBe kind.");
    free(d);
    assert_null(kw_chat_default_system("{{ '<|im_start|>system\\n' + m + '<|im_end|>' }}"));
    assert_null(kw_chat_default_system("<|im_start|>system<|im_end|>"));
    assert_null(kw_chat_default_system(NULL));
    /* raw style concatenates contents; bad arguments give NULL */
    kw_chat_msg m[] = {{"user", "a"}, {"user", "b"}};
    char *r = kw_chat_render(KW_CHAT_NONE, m, 2, 1);
    assert_string_equal(r, "ab");
    free(r);
    assert_null(kw_chat_render(KW_CHAT_CHATML, NULL, 1, 1));
    assert_null(kw_chat_render((kw_chat_style)99, m, 2, 1));
}

static void test_chatml_prompt_ids_match_hf(void **s)
{
    (void)s;
    char *p = tokfix_model_path();
    kw_tokenizer *tk;
    char *tmpl = NULL;
    int rc = tokfix_load_gguf(p, &tk, &tmpl);
    free(p);
    if (rc < 0) {
        skip();
        return;
    }
    json_t *g = tokfix_golden("tokenizer_smollm2.json"), *c;
    size_t i;
    json_array_foreach(json_object_get(g, "chat"), i, c) {
        /* the GGUF's template is the one the goldens were rendered with */
        assert_string_equal(tmpl, json_string_value(json_object_get(c, "template")));
        char *text = render_like_model(tmpl, json_object_get(c, "messages"));
        int32_t ids[512];
        int n = kw_tokenize(tk, text, 1, ids, 512);
        json_t *want = json_object_get(c, "ids");
        assert_int_equal((size_t)n, json_array_size(want));
        for (int k = 0; k < n; k++)
            assert_int_equal(ids[k], json_integer_value(json_array_get(want, (size_t)k)));
        free(text);
    }
    json_decref(g);
    free(tmpl);
    kw_tokenizer_free(tk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_picks_the_renderer),
        cmocka_unit_test(test_chatml_matches_transformers_render),
        cmocka_unit_test(test_llama3_llama2_mistral_match_transformers_render),
        cmocka_unit_test(test_default_system_read_from_template),
        cmocka_unit_test(test_chatml_prompt_ids_match_hf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
