/* The DAG as text for `kvweave plan`, and stage params as canonical text (cache keys). */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"

typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->s && b->n + (size_t)n < b->cap) {
            b->n += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap <= b->n + (size_t)n)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

static char *done(sbuf *b)
{
    if (b->oom || !b->s) {
        free(b->s);
        return b->oom ? NULL : strdup("");
    }
    return b->s;
}

/* A string, quoted with JSON-style escapes so that the text is unambiguous. */
static void put_str(sbuf *b, const char *s)
{
    put(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            put(b, "\\%c", ch);
        else if (ch < 0x20)
            put(b, "\\u%04x", ch);
        else
            put(b, "%c", ch);
    }
    put(b, "\"");
}

static void put_val(sbuf *b, const kw_pval *v)
{
    switch (v->kind) {
    case KW_PARAM_INT:
        put(b, "%lld", (long long)v->i);
        break;
    case KW_PARAM_FLOAT: { /* the shortest text that reads back as the same double */
        char t[64];
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(t, sizeof t, "%.*g", prec, v->f);
            if (strtod(t, NULL) == v->f || v->f != v->f)
                break;
        }
        put(b, "%s", t);
        break;
    }
    case KW_PARAM_BOOL:
        put(b, "%s", v->i ? "true" : "false");
        break;
    case KW_PARAM_STRING:
    case KW_PARAM_ENUM:
        put_str(b, v->s ? v->s : "");
        break;
    case KW_PARAM_INTLIST:
        put(b, "[");
        for (int i = 0; i < v->n_ints; i++)
            put(b, "%s%lld", i ? "," : "", (long long)v->ints[i]);
        put(b, "]");
        break;
    }
}

char *kw_gstage_params_text(const kw_gstage *s)
{
    sbuf b = {0};
    put(&b, "%s", "");
    for (int j = 0; j < s->op->n_params; j++) {
        put(&b, "%s%s=", j ? ";" : "", s->op->params[j].name);
        put_val(&b, &s->params[j]);
    }
    return done(&b);
}

static void put_lanes(sbuf *b, unsigned lanes)
{
    static const char *const names[] = {"cpu", "io", "gpu"};
    bool any = false;
    for (int k = 0; k < 3; k++)
        if (lanes & (1u << k)) {
            put(b, "%s%s", any ? "+" : "", names[k]);
            any = true;
        }
    if (!any)
        put(b, "cpu");
}

static const char *card(kw_card c) { return c == KW_ONCE ? "once" : "each"; }

static void put_stage(sbuf *b, const kw_graph *g, const kw_gstage *s)
{
    const kw_op *op = s->op;
    put(b, "  %s: %s@%d  lanes=", s->id, op->name, op->version);
    put_lanes(b, op->lanes);
    put(b, "  runs=%s%s%s\n", s->runs_each ? "each" : "once", s->is_reduce ? "  reduce" : "",
        s->main_too ? "  (also in main)" : "");
    for (int k = 0; k < s->n_in; k++) {
        const kw_port *p = &op->inputs[s->in[k].port];
        const kw_gstage *f = &g->stages[s->in[k].from];
        const kw_port *fp = &f->op->outputs[s->in[k].from_port];
        put(b, "    in  %s (%s, %s) <- %s.%s (%s, %s)\n", p->name, p->type, card(p->card), f->id,
            fp->name, fp->type, card(fp->card));
    }
    for (int o = 0; o < op->n_outputs; o++)
        put(b, "    out %s (%s, %s)\n", op->outputs[o].name, op->outputs[o].type,
            card(op->outputs[o].card));
    for (int j = 0; j < op->n_params; j++) {
        put(b, "    param %s = ", op->params[j].name);
        put_val(b, &s->params[j]);
        put(b, "%s\n", s->params[j].set ? "" : "  (default)");
    }
}

char *kw_graph_describe(const kw_graph *g)
{
    sbuf b = {0};
    put(&b, "pipeline %s (%s, sha256 %.12s)\n", g->name, g->file, g->sha256);
    if (g->cell_label && *g->cell_label)
        put(&b, "cell %s\n", g->cell_label);
    put(&b, "model %s  device %s  limit %lld  seed %llu  db %s\n", *g->model ? g->model : "-",
        g->device, (long long)g->limit, (unsigned long long)g->seed, g->db ? g->db : "-");
    for (int i = 0; i < g->n_plugins; i++)
        put(&b, "plugin %s\n", g->plugins[i]);
    int n_calib = 0;
    for (int i = 0; i < g->n_stages; i++)
        n_calib += g->stages[i].phase == KW_PHASE_CALIB;
    for (int ph = KW_PHASE_CALIB; ph >= KW_PHASE_MAIN; ph--) {
        if (ph == KW_PHASE_CALIB && !n_calib)
            continue;
        if (ph == KW_PHASE_CALIB)
            put(&b, "phase calibration (%d stages; samples: %s%.6g, seed %llu)\n", n_calib,
                g->calib.n ? "n=" : "ratio ",
                g->calib.n ? (double)g->calib.n : g->calib.sample_ratio,
                (unsigned long long)g->calib.seed);
        else
            put(&b, "phase main (%d stages)\n", g->n_stages - n_calib);
        for (int k = 0; k < g->n_stages; k++) {
            const kw_gstage *s = &g->stages[g->topo[k]];
            if ((int)s->phase == ph)
                put_stage(&b, g, s);
        }
    }
    return done(&b);
}
