/* kvweave runs | show | query | export | db merge: reading the results store
 * (store/results.h), and what the result commands share (cmd_results.h); compare is in
 * cmd_compare.c. Every command but `db merge` opens the database read-only. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_results.h"
#include "cmd_results_fmt.h"
#include "kvweave/util.h"
#include "results.h"

int kw__ropts_parse(const char *cmd, int argc, char **argv, const char *allowed,
                    kw_ropts *o)
{
    memset(o, 0, sizeof *o);
    o->limit = -1;
    o->pos = calloc((size_t)argc + 1, sizeof *o->pos);
    if (!o->pos)
        return kw_cli_usage(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            o->help = true;
            continue;
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            o->pos[o->npos++] = argv[i];
            continue;
        }
        char name[32];
        const char *val = NULL, *eq = strchr(a, '=');
        if (!strcmp(a, "-o"))
            snprintf(name, sizeof name, "output");
        else if (!strncmp(a, "--", 2))
            snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2),
                     a + 2);
        else
            return kw_cli_usage(cmd, "unknown option '%s' (see --help)", a);
        size_t nl = strlen(name);
        const char *p = strstr(allowed, name);
        if (!nl || !p || (p != allowed && p[-1] != ',') || (p[nl] && p[nl] != ','))
            return kw_cli_usage(cmd, "unknown option '%s' (see --help)", a);
        if (!strcmp(name, "yaml") && !eq) { /* the flags: no value */
            o->yaml = true;
            continue;
        }
        if (!strcmp(name, "branches")) {
            if (eq)
                return kw_cli_usage(cmd, "option '--branches' takes no value");
            o->branches = true;
            continue;
        }
        if (eq && a[1] == '-')
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return kw_cli_usage(cmd, "option '%s' needs a value", a);
        if (!strcmp(name, "db"))
            o->db = val;
        else if (!strcmp(name, "format"))
            o->format = val;
        else if (!strcmp(name, "pipeline"))
            o->pipeline = val;
        else if (!strcmp(name, "output"))
            o->output = val;
        else if (!strcmp(name, "reference"))
            o->reference = val;
        else if (!strcmp(name, "metrics"))
            o->metrics = val;
        else if (!strcmp(name, "limit")) {
            char *end;
            o->limit = strtol(val, &end, 10);
            if (!*val || *end || o->limit < 0)
                return kw_cli_usage(cmd, "--limit needs a count >= 0, not '%s'", val);
        }
    }
    return 0;
}

int kw__ropts_open_db(const kw_ropts *o, bool readonly, kw_db **db)
{
    kw_error err = {0};
    if (kw_db_open(kw_cli_db_path(o->db), readonly, db, &err) < 0)
        return kw_cli_fail(&err);
    return 0;
}

static void section(const char *title, bool color)
{
    printf(color ? "\n\033[1m%s\033[0m\n" : "\n%s\n", title);
}

/* ---- collecting query rows into a table, with per-column formatting ---- */

/* fmt, one letter per column: r raw, n number, s seconds (%.3f), b bytes, t time,
 * d duration, u uuid prefix (8). */
typedef struct collect {
    kw_table t;
    const char *fmt;
    int max_cell;
    bool ready;
} collect;

static void format_cell(char f, const char *v, char *buf, size_t n)
{
    double d = v ? strtod(v, NULL) : 0;
    if (!v) {
        snprintf(buf, n, "-");
        return;
    }
    switch (f) {
    case 'n': kw__fmt_num(v, buf, n); break;
    case 's': snprintf(buf, n, "%.3f", d); break;
    case 'b': kw__fmt_bytes(d, buf, n); break;
    case 't': kw__fmt_time(d, buf, n); break;
    case 'd': kw__fmt_duration(d, buf, n); break;
    case 'u': snprintf(buf, n, "%.8s", v); break;
    default: snprintf(buf, n, "%s", v);
    }
}

