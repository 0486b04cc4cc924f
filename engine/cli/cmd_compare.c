/* kvweave compare: run-level metrics of several runs side by side; with --branches, the
 * method branches of one run (branches.h) side by side, with ratios to a reference. */
#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branches.h"
#include "cli.h"
#include "cmd_results.h"
#include "cmd_results_fmt.h"
#include "graph.h"
#include "pdesc.h"
#include "results.h"

/* Rows: the keys of `keys_sql` (runs bound as ?1..?n); columns: each run's value from
 * `value_sql` (?1 run, ?2 key), with ratios to the first run when ratios; only_diff:
 * keep rows whose values differ. */
static int pivot(kw_db *db, char (*runs)[37], int n, const char *keys_sql,
                 const char *value_sql, bool ratios, bool only_diff, const char *title,
                 bool color)
{
    const char *args[KW_CLI_MAX_RUNS];
    for (int i = 0; i < n; i++)
        args[i] = runs[i];
    kw_table keys = {0};
    kw_error err = {0};
    if (kw_db_query(db, keys_sql, args, n, kw__on_first_column, &keys, &err) < 0) {
        kw__table_clear(&keys);
        return kw_cli_fail(&err);
    }
    int ncol = 1 + n + (ratios ? n - 1 : 0);
    char heads[2 * KW_CLI_MAX_RUNS][24];
    const char *head[2 * KW_CLI_MAX_RUNS + 1] = {title};
    for (int i = 0, c = 1; i < n; i++) {
        snprintf(heads[c], sizeof heads[c], "[%d] %.8s", i + 1, runs[i]);
        head[c] = heads[c];
        c++;
        if (ratios && i > 0) {
            snprintf(heads[c], sizeof heads[c], "[%d]/[1]", i + 1);
            head[c] = heads[c];
            c++;
        }
    }
    kw_table t;
    kw__table_init(&t, ncol, head, 60);
    char cells[2 * KW_CLI_MAX_RUNS][48];
    for (int k = 0; k < keys.nrows; k++) {
        const char *key = keys.cells[k];
        const char *row[2 * KW_CLI_MAX_RUNS + 1] = {key};
        double ref = 0;
        bool have_ref = false, differ = false;
        char *first = NULL;
        for (int i = 0, c = 1; i < n; i++) {
            const char *a2[] = {runs[i], key};
            char *v = kw__scalar(db, value_sql, a2, 2);
            if (i == 0)
                first = v ? strdup(v) : NULL;
            else if ((!v) != (!first) || (v && strcmp(v, first)))
                differ = true;
            kw__fmt_num(v, cells[c], sizeof cells[c]);
            row[c] = cells[c];
            c++;
            double d = v ? strtod(v, NULL) : 0;
            if (i == 0) {
                ref = d;
                have_ref = v != NULL;
            } else if (ratios) {
                if (v && have_ref && ref != 0)
                    snprintf(cells[c], sizeof cells[c], "%.4g", d / ref);
                else
                    snprintf(cells[c], sizeof cells[c], "-");
                row[c] = cells[c];
                c++;
            }
            free(v);
        }
        free(first);
        if (!only_diff || differ)
            kw__table_add(&t, row);
    }
    if (t.nrows > 0) {
        printf("\n");
        kw__table_print(&t, stdout, color, "");
    } else if (!only_diff) {
        printf("\n(no run-level metrics)\n");
    }
    kw__table_clear(&t);
    kw__table_clear(&keys);
    return 0;
}

/* ---- compare RUN --branches ---- */

/* What the branch view reads of one run. */
typedef struct brun {
    char *pipeline, *status, *cell, *yaml;
    kw_bstage *st; /* (n_st) from the params "<stage>.op", in the order recorded */
    int n_st;
    kw_pdesc *desc; /* the run's pipeline text parsed, for the wiring; nullable */
    const char **refs;
    char **keys; /* (n_keys) every metric key of the run */
    double *val; /* the run-level value, else the mean over samples */
    long *samples;
    int n_keys, cap_keys;
} brun;

