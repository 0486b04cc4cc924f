/* See op_standin.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op_standin.h"

static const kw_param_spec *spec_of(const kw_opctx *c, const char *name)
{
    for (int i = 0; i < c->op->n_params; i++)
        if (!strcmp(c->op->params[i].name, name))
            return &c->op->params[i];
    fprintf(stderr, "operator %s has no parameter '%s'\n", c->op->name, name);
    abort();
}

static json_t *given(const kw_opctx *c, const char *name)
{
    return c->params ? json_object_get(c->params, name) : NULL;
}

int64_t kw_param_int(const kw_opctx *c, const char *name)
{
    json_t *v = given(c, name);
    return v ? json_integer_value(v) : strtoll(spec_of(c, name)->def, NULL, 10);
}

double kw_param_float(const kw_opctx *c, const char *name)
{
    json_t *v = given(c, name);
    return v ? json_number_value(v) : strtod(spec_of(c, name)->def, NULL);
}

bool kw_param_bool(const kw_opctx *c, const char *name)
{
    json_t *v = given(c, name);
    return v ? json_is_true(v) : !strcmp(spec_of(c, name)->def, "true");
}

const char *kw_param_str(const kw_opctx *c, const char *name)
{
    json_t *v = given(c, name);
    return v ? json_string_value(v) : spec_of(c, name)->def;
}

bool kw_param_is_set(const kw_opctx *c, const char *name)
{
    spec_of(c, name);
    return given(c, name) != NULL;
}

const char *kw_ctx_stage(const kw_opctx *c) { return c->op->name; }
uint64_t kw_ctx_seed(const kw_opctx *c) { (void)c; return 1234; }
struct kw_engine *kw_ctx_engine(kw_opctx *c) { return c->engine; }

int kw_ctx_record(kw_opctx *c, const char *key, const char *value)
{
    if (!c->records)
        c->records = json_object();
    json_object_set_new(c->records, key, json_string(value));
    return 0;
}

int64_t kw_task_sample(const kw_task *t) { return t->sample; }
kw_value *kw_task_in(const kw_task *t, int port) { return t->n_in[port] ? t->in[port][0] : NULL; }
int kw_task_in_n(const kw_task *t, int port) { return t->n_in[port]; }
kw_value *kw_task_in_at(const kw_task *t, int port, int i) { return t->in[port][i]; }

int kw_task_out(kw_task *t, int port, kw_value *v)
{
    t->out[port] = kw_value_unref(t->out[port]);
    t->out[port] = v;
    return 0;
}

int kw_task_fail(kw_task *t, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    return code;
}

void kw_task_complete(kw_task *t, int rc)
{
    pthread_mutex_lock(&t->mu);
    t->completed = true;
    t->rc = rc;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

uint64_t kw_rand_key(uint64_t seed, uint64_t sample, uint64_t step)
{
    return seed * 0x9e3779b97f4a7c15ull ^ sample * 0xbf58476d1ce4e5b9ull ^ step;
}

void st_task_init(kw_task *t, int64_t sample)
{
    memset(t, 0, sizeof *t);
    t->sample = sample;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

void st_task_set_in(kw_task *t, int port, kw_value *v)
{
    if (v)
        t->in[port][t->n_in[port]++] = v;
}

void st_task_clear(kw_task *t)
{
    for (int p = 0; p < ST_MAX_IN; p++)
        for (int i = 0; i < t->n_in[p]; i++)
            kw_value_unref(t->in[p][i]);
    for (int p = 0; p < ST_MAX_OUT; p++)
        kw_value_unref(t->out[p]);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

int st_wait(kw_task *t, int run_rc)
{
    if (run_rc != KW_PENDING)
        return run_rc;
    pthread_mutex_lock(&t->mu);
    while (!t->completed)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    return t->rc;
}
