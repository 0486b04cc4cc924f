/* The run executor (run.h) and the engine side of the operator ABI (op.h): contexts,
 * tasks, params, provenance records. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kvweave/util.h"
#include "run.h"
#include "kwsched.h"

#define MAX_OUT 16  /* output ports per stage the executor handles */
#define MAX_FAIL_LINES 20

typedef struct kw_exec kw_exec;
typedef struct ksample ksample;

struct kw_opctx {
    kw_exec *x;
    int si;
    const kw_gstage *gs;
    void *state;
    bool inited;
    int lane;
    pthread_mutex_t serial;   /* KW_OP_SERIAL, sources and reduces */
    bool serialize;
    /* figures (x->mu) */
    int64_t tasks;
    double busy, wait;
};

struct kw_task {
    kw_exec *x;
    int si;
    ksample *s;               /* NULL for once tasks */
    int64_t idx;
    kw_value **in;            /* (n_in) in the stage's wiring order */
    int *port_first, *port_n; /* (n_inputs) */
    kw_value *out[MAX_OUT];
    int rc;
    char msg[1024];
    double t_ready, t_start;
    bool once_done;           /* once tasks: completion seen */
    pthread_mutex_t *once_mu;
    pthread_cond_t *once_cv;
};

struct ksample {
    int64_t idx;
    kw_value **vals;          /* (n_stages * MAX_OUT) */
    int *waiting;             /* (n_stages) producers not done yet */
    int remaining;            /* per-sample stages not done yet */
    bool failed;
    int err_code;
    char err[1200];
};

typedef struct agg {
    char *key;
    double sum;
    int64_t n;
} agg;

typedef struct rec {
    char *key, *value;
} rec;

struct kw_exec {
    const kw_graph *g;
    const kw_run_opts *o;
    kw_db *db;
    char uuid[37];
    bool begun;
    kw_lanes *lanes;
    void *engine;
    kw_opctx *ctx;            /* (n_stages) */
    kw_value **once_vals;     /* (n_stages * MAX_OUT) */
    /* the phase being run */
    kw_phase phase;
    bool *active, *is_ps;
    int *deps;
    int **cons, *n_cons;
    int n_ps;
    bool *metric_shared;      /* a metrics stage whose operator scores in another stage too */
    /* progress and results (mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t inflight, emitted, ok, failed, resumed, calib_done;
    int fail_lines;
    agg *aggs;
    int n_aggs, cap_aggs;
    rec *recs;                /* records made before the run row exists */
    int n_recs, cap_recs;
    double t0, last_progress;
    int fatal;
    kw_error fatal_err;
    bool progress_line_open;
};

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
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* ------------------------------------------------------------- executor ---- */

static kw_value **sval(kw_exec *x, ksample *s, int si, int port)
{
    (void)x;
    return &s->vals[(size_t)si * MAX_OUT + (size_t)port];
}

static kw_value **oval(kw_exec *x, int si, int port)
{
    return &x->once_vals[(size_t)si * MAX_OUT + (size_t)port];
}

static bool per_sample_src(const kw_exec *x, int si)
{
    return si == x->g->source || x->is_ps[si];
}

/* A task with its inputs gathered; NULL when out of memory. */
static kw_task *task_new(kw_exec *x, int si, ksample *s)
{
    const kw_gstage *gs = &x->g->stages[si];
    kw_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->x = x;
    t->si = si;
    t->s = s;
    t->idx = s ? s->idx : -1;
    int np = gs->op->n_inputs;
    t->in = calloc((size_t)gs->n_in + 1, sizeof *t->in);
    t->port_first = calloc((size_t)np + 1, sizeof(int));
    t->port_n = calloc((size_t)np + 1, sizeof(int));
    if (!t->in || !t->port_first || !t->port_n) {
        free(t->in), free(t->port_first), free(t->port_n), free(t);
        return NULL;
    }
    int k = 0;
    for (int p = 0; p < np; p++) {
        t->port_first[p] = k;
        for (int i = 0; i < gs->n_in; i++) {
            const kw_gin *w = &gs->in[i];
            if (w->port != p)
                continue;
            kw_value *v = s && per_sample_src(x, w->from) ? *sval(x, s, w->from, w->from_port)
                                                          : *oval(x, w->from, w->from_port);
            if (v)
                t->in[k++] = v;
        }
        t->port_n[p] = k - t->port_first[p];
    }
    t->t_ready = kw_now();
    return t;
}

static void task_free(kw_task *t)
{
    if (!t)
        return;
    for (int i = 0; i < MAX_OUT; i++)
        kw_value_unref(t->out[i]);
    free(t->in), free(t->port_first), free(t->port_n), free(t);
}

static void set_fatal(kw_exec *x, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_fatal(kw_exec *x, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&x->mu);
    if (!x->fatal) {
        va_list ap;
        va_start(ap, fmt);
        kw_error_vset(&x->fatal_err, code, NULL, 0, 0, fmt, ap);
        va_end(ap);
        x->fatal = code;
    }
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void progress(kw_exec *x, bool final);

static void agg_add(kw_exec *x, const char *key, double v)
{
    for (int i = 0; i < x->n_aggs; i++)
        if (!strcmp(x->aggs[i].key, key)) {
            x->aggs[i].sum += v;
            x->aggs[i].n++;
            return;
        }
    if (x->n_aggs == x->cap_aggs) {
        int cap = x->cap_aggs ? 2 * x->cap_aggs : 32;
        agg *a = realloc(x->aggs, sizeof *a * (size_t)cap);
        if (!a)
            return;
        x->aggs = a;
        x->cap_aggs = cap;
    }
    x->aggs[x->n_aggs++] = (agg){strdup(key), v, 1};
}

/* Numbers of a JSON object as metrics "<prefix><key>"; nested objects with "<key>/". */
static void put_numbers(kw_exec *x, ksample *s, const char *prefix, json_t *obj, kw_error *err,
                        int depth)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        char key[256];
        snprintf(key, sizeof key, "%s%s", prefix, k);
        if (json_is_number(v)) {
            double d = json_number_value(v);
            kw_db_metric(x->db, x->uuid, s->idx, key, d, 0, err);
            pthread_mutex_lock(&x->mu);
            agg_add(x, key, d);
            pthread_mutex_unlock(&x->mu);
        } else if (json_is_boolean(v) && depth > 0) {
            continue;
        } else if (json_is_object(v) && depth < 2) {
            char p[256];
            snprintf(p, sizeof p, "%s/", key);
            put_numbers(x, s, p, v, err, depth + 1);
        }
    }
}

