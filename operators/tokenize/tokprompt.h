/* The core of tokenize.chat and tokenize.raw, free of the operator runtime so tests can
 * call it with a tokenizer of their own:
 *
 *   kw_tokprompt_opts o = {.style = KW_CHAT_CHATML, .field = "input",
 *                          .default_system = sys_from_template};
 *   kw_tokens *t; kw_error err = {0};
 *   if (kw_tokprompt_make(tk, sample, &o, &t, &err) < 0) ...
 *   kw_value *v = kw_value_tokens(t);
 */
#ifndef KW_OPERATORS_TOKPROMPT_H
#define KW_OPERATORS_TOKPROMPT_H

#include <jansson.h>

#include "kvweave/model.h"
#include "kvweave/op.h"
#include "kvweave/value.h"

typedef struct kw_tokprompt_opts {
    kw_chat_style style;        /* KW_CHAT_NONE: the prompt text as is */
    const char *system;         /* nullable; "" or NULL: default_system */
    const char *default_system; /* nullable: the template's own (kw_chat_default_system) */
    const char *field;          /* sample field holding the prompt; NULL: "input" */
    const char *tmpl;           /* nullable; "{context}\n\n{input}": fields by name,
                                   "{{" and "}}" for braces; overrides field */
    int max_new;                /* > 0 wins over the sample's "max_new" */
} kw_tokprompt_opts;

/* The prompt text of a sample (malloc'd, transfer full). */
int kw_tokprompt_text(json_t *sample, const char *field, const char *tmpl, char **out,
                      kw_error *err);
/* Sample -> tokens: text, chat rendering, encoding (special tokens parsed, BOS as the
 * tokenizer says). The sample is attached with a new reference. Sample fields that
 * shape the prompt: "chat": false renders it raw whatever the style (LongBench's no-chat
 * tasks); "answer_prefix" (a string, RULER's) is appended after the rendering, i.e. at
 * the start of the assistant turn, so the model continues it. */
int kw_tokprompt_make(const kw_tokenizer *tk, json_t *sample, const kw_tokprompt_opts *o,
                      kw_tokens **out, kw_error *err);
/* "auto|chatml|llama3|llama2|mistral|none" -> style; "auto" takes the template's. */
int kw_tokprompt_style(const char *name, const char *template_str, kw_chat_style *out,
                       kw_error *err);

/* The run of tokenize.chat (chat: its "style" and "system" parameters apply) and of
 * tokenize.raw (the prompt as it is): the task's sample through kw_tokprompt_make with
 * the "field", "template" and "max_new" parameters and the model's tokenizer, the tokens
 * out on port 0. In tokprompt_op.c, which needs the operator runtime. */
int kw__tokprompt_run(kw_opctx *c, kw_task *t, bool chat);

#endif