static int on_run_row(void *ud, int ncol, const char *const *names, const char *const *vals,
                      const int *types)
{
    brun *r = ud;
    if (!vals)
        return 0;
    r->pipeline = strdup(vals[0] ? vals[0] : "");
    r->status = strdup(vals[1] ? vals[1] : "");
    r->cell = strdup(vals[2] ? vals[2] : "");
    r->yaml = vals[3] ? strdup(vals[3]) : NULL;
    return r->pipeline && r->status && r->cell ? 0 : KW_ENOMEM;
}

static int on_stage_row(void *ud, int ncol, const char *const *names, const char *const *vals,
                        const int *types)
{
    brun *r = ud;
    if (!vals || !vals[0] || !vals[1])
        return 0;
    kw_bstage *st = realloc(r->st, sizeof *st * (size_t)(r->n_st + 1));
    if (!st)
        return KW_ENOMEM;
    r->st = st;
    const char *at = strchr(vals[1], '@'); /* "decode.greedy@1" */
    char *id = strdup(vals[0]),
         *op = strndup(vals[1], at ? (size_t)(at - vals[1]) : strlen(vals[1]));
    r->st[r->n_st++] = (kw_bstage){.id = id, .op = op};
    return id && op ? 0 : KW_ENOMEM;
}

static int on_metric_row(void *ud, int ncol, const char *const *names, const char *const *vals,
                         const int *types)
{
    brun *r = ud;
    if (!vals || !vals[0] || !(vals[1] || vals[2]))
        return 0;
    if (r->n_keys == r->cap_keys) {
        int cap = r->cap_keys ? 2 * r->cap_keys : 64;
        char **k = realloc(r->keys, sizeof *k * (size_t)cap);
        double *v = realloc(r->val, sizeof *v * (size_t)cap);
        long *n = realloc(r->samples, sizeof *n * (size_t)cap);
        r->keys = k ? k : r->keys;
        r->val = v ? v : r->val;
        r->samples = n ? n : r->samples;
        if (!k || !v || !n)
            return KW_ENOMEM;
        r->cap_keys = cap;
    }
    if (!(r->keys[r->n_keys] = strdup(vals[0])))
        return KW_ENOMEM;
    r->val[r->n_keys] = strtod(vals[1] ? vals[1] : vals[2], NULL);
    r->samples[r->n_keys] = vals[3] ? strtol(vals[3], NULL, 10) : 0;
    r->n_keys++;
    return 0;
}

/* The stages' inputs from the pipeline text; a text that no longer parses leaves the
 * wiring unknown (each keyed stage then is a branch of its own). */
static int wire(brun *r)
{
    kw_error err = {0};
    if (!r->yaml ||
        kw_pipeline_parse(r->pipeline, r->yaml, strlen(r->yaml), &r->desc, &err) < 0)
        return 0;
    int n = 0;
    for (int i = 0; i < r->desc->n_stages; i++)
        n += r->desc->stages[i].n_in;
    if (!(r->refs = calloc((size_t)n + 1, sizeof *r->refs)))
        return KW_ENOMEM;
    n = 0;
    for (int i = 0; i < r->n_st; i++)
        for (int j = 0; j < r->desc->n_stages; j++) {
            const kw_pstage *ps = &r->desc->stages[j];
            if (strcmp(ps->id, r->st[i].id) != 0)
                continue;
            r->st[i].in = r->refs + n;
            r->st[i].n_in = ps->n_in;
            for (int k = 0; k < ps->n_in; k++)
                r->refs[n++] = ps->in[k].text;
            break;
        }
    return 0;
}

