/* Description -> typed DAG (graph.h): resolve operators, type params, wire ports, check
 * types and cardinalities, find cycles, order topologically, split the phases. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "kvweave/util.h"
#include "pdesc.h"
#include "ptype.h"

typedef struct gctx {
    const kw_pdesc *d;
    const kw_registry *r;
    kw_graph *g;
    kw_error *err;
    char *edges;          /* (n, n) edges[from * n + to] */
} gctx;

static int oom(kw_error *err) { return kw_error_set(err, KW_ENOMEM, "out of memory"); }

/* An error at a place of the file, or at a command-line origin when there is one. */
static int at(gctx *c, int code, const char *origin, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int at(gctx *c, int code, const char *origin, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (origin)
        kw_error_vset(c->err, code, origin, 0, 0, fmt, ap);
    else
        kw_error_vset(c->err, code, c->d->file, line, col, fmt, ap);
    va_end(ap);
    return code;
}

static const char *card_name(kw_card k) { return k == KW_ONCE ? "once" : "each"; }

/* ---- run settings ---- */

static const kw_param_spec run_specs[] = {
    {"device", KW_PARAM_STRING, "cpu", 0, 0, NULL, NULL},
    {"limit", KW_PARAM_INT, "0", 0, 9.0e18, NULL, NULL},
    {"seed", KW_PARAM_INT, "1", 0, 9.0e18, NULL, NULL},
    {"db", KW_PARAM_STRING, "", 0, 0, NULL, NULL},
    {"pool_mb", KW_PARAM_INT, "0", 0, 1.0e8, NULL, NULL},
    {"max_batch", KW_PARAM_INT, "0", 0, 64, NULL, NULL},
    {"chunk", KW_PARAM_INT, "0", 0, 1 << 20, NULL, NULL},
    {"kv_pages", KW_PARAM_ENUM, "float", 0, 0, "float|int8|int8_kchan|int4_kchan", NULL},
    {"page_tokens", KW_PARAM_INT, "0", 0, 4096, NULL, NULL},
    {"kv_residual", KW_PARAM_INT, "0", 0, 1 << 20, NULL, NULL},
};
static const kw_param_spec calib_specs[] = {
    {"sample_ratio", KW_PARAM_FLOAT, "0.1", 0, 1, NULL, NULL},
    {"n", KW_PARAM_INT, "0", 0, 9.0e18, NULL, NULL},
    {"seed", KW_PARAM_INT, "1", 0, 9.0e18, NULL, NULL},
};

static int setting(gctx *c, const char *section, const kw_pkv *kv, int n,
                   const kw_param_spec *sp, kw_pval *pv)
{
    const kw_pkv *e = kw__pkv_find(kv, n, sp->name);
    kw_ynode def = {.kind = KW_Y_SCALAR, .text = (char *)sp->def, .len = strlen(sp->def)};
    char w[1024];
    int rc = kw__param_value(e ? e->val : &def, sp, pv, w, sizeof w);
    if (rc < 0)
        return at(c, rc, e ? e->origin : NULL, e ? e->val->line : 0, e ? e->val->col : 0,
                  "%s.%s: %s", section, sp->name, w);
    pv->set = e != NULL;
    return KW_OK;
}

static bool valid_device(const char *s)
{
    if (!strcmp(s, "cpu") || !strcmp(s, "cuda"))
        return true;
    if (strncmp(s, "cuda:", 5) || !s[5])
        return false;
    for (const char *p = s + 5; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static int run_settings(gctx *c)
{
    const kw_pdesc *d = c->d;
    kw_graph *g = c->g;
    enum { N_RUN = sizeof run_specs / sizeof *run_specs };
    kw_pval v[N_RUN] = {0}, cv[3] = {0};
    int rc = KW_OK;
    for (int i = 0; i < N_RUN && rc >= 0; i++)
        rc = setting(c, "run", d->run, d->n_run, &run_specs[i], &v[i]);
    for (int i = 0; i < 3 && rc >= 0; i++)
        rc = setting(c, "calibration", d->calib, d->n_calib, &calib_specs[i], &cv[i]);
    if (rc >= 0 && !valid_device(v[0].s)) {
        const kw_pkv *e = kw__pkv_find(d->run, d->n_run, "device");
        rc = at(c, KW_EINVAL, e->origin, e->val->line, e->val->col,
                "run.device: expected cpu, cuda or cuda:N, got '%s'", v[0].s);
    }
    if (rc >= 0 && v[9].i > 0 && strcmp(v[7].s, "int8_kchan") && strcmp(v[7].s, "int4_kchan")) {
        const kw_pkv *e = kw__pkv_find(d->run, d->n_run, "kv_residual");
        rc = at(c, KW_EINVAL, e->origin, e->val->line, e->val->col,
                "run.kv_residual: %lld tokens of f32 K need pages that quantize K per channel "
                "(run.kv_pages: int8_kchan or int4_kchan), not '%s'", (long long)v[9].i,
                v[7].s);
    }
    if (rc >= 0) {
        g->device = v[0].s;
        v[0].s = NULL;
        g->limit = v[1].i;
        g->seed = (uint64_t)v[2].i;
        if (v[3].s && *v[3].s) {
            g->db = v[3].s;
            v[3].s = NULL;
        }
        g->engine.pool_mb = v[4].i;
        g->engine.max_batch = (int)v[5].i;
        g->engine.chunk = (int)v[6].i;
        g->engine.kv_dtype = !strcmp(v[7].s, "int8")         ? 1
                             : !strcmp(v[7].s, "int8_kchan") ? 2
                             : !strcmp(v[7].s, "int4_kchan") ? 3
                                                             : 0;
        g->engine.page_tokens = (int)v[8].i;
        g->engine.kv_residual = (int)v[9].i;
        g->calib.sample_ratio = cv[0].f;
        g->calib.n = cv[1].i;
        g->calib.seed = cv[2].set ? (uint64_t)cv[2].i : g->seed;
    }
    for (int i = 0; i < N_RUN; i++)
        kw__pval_clear(&v[i]);
    for (int i = 0; i < 3; i++)
        kw__pval_clear(&cv[i]);
    return rc;
}

static char *resolve_plugin(const kw_pdesc *d, const char *p)
{
    if (p[0] == '/')
        return strdup(p);
    char *s = malloc(strlen(d->dir) + strlen(p) + 2);
    if (s)
        sprintf(s, "%s/%s", d->dir, p);
    return s;
}

static int header(gctx *c)
{
    const kw_pdesc *d = c->d;
    kw_graph *g = c->g;
    g->name = strdup(d->name);
    g->file = strdup(d->file);
    g->yaml = strdup(d->text);
    g->model = strdup(d->model.val ? d->model.val->text : "");
    g->cell_label = strdup(d->cell_label ? d->cell_label : "");
    g->plugins = calloc((size_t)d->n_plugins + 1, sizeof *g->plugins);
    if (!g->name || !g->file || !g->yaml || !g->model || !g->cell_label || !g->plugins)
        return oom(c->err);
    for (int i = 0; i < d->n_plugins; i++, g->n_plugins++)
        if (!(g->plugins[i] = resolve_plugin(d, d->plugins[i].text)))
            return oom(c->err);
    kw_sha256_hex(d->text, d->n_text, g->sha256);
    return run_settings(c);
}

/* ---- operators and params ---- */

static int resolve(gctx *c, int i)
{
    const kw_pstage *ps = &c->d->stages[i];
    kw_gstage *s = &c->g->stages[i];
    s->line = ps->line;
    s->col = ps->col;
    if (!(s->id = strdup(ps->id)))
        return oom(c->err);
    s->op = kw_registry_find(c->r, ps->op);
    if (!s->op) {
        const char *near = kw_registry_suggest(c->r, ps->op);
        if (near)
            return at(c, KW_ENOTFOUND, NULL, ps->op_line, ps->op_col,
                      "stage '%s': unknown operator '%s' (did you mean '%s'?)", ps->id, ps->op,
                      near);
        return at(c, KW_ENOTFOUND, NULL, ps->op_line, ps->op_col,
                  "stage '%s': unknown operator '%s' (`kvweave ops` lists them)", ps->id,
                  ps->op);
    }
    if (!(s->params = calloc((size_t)s->op->n_params + 1, sizeof *s->params)))
        return oom(c->err);
    return KW_OK;
}

static int unknown_param(gctx *c, const kw_pstage *ps, const kw_op *op, const kw_pkv *kv)
{
    const char *names[256] = {0};
    int n = op->n_params < 256 ? op->n_params : 256;
    for (int k = 0; k < n; k++)
        names[k] = op->params[k].name;
    const char *near = kw__nearest(kv->key, names, n);
    if (near)
        return at(c, KW_ENOTFOUND, kv->origin, kv->line, kv->col,
                  "stage '%s' (%s): unknown param '%s' (did you mean '%s'?)", ps->id, op->name,
                  kv->key, near);
    return at(c, KW_ENOTFOUND, kv->origin, kv->line, kv->col,
              "stage '%s' (%s): unknown param '%s' (%s has %s)", ps->id, op->name, kv->key,
              op->name, n ? "other params: `kvweave ops describe` lists them" : "no params");
}

static int params(gctx *c, int i)
{
    const kw_pstage *ps = &c->d->stages[i];
    kw_gstage *s = &c->g->stages[i];
    const kw_op *op = s->op;
    for (int k = 0; k < ps->n_with; k++) {
        int j = 0;
        while (j < op->n_params && strcmp(op->params[j].name, ps->with[k].key))
            j++;
        if (j == op->n_params)
            return unknown_param(c, ps, op, &ps->with[k]);
    }
    for (int j = 0; j < op->n_params; j++) {
        const kw_param_spec *sp = &op->params[j];
        const kw_pkv *kv = kw__pkv_find(ps->with, ps->n_with, sp->name);
        char w[1024];
        int rc;
        if (kv) {
            rc = kw__param_value(kv->val, sp, &s->params[j], w, sizeof w);
            if (rc < 0)
                return at(c, rc, kv->origin, kv->val->line, kv->val->col,
                          "stage '%s' (%s): param '%s' %s", ps->id, op->name, sp->name, w);
            s->params[j].set = true;
            s->params[j].line = kv->val->line;
            s->params[j].col = kv->val->col;
            continue;
        }
        if (!sp->def)
            return at(c, KW_EINVAL, NULL, ps->line, ps->col,
                      "stage '%s' (%s): required param '%s' is not set", ps->id, op->name,
                      sp->name);
        kw_ynode def = {.kind = KW_Y_SCALAR, .text = (char *)sp->def, .len = strlen(sp->def)};
        if ((rc = kw__param_value(&def, sp, &s->params[j], w, sizeof w)) < 0)
            return kw_error_set(c->err, rc == KW_ENOMEM ? rc : KW_EINTERNAL,
                                "operator %s: the default of param '%s' is invalid: %s",
                                op->name, sp->name, w);
    }
    return KW_OK;
}

/* ---- wiring ---- */

static int find_stage(const kw_graph *g, const char *id, size_t n)
{
    for (int i = 0; i < g->n_stages; i++)
        if (strlen(g->stages[i].id) == n && !strncmp(g->stages[i].id, id, n))
            return i;
    return -1;
}

/* The first input of op that takes type and is still free (or MULTI); -1 if none. */
static int free_port(const kw_op *op, const char *type, const int *filled)
{
    for (int k = 0; k < op->n_inputs; k++)
        if (!strcmp(op->inputs[k].type, type) &&
            ((op->inputs[k].flags & KW_PORT_MULTI) || !filled[k]))
            return k;
    return -1;
}

static int add_in(gctx *c, kw_gstage *s, int port, int from, int from_port, int *filled)
{
    kw_gin *in = realloc(s->in, (size_t)(s->n_in + 1) * sizeof *in);
    if (!in)
        return oom(c->err);
    s->in = in;
    s->in[s->n_in++] = (kw_gin){port, from, from_port};
    filled[port]++;
    c->edges[(size_t)from * (size_t)c->g->n_stages + (size_t)(s - c->g->stages)] = 1;
    return KW_OK;
}

static void port_types(const kw_op *op, bool inputs, char *buf, size_t n)
{
    const kw_port *p = inputs ? op->inputs : op->outputs;
    int np = inputs ? op->n_inputs : op->n_outputs;
    size_t len = 0;
    buf[0] = '\0';
    for (int k = 0; k < np && len < n; k++)
        len += (size_t)snprintf(buf + len, n - len, "%s '%s' (%s, %s)", k ? "," : "", p[k].name,
                                p[k].type, card_name(p[k].card));
    if (!np)
        snprintf(buf, n, " none");
}

static int no_port(gctx *c, const kw_gstage *s, const kw_pref *ref, const kw_gstage *from,
                   int only)
{
    char want[512], have[512];
    port_types(s->op, true, want, sizeof want);
    if (only >= 0)
        snprintf(have, sizeof have, " '%s' (%s)", from->op->outputs[only].name,
                 from->op->outputs[only].type);
    else
        port_types(from->op, false, have, sizeof have);
    return at(c, KW_ETYPE, NULL, ref->line, ref->col,
              "stage '%s' (%s): no free input port takes what '%s' (%s) gives; it gives%s, "
              "%s takes%s", s->id, s->op->name, ref->text, from->op->name, have, s->op->name,
              want);
}

static int wire_ref(gctx *c, int i, const kw_pref *ref, int *filled)
{
    kw_gstage *s = &c->g->stages[i];
    const char *dot = strchr(ref->text, '.');
    size_t n = dot ? (size_t)(dot - ref->text) : strlen(ref->text);
    int j = find_stage(c->g, ref->text, n);
    if (j < 0) {
        const char *names[KW_PIPELINE_MAX_STAGES];
        for (int k = 0; k < c->g->n_stages; k++)
            names[k] = c->g->stages[k].id;
        const char *near = kw__nearest(ref->text, names, c->g->n_stages);
        return at(c, KW_ENOTFOUND, NULL, ref->line, ref->col,
                  "stage '%s': input '%s' names no stage%s%s%s", s->id, ref->text,
                  near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
    }
    const kw_gstage *from = &c->g->stages[j];
    int only = -1;
    if (dot) {
        for (int o = 0; o < from->op->n_outputs && only < 0; o++)
            if (!strcmp(from->op->outputs[o].name, dot + 1))
                only = o;
        if (only < 0) {
            char have[512];
            port_types(from->op, false, have, sizeof have);
            return at(c, KW_ENOTFOUND, NULL, ref->line, ref->col,
                      "stage '%s': '%s' has no output '%s'; %s has%s", s->id, from->id, dot + 1,
                      from->op->name, have);
        }
    }
    for (int o = only < 0 ? 0 : only; o < (only < 0 ? from->op->n_outputs : only + 1); o++) {
        const kw_port *out = &from->op->outputs[o];
        int k = free_port(s->op, out->type, filled);
        if (k < 0)
            continue;
        if (out->card == KW_EACH && s->op->inputs[k].card == KW_ONCE)
            return at(c, KW_ETYPE, NULL, ref->line, ref->col,
                      "stage '%s' (%s): input '%s' needs a once value, but '%s' gives %s for "
                      "each sample; reduce it first (an operator with each inputs and once "
                      "outputs)", s->id, s->op->name, s->op->inputs[k].name, ref->text,
                      out->type);
        return add_in(c, s, k, j, o, filled);
    }
    return no_port(c, s, ref, from, only);
}

static int wire(gctx *c, int i)
{
    const kw_pstage *ps = &c->d->stages[i];
    kw_gstage *s = &c->g->stages[i];
    const kw_op *op = s->op;
    int filled[256] = {0}, rc;
    if (op->n_inputs > 256)
        return kw_error_set(c->err, KW_EINVAL, "operator %s has more than 256 inputs", op->name);
    for (int k = 0; k < ps->n_in; k++)
        if ((rc = wire_ref(c, i, &ps->in[k], filled)) < 0)
            return rc;
    int src = c->d->has_dataset ? 0 : -1;
    if (!ps->has_in && src >= 0 && i != src && op->n_inputs > 0 &&
        !strcmp(op->inputs[0].type, KW_T_SAMPLE)) {
        const kw_op *sop = c->g->stages[src].op;
        for (int o = 0; o < sop->n_outputs; o++)
            if (!strcmp(sop->outputs[o].type, KW_T_SAMPLE)) {
                if ((rc = add_in(c, s, 0, src, o, filled)) < 0)
                    return rc;
                break;
            }
    }
    for (int k = 0; k < op->n_inputs; k++) {
        const kw_port *p = &op->inputs[k];
        if (!filled[k] && !(p->flags & KW_PORT_OPTIONAL))
            return at(c, KW_EINVAL, NULL, ps->line, ps->col,
                      "stage '%s' (%s): required input '%s' (%s, %s) is not wired%s", s->id,
                      op->name, p->name, p->type, card_name(p->card),
                      ps->has_in ? "" : "; list its producer in `in:`");
        if (filled[k] && p->card == KW_EACH)
            s->runs_each = true;
    }
    if ((op->flags & KW_OP_SOURCE) || i == src)
        s->runs_each = true;
    return KW_OK;
}

/* ---- cycles, order, phases ---- */

static int cycle_from(gctx *c, int v, char *color, int *stack, int *sp)
{
    int n = c->g->n_stages;
    color[v] = 1;
    stack[(*sp)++] = v;
    for (int w = 0; w < n; w++) {
        if (!c->edges[(size_t)v * (size_t)n + (size_t)w])
            continue;
        if (color[w] == 1) {
            char path[2048];
            size_t len = 0;
            int k = *sp - 1;
            while (stack[k] != w)
                k--;
            for (; k < *sp && len < sizeof path; k++)
                len += (size_t)snprintf(path + len, sizeof path - len, "%s -> ",
                                        c->g->stages[stack[k]].id);
            if (len < sizeof path)
                snprintf(path + len, sizeof path - len, "%s", c->g->stages[w].id);
            return at(c, KW_ECYCLE, NULL, c->g->stages[w].line, c->g->stages[w].col,
                      "the pipeline has a cycle: %s", path);
        }
        int rc;
        if (color[w] == 0 && (rc = cycle_from(c, w, color, stack, sp)) < 0)
            return rc;
    }
    color[v] = 2;
    (*sp)--;
    return KW_OK;
}

static int order(gctx *c)
{
    int n = c->g->n_stages, rc = KW_OK, sp = 0;
    char *color = calloc((size_t)n, 1);
    int *stack = calloc((size_t)n + 1, sizeof *stack);
    int *indeg = calloc((size_t)n + 1, sizeof *indeg);
    c->g->topo = calloc((size_t)n + 1, sizeof *c->g->topo);
    if (!color || !stack || !indeg || !c->g->topo)
        rc = oom(c->err);
    for (int v = 0; v < n && rc >= 0; v++)
        if (!color[v])
            rc = cycle_from(c, v, color, stack, &sp);
    for (int v = 0; v < n && rc >= 0; v++)
        for (int w = 0; w < n; w++)
            indeg[w] += c->edges[(size_t)v * (size_t)n + (size_t)w];
    /* Kahn's algorithm, taking the earliest declared ready stage each time */
    for (int k = 0; k < n && rc >= 0; k++) {
        int v = 0;
        while (v < n && (indeg[v] != 0 || color[v] == 3))
            v++;
        if (v == n) {
            rc = kw_error_set(c->err, KW_EINTERNAL, "topological order failed");
            break;
        }
        color[v] = 3;
        c->g->topo[k] = v;
        for (int w = 0; w < n; w++)
            indeg[w] -= c->edges[(size_t)v * (size_t)n + (size_t)w];
    }
    free(color);
    free(stack);
    free(indeg);
    return rc;
}

static bool is_reduce(const kw_gstage *s)
{
    bool each_in = false, once_out = false;
    for (int k = 0; k < s->n_in; k++)
        each_in |= s->op->inputs[s->in[k].port].card == KW_EACH;
    for (int o = 0; o < s->op->n_outputs; o++)
        once_out |= s->op->outputs[o].card == KW_ONCE;
    return each_in && once_out;
}

static void phases(gctx *c)
{
    kw_graph *g = c->g;
    int n = g->n_stages;
    /* reverse topological order: a stage is CALIB if it is a reduce or feeds a CALIB one */
    for (int k = n - 1; k >= 0; k--) {
        kw_gstage *s = &g->stages[g->topo[k]];
        s->is_reduce = is_reduce(s);
        bool calib = s->is_reduce;
        for (int w = 0; w < n && !calib; w++)
            calib = c->edges[(size_t)g->topo[k] * (size_t)n + (size_t)w] &&
                    g->stages[w].phase == KW_PHASE_CALIB;
        s->phase = calib ? KW_PHASE_CALIB : KW_PHASE_MAIN;
    }
    for (int k = n - 1; k >= 0; k--) {
        int v = g->topo[k];
        kw_gstage *s = &g->stages[v];
        if (s->phase != KW_PHASE_CALIB || !s->runs_each || s->is_reduce)
            continue;
        for (int w = 0; w < n && !s->main_too; w++)
            s->main_too = c->edges[(size_t)v * (size_t)n + (size_t)w] &&
                          (g->stages[w].phase == KW_PHASE_MAIN || g->stages[w].main_too);
    }
}

/* ---- kv method stacks ---- */

/* A stage's kvmethod inputs, in the order listed, are the hook stack it runs with: their
 * producers' declared roles (kw_op.kv_roles) must obey the stack rule (kvroles.h).
 * Producers that declare none are left to the run-time check of the stack. */
static int kv_stack(gctx *c, int i)
{
    const kw_gstage *s = &c->g->stages[i];
    uint32_t roles[64];
    int who[64], n = 0;
    for (int k = 0; k < s->n_in && n < 64; k++) {
        const kw_gstage *from = &c->g->stages[s->in[k].from];
        if (strcmp(s->op->inputs[s->in[k].port].type, KW_T_KVMETHOD) != 0 ||
            !(roles[n] = kw_op_kv_roles(from->op)))
            continue;
        who[n++] = s->in[k].from;
    }
    int a, b;
    uint32_t r = kw_kvroles_conflict(roles, n, &a, &b);
    if (!r)
        return KW_OK;
    const kw_gstage *fa = &c->g->stages[who[a]], *fb = &c->g->stages[who[b]];
    char ra[32], rb[32], rn[32];
    kw_kvroles_text(roles[a], ra, sizeof ra);
    kw_kvroles_text(roles[b], rb, sizeof rb);
    kw_kvroles_text(r, rn, sizeof rn);
    return at(c, KW_EINVAL, NULL, s->line, s->col,
              "stage '%s' (%s): kv methods '%s' (%s, %s) and '%s' (%s, %s) both %s; a stack of "
              "kv methods holds at most one EVICT and at most one STORE method (any number "
              "of SELECT)", s->id, s->op->name, fa->id, fa->op->name, ra, fb->id, fb->op->name,
              rb, rn);
}

static int needs_model(gctx *c)
{
    if (c->g->model[0])
        return KW_OK;
    for (int i = 0; i < c->g->n_stages; i++) {
        const kw_gstage *s = &c->g->stages[i];
        if (s->op->flags & KW_OP_NEEDS_MODEL)
            return at(c, KW_EINVAL, NULL, s->line, s->col,
                      "stage '%s' (%s) needs a model; set `model:` (or --set model=NAME)",
                      s->id, s->op->name);
    }
    return KW_OK;
}

static int build(gctx *c)
{
    kw_graph *g = c->g;
    int n = c->d->n_stages, rc;
    if ((rc = header(c)) < 0)
        return rc;
    g->stages = calloc((size_t)n + 1, sizeof *g->stages);
    c->edges = calloc((size_t)n * (size_t)n + 1, 1);
    if (!g->stages || !c->edges)
        return oom(c->err);
    g->n_stages = n;
    for (int i = 0; i < n; i++)
        if ((rc = resolve(c, i)) < 0)
            return rc;
    for (int i = 0; i < n; i++)
        if ((rc = params(c, i)) < 0)
            return rc;
    for (int i = 0; i < n; i++)
        if ((rc = wire(c, i)) < 0)
            return rc;
    if ((rc = order(c)) < 0)
        return rc;
    for (int i = 0; i < n; i++)
        if ((rc = kv_stack(c, i)) < 0)
            return rc;
    phases(c);
    g->source = c->d->has_dataset ? 0 : -1;
    for (int i = 0; i < n && g->source < 0; i++)
        if (g->stages[i].op->flags & KW_OP_SOURCE)
            g->source = i;
    return needs_model(c);
}

int kw_graph_build(const kw_pdesc *d, const kw_registry *r, kw_graph **out, kw_error *err)
{
    *out = NULL;
    gctx c = {.d = d, .r = r, .err = err};
    if (d->n_sweep > 0)
        return kw_error_set(err, KW_EINVAL, "%s has a sweep: build each cell "
                            "(kw_pdesc_sweep_cell)", d->file);
    if (!(c.g = calloc(1, sizeof *c.g)))
        return oom(err);
    c.g->source = -1;
    int rc = build(&c);
    free(c.edges);
    if (rc < 0) {
        kw_graph_free(c.g);
        return rc;
    }
    *out = c.g;
    return KW_OK;
}

kw_graph *kw_graph_free(kw_graph *g)
{
    if (!g)
        return NULL;
    for (int i = 0; i < g->n_stages; i++) {
        kw_gstage *s = &g->stages[i];
        for (int j = 0; s->params && s->op && j < s->op->n_params; j++)
            kw__pval_clear(&s->params[j]);
        free(s->params);
        free(s->in);
        free(s->id);
    }
    free(g->stages);
    for (int i = 0; i < g->n_plugins; i++)
        free(g->plugins[i]);
    free(g->plugins);
    free(g->name);
    free(g->file);
    free(g->yaml);
    free(g->model);
    free(g->device);
    free(g->db);
    free(g->topo);
    free(g->cell_label);
    free(g);
    return NULL;
}
