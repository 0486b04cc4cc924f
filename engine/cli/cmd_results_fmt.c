/* Output of the result commands (cmd_results_fmt.h). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd_results_fmt.h"
#include "results.h"

#define BOLD "\033[1m"
#define RESET "\033[0m"

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int kw__table_init(kw_table *t, int ncol, const char *const *head, int max_cell)
{
    memset(t, 0, sizeof *t);
    t->ncol = ncol;
    t->max_cell = max_cell;
    t->head = calloc((size_t)ncol, sizeof *t->head);
    if (!t->head)
        return -1;
    for (int i = 0; i < ncol; i++)
        t->head[i] = strdup(head[i] ? head[i] : "");
    return 0;
}

int kw__table_add(kw_table *t, const char *const *vals)
{
    if (t->nrows == t->cap) {
        int cap = t->cap ? 2 * t->cap : 16;
        char **c = realloc(t->cells, (size_t)cap * (size_t)t->ncol * sizeof *c);
        if (!c)
            return -1;
        t->cells = c;
        t->cap = cap;
    }
    char **row = t->cells + (size_t)t->nrows * (size_t)t->ncol;
    for (int i = 0; i < t->ncol; i++)
        row[i] = dup_or_null(vals[i]);
    t->nrows++;
    return 0;
}

void kw__table_clear(kw_table *t)
{
    for (int i = 0; t->head && i < t->ncol; i++)
        free(t->head[i]);
    for (size_t i = 0; i < (size_t)t->nrows * (size_t)t->ncol; i++)
        free(t->cells[i]);
    free(t->head);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* Display width in characters of UTF-8 text (continuation bytes do not count). */
static int width(const char *s, int max)
{
    int w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return max > 0 && w > max ? max : w;
}

static bool is_number(const char *s)
{
    if (!s || !*s)
        return false;
    char *end;
    strtod(s, &end);
    return *end == '\0';
}

/* Prints s padded to w characters, cut at max (with "..."), control chars as spaces. */
static void put_cell(FILE *f, const char *s, int w, int max, bool right)
{
    int cw = width(s, max);
    if (right)
        for (int i = cw; i < w; i++)
            fputc(' ', f);
    int shown = 0, full = width(s, 0);
    for (const char *p = s; *p; p++) {
        bool start = ((unsigned char)*p & 0xc0) != 0x80;
        if (start && max > 0 && full > max && shown == max - 3) {
            fputs("...", f);
            shown += 3;
            break;
        }
        if (start)
            shown++;
        fputc((unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p, f);
    }
    if (!right)
        for (int i = cw; i < w; i++)
            fputc(' ', f);
}

static const char *status_color(const char *s)
{
    if (!s)
        return NULL;
    if (!strcmp(s, "FINISHED"))
        return "\033[32m";
    if (!strcmp(s, "FAILED"))
        return "\033[31m";
    if (!strcmp(s, "RUNNING"))
        return "\033[33m";
    if (!strcmp(s, "KILLED"))
        return "\033[35m";
    return NULL;
}

void kw__table_print(const kw_table *t, FILE *f, bool color, const char *indent)
{
    int *w = calloc((size_t)t->ncol, sizeof *w);
    bool *right = calloc((size_t)t->ncol, sizeof *right);
    if (!w || !right) {
        free(w);
        free(right);
        return;
    }
    for (int c = 0; c < t->ncol; c++) {
        w[c] = width(t->head[c], t->max_cell);
        right[c] = t->nrows > 0;
        for (int r = 0; r < t->nrows; r++) {
            const char *v = t->cells[(size_t)r * (size_t)t->ncol + (size_t)c];
            int cw = width(v ? v : "", t->max_cell);
            w[c] = cw > w[c] ? cw : w[c];
            if (v && *v && strcmp(v, "-") && !is_number(v))
                right[c] = false;
        }
    }
    for (int r = -1; r < t->nrows; r++) {
        fputs(indent ? indent : "", f);
        if (r < 0 && color)
            fputs(BOLD, f);
        for (int c = 0; c < t->ncol; c++) {
            const char *v = r < 0 ? t->head[c] : t->cells[(size_t)r * (size_t)t->ncol + (size_t)c];
            const char *sc = r >= 0 && color ? status_color(v) : NULL;
            if (sc)
                fputs(sc, f);
            bool last = c == t->ncol - 1;
            put_cell(f, v ? v : "", last && !right[c] ? 0 : w[c], t->max_cell, right[c]);
            if (sc)
                fputs(RESET, f);
            if (!last)
                fputs("  ", f);
        }
        if (r < 0 && color)
            fputs(RESET, f);
        fputc('\n', f);
    }
    free(w);
    free(right);
}

int kw__fmt_parse(const char *s, kw_fmt *out)
{
    static const struct {
        const char *name;
        kw_fmt fmt;
    } names[] = {{"table", KW_FMT_TABLE}, {"csv", KW_FMT_CSV}, {"json", KW_FMT_JSON},
                 {"md", KW_FMT_MD}, {"markdown", KW_FMT_MD}, {"jsonl", KW_FMT_JSONL}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].fmt;
            return 0;
        }
    return -1;
}