static int brun_read(kw_db *db, const char *u, brun *r)
{
    const char *arg[] = {u};
    kw_error err = {0};
    int rc = kw_db_query(db, "SELECT pipeline, status, cell_label, yaml FROM runs WHERE "
                         "uuid = ?1", arg, 1, on_run_row, r, &err);
    if (rc == 0)
        rc = kw_db_query(db, "SELECT substr(key, 1, length(key) - 3), value FROM params WHERE "
                         "run = ?1 AND key LIKE '%.op' ORDER BY rowid", arg, 1, on_stage_row,
                         r, &err);
    if (rc == 0)
        rc = kw_db_query(db, "SELECT key, (SELECT value FROM metrics r WHERE r.run = ?1 AND "
                         "r.sample IS NULL AND r.key = m.key ORDER BY r.step DESC LIMIT 1), "
                         "avg(CASE WHEN sample IS NOT NULL THEN value END), count(DISTINCT "
                         "sample) FROM metrics m WHERE run = ?1 GROUP BY key ORDER BY key",
                         arg, 1, on_metric_row, r, &err);
    if (rc == 0 && !r->pipeline)
        rc = kw_error_set(&err, KW_ENOTFOUND, "no run '%s' in '%s'", u, kw_db_path(db));
    if (rc == 0)
        rc = wire(r);
    if (rc < 0 && !err.msg[0])
        kw_error_set(&err, rc, "reading run %s: %s", u, kw_strerror(rc));
    return rc < 0 ? kw_cli_fail(&err) : 0;
}

static void brun_clear(brun *r)
{
    free(r->pipeline);
    free(r->status);
    free(r->cell);
    free(r->yaml);
    for (int i = 0; i < r->n_st; i++) {
        free((char *)r->st[i].id);
        free((char *)r->st[i].op);
    }
    free(r->st);
    kw_pdesc_free(r->desc);
    free(r->refs);
    for (int i = 0; i < r->n_keys; i++)
        free(r->keys[i]);
    free(r->keys);
    free(r->val);
    free(r->samples);
}

/* The decode stage's figures shown without --metrics, first among its columns. */
static const char *const decode_main[] = {"mem/kv_payload_peak_bytes", "mem/pages_peak",
                                          "mem/pages_mean", "mem/attended_mean"};
#define N_DECODE_MAIN ((int)(sizeof decode_main / sizeof decode_main[0]))

/* A column of the view: a key within its branches, and where it sorts (a scorer's
 * keys in pipeline order of the scorer, then the decode stage's main figures, its other
 * mem/ ones, gen/ ones, others). */
typedef struct bcol {
    const char *name;
    int group, sub;
} bcol;

static int col_cmp(const void *a, const void *b)
{
    const bcol *x = a, *y = b;
    if (x->group != y->group)
        return x->group - y->group;
    if (x->sub != y->sub)
        return x->sub - y->sub;
    return strcmp(x->name, y->name);
}

static int columns(const kw_branches *b, bcol **out)
{
    bcol *c = calloc((size_t)b->n_keys + 1, sizeof *c);
    int n = 0;
    if (!c)
        return KW_ENOMEM;
    for (int k = 0; k < b->n_keys; k++) {
        const kw_bkey *bk = &b->keys[k];
        if (bk->branch < 0)
            continue;
        const kw_branch *br = &b->v[bk->branch];
        int pos = 0;
        while (pos < br->n_stages && br->stages[pos] != bk->stage)
            pos++;
        bcol me = {bk->column, 0, pos};
        if (bk->stage == br->root) {
            me = (bcol){bk->column, 1, N_DECODE_MAIN + (!strncmp(bk->column, "mem/", 4) ? 0
                                                        : !strncmp(bk->column, "gen/", 4) ? 1
                                                                                          : 2)};
            for (int i = 0; i < N_DECODE_MAIN; i++)
                if (!strcmp(bk->column, decode_main[i]))
                    me.sub = i;
        }
        int i = 0;
        while (i < n && strcmp(c[i].name, me.name) != 0)
            i++;
        if (i == n)
            c[n++] = me;
        else if (col_cmp(&me, &c[i]) < 0)
            c[i] = me;
    }
    qsort(c, (size_t)n, sizeof *c, col_cmp);
    *out = c;
    return n;
}

/* Shown without --metrics: every top-level key of a scorer but counts and figures that
 * another column gives (ppl = exp(nll)) or that the reference branch gives (..._full),
 * and the decode stage's KV memory, pages and attended tokens. */
static bool shown_by_default(const bcol *c)
{
    static const char *const skip[] = {"positions", "tokens", "nll", "nll_full", "ppl_full"};
    const char *name = strchr(c->name, ':') ? strchr(c->name, ':') + 1 : c->name;
    for (int i = 0; i < N_DECODE_MAIN; i++)
        if (!strcmp(name, decode_main[i]))
            return true;
    if (c->group != 0 || strchr(name, '/'))
        return false;
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (!strcmp(name, skip[i]))
            return false;
    return true;
}

