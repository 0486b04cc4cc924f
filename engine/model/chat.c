/* Built-in chat renderers: ChatML, Llama-3, Llama-2-chat and Mistral [INST], written to
 * give the same text as the models' Jinja templates for plain conversations (no tools).
 * The renderer is chosen from markers in the template string; a template's fixed default
 * system prompt (SmolLM2, Qwen2.5 add one when the conversation has none) is read out of
 * the template text by kw_chat_default_system. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/model.h"

kw_chat_style kw_chat_detect(const char *t)
{
    if (!t)
        return KW_CHAT_NONE;
    if (strstr(t, "<|im_start|>"))
        return KW_CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>"))
        return KW_CHAT_LLAMA3;
    if (strstr(t, "[INST]"))
        return strstr(t, "<<SYS>>") ? KW_CHAT_LLAMA2 : KW_CHAT_MISTRAL;
    return KW_CHAT_NONE;
}

typedef struct sbuf { char *s; size_t n, cap; int oom; } sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t c = (b->n + n + 1) * 2;
        char *p = realloc(b->s, c);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Jinja's trim / str.strip(): whitespace off both ends. */
static void put_trimmed(sbuf *b, const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n && is_space(s[i])) i++;
    while (n > i && is_space(s[n - 1])) n--;
    put(b, s + i, n - i);
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static void render_chatml(sbuf *b, const kw_chat_msg *m, int n, int gen)
{
    for (int i = 0; i < n; i++) {
        puts_(b, "<|im_start|>");
        puts_(b, str_or_empty(m[i].role));
        puts_(b, "\n");
        puts_(b, str_or_empty(m[i].content));
        puts_(b, "<|im_end|>\n");
    }
    if (gen)
        puts_(b, "<|im_start|>assistant\n");
}

static void render_llama3(sbuf *b, const kw_chat_msg *m, int n, int gen)
{
    puts_(b, "<|begin_of_text|>");
    for (int i = 0; i < n; i++) {
        puts_(b, "<|start_header_id|>");
        puts_(b, str_or_empty(m[i].role));
        puts_(b, "<|end_header_id|>\n\n");
        put_trimmed(b, str_or_empty(m[i].content));
        puts_(b, "<|eot_id|>");
    }
    if (gen)
        puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama-2-chat: a system message goes into the first user turn inside <<SYS>>; the
 * prompt ends with [/INST], so the generation prompt adds nothing. */
static void render_llama2(sbuf *b, const kw_chat_msg *m, int n)
{
    const char *sys = NULL;
    if (n > 0 && m[0].role && !strcmp(m[0].role, "system")) {
        sys = str_or_empty(m[0].content);
        m++;
        n--;
    }
    for (int i = 0; i < n; i++) {
        const char *role = str_or_empty(m[i].role), *c = str_or_empty(m[i].content);
        if (!strcmp(role, "user")) {
            puts_(b, "<s>[INST] ");
            if (i == 0 && sys) {
                sbuf t = {0};
                puts_(&t, "<<SYS>>\n");
                puts_(&t, sys);
                puts_(&t, "\n<</SYS>>\n\n");
                puts_(&t, c);
                put_trimmed(b, t.s ? t.s : "");
                b->oom |= t.oom;
                free(t.s);
            } else {
                put_trimmed(b, c);
            }
            puts_(b, " [/INST]");
        } else if (!strcmp(role, "assistant")) {
            puts_(b, " ");
            put_trimmed(b, c);
            puts_(b, " </s>");
        }
    }
}

/* Mistral v0.1: no stripping, "</s> " after an answer. Its template refuses a system
 * message; later Mistral templates put it before the user text, which is done here. */
static void render_mistral(sbuf *b, const kw_chat_msg *m, int n)
{
    const char *sys = NULL;
    if (n > 0 && m[0].role && !strcmp(m[0].role, "system")) {
        sys = str_or_empty(m[0].content);
        m++;
        n--;
    }
    puts_(b, "<s>");
    for (int i = 0; i < n; i++) {
        const char *role = str_or_empty(m[i].role), *c = str_or_empty(m[i].content);
        if (!strcmp(role, "user")) {
            puts_(b, "[INST] ");
            if (i == 0 && sys) {
                puts_(b, sys);
                puts_(b, "\n\n");
            }
            puts_(b, c);
            puts_(b, " [/INST]");
        } else if (!strcmp(role, "assistant")) {
            puts_(b, c);
            puts_(b, "</s> ");
        }
    }
}

char *kw_chat_render(kw_chat_style style, const kw_chat_msg *msgs, int n,
                     int add_generation_prompt)
{
    if (n < 0 || (n > 0 && !msgs))
        return NULL;
    sbuf b = {0};
    puts_(&b, "");
    switch (style) {
    case KW_CHAT_CHATML: render_chatml(&b, msgs, n, add_generation_prompt); break;
    case KW_CHAT_LLAMA3: render_llama3(&b, msgs, n, add_generation_prompt); break;
    case KW_CHAT_LLAMA2: render_llama2(&b, msgs, n); break;
    case KW_CHAT_MISTRAL: render_mistral(&b, msgs, n); break;
    case KW_CHAT_NONE:
        /* raw: the contents one after another */
        for (int i = 0; i < n; i++) puts_(&b, str_or_empty(msgs[i].content));
        break;
    default:
        free(b.s);
        return NULL;
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* After "<|im_start|>system" and a newline (real or written "\n" in a Jinja string), the
 * literal text up to "<|im_end|>" is the default system prompt, provided it holds no
 * template code (a system message taken from the conversation looks like
 * "'<|im_start|>system\n' + message['content']"). */
char *kw_chat_default_system(const char *t)
{
    static const char open[] = "<|im_start|>system";
    for (const char *p = t ? strstr(t, open) : NULL; p; p = strstr(p + 1, open)) {
        const char *q = p + sizeof open - 1;
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *end = strstr(q, "<|im_end|>");
        if (!end || end == q)
            continue;
        size_t n = (size_t)(end - q);
        int code = 0;
        for (size_t i = 0; i < n && !code; i++)
            code = q[i] == '\'' || q[i] == '"' || q[i] == '{' || q[i] == '}' || q[i] == '+';
        if (code)
            continue;
        char *s = malloc(n + 1);
        if (!s)
            return NULL;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (q[i] == '\\' && i + 1 < n && (q[i + 1] == 'n' || q[i + 1] == '\\')) {
                s[k++] = q[i + 1] == 'n' ? '\n' : '\\';
                i++;
            } else {
                s[k++] = q[i];
            }
        }
        s[k] = '\0';
        return s;
    }
    return NULL;
}
