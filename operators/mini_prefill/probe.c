/* A calibration reduce's prefill under a probe hook stack (probe.h). */
#include "probe.h"

#include "kvweave/engine.h"

int kw__probe_model(kw_opctx *c, kw_task *t, const char *op, const kw_model_config **cfg)
{
    kw_engine *e = kw_ctx_engine(c);
    if (!e)
        return kw_task_fail(t, KW_ENOTFOUND, "%s: no device engine for this run", op);
    *cfg = &kw_engine_model(e)->cfg;
    return 0;
}

static void on_done(void *user, kw_gen_result *r)
{
    kw_task *t = user;
    int rc = r->rc;
    if (rc < 0)
        kw_task_fail(t, rc, "calibration prefill failed: %s", r->error);
    kw_task_complete(t, rc < 0 ? rc : 0);
    kw_gen_result_free(r);
}

int kw__probe_prefill(kw_opctx *c, kw_task *t, kw_hookstack *hs, const char *op)
{
    kw_value *v = kw_task_in(t, 0);
    const kw_tokens *tk = v ? kw_value_data(v) : NULL;
    if (!tk || tk->n < 1)
        return kw_task_fail(t, KW_EINVAL, "%s: an empty prompt", op);
    kw_gen_req r = {.prompt = tk->ids, .n_prompt = tk->n, .max_new = 0, .hooks = hs,
                    .sample = kw_task_sample(t), .done = on_done, .user = t};
    kw_error err = {0};
    int rc = kw_engine_submit(kw_ctx_engine(c), &r, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    return KW_PENDING;
}