/* The columns to show, in *sel (indexes into c): --metrics' names and patterns in their
 * order ("all": every column), else the default ones. */
static int select_columns(const bcol *c, int n, const char *metrics, const char *run,
                          int *sel, int *n_sel)
{
    *n_sel = 0;
    if (!metrics) {
        for (int i = 0; i < n; i++)
            if (shown_by_default(&c[i]))
                sel[(*n_sel)++] = i;
        for (int i = 0; *n_sel == 0 && i < n; i++)
            sel[(*n_sel)++] = i;
        return 0;
    }
    char *list = strdup(metrics), *save = NULL;
    if (!list)
        return kw_cli_usage("compare", "out of memory");
    int rc = 0;
    for (char *m = strtok_r(list, ",", &save); m && rc == 0; m = strtok_r(NULL, ",", &save)) {
        while (*m == ' ')
            m++;
        const char *pat = !strcmp(m, "all") ? "*" : m;
        bool any = false;
        for (int i = 0; i < n; i++) {
            if (fnmatch(pat, c[i].name, 0) != 0)
                continue;
            any = true;
            bool have = false;
            for (int j = 0; j < *n_sel && !have; j++)
                have = sel[j] == i;
            if (!have)
                sel[(*n_sel)++] = i;
        }
        if (!any) {
            char known[1024] = "";
            for (int i = 0, k = 0; i < n && k < (int)sizeof known - 1; i++)
                k += snprintf(known + k, sizeof known - (size_t)k, "%s%s", i ? ", " : "",
                              c[i].name);
            rc = kw_cli_usage("compare", "no branch of run %.8s has a metric '%s' (its "
                              "metrics: %s)", run, m, known);
        }
    }
    free(list);
    return rc;
}

/* Numbers as the table shows them: whole numbers whole, others with 6 digits. */
static void fmt_value(double v, bool table, char *buf, size_t n)
{
    if (table && fabs(v) < 1e15 && v == floor(v))
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, table ? "%.6g" : "%.15g", v);
}

typedef struct bview {
    const brun *r;
    const kw_branches *b;
    const bcol *c;
    const int *sel;
    int n_sel, ref; /* ref: -1 without a reference branch */
    double *v;      /* (b->n x n_sel) */
    bool *has;
    long *samples; /* (b->n) */
} bview;

static bool ratio(const bview *w, int br, int j, double *out)
{
    if (w->ref < 0)
        return false;
    size_t i = (size_t)br * (size_t)w->n_sel + (size_t)j,
           r = (size_t)w->ref * (size_t)w->n_sel + (size_t)j;
    if (!w->has[i] || !w->has[r] || w->v[r] == 0 || !isfinite(w->v[r]))
        return false;
    *out = w->v[i] / w->v[r];
    return true;
}

/* Rows: the reference first, then the other branches in pipeline order. */
static int row_branch(const bview *w, int row)
{
    if (w->ref < 0)
        return row;
    return row == 0 ? w->ref : row <= w->ref ? row - 1 : row;
}