static char *dump(json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

/* A generation's figures as metrics "<pre>gen/<field>" and "<pre>mem/<key>". */
static void record_generation(kw_exec *x, ksample *s, const char *pre, json_t *gen,
                              kw_error *err)
{
    static const char *const fields[] = {"n_prompt", "n_gen", "ttft_s", "decode_s_per_token",
                                         "queue_s", "nll_mean", "prefill_shared_tokens"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *v = json_object_get(gen, fields[i]);
        if (json_is_number(v)) {
            char key[256];
            snprintf(key, sizeof key, "%sgen/%s", pre, fields[i]);
            kw_db_metric(x->db, x->uuid, s->idx, key, json_number_value(v), 0, err);
            pthread_mutex_lock(&x->mu);
            agg_add(x, key, json_number_value(v));
            pthread_mutex_unlock(&x->mu);
        }
    }
    json_t *mem = json_object_get(gen, "memory");
    char mp[192];
    snprintf(mp, sizeof mp, "%smem/", pre);
    if (json_is_object(mem))
        put_numbers(x, s, mp, mem, err, 1);
}

/* Records a finished sample of the main phase (its row and metrics, one transaction). */
static void record_sample(kw_exec *x, ksample *s)
{
    const kw_graph *g = x->g;
    json_t *smp = x->g->source >= 0 ? kw_value_jsonobj(*sval(x, s, g->source, 0)) : NULL;
    json_t *gen = NULL;
    for (int si = 0; si < g->n_stages && !gen; si++)
        if (x->is_ps[si])
            for (int p = 0; p < g->stages[si].op->n_outputs && p < MAX_OUT; p++) {
                kw_value *v = *sval(x, s, si, p);
                if (v && !strcmp(kw_value_type(v), KW_T_GENERATION)) {
                    gen = kw_value_jsonobj(v);
                    break;
                }
            }
    char idbuf[32], hash[65] = "";
    snprintf(idbuf, sizeof idbuf, "%" PRId64, s->idx);
    json_t *jid = json_object_get(smp, "id");
    const char *sid = json_is_string(jid) ? json_string_value(jid) : idbuf;
    char *stext = dump(smp);
    if (stext)
        kw_sha256_hex(stext, strlen(stext), hash);
    free(stext);
    json_t *ans = json_object_get(smp, "outputs");
    if (!ans)
        ans = json_object_get(smp, "answers");
    char *answers = dump(ans);
    const char *pred = json_string_value(json_object_get(gen, "text"));
    kw_error err = {0};
    kw_db_begin(x->db, &err);
    kw_db_sample(x->db, x->uuid, s->idx, sid, hash, pred, answers,
                 s->failed ? "FAILED" : "FINISHED", s->failed ? s->err : NULL, &err);
    free(answers);
    if (!s->failed) {
        for (int si = 0; si < g->n_stages; si++) {
            if (!x->is_ps[si])
                continue;
            for (int p = 0; p < g->stages[si].op->n_outputs && p < MAX_OUT; p++) {
                kw_value *v = *sval(x, s, si, p);
                if (v && !strcmp(kw_value_type(v), KW_T_METRICS)) {
                    /* several scorers of one kind (one per method branch): their keys
                     * are "<stage>/<key>" */
                    char pre[160] = "";
                    if (x->metric_shared[si])
                        snprintf(pre, sizeof pre, "%s/", g->stages[si].id);
                    put_numbers(x, s, pre, kw_value_jsonobj(v), &err, 1);
                }
            }
        }
        /* every decode stage's figures: "gen/..." and "mem/..." for the only one;
         * with several (one per method branch of a sweep) "<stage>/gen/..." and
         * "<stage>/mem/..." */
        int n_gen = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int si = 0; si < g->n_stages; si++) {
                if (!x->is_ps[si])
                    continue;
                for (int p = 0; p < g->stages[si].op->n_outputs && p < MAX_OUT; p++) {
                    kw_value *v = *sval(x, s, si, p);
                    if (!v || strcmp(kw_value_type(v), KW_T_GENERATION) != 0)
                        continue;
                    if (pass == 0) {
                        n_gen++;
                        continue;
                    }
                    char pre[160] = "";
                    if (n_gen > 1)
                        snprintf(pre, sizeof pre, "%s/", g->stages[si].id);
                    record_generation(x, s, pre, kw_value_jsonobj(v), &err);
                }
            }
    }
    if (kw_db_commit(x->db, &err) < 0)
        set_fatal(x, err.code ? err.code : KW_EDB, "recording sample %" PRId64 ": %s", s->idx,
                  err.msg);
}

static void sample_free(kw_exec *x, ksample *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < (size_t)x->g->n_stages * MAX_OUT; i++)
        kw_value_unref(s->vals[i]);
    free(s->vals);
    free(s->waiting);
    free(s);
}

static void finish_sample(kw_exec *x, ksample *s)
{
    if (x->phase == KW_PHASE_MAIN)
        record_sample(x, s);
    pthread_mutex_lock(&x->mu);
    if (x->phase == KW_PHASE_CALIB) {
        x->calib_done++;
    } else if (s->failed) {
        x->failed++;
        if (x->fail_lines++ < MAX_FAIL_LINES) {
            if (x->progress_line_open)
                fputc('\n', stderr), x->progress_line_open = false;
            fprintf(stderr, "kvweave: sample %" PRId64 " failed: %s\n", s->idx, s->err);
        }
    } else {
        x->ok++;
    }
    x->inflight--;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    sample_free(x, s);
}

static void dispatch(kw_exec *x, int si, ksample *s);