void kw__csv_row(FILE *f, int ncol, const char *const *vals)
{
    for (int i = 0; i < ncol; i++) {
        const char *v = vals[i] ? vals[i] : "";
        if (i)
            fputc(',', f);
        if (!strpbrk(v, ",\"\r\n")) {
            fputs(v, f);
            continue;
        }
        fputc('"', f);
        for (; *v; v++) {
            if (*v == '"')
                fputc('"', f);
            fputc(*v, f);
        }
        fputc('"', f);
    }
    fputc('\n', f);
}

void kw__md_row(FILE *f, int ncol, const char *const *vals)
{
    fputc('|', f);
    for (int i = 0; i < ncol; i++) {
        fputc(' ', f);
        for (const char *v = vals[i] ? vals[i] : ""; *v; v++) {
            if (*v == '|' || *v == '\\')
                fprintf(f, "\\%c", *v);
            else if (*v == '\n')
                fputs("<br>", f);
            else if (*v != '\r')
                fputc(*v, f);
        }
        fputs(" |", f);
    }
    fputc('\n', f);
}

void kw__md_rule(FILE *f, int ncol)
{
    fputc('|', f);
    for (int i = 0; i < ncol; i++)
        fputs(" --- |", f);
    fputc('\n', f);
}

static json_t *json_value(const char *v, int type, bool embed)
{
    if (!v)
        return json_null();
    if (type == KW_DB_T_INT)
        return json_integer(strtoll(v, NULL, 10));
    if (type == KW_DB_T_REAL) {
        double d = strtod(v, NULL);
        return isfinite(d) ? json_real(d) : json_string(v);
    }
    if (embed) {
        json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);
        if (j)
            return j;
    }
    return json_string(v);
}

static void json_row(FILE *f, int ncol, const char *const *names, const char *const *vals,
                     const int *types, const bool *json_columns, bool first, bool lines);

void kw__json_row(FILE *f, int ncol, const char *const *names, const char *const *vals,
                 const int *types, const bool *json_columns, bool first)
{
    json_row(f, ncol, names, vals, types, json_columns, first, false);
}

void kw__jsonl_row(FILE *f, int ncol, const char *const *names, const char *const *vals,
                   const int *types, const bool *json_columns)
{
    json_row(f, ncol, names, vals, types, json_columns, false, true);
}

static void json_row(FILE *f, int ncol, const char *const *names, const char *const *vals,
                     const int *types, const bool *json_columns, bool first, bool lines)
{
    json_t *o = json_object();
    for (int i = 0; i < ncol; i++)
        json_object_set_new(o, names[i],
                            json_value(vals[i], types ? types[i] : KW_DB_T_TEXT,
                                       json_columns && json_columns[i]));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_PRESERVE_ORDER);
    if (lines) /* JSON Lines: one object a line */
        fprintf(f, "%s\n", s ? s : "{}");
    else
        fprintf(f, "%s  %s", first ? "" : ",\n", s ? s : "{}");
    free(s);
    json_decref(o);
}

void kw__fmt_duration(double s, char *buf, size_t n)
{
    if (!(s >= 0))
        snprintf(buf, n, "-");
    else if (s < 60)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

void kw__fmt_bytes(double b, char *buf, size_t n)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, n, "%.0f B", b);
    else
        snprintf(buf, n, "%.1f %s", b, u[i]);
}

void kw__fmt_time(double t, char *buf, size_t n)
{
    time_t s = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&s, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(buf, n, "-");
}

void kw__fmt_num(const char *v, char *buf, size_t n)
{
    if (!v) {
        snprintf(buf, n, "-");
        return;
    }
    char *end;
    double d = strtod(v, &end);
    if (*v && *end == '\0')
        snprintf(buf, n, "%.6g", d);
    else
        snprintf(buf, n, "%s", v);
}