static int print_json(const bview *w, const char *u)
{
    json_t *o = json_object(), *ms = json_array(), *bs = json_array();
    json_object_set_new(o, "run", json_string(u));
    json_object_set_new(o, "pipeline", json_string(w->r->pipeline));
    json_object_set_new(o, "reference", w->ref < 0 ? json_null()
                                                   : json_string(w->b->v[w->ref].name));
    for (int j = 0; j < w->n_sel; j++)
        json_array_append_new(ms, json_string(w->c[w->sel[j]].name));
    json_object_set_new(o, "metrics", ms);
    for (int row = 0; row < w->b->n; row++) {
        int br = row_branch(w, row);
        json_t *e = json_object(), *st = json_array(), *vals = json_object(),
               *rat = json_object();
        json_object_set_new(e, "name", json_string(w->b->v[br].name));
        for (int i = 0; i < w->b->v[br].n_stages; i++)
            json_array_append_new(st, json_string(w->r->st[w->b->v[br].stages[i]].id));
        json_object_set_new(e, "stages", st);
        json_object_set_new(e, "samples", json_integer(w->samples[br]));
        for (int j = 0; j < w->n_sel; j++) {
            size_t i = (size_t)br * (size_t)w->n_sel + (size_t)j;
            double q;
            json_t *v = w->has[i] ? json_real(w->v[i]) : NULL; /* NULL: not finite */
            json_object_set_new(vals, w->c[w->sel[j]].name, v ? v : json_null());
            json_t *x = ratio(w, br, j, &q) ? json_real(q) : NULL;
            json_object_set_new(rat, w->c[w->sel[j]].name, x ? x : json_null());
        }
        json_object_set_new(e, "values", vals);
        json_object_set_new(e, "ratios", rat);
        json_array_append_new(bs, e);
    }
    json_object_set_new(o, "branches", bs);
    int rc = json_dumpf(o, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(15));
    fputc('\n', stdout);
    json_decref(o);
    return rc == 0 ? 0 : 3;
}

/* Table, CSV or Markdown: branch, samples, then each metric and its ratio. */
static int print_rows(const bview *w, kw_fmt fmt, const char *u, bool color)
{
    bool table = fmt == KW_FMT_TABLE, ratios = w->ref >= 0;
    int ncol = 2 + w->n_sel * (ratios ? 2 : 1);
    char **head = calloc((size_t)ncol, sizeof *head);
    char **cell = calloc((size_t)ncol, sizeof *cell);
    const char **vals = calloc((size_t)ncol, sizeof *vals);
    kw_table t = {0};
    int rc = head && cell && vals ? 0 : KW_ENOMEM;
    for (int c = 0; rc == 0 && c < ncol; c++)
        if (!(cell[c] = malloc(64)))
            rc = KW_ENOMEM;
    if (rc == 0) {
        head[0] = strdup("branch");
        head[1] = strdup("samples");
        for (int j = 0, c = 2; j < w->n_sel; j++) {
            head[c++] = strdup(w->c[w->sel[j]].name);
            if (ratios && (table ? asprintf(&head[c++], "ratio")
                                 : asprintf(&head[c++], "%s ratio", w->c[w->sel[j]].name)) < 0)
                head[c - 1] = NULL;
        }
        for (int c = 0; c < ncol; c++)
            rc = head[c] ? rc : KW_ENOMEM;
    }
    if (rc == 0 && kw__table_init(&t, ncol, (const char *const *)head, 0) != 0)
        rc = KW_ENOMEM;
    for (int row = 0; rc == 0 && row < w->b->n; row++) {
        int br = row_branch(w, row);
        vals[0] = w->b->v[br].name;
        snprintf(cell[1], 64, "%ld", w->samples[br]);
        vals[1] = cell[1];
        for (int j = 0, c = 2; j < w->n_sel; j++) {
            size_t i = (size_t)br * (size_t)w->n_sel + (size_t)j;
            double q;
            if (w->has[i])
                fmt_value(w->v[i], table, cell[c], 64);
            else
                snprintf(cell[c], 64, table ? "-" : "");
            vals[c] = cell[c];
            c++;
            if (!ratios)
                continue;
            if (ratio(w, br, j, &q))
                snprintf(cell[c], 64, table ? "%.4g" : "%.10g", q);
            else
                snprintf(cell[c], 64, table ? "-" : "");
            vals[c] = cell[c];
            c++;
        }
        if (kw__table_add(&t, vals) != 0)
            rc = KW_ENOMEM;
    }
    if (rc == 0 && table) {
        const kw_branch *ref = ratios ? &w->b->v[w->ref] : NULL;
        printf(color ? "\033[1mrun %s\033[0m  %s  %s%s%s\n" : "run %s  %s  %s%s%s\n", u,
               w->r->pipeline, w->r->status, w->r->cell[0] ? "  " : "", w->r->cell);
        printf("%d branch%s; ", w->b->n, w->b->n == 1 ? "" : "es");
        if (ref) {
            printf("ratios to %s (", ref->name);
            for (int i = 0; i < ref->n_stages; i++)
                printf("%s%s", i ? ", " : "", w->r->st[ref->stages[i]].id);
            printf(")\n\n");
        } else {
            printf("no reference: no branch is named *full* (--reference BRANCH picks one)"
                   "\n\n");
        }
        kw__table_print(&t, stdout, color, "");
    } else if (rc == 0) {
        for (int row = -1; row < t.nrows; row++) {
            const char *const *v = row < 0 ? (const char *const *)t.head
                                            : (const char *const *)t.cells +
                                                  (size_t)row * (size_t)ncol;
            if (fmt == KW_FMT_CSV)
                kw__csv_row(stdout, ncol, v);
            else
                kw__md_row(stdout, ncol, v);
            if (row < 0 && fmt == KW_FMT_MD)
                kw__md_rule(stdout, ncol);
        }
    }
    for (int c = 0; c < ncol; c++) {
        free(head ? head[c] : NULL);
        free(cell ? cell[c] : NULL);
    }
    free(head);
    free(cell);
    free(vals);
    kw__table_clear(&t);
    if (rc < 0) {
        kw_error err = {0};
        kw_error_set(&err, rc, "out of memory");
        return kw_cli_fail(&err);
    }
    return 0;
}