/* Stage si of sample s is over (ran, failed or skipped): wake its consumers. */
static void stage_over(kw_exec *x, int si, ksample *s)
{
    int ready[64];
    int *rd = x->n_cons[si] <= 64 ? ready : malloc(sizeof(int) * (size_t)x->n_cons[si]);
    int nr = 0;
    bool last;
    pthread_mutex_lock(&x->mu);
    for (int k = 0; k < x->n_cons[si]; k++) {
        int c = x->cons[si][k];
        if (--s->waiting[c] == 0)
            rd[nr++] = c;
    }
    last = si != x->g->source && --s->remaining == 0;
    if (si == x->g->source && x->n_ps == 0)
        last = true;
    pthread_mutex_unlock(&x->mu);
    for (int k = 0; k < nr; k++)
        dispatch(x, rd[k], s);
    if (rd != ready)
        free(rd);
    if (last)
        finish_sample(x, s);
}

static void task_done(kw_task *t, int rc)
{
    kw_exec *x = t->x;
    kw_opctx *c = &x->ctx[t->si];
    const kw_op *op = c->gs->op;
    double now = kw_now();
    if (rc >= 0 && t->rc < 0)
        rc = t->rc;
    pthread_mutex_lock(&x->mu);
    c->tasks++;
    c->busy += now - t->t_start;
    c->wait += t->t_start - t->t_ready;
    pthread_mutex_unlock(&x->mu);
    if (!t->s) { /* once task: the caller waits for it */
        t->rc = rc;
        pthread_mutex_lock(t->once_mu);
        t->once_done = true;
        pthread_cond_broadcast(t->once_cv);
        pthread_mutex_unlock(t->once_mu);
        return;
    }
    ksample *s = t->s;
    if (rc >= 0 && !c->gs->is_reduce)
        for (int p = 0; p < op->n_outputs && p < MAX_OUT; p++)
            if (op->outputs[p].card == KW_EACH && !t->out[p]) {
                rc = KW_EINTERNAL;
                snprintf(t->msg, sizeof t->msg, "%s set no value on its output '%s'", op->name,
                         op->outputs[p].name);
                break;
            }
    if (rc < 0) {
        pthread_mutex_lock(&x->mu);
        if (!s->failed) {
            s->failed = true;
            s->err_code = rc;
            snprintf(s->err, sizeof s->err, "%s (%s): %s", c->gs->id, op->name,
                     t->msg[0] ? t->msg : kw_strerror(rc));
        }
        pthread_mutex_unlock(&x->mu);
    } else {
        for (int p = 0; p < op->n_outputs && p < MAX_OUT; p++) {
            *sval(x, s, t->si, p) = t->out[p];
            t->out[p] = NULL;
        }
    }
    int si = t->si;
    task_free(t);
    stage_over(x, si, s);
}

void kw_task_complete(kw_task *t, int rc) { task_done(t, rc); }

static void exec_task(void *p)
{
    kw_task *t = p;
    kw_opctx *c = &t->x->ctx[t->si];
    t->t_start = kw_now();
    if (c->serialize)
        pthread_mutex_lock(&c->serial);
    int rc = c->gs->op->run(c, c->state, t);
    if (c->serialize)
        pthread_mutex_unlock(&c->serial);
    if (rc == KW_PENDING)
        return; /* kw_task_complete comes later */
    task_done(t, rc);
}

static void dispatch(kw_exec *x, int si, ksample *s)
{
    bool skip;
    pthread_mutex_lock(&x->mu);
    skip = s->failed;
    pthread_mutex_unlock(&x->mu);
    if (skip) {
        stage_over(x, si, s);
        return;
    }
    kw_task *t = task_new(x, si, s);
    if (!t || kw_lanes_post(x->lanes, x->ctx[si].lane, exec_task, t) < 0) {
        if (t) {
            t->t_start = kw_now();
            task_done(t, kw_task_fail(t, KW_ENOMEM, "out of memory"));
        } else {
            pthread_mutex_lock(&x->mu);
            s->failed = true;
            snprintf(s->err, sizeof s->err, "%s: out of memory", x->g->stages[si].id);
            pthread_mutex_unlock(&x->mu);
            stage_over(x, si, s);
        }
    }
}

/* Runs a once task (config run or reduce finish) on the calling thread and waits for
 * it; its outputs become once values. */
static int run_once(kw_exec *x, int si, bool finish, kw_error *err)
{
    const kw_gstage *gs = &x->g->stages[si];
    kw_opctx *c = &x->ctx[si];
    kw_task *t = task_new(x, si, NULL);
    if (!t)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    t->once_mu = &mu;
    t->once_cv = &cv;
    t->t_start = kw_now();
    int rc = finish ? (gs->op->finish ? gs->op->finish(c, c->state, t) : 0)
                    : gs->op->run(c, c->state, t);
    if (rc == KW_PENDING) {
        pthread_mutex_lock(&mu);
        while (!t->once_done)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        rc = t->rc;
    } else {
        task_done(t, rc);
        rc = t->rc;
    }
    if (rc >= 0) {
        for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++) {
            if (gs->op->outputs[p].card != KW_ONCE)
                continue;
            if (!t->out[p]) {
                rc = kw_error_set(err, KW_EINTERNAL, "stage '%s' (%s) set no value on '%s'",
                                  gs->id, gs->op->name, gs->op->outputs[p].name);
                break;
            }
            kw_value_unref(*oval(x, si, p));
            *oval(x, si, p) = t->out[p];
            t->out[p] = NULL;
        }
    } else {
        kw_error_at(err, rc, x->g->file, gs->line, gs->col, "stage '%s' (%s) failed: %s",
                    gs->id, gs->op->name, t->msg[0] ? t->msg : kw_strerror(rc));
    }
    task_free(t);
    pthread_mutex_destroy(&mu);
    pthread_cond_destroy(&cv);
    return rc;
}

/* ------------------------------------------------------------- phases ---- */

static bool in_phase(const kw_gstage *s, kw_phase ph)
{
    return ph == KW_PHASE_CALIB ? s->phase == KW_PHASE_CALIB
                                : (s->phase == KW_PHASE_MAIN || s->main_too);
}