static int on_collect(void *ud, int ncol, const char *const *names, const char *const *vals,
                      const int *types)
{
    collect *c = ud;
    if (!vals) {
        if (!c->ready && kw__table_init(&c->t, ncol, names, c->max_cell) != 0)
            return KW_ENOMEM;
        c->ready = true;
        return 0;
    }
    char buf[16][64];
    const char **row = malloc((size_t)ncol * sizeof *row);
    if (!row)
        return KW_ENOMEM;
    for (int i = 0; i < ncol; i++) {
        char f = c->fmt && (int)strlen(c->fmt) > i ? c->fmt[i] : 'r';
        if (f == 'r' || i >= 16 || !vals[i]) {
            row[i] = vals[i];
            continue;
        }
        format_cell(f, vals[i], buf[i], sizeof buf[i]);
        row[i] = buf[i];
    }
    int rc = kw__table_add(&c->t, row) == 0 ? 0 : KW_ENOMEM;
    free(row);
    return rc;
}

/* Runs sql with args and prints the rows as a table (nothing when there are none, or
 * `none` when given). */
static int print_query(kw_db *db, const char *sql, const char *const *args, int nargs,
                       const char *fmt, const char *title, const char *none, bool color)
{
    collect c = {.fmt = fmt, .max_cell = 60};
    kw_error err = {0};
    int rc = kw_db_query(db, sql, args, nargs, on_collect, &c, &err);
    if (rc < 0) {
        kw__table_clear(&c.t);
        return kw_cli_fail(&err);
    }
    if (title && (c.t.nrows > 0 || none))
        section(title, color);
    if (c.t.nrows > 0)
        kw__table_print(&c.t, stdout, color, "  ");
    else if (none)
        printf("  %s\n", none);
    kw__table_clear(&c.t);
    return 0;
}

static int on_scalar(void *ud, int ncol, const char *const *names, const char *const *vals,
                     const int *types)
{
    char **out = ud;
    if (vals && !*out && vals[0])
        *out = strdup(vals[0]);
    return 0;
}

char *kw__scalar(kw_db *db, const char *sql, const char *const *args, int nargs)
{
    char *out = NULL;
    kw_db_query(db, sql, args, nargs, on_scalar, &out, NULL);
    return out;
}

static double scalar_num(kw_db *db, const char *sql, const char *const *args, int nargs,
                         bool *found)
{
    char *s = kw__scalar(db, sql, args, nargs);
    *found = s != NULL;
    double d = s ? strtod(s, NULL) : 0;
    free(s);
    return d;
}

int kw__resolve_run(kw_db *db, const char *ref, char uuid[37])
{
    kw_error err = {0};
    if (kw_db_resolve_run(db, ref, uuid, &err) < 0)
        return kw_cli_fail(&err);
    return 0;
}

int kw__on_first_column(void *ud, int ncol, const char *const *names,
                        const char *const *vals, const int *types)
{
    kw_table *t = ud;
    if (!vals)
        return t->head || kw__table_init(t, 1, names, 0) == 0 ? 0 : KW_ENOMEM;
    return kw__table_add(t, vals) == 0 ? 0 : KW_ENOMEM;
}