static int show_branches(kw_db *db, const char *u, const kw_ropts *o, kw_fmt fmt)
{
    brun r = {0};
    kw_branches b = {0};
    bcol *c = NULL;
    int *sel = NULL, n_sel = 0, ref = -1, ncol = 0;
    kw_error err = {0};
    int rc = brun_read(db, u, &r);
    if (rc == 0 && kw__branches_build(&b, r.st, r.n_st, (const char *const *)r.keys,
                                      r.n_keys, &err) < 0)
        rc = kw_cli_fail(&err);
    if (rc == 0 && b.n == 0) {
        kw_error_set(&err, KW_EINVAL, "run %.8s (%s) has no branches: no stage records its "
                     "metrics under its name (that takes several decode stages, or several "
                     "scorers of one operator); `kvweave show %.8s` lists its metrics", u,
                     r.pipeline, u);
        rc = kw_cli_fail(&err);
    }
    if (rc == 0 && (ncol = columns(&b, &c)) < 0)
        rc = kw_cli_fail(&(kw_error){.code = KW_ENOMEM});
    if (rc == 0 && !(sel = calloc((size_t)ncol + 1, sizeof *sel)))
        rc = kw_cli_fail(&(kw_error){.code = KW_ENOMEM});
    if (rc == 0)
        rc = select_columns(c, ncol, o->metrics, u, sel, &n_sel);
    if (rc == 0) {
        int found = kw__branches_reference(&b, r.st, o->reference, &ref, &err);
        if (found < 0)
            rc = kw_cli_fail(&err);
        else if (found > 0)
            ref = -1;
    }
    bview w = {.r = &r, .b = &b, .c = c, .sel = sel, .n_sel = n_sel, .ref = ref};
    if (rc == 0) {
        w.v = calloc((size_t)b.n * (size_t)n_sel + 1, sizeof *w.v);
        w.has = calloc((size_t)b.n * (size_t)n_sel + 1, sizeof *w.has);
        w.samples = calloc((size_t)b.n + 1, sizeof *w.samples);
        if (!w.v || !w.has || !w.samples)
            rc = kw_cli_fail(&(kw_error){.code = KW_ENOMEM});
    }
    for (int k = 0; rc == 0 && k < b.n_keys; k++) {
        int br = b.keys[k].branch;
        if (br < 0)
            continue;
        w.samples[br] = r.samples[k] > w.samples[br] ? r.samples[k] : w.samples[br];
        for (int j = 0; j < n_sel; j++)
            if (!strcmp(c[sel[j]].name, b.keys[k].column)) {
                w.v[(size_t)br * (size_t)n_sel + (size_t)j] = r.val[k];
                w.has[(size_t)br * (size_t)n_sel + (size_t)j] = true;
            }
    }
    if (rc == 0 && fmt == KW_FMT_JSON)
        rc = print_json(&w, u);
    else if (rc == 0)
        rc = print_rows(&w, fmt, u, kw_cli_color(stdout));
    if (rc == 0 && fmt == KW_FMT_TABLE && !o->metrics && n_sel < ncol)
        printf("\n(%d more metrics: --metrics NAME,PATTERN,... or --metrics all)\n",
               ncol - n_sel);
    free(w.v);
    free(w.has);
    free(w.samples);
    free(sel);
    free(c);
    kw__branches_clear(&b);
    brun_clear(&r);
    return rc;
}