static void phase_free(kw_exec *x)
{
    if (x->cons)
        for (int i = 0; i < x->g->n_stages; i++)
            free(x->cons[i]);
    free(x->cons), free(x->n_cons), free(x->active), free(x->is_ps), free(x->deps);
    free(x->metric_shared);
    x->cons = NULL, x->n_cons = NULL, x->active = NULL, x->is_ps = NULL, x->deps = NULL;
    x->metric_shared = NULL;
}

static bool scores(const kw_op *op)
{
    for (int p = 0; p < op->n_outputs; p++)
        if (!strcmp(op->outputs[p].type, KW_T_METRICS))
            return true;
    return false;
}

static int phase_setup(kw_exec *x, kw_phase ph, kw_error *err)
{
    const kw_graph *g = x->g;
    int n = g->n_stages;
    phase_free(x);
    x->phase = ph;
    x->active = calloc((size_t)n, sizeof(bool));
    x->is_ps = calloc((size_t)n, sizeof(bool));
    x->deps = calloc((size_t)n, sizeof(int));
    x->cons = calloc((size_t)n, sizeof(int *));
    x->n_cons = calloc((size_t)n, sizeof(int));
    if (!x->active || !x->is_ps || !x->deps || !x->cons || !x->n_cons)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    x->n_ps = 0;
    for (int i = 0; i < n; i++) {
        x->active[i] = in_phase(&g->stages[i], ph);
        x->is_ps[i] = x->active[i] && g->stages[i].runs_each && i != g->source;
        if (x->active[i] && (g->stages[i].op->flags & KW_OP_SOURCE) && i != g->source)
            return kw_error_at(err, KW_EINVAL, g->file, g->stages[i].line, g->stages[i].col,
                               "stage '%s' is a second source; a pipeline has one data set",
                               g->stages[i].id);
        x->n_ps += x->is_ps[i];
    }
    free(x->metric_shared);
    if (!(x->metric_shared = calloc((size_t)n, sizeof(bool))))
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j && x->is_ps[i] && x->is_ps[j] && g->stages[i].op == g->stages[j].op &&
                scores(g->stages[i].op))
                x->metric_shared[i] = true;
    for (int c = 0; c < n; c++) {
        if (!x->is_ps[c])
            continue;
        const kw_gstage *gs = &g->stages[c];
        for (int i = 0; i < gs->n_in; i++) {
            int p = gs->in[i].from;
            if (!per_sample_src(x, p))
                continue;
            bool seen = false;
            for (int k = 0; k < x->n_cons[p]; k++)
                seen |= x->cons[p][k] == c;
            if (seen)
                continue;
            int *nc = realloc(x->cons[p], sizeof(int) * (size_t)(x->n_cons[p] + 1));
            if (!nc)
                return kw_error_set(err, KW_ENOMEM, "out of memory");
            x->cons[p] = nc;
            nc[x->n_cons[p]++] = c;
            x->deps[c]++;
        }
    }
    return 0;
}

static ksample *sample_new(kw_exec *x, int64_t idx, kw_value *v)
{
    int n = x->g->n_stages;
    ksample *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->vals = calloc((size_t)n * MAX_OUT, sizeof *s->vals);
    s->waiting = calloc((size_t)n, sizeof(int));
    if (!s->vals || !s->waiting) {
        free(s->vals), free(s->waiting), free(s);
        return NULL;
    }
    s->idx = idx;
    memcpy(s->waiting, x->deps, sizeof(int) * (size_t)n);
    s->remaining = x->n_ps;
    *sval(x, s, x->g->source, 0) = v;
    return s;
}

/* Starts a sample through the phase's per-sample stages (waits for room). */
static int push_sample(kw_exec *x, int64_t idx, kw_value *v)
{
    pthread_mutex_lock(&x->mu);
    while (x->inflight >= x->o->inflight && !x->fatal) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
        pthread_mutex_unlock(&x->mu);
        progress(x, false);
        pthread_mutex_lock(&x->mu);
    }
    x->inflight++;
    pthread_mutex_unlock(&x->mu);
    ksample *s = sample_new(x, idx, v);
    if (!s) {
        kw_value_unref(v);
        set_fatal(x, KW_ENOMEM, "out of memory");
        pthread_mutex_lock(&x->mu);
        x->inflight--;
        pthread_mutex_unlock(&x->mu);
        return KW_ENOMEM;
    }
    stage_over(x, x->g->source, s);
    return 0;
}

static void drain(kw_exec *x)
{
    pthread_mutex_lock(&x->mu);
    while (x->inflight > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
        pthread_mutex_unlock(&x->mu);
        progress(x, false);
        pthread_mutex_lock(&x->mu);
    }
    pthread_mutex_unlock(&x->mu);
}

static bool stopping(kw_exec *x)
{
    pthread_mutex_lock(&x->mu);
    bool f = x->fatal != 0;
    pthread_mutex_unlock(&x->mu);
    return f || (x->o->stop && *x->o->stop);
}

static int stage_init(kw_exec *x, int si, kw_error *err)
{
    kw_opctx *c = &x->ctx[si];
    const kw_op *op = c->gs->op;
    if (c->inited)
        return 0;
    free(c->state);
    c->state = calloc(1, op->state_size ? op->state_size : 1);
    if (!c->state)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    int rc = op->init ? op->init(c, c->state, err) : 0;
    if (rc >= 0 && op->plan)
        rc = op->plan(c, c->state, err);
    c->inited = true; /* fini accepts a partial init */
    if (rc < 0)
        kw_error_prefix(err, "%s:%d:%d: stage '%s' (%s)", x->g->file, c->gs->line, c->gs->col,
                        c->gs->id, op->name);
    return rc;
}

static void stage_fini(kw_exec *x, int si)
{
    kw_opctx *c = &x->ctx[si];
    if (c->inited && c->gs->op->fini)
        c->gs->op->fini(c, c->state);
    c->inited = false;
    free(c->state);
    c->state = NULL;
}

/* Whether sample idx belongs to the calibration subset (ratio mode). */
static double calib_u(const kw_exec *x, int64_t idx)
{
    uint64_t st = kw_rand_key(x->g->calib.seed, (uint64_t)idx, 0xca11b);
    return kw_rand_uniform(&st);
}

typedef struct pick {
    double u;
    int64_t idx;
    kw_value *v;
} pick;