const char *kw__in_list(int n)
{
    static char buf[KW_CLI_MAX_RUNS * 6];
    buf[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s?%d", i ? ", " : "", i + 1);
    return buf;
}

/* ---- runs ---- */

int kw_cmd_runs(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("runs", argc, argv, "db,limit,pipeline", &o);
    if (rc == 0 && (o.help || o.npos > 0)) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave runs [--limit N] [--pipeline NAME] [--db FILE]\n"
                "One line per run, newest first (--limit 20 by default, 0 for all).\n");
        rc = o.help ? 0 : 2;
    }
    if (rc != 0 || o.help) {
        free(o.pos);
        return rc;
    }
    kw_db *db = NULL;
    rc = kw__ropts_open_db(&o, true, &db);
    if (rc == 0) {
        char lim[32], now[32];
        snprintf(lim, sizeof lim, "%ld", o.limit < 0 ? 20 : o.limit == 0 ? -1 : o.limit);
        snprintf(now, sizeof now, "%.3f", kw_wall_time());
        const char *args[] = {o.pipeline ? o.pipeline : "", lim, now};
        rc = print_query(
            db,
            "SELECT r.uuid AS run, r.status, r.pipeline, r.cell_label AS cell, "
            "(SELECT count(*) FROM samples s WHERE s.run = r.uuid AND s.status = 'FINISHED') "
            "AS ok, (SELECT count(*) FROM samples s WHERE s.run = r.uuid AND s.status = "
            "'FAILED') AS failed, r.start_time AS 'started (UTC)', "
            "coalesce(r.end_time, CAST(?3 AS REAL)) - r.start_time AS wall FROM runs r "
            "WHERE ?1 = '' OR r.pipeline = ?1 ORDER BY r.start_time DESC, r.rowid DESC "
            "LIMIT CAST(?2 AS INTEGER)",
            args, 3, "urrrnntd", NULL, "no runs", kw_cli_color(stdout));
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}

/* ---- show ---- */

static int on_provenance(void *ud, int ncol, const char *const *names,
                         const char *const *vals, const int *types)
{
    if (!vals)
        return 0;
    double *times = ud;
    for (int i = 0; i < ncol; i++) {
        const char *v = vals[i];
        char buf[128];
        if (!v || !*v)
            continue;
        if (!strcmp(names[i], "yaml")) {
            int lines = 1;
            for (const char *p = v; *p; p++)
                lines += *p == '\n' && p[1];
            snprintf(buf, sizeof buf, "(%d lines; `kvweave show RUN --yaml` prints it)", lines);
            v = buf;
        } else if (!strcmp(names[i], "start_time") || !strcmp(names[i], "end_time")) {
            times[names[i][0] == 'e'] = strtod(v, NULL);
            kw__fmt_time(strtod(v, NULL), buf, sizeof buf);
            strcat(buf, " UTC");
            v = buf;
        }
        printf("  %-15s %s\n", names[i], v);
    }
    return 0;
}

static void show_overlap(kw_db *db, const char *const *arg, double wall, bool color)
{
    bool found;
    double ov = scalar_num(db, "SELECT value FROM metrics WHERE run = ?1 AND sample IS NULL "
                           "AND key = 'overlap' ORDER BY step DESC LIMIT 1", arg, 1, &found);
    char w[32];
    kw__fmt_duration(wall, w, sizeof w);
    if (found) {
        printf("  overlap %.2f (recorded by the run; wall %s)\n", ov, w);
        return;
    }
    bool lanes;
    double n = scalar_num(db, "SELECT count(*) FROM stages WHERE run = ?1 AND stage = '*'",
                          arg, 1, &lanes);
    double busy = scalar_num(db, n > 0 ? "SELECT sum(busy_s) FROM stages WHERE run = ?1 AND "
                                         "stage = '*'"
                                       : "SELECT sum(busy_s) FROM stages WHERE run = ?1",
                             arg, 1, &found);
    if (!found || !(wall > 0)) {
        printf("  overlap -  (no lane timings%s)\n", wall > 0 ? "" : " or no wall time");
        return;
    }
    char b[32];
    kw__fmt_duration(busy, b, sizeof b);
    printf("  overlap %.2f (lane busy %s / wall %s, from the %s rows)\n", busy / wall, b, w,
           n > 0 ? "lane total" : "per-stage");
}

