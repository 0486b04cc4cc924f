/* See tokprompt.h: the run tokenize.chat and tokenize.raw share. Apart from tokprompt.c
 * because it needs the operator runtime, which the tokprompt tests do without. */
#include <stdlib.h>

#include "kvweave/engine.h"
#include "tokprompt.h"

int kw__tokprompt_run(kw_opctx *c, kw_task *t, bool chat)
{
    const char *name = chat ? "tokenize.chat" : "tokenize.raw";
    struct kw_engine *e = kw_ctx_engine(c);
    const kw_model *m = e ? kw_engine_model(e) : NULL;
    if (!m || !m->tok)
        return kw_task_fail(t, KW_EINVAL, "%s needs a model with a tokenizer", name);
    kw_error err = {0};
    kw_tokprompt_opts o = {
        .style = KW_CHAT_NONE,
        .system = chat ? kw_param_str(c, "system") : NULL,
        .field = kw_param_str(c, "field"),
        .tmpl = kw_param_str(c, "template"),
        .max_new = (int)kw_param_int(c, "max_new"),
    };
    json_t *sample = kw_value_jsonobj(kw_task_in(t, 0));
    /* a record that asks for no chat template ("chat": false) needs no style */
    int rc = chat && !json_is_false(json_object_get(sample, "chat"))
                 ? kw_tokprompt_style(kw_param_str(c, "style"), m->chat_template, &o.style,
                                      &err)
                 : 0;
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    char *dsys = o.style == KW_CHAT_CHATML ? kw_chat_default_system(m->chat_template) : NULL;
    o.default_system = dsys;
    kw_tokens *tk = NULL;
    rc = kw_tokprompt_make(m->tok, sample, &o, &tk, &err);
    free(dsys);
    if (rc < 0)
        return kw_task_fail(t, rc, "sample %lld: %s", (long long)kw_task_sample(t), err.msg);
    return kw_task_out(t, 0, kw_value_tokens(tk));
}