static int cmp_pick_idx(const void *a, const void *b)
{
    const pick *p = a, *q = b;
    return (p->idx > q->idx) - (p->idx < q->idx);
}

/* Streams the data set through the phase. */
static int stream(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    if (g->source < 0)
        return 0;
    kw_opctx *src = &x->ctx[g->source];
    bool calib = x->phase == KW_PHASE_CALIB;
    int64_t want_n = calib ? g->calib.n : 0;
    pick *picks = NULL, best = {2.0, -1, NULL};
    int n_picks = 0;
    if (want_n > 0 && !(picks = calloc((size_t)want_n, sizeof *picks)))
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    int64_t idx = 0, pushed = 0;
    int rc = 0;
    for (;; idx++) {
        if (g->limit > 0 && idx >= g->limit)
            break;
        if (stopping(x))
            break;
        kw_task *t = task_new(x, g->source, NULL);
        if (!t) {
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
            break;
        }
        t->idx = idx;
        t->t_start = kw_now();
        int r = g->stages[g->source].op->run(src, src->state, t);
        double dt = kw_now() - t->t_start;
        pthread_mutex_lock(&x->mu);
        src->busy += dt;
        src->tasks += r == KW_END ? 0 : 1;
        pthread_mutex_unlock(&x->mu);
        if (r == KW_END) {
            task_free(t);
            break;
        }
        if (r < 0 || t->rc < 0 || !t->out[0]) {
            int code = r < 0 ? r : t->rc < 0 ? t->rc : KW_EINTERNAL;
            rc = kw_error_at(err, code, g->file, g->stages[g->source].line,
                             g->stages[g->source].col, "data set stage '%s' (%s), record %" PRId64
                             ": %s", g->stages[g->source].id, g->stages[g->source].op->name, idx,
                             t->msg[0] ? t->msg : "set no sample");
            task_free(t);
            break;
        }
        kw_value *v = t->out[0];
        t->out[0] = NULL;
        task_free(t);
        if (calib) {
            double u = calib_u(x, idx);
            if (want_n > 0) { /* keep the want_n smallest keys (a seeded subset of n) */
                if (n_picks < want_n) {
                    picks[n_picks++] = (pick){u, idx, v};
                } else {
                    int worst = 0;
                    for (int k = 1; k < n_picks; k++)
                        if (picks[k].u > picks[worst].u)
                            worst = k;
                    if (u < picks[worst].u) {
                        kw_value_unref(picks[worst].v);
                        picks[worst] = (pick){u, idx, v};
                    } else {
                        kw_value_unref(v);
                    }
                }
                continue;
            }
            if (u >= g->calib.sample_ratio) {
                if (pushed == 0 && u < best.u) { /* the fallback when nothing is drawn */
                    kw_value_unref(best.v);
                    best = (pick){u, idx, v};
                } else {
                    kw_value_unref(v);
                }
                continue;
            }
        } else if (x->o->resume && x->begun && kw_db_sample_done(x->db, x->uuid, idx) == 1) {
            kw_value_unref(v);
            pthread_mutex_lock(&x->mu);
            x->resumed++;
            pthread_mutex_unlock(&x->mu);
            continue;
        }
        if ((rc = push_sample(x, idx, v)) < 0)
            break;
        pushed++;
        progress(x, false);
    }
    if (calib && rc >= 0 && want_n > 0) {
        qsort(picks, (size_t)n_picks, sizeof *picks, cmp_pick_idx);
        for (int k = 0; k < n_picks; k++) {
            kw_value *v = picks[k].v;
            picks[k].v = NULL;
            if (rc >= 0 && !stopping(x))
                rc = push_sample(x, picks[k].idx, v);
            else
                kw_value_unref(v);
        }
    } else if (calib && rc >= 0 && pushed == 0 && best.v) {
        rc = push_sample(x, best.idx, best.v);
        best.v = NULL;
    }
    for (int k = 0; k < n_picks; k++)
        kw_value_unref(picks[k].v);
    free(picks);
    kw_value_unref(best.v);
    drain(x);
    return rc;
}

/* Runs every config stage (no `each` input) of the phase whose once values are not
 * there yet, in topological order. */
