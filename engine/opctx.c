/* The engine side of the operator ABI (op.h): params, the stage context, provenance
 * records, task inputs and outputs, counter-based random keys. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "run_internal.h"

/* ---------------------------------------------------------------- params ---- */

static const kw_pval *pval(const kw_opctx *c, const char *name, kw_param_kind want)
{
    const kw_op *op = c->gs->op;
    for (int i = 0; i < op->n_params; i++)
        if (!strcmp(op->params[i].name, name)) {
            const kw_pval *v = &c->gs->params[i];
            bool ok = v->kind == want || (want == KW_PARAM_STRING && v->kind == KW_PARAM_ENUM);
            if (!ok) {
                fprintf(stderr, "kvweave: internal: %s reads param '%s' as the wrong kind\n",
                        op->name, name);
                abort();
            }
            return v;
        }
    fprintf(stderr, "kvweave: internal: operator %s reads an undeclared param '%s'\n",
            op->name, name);
    abort();
}

int64_t kw_param_int(const kw_opctx *c, const char *name)
{
    return pval(c, name, KW_PARAM_INT)->i;
}
double kw_param_float(const kw_opctx *c, const char *name)
{
    return pval(c, name, KW_PARAM_FLOAT)->f;
}
bool kw_param_bool(const kw_opctx *c, const char *name)
{
    return pval(c, name, KW_PARAM_BOOL)->i != 0;
}
const char *kw_param_str(const kw_opctx *c, const char *name)
{
    const char *s = pval(c, name, KW_PARAM_STRING)->s;
    return s ? s : "";
}
const int64_t *kw_param_ints(const kw_opctx *c, const char *name, int *n)
{
    const kw_pval *v = pval(c, name, KW_PARAM_INTLIST);
    *n = v->n_ints;
    return v->ints;
}
bool kw_param_is_set(const kw_opctx *c, const char *name)
{
    const kw_op *op = c->gs->op;
    for (int i = 0; i < op->n_params; i++)
        if (!strcmp(op->params[i].name, name))
            return c->gs->params[i].set;
    return false;
}

/* ---------------------------------------------------------------- context ---- */

const char *kw_ctx_stage(const kw_opctx *c) { return c->gs->id; }
uint64_t kw_ctx_seed(const kw_opctx *c) { return c->x->g->seed; }
struct kw_engine *kw_ctx_engine(kw_opctx *c) { return (struct kw_engine *)c->x->engine; }

/* Provenance: the key as given when it already starts with "<stage>.", else prefixed. */
int kw_ctx_record(kw_opctx *c, const char *key, const char *value)
{
    kw_exec *x = c->x;
    size_t n = strlen(c->gs->id);
    char full[512];
    if (!strncmp(key, c->gs->id, n) && key[n] == '.')
        snprintf(full, sizeof full, "%s", key);
    else
        snprintf(full, sizeof full, "%s.%s", c->gs->id, key);
    int rc = 0;
    pthread_mutex_lock(&x->mu);
    if (x->begun) {
        pthread_mutex_unlock(&x->mu);
        kw_error err = {0};
        rc = kw_db_param(x->db, x->uuid, full, value ? value : "", &err);
        if (c->si == x->g->source) { /* data set identity goes to the run row too */
            const char *dot = strrchr(full, '.');
            if (dot && !strcmp(dot, ".sha256"))
                kw_db_run_set(x->db, x->uuid, "dataset_sha256", value, &err);
            else if (dot && !strcmp(dot, ".path"))
                kw_db_run_set(x->db, x->uuid, "dataset_id", value, &err);
        }
        return rc;
    }
    if (x->n_recs == x->cap_recs) {
        int cap = x->cap_recs ? 2 * x->cap_recs : 16;
        rec *r = realloc(x->recs, sizeof *r * (size_t)cap);
        if (!r) {
            pthread_mutex_unlock(&x->mu);
            return KW_ENOMEM;
        }
        x->recs = r;
        x->cap_recs = cap;
    }
    x->recs[x->n_recs].key = strdup(full);
    x->recs[x->n_recs].value = strdup(value ? value : "");
    x->n_recs++;
    pthread_mutex_unlock(&x->mu);
    return rc;
}

/* ---------------------------------------------------------------- tasks ---- */

int64_t kw_task_sample(const kw_task *t) { return t->idx; }

kw_value *kw_task_in(const kw_task *t, int port)
{
    const kw_op *op = t->x->g->stages[t->si].op;
    if (port < 0 || port >= op->n_inputs || t->port_n[port] == 0)
        return NULL;
    return t->in[t->port_first[port]];
}

int kw_task_in_n(const kw_task *t, int port)
{
    const kw_op *op = t->x->g->stages[t->si].op;
    return port < 0 || port >= op->n_inputs ? 0 : t->port_n[port];
}

kw_value *kw_task_in_at(const kw_task *t, int port, int i)
{
    if (i < 0 || i >= kw_task_in_n(t, port))
        return NULL;
    return t->in[t->port_first[port] + i];
}

int kw_task_out(kw_task *t, int port, kw_value *v)
{
    const kw_op *op = t->x->g->stages[t->si].op;
    if (!v)
        return kw_task_fail(t, KW_ENOMEM, "out of memory making output %d", port);
    if (port < 0 || port >= op->n_outputs || port >= MAX_OUT) {
        kw_value_unref(v);
        return kw_task_fail(t, KW_EINTERNAL, "%s has no output port %d", op->name, port);
    }
    if (strcmp(kw_value_type(v), op->outputs[port].type) != 0) {
        const char *got = kw_value_type(v);
        kw_value_unref(v);
        return kw_task_fail(t, KW_ETYPE, "%s set output '%s' to a %s value, it declares %s",
                            op->name, op->outputs[port].name, got, op->outputs[port].type);
    }
    kw_value_unref(t->out[port]);
    t->out[port] = v;
    return 0;
}

int kw_task_fail(kw_task *t, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    t->rc = code < 0 ? code : KW_EINTERNAL;
    return t->rc;
}

uint64_t kw_rand_key(uint64_t seed, uint64_t sample, uint64_t step)
{
    /* three rounds of splitmix64 finalization over the inputs */
    uint64_t z = seed ^ 0x9e3779b97f4a7c15ull;
    uint64_t in[2] = {sample, step};
    for (int i = 0; i < 3; i++) {
        z += i < 2 ? in[i] * 0xbf58476d1ce4e5b9ull + 0x9e3779b97f4a7c15ull : 0x632be59bd9b4e019ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
    }
    return z;
}

double kw_rand_uniform(uint64_t *state)
{
    return (double)(kw_splitmix64(state) >> 11) * 0x1.0p-53;
}