static int show_run(kw_db *db, const char *u, bool color)
{
    const char *arg[] = {u};
    double times[2] = {0, 0};
    kw_error err = {0};
    printf(color ? "\033[1mrun %s\033[0m\n" : "run %s\n", u);
    if (kw_db_query(db, "SELECT * FROM runs WHERE uuid = ?1", arg, 1, on_provenance, times,
                    &err) < 0)
        return kw_cli_fail(&err);
    double wall = (times[1] > 0 ? times[1] : kw_wall_time()) - times[0];
    char w[32];
    kw__fmt_duration(wall, w, sizeof w);
    bool f;
    double ok = scalar_num(db, "SELECT count(*) FROM samples WHERE run = ?1 AND status = "
                           "'FINISHED'", arg, 1, &f);
    double bad = scalar_num(db, "SELECT count(*) FROM samples WHERE run = ?1 AND status = "
                            "'FAILED'", arg, 1, &f);
    printf("  %-15s %s%s\n  %-15s %.0f ok, %.0f failed\n", "wall", w,
           times[1] > 0 ? "" : " (still running)", "samples", ok, bad);
    /* the run's sections, each a query of its uuid: title, column kinds, SQL */
    static const struct {
        const char *title, *cols, *sql;
    } sections[] = {
        {"params", "rr", "SELECT key, value FROM params WHERE run = ?1 ORDER BY key"},
        {"scores", "rnn",
         "SELECT substr(k.key, 7) AS task, coalesce((SELECT value FROM metrics r WHERE "
         "r.run = ?1 AND r.sample IS NULL AND r.key = k.key ORDER BY r.step DESC LIMIT 1), "
         "(SELECT avg(value) FROM metrics p WHERE p.run = ?1 AND p.sample IS NOT NULL AND "
         "p.key = k.key)) AS score, (SELECT count(DISTINCT sample) FROM metrics p WHERE "
         "p.run = ?1 AND p.sample IS NOT NULL AND p.key = k.key) AS samples FROM (SELECT "
         "DISTINCT key FROM metrics WHERE run = ?1 AND key LIKE 'score/%') k ORDER BY task"},
        {"metrics", "rnn",
         "SELECT key AS metric, value, step FROM metrics m WHERE run = ?1 AND sample IS NULL "
         "AND key NOT LIKE 'score/%' AND step = (SELECT max(step) FROM metrics x WHERE "
         "x.run = m.run AND x.sample IS NULL AND x.key = m.key) ORDER BY key"},
        {"per-sample metrics", "rnnnn",
         "SELECT key AS metric, avg(value) AS mean, min(value) AS min, max(value) AS max, "
         "count(DISTINCT sample) AS samples FROM metrics WHERE run = ?1 AND sample IS NOT "
         "NULL AND key NOT LIKE 'score/%' GROUP BY key ORDER BY key"},
        {"stages", "rrnssb",
         "SELECT stage, lane, tasks, busy_s AS 'busy s', wait_s AS 'wait s', peak_bytes AS "
         "peak FROM stages WHERE run = ?1 AND stage <> '*' ORDER BY rowid"},
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof sections / sizeof *sections; i++)
        rc = print_query(db, sections[i].sql, arg, 1, sections[i].cols, sections[i].title, NULL,
                         color);
    if (rc == 0) {
        char wall_s[32];
        snprintf(wall_s, sizeof wall_s, "%.6f", wall > 0 ? wall : 0);
        const char *args2[] = {u, wall_s};
        rc = print_query(
            db,
            "SELECT lane, sum(tasks) AS tasks, sum(busy_s) AS 'busy s', sum(wait_s) AS "
            "'wait s', max(peak_bytes) AS peak, CASE WHEN CAST(?2 AS REAL) > 0 THEN "
            "sum(busy_s) / CAST(?2 AS REAL) END AS 'busy/wall' FROM stages WHERE run = ?1 AND "
            "(stage = '*') = (EXISTS (SELECT 1 FROM stages WHERE run = ?1 AND stage = '*')) "
            "GROUP BY lane ORDER BY lane",
            args2, 2, "rnssbn", "lanes", NULL, color);
    }
    if (rc == 0)
        show_overlap(db, arg, wall, color);
    return rc;
}