static int run_configs(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    for (int k = 0; k < g->n_stages; k++) {
        int si = g->topo[k];
        const kw_gstage *gs = &g->stages[si];
        if (!x->active[si] || gs->runs_each || (gs->op->flags & KW_OP_SOURCE))
            continue;
        bool have = gs->op->n_outputs > 0;
        for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++)
            have &= *oval(x, si, p) != NULL;
        if (have)
            continue;
        int rc = run_once(x, si, false, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Cache key of a stage's once outputs: everything upstream that shapes them. */
static void stage_key(kw_exec *x, int si, char out[65])
{
    const kw_graph *g = x->g;
    const kw_gstage *gs = &g->stages[si];
    char *params = kw_gstage_params_text(gs);
    size_t cap = 1024 + (params ? strlen(params) : 0) + (size_t)gs->n_in * 80;
    char *buf = malloc(cap);
    if (!buf) {
        memset(out, '0', 64);
        out[64] = 0;
        free(params);
        return;
    }
    int n = snprintf(buf, cap, "op=%s@%d;params=%s;", gs->op->name, gs->op->version,
                     params ? params : "");
    free(params);
    if (gs->op->flags & KW_OP_NEEDS_MODEL) {
        const char *sha = x->engine && x->o->env && x->o->env->engine_model_sha256
                              ? x->o->env->engine_model_sha256(x->engine)
                              : g->model;
        n += snprintf(buf + n, cap - (size_t)n, "model=%s;", sha ? sha : "");
    }
    if (si == g->source || gs->is_reduce)
        n += snprintf(buf + n, cap - (size_t)n, "limit=%" PRId64 ";calib=%.17g/%" PRId64
                      "/%" PRIu64 ";", g->limit, g->calib.sample_ratio, g->calib.n,
                      g->calib.seed);
    for (int i = 0; i < gs->n_in && (size_t)n + 80 < cap; i++) {
        char up[65];
        stage_key(x, gs->in[i].from, up);
        n += snprintf(buf + n, cap - (size_t)n, "in%d=%s.%d;", gs->in[i].port, up,
                      gs->in[i].from_port);
    }
    kw_sha256_hex(buf, (size_t)n, out);
    free(buf);
}

/* The calibration outputs (reduce stages' once values): from the cache when every one
 * is there, else computed by running the calibration phase. Recorded as artifacts. */
static int calibrate(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    int n_red = 0, hits = 0;
    for (int si = 0; si < g->n_stages; si++) {
        const kw_gstage *gs = &g->stages[si];
        if (!gs->is_reduce)
            continue;
        n_red++;
        if (x->o->no_cache)
            continue;
        bool all = true;
        char key[65];
        stage_key(x, si, key);
        for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT && all; p++) {
            char pk[65], tmp[128];
            snprintf(tmp, sizeof tmp, "%s.%d", key, p);
            kw_sha256_hex(tmp, strlen(tmp), pk);
            void *buf = NULL;
            size_t nb = 0;
            kw_error e2 = {0};
            /* Only JSON-shaped values come back from the cache (their type is the
             * port's); other types are recomputed. */
            if (kw_cache_get(x->db, pk, &buf, &nb, &e2) == 1) {
                json_error_t je;
                json_t *j = json_loadb(buf, nb, JSON_DECODE_ANY, &je);
                if (j && !strncmp(buf, "{\"kwtype\":", 10)) {
                    json_t *payload = json_object_get(j, "value");
                    const char *type = json_string_value(json_object_get(j, "kwtype"));
                    if (type && !strcmp(type, gs->op->outputs[p].type) && payload) {
                        kw_value_unref(*oval(x, si, p));
                        *oval(x, si, p) =
                            kw_value_json(gs->op->outputs[p].type, json_incref(payload));
                    } else {
                        all = false;
                    }
                } else {
                    all = false;
                }
                json_decref(j);
                free(buf);
            } else {
                all = false;
            }
        }
        hits += all;
    }
    if (n_red == 0)
        return 0;
    if (hits == n_red) {
        kw_db_param(x->db, x->uuid, "calibration", "cached", err);
        if (x->o->progress)
            fprintf(stderr, "calibration: every output from the cache\n");
        return 0;
    }
    int rc = phase_setup(x, KW_PHASE_CALIB, err);
    if (rc >= 0)
        rc = run_configs(x, err);
    if (rc >= 0) {
        if (x->o->progress)
            fprintf(stderr, "calibration phase: %s\n",
                    g->calib.n > 0 ? "seeded subset of n samples" : "seeded fraction of samples");
        rc = stream(x, err);
    }
    if (rc >= 0 && x->fatal)
        rc = x->fatal, *err = x->fatal_err;
    for (int k = 0; rc >= 0 && k < g->n_stages; k++) {
        int si = g->topo[k];
        const kw_gstage *gs = &g->stages[si];
        if (!gs->is_reduce)
            continue;
        if ((rc = run_once(x, si, true, err)) < 0)
            break;
        char key[65];
        stage_key(x, si, key);
        for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++) {
            kw_value *v = *oval(x, si, p);
            if (!v)
                continue;
            void *buf = NULL;
            size_t nb = 0;
            const kw_type *vt = kw_value_vt(v);
            json_t *jo = kw_value_jsonobj(v);
            char name[256], sha[65];
            snprintf(name, sizeof name, "calib/%s.%s", gs->id, gs->op->outputs[p].name);
            if (jo) {
                json_t *w = json_pack("{s:s,s:O}", "kwtype", kw_value_type(v), "value", jo);
                buf = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
                nb = buf ? strlen(buf) : 0;
                json_decref(w);
            } else if (vt && vt->serialize && vt->serialize(kw_value_data(v), &buf, &nb) < 0) {
                buf = NULL;
            }
            if (!buf)
                continue; /* not serializable: recomputed next time, not recorded */
            kw_error e2 = {0};
            if (kw_db_artifact_put(x->db, x->uuid, name, buf, nb, sha, &e2) >= 0)
                kw_db_param(x->db, x->uuid, name, sha, &e2);
            if (jo) {
                char pk[65], tmp[128];
                snprintf(tmp, sizeof tmp, "%s.%d", key, p);
                kw_sha256_hex(tmp, strlen(tmp), pk);
                kw_cache_put(x->db, pk, name, buf, nb, &e2);
            }
            free(buf);
        }
    }
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, x->calib_done);
    kw_error e3 = {0};
    kw_db_param(x->db, x->uuid, "calibration.samples", num, &e3);
    return rc;
}

/* --------------------------------------------------------------- progress ---- */

static void progress(kw_exec *x, bool final)
{
    if (!x->o->progress)
        return;
    double now = kw_now();
    pthread_mutex_lock(&x->mu);
    double every = x->o->progress == 2 ? 0.25 : 10.0;
    if (!final && now - x->last_progress < every) {
        pthread_mutex_unlock(&x->mu);
        return;
    }
    x->last_progress = now;
    double el = now - x->t0;
    int64_t done = x->ok + x->failed, total = x->o->total_hint;
    char eta[64] = "";
    if (total > 0 && done > 0 && done < total)
        snprintf(eta, sizeof eta, ", ETA %.0f s", el / (double)done * (double)(total - done));
    char tot[32] = "";
    if (total > 0)
        snprintf(tot, sizeof tot, "/%" PRId64, total);
    if (x->phase == KW_PHASE_CALIB)
        fprintf(stderr, "%scalibration: %" PRId64 " samples, %.1f s%s", x->o->progress == 2 ? "\r" : "",
                x->calib_done, el, x->o->progress == 2 && !final ? "" : "\n");
    else
        fprintf(stderr, "%s%s: %" PRId64 "%s samples (%" PRId64 " failed, %" PRId64
                " in flight), %.1f s, %.2f samples/s%s%s",
                x->o->progress == 2 ? "\r\033[K" : "", x->g->name, done, tot, x->failed,
                x->inflight, el, el > 0 ? (double)done / el : 0.0, eta,
                x->o->progress == 2 && !final ? "" : "\n");
    x->progress_line_open = x->o->progress == 2 && !final;
    fflush(stderr);
    pthread_mutex_unlock(&x->mu);
}