int kw_cmd_compare(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("compare", argc, argv, "db,branches,reference,metrics,format",
                             &o);
    kw_fmt fmt = KW_FMT_TABLE;
    if (rc == 0 && o.format && (kw__fmt_parse(o.format, &fmt) != 0 || fmt == KW_FMT_JSONL))
        rc = kw_cli_usage("compare", "--format must be table, csv, json or md, not '%s'",
                          o.format);
    if (rc == 0 && !o.help && !o.branches && (o.reference || o.metrics || o.format))
        rc = kw_cli_usage("compare", "--reference, --metrics and --format go with --branches");
    if (rc == 0 && !o.help && o.branches && o.npos > 1)
        rc = kw_cli_usage("compare", "--branches shows the branches of one run, not of %d",
                          o.npos);
    if (rc == 0 && (o.help || o.npos < 1 || o.npos > KW_CLI_MAX_RUNS)) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave compare RUN RUN... [--db FILE]\n"
                "       kvweave compare RUN --branches [--reference BRANCH] [--metrics M,...]\n"
                "                       [--format table|csv|json|md] [--db FILE]\n"
                "Run-level metrics side by side, one row per metric, with each run's ratio to "
                "the first; then the params that differ. At most %d runs.\n"
                "--branches: the method branches of one run (each decode stage with the "
                "scorers that read it, as in a budget sweep), one row per branch, each metric "
                "with its ratio to the reference branch: --reference names it (a branch, one "
                "of its stages, or the start of a name), else the branch named *full*. "
                "--metrics: names or patterns (score,mem/*; all: every one); by default the "
                "scorers' main metrics and the KV memory, pages and attended tokens.\n",
                KW_CLI_MAX_RUNS);
        free(o.pos);
        return o.help ? 0 : 2;
    }
    kw_db *db = NULL;
    char runs[KW_CLI_MAX_RUNS][37];
    if (rc == 0)
        rc = kw__ropts_open_db(&o, true, &db);
    for (int i = 0; rc == 0 && i < o.npos; i++)
        rc = kw__resolve_run(db, o.pos[i], runs[i]);
    if (rc == 0 && o.branches) {
        rc = show_branches(db, runs[0], &o, fmt);
        kw_db_close(db);
        free(o.pos);
        return rc;
    }
    bool color = kw_cli_color(stdout);
    for (int i = 0; rc == 0 && i < o.npos; i++) {
        const char *a[] = {runs[i]};
        char *desc = kw__scalar(db, "SELECT pipeline || '  ' || status || CASE WHEN cell_label "
                            "<> '' THEN '  ' || cell_label ELSE '' END FROM runs WHERE uuid = "
                            "?1", a, 1);
        printf("[%d] %s  %s\n", i + 1, runs[i], desc ? desc : "");
        free(desc);
    }
    char sql[KW_CLI_MAX_RUNS * 6 + 256];
    if (rc == 0) {
        snprintf(sql, sizeof sql, "SELECT DISTINCT key AS metric FROM metrics WHERE sample IS "
                 "NULL AND run IN (%s) ORDER BY key", kw__in_list(o.npos));
        rc = pivot(db, runs, o.npos, sql,
                   "SELECT value FROM metrics WHERE run = ?1 AND sample IS NULL AND key = ?2 "
                   "ORDER BY step DESC LIMIT 1", true, false, "metric", color);
    }
    if (rc == 0 && o.npos > 1) {
        snprintf(sql, sizeof sql, "SELECT DISTINCT key AS param FROM params WHERE run IN (%s) "
                 "ORDER BY key", kw__in_list(o.npos));
        rc = pivot(db, runs, o.npos, sql, "SELECT value FROM params WHERE run = ?1 AND key = "
                   "?2", false, true, "param", color);
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}