int kw_cmd_show(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("show", argc, argv, "db,yaml", &o);
    if (rc == 0 && (o.help || o.npos != 1)) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave show RUN [--yaml] [--db FILE]\nRUN: 'last', a uuid or a uuid "
                "prefix (>= 6 hex digits). Provenance, params, scores, metrics, stage and "
                "lane timings, overlap; --yaml prints the run's pipeline text instead.\n");
        rc = o.help ? 0 : 2;
        free(o.pos);
        return rc;
    }
    kw_db *db = NULL;
    char u[37];
    if (rc == 0)
        rc = kw__ropts_open_db(&o, true, &db);
    if (rc == 0)
        rc = kw__resolve_run(db, o.pos[0], u);
    if (rc == 0 && o.yaml) {
        const char *arg[] = {u};
        char *yaml = kw__scalar(db, "SELECT yaml FROM runs WHERE uuid = ?1", arg, 1);
        fputs(yaml ? yaml : "", stdout);
        free(yaml);
    } else if (rc == 0) {
        rc = show_run(db, u, kw_cli_color(stdout));
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}

/* ---- query ---- */

typedef struct qout {
    kw_fmt fmt;
    FILE *f;
    collect c;
    long rows;
    bool first, color, any;
} qout;

static void qout_flush(qout *q)
{
    if (q->fmt == KW_FMT_TABLE && q->c.ready) {
        kw__table_print(&q->c.t, q->f, q->color, "");
        fprintf(q->f, "(%d row%s)\n", q->c.t.nrows, q->c.t.nrows == 1 ? "" : "s");
        kw__table_clear(&q->c.t);
        q->c.ready = false;
    }
    if (q->fmt == KW_FMT_JSON && q->any)
        fprintf(q->f, "\n]\n");
    q->any = false;
}

static int on_query(void *ud, int ncol, const char *const *names, const char *const *vals,
                    const int *types)
{
    qout *q = ud;
    if (!vals)
        qout_flush(q);
    switch (q->fmt) {
    case KW_FMT_TABLE:
        return on_collect(&q->c, ncol, names, vals, types);
    case KW_FMT_CSV:
        kw__csv_row(q->f, ncol, vals ? vals : names);
        return 0;
    case KW_FMT_MD:
        kw__md_row(q->f, ncol, vals ? vals : names);
        if (!vals)
            kw__md_rule(q->f, ncol);
        return 0;
    case KW_FMT_JSON:
        if (!vals) {
            fprintf(q->f, "[\n");
            q->any = true;
            q->first = true;
            return 0;
        }
        kw__json_row(q->f, ncol, names, vals, types, NULL, q->first);
        q->first = false;
        return 0;
    case KW_FMT_JSONL:
        if (vals)
            kw__jsonl_row(q->f, ncol, names, vals, types, NULL);
        return 0;
    }
    return 0;
}

int kw_cmd_query(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("query", argc, argv, "db,format", &o);
    kw_fmt fmt = KW_FMT_TABLE;
    if (rc == 0 && o.format && kw__fmt_parse(o.format, &fmt) != 0)
        rc = kw_cli_usage("query", "--format must be table, csv, json, jsonl or md, not '%s'",
                          o.format);
    if (rc == 0 && (o.help || o.npos != 1)) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave query \"SQL\" [--format table|csv|json|jsonl|md] [--db FILE]\n"
                "Runs read-only SQL on the results store (tables: runs, params, metrics, "
                "samples, stages, artifacts, cache).\n");
        rc = o.help ? 0 : 2;
    }
    if (rc != 0 || o.help) {
        free(o.pos);
        return rc;
    }
    kw_db *db = NULL;
    rc = kw__ropts_open_db(&o, true, &db);
    if (rc == 0) {
        qout q = {.fmt = fmt, .f = stdout, .color = kw_cli_color(stdout)};
        q.c.max_cell = 80;
        kw_error err = {0};
        int qrc = kw_db_query(db, o.pos[0], NULL, 0, on_query, &q, &err);
        qout_flush(&q);
        kw__table_clear(&q.c.t);
        if (qrc < 0)
            rc = kw_cli_fail(&err);
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}