/* ----------------------------------------------------------------- run ---- */

kw_run_opts kw_run_defaults(void)
{
    return (kw_run_opts){.inflight = 32, .progress = 1};
}

static void pval_text(const kw_pval *v, char *buf, size_t n)
{
    switch (v->kind) {
    case KW_PARAM_INT:
        snprintf(buf, n, "%" PRId64, v->i);
        break;
    case KW_PARAM_BOOL:
        snprintf(buf, n, "%s", v->i ? "true" : "false");
        break;
    case KW_PARAM_FLOAT:
        snprintf(buf, n, "%.17g", v->f);
        break;
    case KW_PARAM_INTLIST: {
        size_t k = (size_t)snprintf(buf, n, "[");
        for (int i = 0; i < v->n_ints && k < n; i++)
            k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", v->ints[i]);
        if (k < n)
            snprintf(buf + k, n - k, "]");
        break;
    }
    default:
        snprintf(buf, n, "%s", v->s ? v->s : "");
    }
}

static int record_params(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    char buf[4096], key[512];
    int rc = 0;
    for (int si = 0; si < g->n_stages && rc >= 0; si++) {
        const kw_gstage *gs = &g->stages[si];
        snprintf(key, sizeof key, "%s.op", gs->id);
        snprintf(buf, sizeof buf, "%s@%d", gs->op->name, gs->op->version);
        rc = kw_db_param(x->db, x->uuid, key, buf, err);
        for (int i = 0; i < gs->op->n_params && rc >= 0; i++) {
            snprintf(key, sizeof key, "%s.%s", gs->id, gs->op->params[i].name);
            pval_text(&gs->params[i], buf, sizeof buf);
            rc = kw_db_param(x->db, x->uuid, key, buf, err);
        }
    }
    snprintf(buf, sizeof buf, "%" PRId64, g->limit);
    if (rc >= 0)
        rc = kw_db_param(x->db, x->uuid, "run.limit", buf, err);
    if (rc >= 0 && g->model && g->model[0])
        rc = kw_db_param(x->db, x->uuid, "model", g->model, err);
    for (int i = 0; rc >= 0 && i < x->n_recs; i++)
        rc = kw_db_param(x->db, x->uuid, x->recs[i].key, x->recs[i].value, err);
    for (int i = 0; rc >= 0 && i < x->n_recs; i++) { /* data set identity */
        const char *k = x->recs[i].key, *dot = strrchr(k, '.');
        size_t n = g->source >= 0 ? strlen(g->stages[g->source].id) : 0;
        if (g->source < 0 || strncmp(k, g->stages[g->source].id, n) || k[n] != '.' || !dot)
            continue;
        if (!strcmp(dot, ".sha256"))
            kw_db_run_set(x->db, x->uuid, "dataset_sha256", x->recs[i].value, err);
        else if (!strcmp(dot, ".path"))
            kw_db_run_set(x->db, x->uuid, "dataset_id", x->recs[i].value, err);
    }
    return rc;
}

static void record_figures(kw_exec *x, double wall)
{
    const kw_graph *g = x->g;
    kw_error err = {0};
    double lane_busy[KW_N_LANES] = {0};
    int64_t lane_tasks[KW_N_LANES] = {0};
    double lane_wait[KW_N_LANES] = {0};
    for (int si = 0; si < g->n_stages; si++) {
        kw_opctx *c = &x->ctx[si];
        kw_db_stage(x->db, x->uuid, g->stages[si].id, kw_lane_name(c->lane), c->tasks, c->busy,
                    c->wait, 0, &err);
        lane_tasks[c->lane] += c->tasks;
        lane_wait[c->lane] += c->wait;
    }
    /* Lane totals: the time the lanes' threads spent in jobs (the source runs on the
     * feeding thread and counts for its lane); the gpu lane is the engine's busy time
     * (decode tasks only hand sequences over). */
    for (int l = 0; l < KW_N_LANES; l++)
        lane_busy[l] = x->lanes ? kw_lanes_busy(x->lanes, l) : 0;
    if (g->source >= 0)
        lane_busy[x->ctx[g->source].lane] += x->ctx[g->source].busy;
    if (x->engine && x->o->env && x->o->env->engine_busy_s)
        lane_busy[KW_LI_GPU] = x->o->env->engine_busy_s(x->engine);
    double sum = 0;
    for (int l = 0; l < KW_N_LANES; l++) {
        if (lane_tasks[l] == 0 && lane_busy[l] == 0)
            continue;
        kw_db_stage(x->db, x->uuid, KW_DB_LANE_TOTAL, kw_lane_name(l), lane_tasks[l],
                    lane_busy[l], lane_wait[l], 0, &err);
        sum += lane_busy[l];
    }
    kw_db_metric(x->db, x->uuid, -1, "wall_s", wall, 0, &err);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) /* the process's peak resident set (kB on Linux) */
        kw_db_metric(x->db, x->uuid, -1, "peak_rss_bytes", (double)ru.ru_maxrss * 1024.0, 0, &err);
    if (wall > 0)
        kw_db_metric(x->db, x->uuid, -1, "overlap", sum / wall, 0, &err);
    kw_db_metric(x->db, x->uuid, -1, "samples_ok", (double)x->ok, 0, &err);
    kw_db_metric(x->db, x->uuid, -1, "samples_failed", (double)x->failed, 0, &err);
    if (wall > 0)
        kw_db_metric(x->db, x->uuid, -1, "samples_per_s", (double)x->ok / wall, 0, &err);
    for (int i = 0; i < x->n_aggs; i++)
        if (x->aggs[i].n > 0)
            kw_db_metric(x->db, x->uuid, -1, x->aggs[i].key, x->aggs[i].sum / (double)x->aggs[i].n,
                         0, &err);
}

/* On resume, the aggregates include the samples finished before. */
static int load_previous(void *ud, int ncol, const char *const *names, const char *const *vals,
                         const int *types)
{
    (void)ncol, (void)names, (void)types;
    kw_exec *x = ud;
    if (!vals)
        return 0;
    if (vals[0] && vals[1])
        agg_add(x, vals[0], strtod(vals[1], NULL));
    return 0;
}

int kw_run_graph(const kw_graph *g, kw_db *db, const kw_run_opts *o, kw_run_result *res,
                 kw_error *err)
{
    memset(res, 0, sizeof *res);
    kw_exec xs = {.g = g, .o = o, .db = db}, *x = &xs;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    int rc = 0;
    x->ctx = calloc((size_t)g->n_stages, sizeof *x->ctx);
    x->once_vals = calloc((size_t)g->n_stages * MAX_OUT, sizeof *x->once_vals);
    if (!x->ctx || !x->once_vals)
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int si = 0; rc >= 0 && si < g->n_stages; si++) {
        kw_opctx *c = &x->ctx[si];
        c->x = x;
        c->si = si;
        c->gs = &g->stages[si];
        c->lane = kw_lane_of(c->gs->op->lanes);
        c->serialize = (c->gs->op->flags & (KW_OP_SERIAL | KW_OP_SOURCE)) || c->gs->is_reduce;
        pthread_mutex_init(&c->serial, NULL);
        if (c->gs->op->n_outputs > MAX_OUT)
            rc = kw_error_set(err, KW_ELIMIT, "operator %s has %d outputs, at most %d",
                              c->gs->op->name, c->gs->op->n_outputs, MAX_OUT);
    }
    /* 1. the device engine: a model that cannot be opened fails before anything is
     * recorded */
    if (rc >= 0 && g->model && g->model[0]) {
        if (!o->env || !o->env->engine_open)
            rc = kw_error_set(err, KW_ENOSYS, "this build cannot open models");
        else
            rc = o->env->engine_open(g->model, g->device, &x->engine, err);
        if (rc < 0)
            kw_error_prefix(err, "model '%s'", g->model);
    }
    /* 2. every stage's init */
    for (int k = 0; rc >= 0 && k < g->n_stages; k++)
        rc = stage_init(x, g->topo[k], err);
    if (rc >= 0)
        rc = kw_lanes_new(o->cpu_threads > 0 ? o->cpu_threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
                          o->io_threads > 0 ? o->io_threads : 2, &x->lanes, err);
    if (rc >= 0)
        kw__lanes_set_current(x->lanes);
    /* 3. the run row */
    if (rc >= 0) {
        int found = 0;
        if (o->resume) {
            found = kw_db_find_resumable(db, g->sha256, g->cell_label, x->uuid, err);
            if (found == 1)
                rc = kw_db_run_reopen(db, x->uuid, err);
            else if (found < 0)
                rc = found;
        }
        if (rc >= 0 && found != 1) {
            const char *msha = x->engine && o->env && o->env->engine_model_sha256
                                   ? o->env->engine_model_sha256(x->engine)
                                   : NULL;
            kw_run_info info = {.parent = o->parent, .pipeline = g->name, .yaml = g->yaml,
                                .yaml_sha256 = g->sha256, .cell_label = g->cell_label,
                                .model_id = g->model && g->model[0] ? g->model : NULL,
                                .model_sha256 = msha, .device = g->device, .seed = g->seed};
            rc = kw_db_run_begin(db, &info, x->uuid, err);
        } else if (rc >= 0) {
            const char *args[1] = {x->uuid};
            kw_db_query(db, "SELECT key, value FROM metrics WHERE run = ?1 AND sample IS NOT "
                        "NULL AND sample IN (SELECT idx FROM samples WHERE run = ?1 AND status "
                        "= 'FINISHED')", args, 1, load_previous, x, err);
            if (o->progress)
                fprintf(stderr, "resuming run %s\n", x->uuid);
        }
        if (rc >= 0) {
            pthread_mutex_lock(&x->mu);
            x->begun = true;
            pthread_mutex_unlock(&x->mu);
            memcpy(res->uuid, x->uuid, sizeof res->uuid);
            rc = record_params(x, err);
        }
    }
    x->t0 = kw_now();
    /* 4. calibration, then the main phase */
    if (rc >= 0)
        rc = calibrate(x, err);
    if (rc >= 0 && g->source >= 0 && x->ctx[g->source].tasks > 0) {
        /* the data set is read again from the start for the main phase */
        stage_fini(x, g->source);
        rc = stage_init(x, g->source, err);
    }
    if (rc >= 0)
        rc = phase_setup(x, KW_PHASE_MAIN, err);
    if (rc >= 0)
        rc = run_configs(x, err);
    if (rc >= 0)
        rc = stream(x, err);
    if (rc >= 0 && x->fatal) {
        rc = x->fatal;
        *err = x->fatal_err;
    }
    double wall = kw_now() - x->t0;
    progress(x, true);
    res->ok = x->ok;
    res->failed = x->failed;
    res->resumed = x->resumed;
    res->wall_s = wall;
    res->killed = o->stop && *o->stop;
    if (x->begun) {
        record_figures(x, wall);
        kw_error e2 = {0};
        if (rc < 0) {
            char m[2100];
            snprintf(m, sizeof m, "%s", err->msg);
            kw_db_param(db, x->uuid, "error", m, &e2);
        }
        kw_db_run_end(db, x->uuid, rc < 0 ? "FAILED" : res->killed ? "KILLED" : "FINISHED", &e2);
    }
    /* 5. teardown: lanes drained first (nothing runs any more), then the stages */
    x->lanes = kw_lanes_free(x->lanes);
    for (int k = g->n_stages - 1; k >= 0; k--)
        if (x->ctx)
            stage_fini(x, g->topo[k]);
    if (x->engine && o->env && o->env->engine_close)
        o->env->engine_close(x->engine);
    phase_free(x);
    if (x->once_vals)
        for (size_t i = 0; i < (size_t)g->n_stages * MAX_OUT; i++)
            kw_value_unref(x->once_vals[i]);
    free(x->once_vals);
    if (x->ctx)
        for (int si = 0; si < g->n_stages; si++)
            pthread_mutex_destroy(&x->ctx[si].serial);
    free(x->ctx);
    for (int i = 0; i < x->n_aggs; i++)
        free(x->aggs[i].key);
    free(x->aggs);
    for (int i = 0; i < x->n_recs; i++)
        free(x->recs[i].key), free(x->recs[i].value);
    free(x->recs);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    return rc;
}