/* ---- export ---- */

typedef struct eout {
    kw_fmt fmt;
    FILE *f;
    bool first;
    bool *json_cols;
} eout;

static int on_export(void *ud, int ncol, const char *const *names, const char *const *vals,
                     const int *types)
{
    eout *e = ud;
    if (!vals) {
        if (e->fmt == KW_FMT_CSV)
            kw__csv_row(e->f, ncol, names);
        if (e->fmt == KW_FMT_MD) {
            kw__md_row(e->f, ncol, names);
            kw__md_rule(e->f, ncol);
        }
        if (e->fmt == KW_FMT_JSON || e->fmt == KW_FMT_JSONL) {
            free(e->json_cols);
            e->json_cols = calloc((size_t)ncol, sizeof *e->json_cols);
            for (int i = 0; e->json_cols && i < ncol; i++)
                e->json_cols[i] = !strcmp(names[i], "answers");
        }
        return 0;
    }
    if (e->fmt == KW_FMT_CSV)
        kw__csv_row(e->f, ncol, vals);
    else if (e->fmt == KW_FMT_MD)
        kw__md_row(e->f, ncol, vals);
    else if (e->fmt == KW_FMT_JSONL)
        kw__jsonl_row(e->f, ncol, names, vals, types, e->json_cols);
    else
        kw__json_row(e->f, ncol, names, vals, types, e->json_cols, e->first);
    e->first = false;
    return 0;
}

/* SELECT of the per-sample rows, one column per per-sample metric key. Arguments: the
 * runs (?1..?n; none: every run), then the keys. */
static char *export_sql(int nruns, const kw_table *keys)
{
    char *sql = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&sql, &len);
    if (!m)
        return NULL;
    fputs("SELECT s.run, s.idx, s.sample_id, s.status, s.prediction, s.answers, s.error", m);
    for (int k = 0; k < keys->nrows; k++) {
        fprintf(m, ", (SELECT value FROM metrics m WHERE m.run = s.run AND m.sample = s.idx "
                   "AND m.key = ?%d ORDER BY m.step DESC LIMIT 1) AS \"", nruns + k + 1);
        for (const char *p = keys->cells[k]; *p; p++)
            fputs(*p == '"' ? "\"\"" : (char[2]){*p, 0}, m);
        fputc('"', m);
    }
    fputs(" FROM samples s JOIN runs r ON r.uuid = s.run", m);
    if (nruns > 0)
        fprintf(m, " WHERE s.run IN (%s)", kw__in_list(nruns));
    fputs(" ORDER BY r.start_time, s.run, s.idx", m);
    fclose(m);
    return sql;
}

static int export_rows(kw_db *db, char (*runs)[37], int n, eout *e)
{
    const char *args[KW_CLI_MAX_RUNS + 1024];
    for (int i = 0; i < n; i++)
        args[i] = runs[i];
    char ksql[KW_CLI_MAX_RUNS * 6 + 160];
    snprintf(ksql, sizeof ksql, "SELECT DISTINCT key FROM metrics WHERE sample IS NOT NULL%s%s%s "
             "ORDER BY key LIMIT 1024", n ? " AND run IN (" : "", n ? kw__in_list(n) : "",
             n ? ")" : "");
    kw_table keys = {0};
    kw_error err = {0};
    int rc = kw_db_query(db, ksql, args, n, kw__on_first_column, &keys, &err);
    for (int k = 0; rc == KW_OK && k < keys.nrows; k++)
        args[n + k] = keys.cells[k];
    char *sql = rc == KW_OK ? export_sql(n, &keys) : NULL;
    if (rc == KW_OK && !sql)
        rc = kw_error_set(&err, KW_ENOMEM, "out of memory");
    if (rc == KW_OK) {
        if (e->fmt == KW_FMT_JSON)
            fputs("[\n", e->f);
        rc = kw_db_query(db, sql, args, n + keys.nrows, on_export, e, &err);
        if (e->fmt == KW_FMT_JSON)
            fputs(e->first ? "]\n" : "\n]\n", e->f);
    }
    free(sql);
    kw__table_clear(&keys);
    return rc < 0 ? kw_cli_fail(&err) : 0;
}

int kw_cmd_export(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("export", argc, argv, "db,format,output", &o);
    kw_fmt fmt = KW_FMT_CSV;
    if (rc == 0 && o.format && (kw__fmt_parse(o.format, &fmt) != 0 || fmt == KW_FMT_TABLE))
        rc = kw_cli_usage("export", "--format must be csv, json, jsonl or md, not '%s'",
                          o.format);
    if (rc == 0 && (o.help || o.npos > KW_CLI_MAX_RUNS)) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave export [RUN...] [--format csv|json|jsonl|md] [-o FILE] [--db FILE]\n"
                "Per-sample rows (run, idx, sample_id, status, prediction, answers, error, "
                "then one column per per-sample metric) of the runs given, or of every run.\n");
        rc = o.help ? 0 : 2;
    }
    if (rc != 0 || o.help) {
        free(o.pos);
        return rc;
    }
    kw_db *db = NULL;
    char runs[KW_CLI_MAX_RUNS][37];
    rc = kw__ropts_open_db(&o, true, &db);
    for (int i = 0; rc == 0 && i < o.npos; i++)
        rc = kw__resolve_run(db, o.pos[i], runs[i]);
    FILE *f = stdout;
    if (rc == 0 && o.output && !(f = fopen(o.output, "w"))) {
        kw_error err = {0};
        kw_error_set(&err, KW_EIO, "cannot write '%s'", o.output);
        rc = kw_cli_fail(&err);
    }
    if (rc == 0) {
        eout e = {.fmt = fmt, .f = f, .first = true};
        rc = export_rows(db, runs, o.npos, &e);
        free(e.json_cols);
        if (f != stdout && fclose(f) != 0 && rc == 0) {
            kw_error err = {0};
            kw_error_set(&err, KW_EIO, "cannot write '%s'", o.output);
            rc = kw_cli_fail(&err);
        }
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}

/* ---- db merge ---- */

int kw_cmd_db(int argc, char **argv)
{
    kw_ropts o;
    int rc = kw__ropts_parse("db", argc, argv, "db", &o);
    int first = o.db ? 1 : 2; /* without --db, the first argument after merge is DEST */
    if (rc == 0 && (o.help || o.npos < first + 1 || strcmp(o.pos[0], "merge"))) {
        fprintf(o.help ? stdout : stderr,
                "usage: kvweave db merge DEST SHARD...   (or: db merge SHARD... --db DEST)\n"
                "Copies the runs DEST lacks (and runs DEST has as RUNNING that a shard has "
                "ended) from each shard; merging twice changes nothing.\n");
        free(o.pos);
        return o.help ? 0 : 2;
    }
    if (rc != 0) {
        free(o.pos);
        return rc;
    }
    kw_db *db = NULL;
    kw_error err = {0};
    const char *dest = o.db ? o.db : o.pos[1];
    if (kw_db_open(dest, false, &db, &err) < 0) {
        free(o.pos);
        return kw_cli_fail(&err);
    }
    for (int i = first; i < o.npos; i++) {
        kw_db_merge_stats st;
        kw_error e = {0};
        if (kw_db_merge(db, o.pos[i], &st, &e) < 0) {
            int x = kw_cli_fail(&e);
            rc = x > rc ? x : rc;
            continue;
        }
        printf("%s: %lld added, %lld updated, %lld already in %s\n", o.pos[i],
               (long long)st.added, (long long)st.updated, (long long)st.skipped, dest);
    }
    kw_db_close(db);
    free(o.pos);
    return rc;
}
